"""nandlib: companion library to the NAND paper (Yi, Jung, Yoon, AIPR 2024)."""

import warnings

__version__ = "0.1.0"

# open_clip imports huggingface_hub, which imports tqdm.auto; in a Jupyter kernel without ipywidgets that
# warns "IProgress not found" into every notebook that builds a model (the book's pages), although
# nandlib draws no notebook progress bar. This one message only.
warnings.filterwarnings("ignore", message="IProgress not found")
