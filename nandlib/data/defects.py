"""Painted defects for the synthetic stand-in of MVTec AD (book: ``reproducing.md``, "Synthetic data").

Every MVTec AD anomaly type maps to a :class:`DefectStyle`: a *shape* (where the defect is: disc, blob,
line, zigzag, curve, band, specks, patch, dots) and an *effect* (what it does to the pixels there: darken,
brighten, tint, stain, gloss, noise, fill with background, invert, warp, swap colours). Within one class all
types have different (shape, effect) pairs, so each group of Table 1 looks different; ``combined`` paints two
of the class's other types at once. The painted pixels are exactly the mask's pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class DefectStyle:
    """How one anomaly type is painted.

    Attributes:
        shape: Name of the region painter (see :data:`SHAPES`).
        effect: Name of the pixel effect inside that region (see :data:`EFFECTS`).
        extent: Size of the region as a fraction of the image side (radius, or length for lines).
        width: Stroke width as a fraction of the image side (lines, curves, bands).
        color: Colour used by ``tint`` and ``stain``.
    """

    shape: str
    effect: str
    extent: float = 0.06
    width: float = 0.02
    color: RGB = (0.0, 0.0, 0.0)


BLUE: RGB = (0.2, 0.45, 0.9)
BROWN: RGB = (0.45, 0.3, 0.12)
COPPER: RGB = (0.85, 0.5, 0.2)

# Every MVTec AD anomaly type except "combined" (two styles at once).
DEFECT_STYLES: dict[str, DefectStyle] = {
    "bent": DefectStyle("patch", "warp", extent=0.1),
    "bent_lead": DefectStyle("curve", "dark", extent=0.25, width=0.03),
    "bent_wire": DefectStyle("zigzag", "tint", extent=0.2, width=0.04, color=COPPER),
    "broken": DefectStyle("blob", "fill", extent=0.08),
    "broken_large": DefectStyle("blob", "fill", extent=0.13),
    "broken_small": DefectStyle("disc", "fill", extent=0.05),
    "broken_teeth": DefectStyle("patch", "dark", extent=0.07),
    "cable_swap": DefectStyle("disc", "swap", extent=0.14),
    "color": DefectStyle("blob", "tint", extent=0.08, color=BLUE),
    "contamination": DefectStyle("blob", "stain", extent=0.06, color=BROWN),
    "crack": DefectStyle("zigzag", "dark", extent=0.25, width=0.015),
    "cut": DefectStyle("line", "dark", extent=0.3, width=0.03),
    "cut_inner_insulation": DefectStyle("line", "tint", extent=0.15, width=0.03, color=COPPER),
    "cut_lead": DefectStyle("band", "fill", extent=0.12, width=0.06),
    "cut_outer_insulation": DefectStyle("line", "bright", extent=0.2, width=0.04),
    "damaged_case": DefectStyle("blob", "bright", extent=0.07),
    "defective": DefectStyle("blob", "noise", extent=0.1),
    "fabric_border": DefectStyle("curve", "dark", extent=0.3, width=0.02),
    "fabric_interior": DefectStyle("specks", "dark", extent=0.06),
    "faulty_imprint": DefectStyle("dots", "stain", extent=0.06, color=BROWN),
    "flip": DefectStyle("patch", "invert", extent=0.16),
    "fold": DefectStyle("band", "dark", extent=0.4, width=0.08),
    "glue": DefectStyle("blob", "gloss", extent=0.08),
    "glue_strip": DefectStyle("band", "gloss", extent=0.35, width=0.07),
    "gray_stroke": DefectStyle("band", "tint", extent=0.35, width=0.05, color=(0.3, 0.3, 0.3)),
    "hole": DefectStyle("disc", "dark", extent=0.06),
    "liquid": DefectStyle("blob", "stain", extent=0.1, color=(0.5, 0.4, 0.3)),
    "manipulated_front": DefectStyle("patch", "warp", extent=0.09),
    "metal_contamination": DefectStyle("specks", "bright", extent=0.06),
    "misplaced": DefectStyle("patch", "warp", extent=0.2),
    "missing_cable": DefectStyle("disc", "fill", extent=0.13),
    "missing_wire": DefectStyle("disc", "dark", extent=0.08),
    "oil": DefectStyle("blob", "stain", extent=0.1, color=(0.3, 0.25, 0.15)),
    "pill_type": DefectStyle("specks", "tint", extent=0.08, color=(0.8, 0.1, 0.1)),
    "poke": DefectStyle("disc", "dark", extent=0.025),
    "poke_insulation": DefectStyle("disc", "bright", extent=0.03),
    "print": DefectStyle("dots", "dark", extent=0.06),
    "rough": DefectStyle("blob", "noise", extent=0.1),
    "scratch": DefectStyle("line", "bright", extent=0.25, width=0.012),
    "scratch_head": DefectStyle("line", "dark", extent=0.1, width=0.015),
    "scratch_neck": DefectStyle("line", "bright", extent=0.2, width=0.012),
    "split_teeth": DefectStyle("line", "dark", extent=0.2, width=0.025),
    "squeeze": DefectStyle("band", "warp", extent=0.3, width=0.1),
    "squeezed_teeth": DefectStyle("band", "warp", extent=0.25, width=0.08),
    "thread": DefectStyle("curve", "bright", extent=0.35, width=0.012),
    "thread_side": DefectStyle("zigzag", "bright", extent=0.2, width=0.02),
    "thread_top": DefectStyle("curve", "dark", extent=0.15, width=0.02),
}


def _px(fraction: float, size: int) -> int:
    return max(1, round(fraction * size))


def _direction(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    angle = rng.uniform(0, np.pi)
    along = np.array([np.cos(angle), np.sin(angle)])
    return along, np.array([-along[1], along[0]])


def _path(center: np.ndarray, rng: np.random.Generator, length: float, offsets: Callable) -> list[tuple]:
    """Points along a random direction through ``center``; ``offsets(t)`` bends them sideways (0 at t=0)."""
    along, across = _direction(rng)
    t = np.linspace(-0.5, 0.5, 17)
    points = center + np.outer(t * length, along) + np.outer(offsets(t), across)
    return [tuple(p) for p in points]


def _draw(size: int, paint: Callable[[ImageDraw.ImageDraw], None]) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    paint(ImageDraw.Draw(canvas))
    return np.asarray(canvas) > 0


def _shape_mask(style: DefectStyle, center: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Rasterise ``style.shape`` around ``center`` (pixels ``(x, y)``) as a boolean ``[size, size]`` mask."""
    r, length, width = _px(style.extent, size), style.extent * size, _px(style.width, size)
    cx, cy = center

    def disc(x: float, y: float, radius: float) -> Callable:
        return lambda d: d.ellipse([x - radius, y - radius, x + radius, y + radius], fill=255)

    if style.shape == "disc":
        return _draw(size, disc(cx, cy, r))
    if style.shape == "blob":
        angles = np.sort(rng.uniform(0, 2 * np.pi, 9))
        radii = r * rng.uniform(0.6, 1.2, 9)
        polygon = [(cx + a * np.cos(t), cy + a * np.sin(t)) for a, t in zip(radii, angles, strict=True)]
        return _draw(size, lambda d: d.polygon(polygon, fill=255))
    if style.shape in ("line", "band"):
        points = _path(center, rng, length, lambda t: 0 * t)
        return _draw(size, lambda d: d.line([points[0], points[-1]], fill=255, width=width))
    if style.shape == "zigzag":
        jitter = rng.uniform(0.3, 1.0, 17) * 0.08 * length
        points = _path(center, rng, length, lambda t: jitter * np.sign(np.sin(8 * np.pi * t)))
        return _draw(size, lambda d: d.line(points, fill=255, width=width, joint="curve"))
    if style.shape == "curve":
        bend, turns = rng.uniform(0.1, 0.2) * length, rng.uniform(1.0, 2.0)
        points = _path(center, rng, length, lambda t: bend * np.sin(2 * np.pi * turns * t))
        return _draw(size, lambda d: d.line(points, fill=255, width=width, joint="curve"))
    if style.shape == "specks":
        spots = [(cx, cy)] + [tuple(center + rng.uniform(-r, r, 2)) for _ in range(3)]
        radius = max(1.0, 0.3 * r)
        return _draw(size, lambda d: [disc(x, y, radius)(d) for x, y in spots])
    if style.shape == "patch":
        return _draw(size, lambda d: d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=255))
    if style.shape == "dots":
        bar_w, bar_h = max(1, r // 3), r
        bars = [(cx + k * 2 * bar_w - bar_w / 2, cy - bar_h / 2) for k in (-1, 0, 1)]
        return _draw(size, lambda d: [d.rectangle([x, y, x + bar_w, y + bar_h], fill=255) for x, y in bars])
    raise ValueError(f"unknown defect shape {style.shape!r}")


def _apply_effect(
    image: np.ndarray, mask: np.ndarray, style: DefectStyle, background: np.ndarray, rng: np.random.Generator
) -> None:
    """Change ``image`` (float ``[H, W, 3]`` in [0, 1]) in place, inside ``mask`` only."""
    region = image[mask]
    if style.effect == "dark":
        new = region * 0.2
    elif style.effect == "bright":
        new = region * 0.2 + 0.8 * 0.97
    elif style.effect == "tint":
        new = region * 0.3 + 0.7 * np.asarray(style.color)
    elif style.effect == "stain":
        new = region * np.asarray(style.color)
    elif style.effect == "gloss":
        ys, xs = np.nonzero(mask)
        distance = np.hypot(ys - ys.mean(), xs - xs.mean())
        highlight = 0.4 + 0.5 * (1 - distance / max(distance.max(), 1.0))
        new = region * (1 - highlight[:, None]) + highlight[:, None] * 0.97
    elif style.effect == "noise":
        new = region + rng.normal(0.0, 0.3, region.shape)
    elif style.effect == "fill":
        new = np.broadcast_to(background, region.shape)
    elif style.effect == "invert":
        new = 1.0 - region
    elif style.effect == "warp":
        shift = max(1, image.shape[0] // 10)
        new = np.roll(image, (shift, -shift), axis=(0, 1))[mask] ** 2.2
    elif style.effect == "swap":
        new = region[:, [2, 0, 1]] * 1.6
    else:
        raise ValueError(f"unknown defect effect {style.effect!r}")
    image[mask] = np.clip(new, 0.0, 1.0)


def paint_defect(
    image: np.ndarray,
    object_mask: np.ndarray,
    background: np.ndarray,
    anomaly_type: str,
    rng: np.random.Generator,
    class_types: tuple[str, ...] = (),
) -> np.ndarray:
    """Paint one defect of ``anomaly_type`` on the object and return its mask.

    Args:
        image: Float RGB image ``[S, S, 3]`` in [0, 1], changed in place.
        object_mask: Where the object is (all ``True`` for textures); the defect stays on it.
        background: RGB colour behind the object (used by the ``fill`` effect: missing parts).
        anomaly_type: An MVTec AD anomaly type; ``combined`` paints two of ``class_types``.
        rng: Random generator (placement and shape).
        class_types: The class's anomaly types (needed for ``combined``).

    Returns:
        Boolean mask ``[S, S]``, non-empty, ``True`` exactly where pixels were painted.
    """
    if anomaly_type == "combined":
        choices = sorted(t for t in class_types if t != "combined")
        if len(choices) < 2:
            raise ValueError("anomaly type 'combined' needs class_types with at least two other types")
        first, second = rng.choice(choices, size=2, replace=False)
        mask = paint_defect(image, object_mask, background, str(first), rng)
        return mask | paint_defect(image, object_mask, background, str(second), rng)
    if anomaly_type not in DEFECT_STYLES:
        raise ValueError(f"no synthetic defect style for anomaly type {anomaly_type!r}")
    style = DEFECT_STYLES[anomaly_type]
    size = image.shape[0]
    inner = np.zeros_like(object_mask)
    inner[size // 5 : size - size // 5, size // 5 : size - size // 5] = True
    candidates = np.flatnonzero(object_mask & inner)
    cy, cx = np.unravel_index(rng.choice(candidates), object_mask.shape)
    mask = _shape_mask(style, np.array([cx, cy], dtype=float), rng, size) & object_mask
    mask[cy, cx] = True
    _apply_effect(image, mask, style, background, rng)
    return mask
