"""The notebooks nandlib executes, shipped in the package as ``nandlib.notebooks`` (package-dir).

``run_class.ipynb`` is one sweep unit; ``tables.ipynb`` and ``figure5.ipynb`` aggregate a sweep for the book.
"""
