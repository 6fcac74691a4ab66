"""Bringing anomaly maps, suppression maps and masks onto one evaluation grid (256 × 256, the paper's).

A detector's map covers :meth:`MapGeometry.region` of the original image (the whole image for squashing
detectors, the centred crop for PatchCore). NAND's suppression map ``A_sup`` and the ground-truth
masks cover the whole image, so the same box is cut out of them before resizing; the detector's own
map is only resized. All resampling goes through :func:`crop_to_region`. Book: ``method.md``,
"Aligning maps".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from nandlib.detectors.base import MapGeometry

Region = tuple[float, float, float, float]
"""Box ``(x0, y0, x1, y1)`` as fractions of the image width and height."""

FULL_IMAGE: Region = (0.0, 0.0, 1.0, 1.0)
EVAL_SIZE = 256
_MODES = ("bilinear", "nearest")


def regions_for(geometry: MapGeometry, image_sizes: Sequence[tuple[int, int]]) -> list[Region]:
    """The box each image's map covers, for images of sizes ``(width, height)``."""
    return [geometry.region(width, height) for width, height in image_sizes]


def crop_to_region(
    full_image_maps: torch.Tensor,
    regions: Region | Sequence[Region],
    size: int = EVAL_SIZE,
    mode: str = "bilinear",
) -> torch.Tensor:
    """Cut a box out of maps that cover the whole image and resample it to ``size`` × ``size``.

    Output pixel centres sample the box uniformly (half-pixel convention, i.e. ``align_corners=False``),
    so with the whole-image box this equals ``F.interpolate(..., align_corners=False)`` without antialiasing.
    Use ``mode="bilinear"`` for score maps and ``"nearest"`` for ground-truth masks.

    Args:
        full_image_maps: ``[B, H, W]`` maps covering the whole (squashed) image; any dtype.
        regions: One box for the whole batch or one per map.
        size: Side of the output grid.
        mode: ``"bilinear"`` or ``"nearest"``.

    Returns:
        ``[B, size, size]``, float32 on the input's device (masks: 0/1 values).

    Raises:
        ValueError: Bad shape, mode or number of regions.
    """
    if full_image_maps.ndim != 3:
        raise ValueError(f"full_image_maps: expected [B, H, W], got shape {tuple(full_image_maps.shape)}")
    if mode not in _MODES:
        raise ValueError(f"mode: expected one of {_MODES}, got {mode!r}")
    batch = full_image_maps.shape[0]
    boxes = [tuple(regions)] * batch if isinstance(regions[0], (int, float)) else [tuple(r) for r in regions]
    if len(boxes) != batch:
        raise ValueError(f"regions: {len(boxes)} boxes for {batch} maps")
    if mode == "bilinear" and all(box == FULL_IMAGE for box in boxes):  # same samples, 5x faster
        return F.interpolate(full_image_maps.float()[:, None], size=(size, size), mode="bilinear")[:, 0]
    device = full_image_maps.device
    box = torch.tensor(boxes, dtype=torch.float32, device=device)  # [B, 4]
    steps = (torch.arange(size, dtype=torch.float32, device=device) + 0.5) / size  # pixel centres in [0, 1]
    xs = box[:, 0:1] + steps * (box[:, 2:3] - box[:, 0:1])  # [B, size] fractions of the width
    ys = box[:, 1:2] + steps * (box[:, 3:4] - box[:, 1:2])
    grid = torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), dim=-1) * 2 - 1
    sampled = F.grid_sample(
        full_image_maps.float()[:, None], grid, mode=mode, padding_mode="border", align_corners=False
    )
    return sampled[:, 0]


def crop_image(image: Image.Image, region: Region, size: int = EVAL_SIZE) -> np.ndarray:
    """The part of ``image`` a detector's map covers, as ``uint8 [size, size, 3]`` for display.

    Resampled by :func:`crop_to_region` (bilinear), so each displayed pixel lies exactly under the map and
    mask pixels it is shown with.
    """
    pixels = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)  # channels as maps
    cropped = crop_to_region(pixels, region, size).round().clamp(0, 255)
    return cropped.to(torch.uint8).permute(1, 2, 0).numpy()


def to_eval_grid(maps: torch.Tensor, size: int = EVAL_SIZE) -> torch.Tensor:
    """A detector's maps, which already cover its geometry's region, resized to ``size`` × ``size``.

    Args:
        maps: ``[B, h, w]`` native maps (e.g. APRIL-GAN 518², WinCLIP 240², PatchCore 224² of the crop).
        size: Side of the evaluation grid.

    Returns:
        ``[B, size, size]`` float32, bilinear.
    """
    return crop_to_region(maps, FULL_IMAGE, size)
