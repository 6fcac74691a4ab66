"""nandlib: companion library to the NAND paper (Yi, Jung, Yoon, AIPR 2024)."""

__version__ = "0.1.0"
