"""The MVTec AD folder layout, and writing a dataset folder all at once.

``<root>/<class>/train/good/000.png``, ``<root>/<class>/test/<type>/000.png`` and
``<root>/<class>/ground_truth/<type>/000_mask.png`` (defect images only). Both the downloader and the
synthetic generator build a dataset in a hidden staging folder next to its final place and rename it there
when complete, so a dataset folder is never half-written (book: ``reproducing.md``, "Data").
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

COMPLETE_MARKER = ".complete"


def image_path(root: Path, class_name: str, split: str, anomaly_type: str, index: int) -> Path:
    """Path of image ``index`` of ``<class>/<split>/<anomaly_type>`` (MVTec names them ``000.png``...)."""
    return root / class_name / split / anomaly_type / f"{index:03d}.png"


def mask_path(image: Path) -> Path:
    """Ground-truth mask of a test image: ``<class>/ground_truth/<type>/<stem>_mask.png``."""
    class_dir = image.parents[2]
    return class_dir / "ground_truth" / image.parent.name / f"{image.stem}_mask.png"


def is_complete(root: str | Path) -> bool:
    """Whether ``root`` was fully written by :func:`staged_dataset` (downloaded or generated)."""
    return (Path(root) / COMPLETE_MARKER).is_file()


def ensure_empty(root: Path) -> None:
    """Raise ``FileExistsError`` naming ``root`` unless it is absent or an empty folder."""
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} already exists and is not empty; choose another folder or remove it")


@contextmanager
def staged_dataset(root: str | Path, note: str) -> Iterator[Path]:
    """Build a dataset folder in a staging folder next to ``root``, then move it into place.

    On success the staging folder gets a ``.complete`` marker (holding ``note``) and is renamed to ``root``;
    on any error it is removed, leaving ``root`` untouched.

    Args:
        root: Final dataset folder; must not exist or be empty.
        note: Text for the completion marker (what wrote the dataset).

    Yields:
        The staging folder to fill.
    """
    root = Path(root)
    ensure_empty(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".partial", dir=root.parent))
    try:
        yield staging
        (staging / COMPLETE_MARKER).write_text(note + "\n", encoding="utf-8")
        if root.exists():
            root.rmdir()
        os.replace(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
