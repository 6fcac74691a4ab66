"""Where nandlib keeps what it makes: one user data folder, nothing inside the installed package.

The folder is ``$NAND_HOME`` when set, else the platform's user data folder
(:func:`platformdirs.user_data_dir`, e.g. ``~/.local/share/nandlib`` on Linux). A checkout's ``Makefile``
sets ``NAND_HOME=<checkout>/.nand`` so that a development tree keeps its data beside it. Inside it:
generated datasets (``datasets/``), the toy world's weights (``toy/``) and the feature cache (``cache/``,
unless ``$NAND_CACHE_DIR`` says otherwise). Book: ``reproducing.md``, "Where files go".
"""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_data_dir

HOME_ENV = "NAND_HOME"


def data_home() -> Path:
    """The user data folder (not created here)."""
    return Path(os.environ.get(HOME_ENV) or user_data_dir("nandlib", appauthor=False))


def datasets_dir() -> Path:
    """Generated datasets, one folder each."""
    return data_home() / "datasets"


def toy_dir() -> Path:
    """The toy world's trained weights, one folder per seed."""
    return data_home() / "toy"


USER_DATA = "<user data>"
"""How a path inside :func:`data_home` is written where others read it (the book's provenance boxes)."""


def portable(text: str) -> str:
    """``text`` with the user data folder's absolute path written as :data:`USER_DATA`
    (``<user data>/datasets/synth-toy-…``), so a published page does not show the build machine's paths."""
    home = str(data_home().resolve())
    return text.replace(home, USER_DATA).replace(str(data_home()), USER_DATA)


def writable_folder(path: Path, what: str) -> Path:
    """Create ``path`` if needed and check that files can be written in it.

    Args:
        path: The folder.
        what: What it is for, named in the error (``"user data folder"``, ``"--out"``).

    Raises:
        PermissionError: The folder cannot be created or written, naming it and ``what``.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PermissionError(f"{what} {path} cannot be created: {error.strerror or error}") from error
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {path} is not writable (set {HOME_ENV} or choose another folder)")
    return path
