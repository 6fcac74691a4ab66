"""A synthetic stand-in for MVTec AD, in the very same layout (book: ``reproducing.md``, "Synthetic data").

Each class gets its own look: a background texture (carpet, grid, leather, tile, wood) or an object on a plain
background (the ten object classes). Each anomaly type keeps MVTec AD's name, so Table 1's groups apply
unchanged, and is painted with its own style (:mod:`nandlib.data.defects`) and ground-truth mask. Images are
deterministic: each one has its own seed derived from ``(seed, class, split, type, index)``, so generating a
subset of classes gives the same images. It lets the whole pipeline run without the real dataset; it says
nothing about the paper's numbers.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from nandlib import __version__
from nandlib.data.classes import (
    ANOMALY_TYPES,
    GOOD,
    GRAYSCALE_CLASSES,
    MVTEC_CLASSES,
    MVTEC_COUNTS,
    TEXTURE_CLASSES,
    check_class,
)
from nandlib.data.defects import RGB, paint_defect
from nandlib.data.layout import image_path, mask_path, staged_dataset

SCALES = ("small", "paper")
SMALL_COUNTS = {"train": 10, GOOD: 5, "defect": 3}


def image_counts(class_name: str, scale: str) -> dict[tuple[str, str], int]:
    """Images per ``(split, anomaly_type)`` of one class: MVTec AD's at ``"paper"``, a few at ``"small"``."""
    check_class(class_name)
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    train, test = MVTEC_COUNTS[class_name]
    if scale == "paper":
        return {("train", GOOD): train, **{("test", t): n for t, n in test.items()}}
    counts = {("train", GOOD): SMALL_COUNTS["train"], ("test", GOOD): SMALL_COUNTS[GOOD]}
    counts.update({("test", t): SMALL_COUNTS["defect"] for t in ANOMALY_TYPES[class_name]})
    return counts


def _rng(seed: int, class_name: str, split: str, anomaly_type: str, index: int) -> np.random.Generator:
    key = zlib.crc32(f"{class_name}/{split}/{anomaly_type}".encode())
    return np.random.default_rng(np.random.SeedSequence([seed, key, index]))


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Noise in [-1, 1] varying over about ``cells`` cells per side (bicubic upsampling)."""
    coarse = Image.fromarray(rng.uniform(0, 255, (cells, cells)).astype(np.uint8))
    return np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 127.5 - 1


def _ellipse(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1


def _box(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, half_w: float, half_h: float) -> np.ndarray:
    return (np.abs(xx - cx) < half_w) & (np.abs(yy - cy) < half_h)


Part = tuple[np.ndarray, tuple[float, float, float] | None]  # (where, colour); None: background (a hole)


def _object_parts(
    class_name: str, x: np.ndarray, y: np.ndarray, rng: np.random.Generator
) -> tuple[float, list[Part]]:
    """Grey level of the plain background and the object's coloured parts, painted in order."""
    radius = np.hypot(x - 0.5, y - 0.5)
    if class_name == "bottle":
        return 0.05, [(radius < 0.38, (0.35, 0.3, 0.2)), (radius < 0.26, (0.2, 0.17, 0.12)),
                      (radius < 0.14, (0.6, 0.55, 0.45))]
    if class_name == "cable":
        cores = [(_ellipse(x, y, 0.5 + 0.17 * np.cos(a), 0.5 + 0.17 * np.sin(a), 0.12, 0.12), rgb)
                 for a, rgb in zip(2 * np.pi * np.arange(3) / 3,
                                   [(0.2, 0.6, 0.2), (0.2, 0.3, 0.75), (0.55, 0.35, 0.2)], strict=True)]
        return 0.85, [(radius < 0.38, (0.3, 0.3, 0.3)), *cores]
    if class_name == "capsule":
        body = _box(x, y, 0.5, 0.5, 0.3, 0.12) | _ellipse(x, y, 0.2, 0.5, 0.12, 0.12)
        body |= _ellipse(x, y, 0.8, 0.5, 0.12, 0.12)
        return 0.9, [(body & (x < 0.5), (0.15, 0.15, 0.15)), (body & (x >= 0.5), (0.85, 0.45, 0.1))]
    if class_name == "hazelnut":
        return 0.03, [(_ellipse(x, y, 0.5, 0.5, 0.33, 0.3), (0.45, 0.28, 0.15)),
                      (_ellipse(x, y, 0.47, 0.47, 0.22, 0.2), (0.6, 0.38, 0.2))]
    if class_name == "metal_nut":
        return 0.05, [(radius < 0.38, (0.6, 0.6, 0.62)), (radius < 0.14, None)]
    if class_name == "pill":
        specks = _ellipse(x, y, 0.35, 0.45, 0.02, 0.02) | _ellipse(x, y, 0.62, 0.55, 0.02, 0.02)
        return 0.2, [(_ellipse(x, y, 0.5, 0.5, 0.4, 0.2), (0.92, 0.9, 0.85)), (specks, (0.75, 0.2, 0.2))]
    if class_name == "screw":
        angle = rng.uniform(0, np.pi)
        u = (x - 0.5) * np.cos(angle) + (y - 0.5) * np.sin(angle)
        v = (y - 0.5) * np.cos(angle) - (x - 0.5) * np.sin(angle)
        return 0.9, [(_box(u, v, 0.0, 0.0, 0.3, 0.05), (0.35, 0.35, 0.35)),
                     (_ellipse(u, v, 0.3, 0.0, 0.09, 0.09), (0.25, 0.25, 0.25))]
    if class_name == "toothbrush":
        head = _box(x, y, 0.5, 0.5, 0.14, 0.3)
        tufts = np.sin(2 * np.pi * 20 * x) * np.sin(2 * np.pi * 20 * y) > 0
        return 0.1, [(head, (0.8, 0.8, 0.9)), (head & tufts, (0.6, 0.6, 0.75))]
    if class_name == "transistor":
        legs = _box(x, y, 0.38, 0.66, 0.015, 0.14) | _box(x, y, 0.5, 0.66, 0.015, 0.14)
        legs |= _box(x, y, 0.62, 0.66, 0.015, 0.14)
        return 0.8, [(_box(x, y, 0.5, 0.38, 0.2, 0.14), (0.1, 0.1, 0.1)), (legs, (0.55, 0.55, 0.55))]
    if class_name == "zipper":
        teeth = (np.abs(x - 0.5) < 0.1) & (y * 16 % 1 < 0.5)
        return 0.35, [(np.ones_like(teeth), (0.35, 0.35, 0.35)), (teeth, (0.8, 0.8, 0.8))]
    raise ValueError(f"no synthetic scene for class {class_name!r}")


