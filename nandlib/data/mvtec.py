"""Read one class of a dataset in MVTec AD's layout, lazily (book: ``protocol.md``, "Data").

Listing a class only checks that files exist; PNGs are decoded when :meth:`Sample.image` or
:meth:`Sample.mask` is called. Works the same on MVTec AD and on the synthetic stand-in
(:func:`nandlib.data.synthetic.generate_dataset`). :func:`check_layout` checks a class folder up front and
says which of its Table 1 groups have test images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from nandlib.data.classes import ANOMALY_TYPES, GOOD, anomaly_groups, check_class, grouped_classes
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


@dataclass(frozen=True)
class LayoutCheck:
    """What :func:`check_layout` found in one class folder.

    Attributes:
        class_name: The MVTec AD class.
        problems: What stops the class from running at all, each naming its file or folder: a missing
            folder, no training images, no test images, only good (or no good) test images, an unexpected
            test folder, defect images without masks.
        notes: What only leaves part of it out: empty test folders, groups without (some of their) images.
        present_groups: Table 1 groups with test images, in Table 1's order: the groups a run can do.
        missing_groups: Group -> its test folders, for groups none of whose folders has an image.
    """

    class_name: str
    problems: tuple[str, ...]
    notes: tuple[str, ...]
    present_groups: tuple[str, ...]
    missing_groups: dict[str, tuple[str, ...]]

    @property
    def ok(self) -> bool:
        """Whether the class can be run (its missing groups skipped)."""
        return not self.problems

    def raise_for_problems(self) -> None:
        """Raise ``ValueError`` listing every problem, if there is one."""
        if self.problems:
            raise ValueError(f"class {self.class_name!r} cannot be run: " + "; ".join(self.problems))


def _group_coverage(
    class_name: str, counts: dict[str, int], test_dir: Path
) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]], list[str]]:
    """Present groups, missing groups (-> their folders) and notes on partly covered groups."""
    if class_name not in grouped_classes():
        return (), {}, []
    present, missing, notes = [], {}, []
    for group, types in anomaly_groups(class_name).items():
        empty = [t for t in types if counts.get(t, 0) == 0]
        folders = ", ".join(str(test_dir / t) for t in empty)
        if len(empty) == len(types):
            missing[group] = tuple(str(test_dir / t) for t in types)
            notes.append(f"group {group!r} has no test images (no PNG in {folders}): skipped")
        else:
            present.append(group)
            if empty:
                notes.append(f"group {group!r} has no images of {', '.join(empty)} (no PNG in {folders})")
    return tuple(present), missing, notes


def _test_problems(class_name: str, test_dir: Path) -> tuple[dict[str, int], list[str], list[str]]:
    """Images per test folder, problems and notes of a class's ``test`` folder."""
    known = set(ANOMALY_TYPES[class_name]) | {GOOD}
    counts, problems, notes, no_mask = {}, [], [], []
    for type_dir in sorted(d for d in test_dir.iterdir() if d.is_dir()):
        if type_dir.name not in known:
            problems.append(f"unexpected test folder {type_dir} (anomaly types: {', '.join(sorted(known))})")
            continue
        images = _list_pngs(type_dir)
        counts[type_dir.name] = len(images)
        if not images:
            notes.append(f"empty test folder {type_dir}")
        if type_dir.name != GOOD:
            no_mask += [str(expected_mask_path(p)) for p in images if not expected_mask_path(p).is_file()]
    defects = sum(n for name, n in counts.items() if name != GOOD)
    if not counts.get(GOOD) and not defects:
        problems.append(f"no test images in {test_dir}")
    elif not defects:
        problems.append(f"only good test images in {test_dir}: no defect folder holds a PNG")
    elif not counts.get(GOOD):
        problems.append(f"no good test images in {test_dir / GOOD}")
    if no_mask:
        shown = ", ".join(no_mask[:3]) + (f" and {len(no_mask) - 3} more" if len(no_mask) > 3 else "")
        problems.append(f"{len(no_mask)} defect images without a mask: expected {shown}")
    return counts, problems, notes


def check_layout(root: str | Path, class_name: str) -> LayoutCheck:
    """Check one class folder up front, before anything is run, and say which Table 1 groups it can do.

    Reports every problem at once (see :class:`LayoutCheck`) instead of failing at the first one, late.
    A caller runs :attr:`LayoutCheck.present_groups` and skips the rest, or calls
    :meth:`LayoutCheck.raise_for_problems`.

    Args:
        root: Dataset root holding one folder per class.
        class_name: An MVTec AD class.

    Raises:
        ValueError: Unknown class (the folder is not looked at).
    """
    check_class(class_name)
    class_dir = Path(root) / class_name
    train_dir, test_dir = class_dir / "train" / GOOD, class_dir / "test"
    problems: list[str] = []
    notes: list[str] = []
    counts: dict[str, int] = {}
    if not class_dir.is_dir():
        problems.append(f"class folder not found: {class_dir}")
    else:
        if not train_dir.is_dir():
            problems.append(f"folder not found: {train_dir} (expected MVTec AD layout)")
        elif not _list_pngs(train_dir):
            problems.append(f"no training images in {train_dir}")
        if not test_dir.is_dir():
            problems.append(f"folder not found: {test_dir} (expected MVTec AD layout)")
        else:
            counts, test_problems, notes = _test_problems(class_name, test_dir)
            problems += test_problems
    present, missing, group_notes = _group_coverage(class_name, counts, test_dir)
    return LayoutCheck(class_name, tuple(problems), tuple(notes + group_notes), present, missing)
