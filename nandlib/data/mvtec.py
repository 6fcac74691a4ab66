"""Read one class of a dataset in MVTec AD's layout, lazily (book: ``protocol.md``, "Data").

Listing a class only checks that files exist; PNGs are decoded when :meth:`Sample.image` or
:meth:`Sample.mask` is called. Works the same on MVTec AD and on the synthetic stand-in
(:func:`nandlib.data.synthetic.generate_dataset`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from nandlib.data.classes import ANOMALY_TYPES, GOOD, check_class
from nandlib.data.layout import mask_path as expected_mask_path


def _open_png(path: Path) -> Image.Image:
    """Open and decode an image file, naming the file in any error."""
    try:
        with Image.open(path) as handle:
            handle.load()
            return handle.copy()
    except FileNotFoundError as error:
        raise FileNotFoundError(f"image file not found: {path}") from error
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"cannot read image {path}: unreadable or corrupt ({error})") from error


def binary_mask(pixels: np.ndarray, path: Path) -> np.ndarray:
    """A ground-truth mask's grey values as booleans: {0, 255} and {0, 1} masks are both read.

    Args:
        pixels: ``uint8`` grey values ``[H, W]``.
        path: The mask file, named in errors.

    Raises:
        ValueError: Values outside {0, 255} and {0, 1} (an anti-aliased or label mask), naming the file.
    """
    values = np.flatnonzero(np.bincount(pixels.ravel(), minlength=256)).tolist()
    if set(values) <= {0, 255}:
        return pixels > 127
    if set(values) <= {0, 1}:
        return pixels > 0
    shown = ", ".join(map(str, values[:8])) + (", ..." if len(values) > 8 else "")
    raise ValueError(f"mask {path}: grey values {{{shown}}}; expected a binary mask of 0/255 or 0/1")


@dataclass(frozen=True)
class Sample:
    """One image of a class, and its ground truth.

    Attributes:
        path: The image file.
        class_name: MVTec AD class.
        split: ``"train"`` or ``"test"``.
        anomaly_type: Test folder name (``"good"`` for normal images).
        label: 0 for ``good``, 1 for defect images (the dataset's own labels, before any relabelling).
        mask_path: Ground-truth mask of a defect image, ``None`` for ``good`` images.
    """

    path: Path
    class_name: str
    split: str
    anomaly_type: str
    label: int
    mask_path: Path | None

    def image(self) -> Image.Image:
        """Decode the image as RGB (grayscale classes such as grid are stored as mode ``L``)."""
        return _open_png(self.path).convert("RGB")

    def mask(self, size: int | tuple[int, int] | None = None) -> np.ndarray:
        """Decode the ground-truth mask as a boolean array ``[H, W]`` (all ``False`` for ``good`` images).

        Masks may be stored as 0/255 (MVTec AD's) or 0/1 (a common export format); any other value set is
        refused (see :func:`binary_mask`).

        Args:
            size: Resize to this side (or ``(width, height)``) with nearest-neighbour sampling; ``None``
                keeps the image's size.

        Raises:
            ValueError: The mask's size differs from the image's, or it holds values other than {0, 255}
                or {0, 1} (the message names the file).
        """
        image_size = self._image_size()
        if self.mask_path is None:
            mask = Image.new("L", image_size, 0)
        else:
            mask = _open_png(self.mask_path).convert("L")
            if mask.size != image_size:
                raise ValueError(
                    f"mask {self.mask_path} is {mask.size[0]}x{mask.size[1]} but image {self.path} is "
                    f"{image_size[0]}x{image_size[1]}"
                )
            mask = Image.fromarray(binary_mask(np.asarray(mask), self.mask_path).astype(np.uint8) * 255)
        if size is not None:
            mask = mask.resize((size, size) if isinstance(size, int) else size, Image.Resampling.NEAREST)
        return np.asarray(mask) > 127

    def _image_size(self) -> tuple[int, int]:
        try:
            with Image.open(self.path) as handle:
                return handle.size
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise ValueError(f"cannot read image {self.path}: unreadable or corrupt ({error})") from error


@dataclass(frozen=True)
class MVTecClass:
    """The samples of one class: ``train`` (all ``good``) and ``test`` (``good`` and defect types).

    Samples are sorted by anomaly type, then file name.
    """

    name: str
    root: Path
    train: list[Sample]
    test: list[Sample]

    @property
    def anomaly_types(self) -> list[str]:
        """Defect types present in the test split (sorted, without ``good``)."""
        return sorted({s.anomaly_type for s in self.test if s.anomaly_type != GOOD})

    def to_frame(self) -> pd.DataFrame:
        """One row per sample: ``path, class, split, anomaly_type, label, mask_path``."""
        rows = [
            {"path": str(s.path), "class": s.class_name, "split": s.split, "anomaly_type": s.anomaly_type,
             "label": s.label, "mask_path": None if s.mask_path is None else str(s.mask_path)}
            for s in self.train + self.test
        ]
        return pd.DataFrame(rows, columns=["path", "class", "split", "anomaly_type", "label", "mask_path"])


def _list_pngs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file())


def read_class(root: str | Path, class_name: str) -> MVTecClass:
    """List one class of a dataset in MVTec AD's layout, without decoding any image.

    Args:
        root: Dataset root holding one folder per class.
        class_name: An MVTec AD class (see :data:`nandlib.data.MVTEC_CLASSES`).

    Returns:
        The class's train and test samples.

    Raises:
        ValueError: Unknown class, or a test folder that is not one of the class's anomaly types.
        FileNotFoundError: Missing root, class folder, ``train/good``/``test`` folder or defect mask.
    """
    check_class(class_name)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root not found: {root}")
    class_dir = root / class_name
    if not class_dir.is_dir():
        raise FileNotFoundError(f"class folder not found: {class_dir}")
    for needed in (class_dir / "train" / GOOD, class_dir / "test"):
        if not needed.is_dir():
            raise FileNotFoundError(f"folder not found: {needed} (expected MVTec AD layout)")

    train = [Sample(p, class_name, "train", GOOD, 0, None) for p in _list_pngs(class_dir / "train" / GOOD)]
    test: list[Sample] = []
    known = set(ANOMALY_TYPES[class_name]) | {GOOD}
    for type_dir in sorted(d for d in (class_dir / "test").iterdir() if d.is_dir()):
        anomaly_type = type_dir.name
        if anomaly_type not in known:
            raise ValueError(
                f"unexpected test folder {type_dir}: {class_name!r} has anomaly types {sorted(known)}"
            )
        for path in _list_pngs(type_dir):
            if anomaly_type == GOOD:
                test.append(Sample(path, class_name, "test", GOOD, 0, None))
                continue
            mask = expected_mask_path(path)
            if not mask.is_file():
                raise FileNotFoundError(f"mask not found for defect image {path}: expected {mask}")
            test.append(Sample(path, class_name, "test", anomaly_type, 1, mask))
    return MVTecClass(class_name, root, train, test)