def _texture_shade(
    class_name: str, x: np.ndarray, y: np.ndarray, rng: np.random.Generator
) -> tuple[RGB, np.ndarray]:
    """Base colour and brightness pattern of a texture class."""
    phase = rng.uniform(0, 2 * np.pi, 2)
    size = x.shape[0]
    if class_name == "carpet":
        weave = np.sin(2 * np.pi * 12 * x + phase[0]) * np.sin(2 * np.pi * 12 * y + phase[1])
        return (0.6, 0.35, 0.3), 0.8 + 0.15 * weave
    if class_name == "grid":
        lines = ((x * 8 + phase[0] / 6) % 1 < 0.2) | ((y * 8 + phase[1] / 6) % 1 < 0.2)
        return (0.3, 0.3, 0.3), np.where(lines, 2.5, 1.0)
    if class_name == "leather":
        return (0.5, 0.32, 0.2), 1 + 0.15 * smooth_noise(rng, size, 8)
    if class_name == "tile":
        return (0.6, 0.6, 0.6), 1 + 0.2 * np.sign(smooth_noise(rng, size, 24))
    if class_name == "wood":
        grain = np.sin(2 * np.pi * (8 * x + 0.4 * np.sin(2 * np.pi * y + phase[0])))
        return (0.75, 0.55, 0.35), 0.88 + 0.12 * grain
    raise ValueError(f"no synthetic texture for class {class_name!r}")


TextureShade = Callable[[str, np.ndarray, np.ndarray, np.random.Generator], tuple[RGB, np.ndarray]]
ObjectParts = Callable[[str, np.ndarray, np.ndarray, np.random.Generator], tuple[float, list[Part]]]


@dataclass(frozen=True)
class SceneTables:
    """What a family of classes looks like: the texture classes and how textures and objects are drawn.

    Attributes:
        textures: Names of the texture classes (every other class is an object on a plain background).
        texture_shade: ``(name, x, y, rng) -> (base colour, brightness pattern [S, S])``.
        object_parts: ``(name, x, y, rng) -> (background grey level, [(where, colour or None), ...])``,
            parts painted in order; colour ``None`` cuts a hole back to the background.
    """

    textures: Collection[str]
    texture_shade: TextureShade
    object_parts: ObjectParts


MVTEC_SCENES = SceneTables(TEXTURE_CLASSES, _texture_shade, _object_parts)


def render_scene(
    class_name: str, rng: np.random.Generator, size: int, tables: SceneTables = MVTEC_SCENES
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render a normal image of ``class_name``.

    Args:
        class_name: A class of ``tables`` (MVTec AD's by default).
        rng: Random generator (jitter, phases, noise).
        size: Image side in pixels.
        tables: How the classes look (:class:`SceneTables`; the toy world's auxiliary classes have their own).

    Returns:
        ``(image, object_mask, background)``: float RGB ``[S, S, 3]`` in [0, 1], where the object is (all
        ``True`` for textures), and the RGB colour behind the object.
    """
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if class_name in tables.textures:
        base, shade = tables.texture_shade(class_name, x, y, rng)
        background = np.asarray(base, dtype=np.float32)
        image = background * shade[..., None]
        object_mask = np.ones((size, size), dtype=bool)
    else:
        dx, dy = rng.uniform(-0.03, 0.03, 2)
        level, parts = tables.object_parts(class_name, x - dx, y - dy, rng)
        background = np.full(3, level, dtype=np.float32)
        image = np.broadcast_to(background, (size, size, 3)).copy()
        object_mask = np.zeros((size, size), dtype=bool)
        for where, rgb in parts:
            image[where] = background if rgb is None else rgb
            object_mask = object_mask & ~where if rgb is None else object_mask | where
    image = np.clip(image + rng.normal(0, 0.01, image.shape), 0, 1).astype(np.float32)
    return image, object_mask, background


def render_defective(
    class_name: str,
    anomaly_type: str,
    rng: np.random.Generator,
    size: int,
    tables: SceneTables,
    types: Sequence[str],
) -> tuple[np.ndarray, np.ndarray]:
    """The normal scene (:func:`render_scene`), then the defect ``anomaly_type`` painted on it.

    The scene is drawn first from ``rng``, so the same seed gives the same image with and without the
    defect: they differ exactly on the mask.

    Args:
        types: The class's anomaly types (``combined`` paints two of them).

    Returns:
        ``(image, mask)``: float RGB ``[S, S, 3]`` in [0, 1] and the boolean defect mask ``[S, S]`` (all
        ``False`` for ``good``).
    """
    image, object_mask, background = render_scene(class_name, rng, size, tables)
    if anomaly_type == GOOD:
        return image, np.zeros((size, size), dtype=bool)
    return image, paint_defect(image, object_mask, background, anomaly_type, rng, types)


def render_sample(
    class_name: str, anomaly_type: str, rng: np.random.Generator, size: int
) -> tuple[Image.Image, np.ndarray]:
    """Render one image of ``class_name`` with a defect of ``anomaly_type`` (none for ``good``).

    Returns:
        ``(image, mask)``: PIL image (mode ``L`` for grid, screw and zipper, like MVTec AD; else ``RGB``)
        and the boolean defect mask ``[S, S]`` (all ``False`` for ``good``); see :func:`render_defective`.
    """
    image, mask = render_defective(
        class_name, anomaly_type, rng, size, MVTEC_SCENES, ANOMALY_TYPES[class_name]
    )
    pil = Image.fromarray(np.round(image * 255).astype(np.uint8), "RGB")
    return (pil.convert("L") if class_name in GRAYSCALE_CLASSES else pil), mask


def generate_dataset(
    out: str | Path,
    classes: Sequence[str] = MVTEC_CLASSES,
    seed: int = 0,
    scale: str = "small",
    size: int = 128,
) -> Path:
    """Write a synthetic dataset in MVTec AD's layout, readable by :func:`nandlib.data.read_class`.

    The dataset is built in a staging folder and moved to ``out`` when complete (with a ``.complete``
    marker and a ``README.txt`` saying what it is), so an interrupted run leaves no ``out``.

    Args:
        out: New dataset root (must not exist, or be empty).
        classes: MVTec AD classes to generate (or one class name).
        seed: Base seed; each image's seed is derived from ``(seed, class, split, type, index)``.
        scale: ``"small"`` (10 train, 5 good and 3 per defect type) or ``"paper"`` (MVTec AD's counts).
        size: Image side in pixels (at least 32).

    Returns:
        The dataset root ``out``.
    """
    classes = [check_class(c) for c in ([classes] if isinstance(classes, str) else classes)]
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be a non-empty list without repeats, got {classes}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 32:
        raise ValueError(f"size must be an integer of at least 32 pixels, got {size!r}")
    counts = {c: image_counts(c, scale) for c in classes}
    note = f"synthetic MVTec-AD-layout data, nandlib {__version__}, seed {seed}, scale {scale}, size {size}"
    with staged_dataset(out, note) as root:
        for class_name in classes:
            for (split, anomaly_type), n_images in counts[class_name].items():
                for index in range(n_images):
                    image, mask = render_sample(class_name, anomaly_type, _rng(seed, class_name, split,
                                                                                 anomaly_type, index), size)
                    path = image_path(root, class_name, split, anomaly_type, index)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    image.save(path)
                    if anomaly_type != GOOD:
                        target = mask_path(path)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        Image.fromarray(mask.astype(np.uint8) * 255, "L").save(target)
        (root / "README.txt").write_text(_readme(note, classes), encoding="utf-8")
    return Path(out)


def _readme(note: str, classes: Sequence[str]) -> str:
    return (
        "SYNTHETIC DATA - not MVTec AD.\n\n"
        f"Generated by nandlib ({note}) for classes: {', '.join(classes)}.\n"
        "Same folder layout and anomaly type names as MVTec AD (Bergmann et al., CVPR 2019), so the NAND\n"
        "paper's anomaly groups apply unchanged, but every image is procedurally painted: results on it\n"
        "exercise the pipeline and say nothing about the paper's numbers.\n"
    )
