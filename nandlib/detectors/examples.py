"""What every detector's example route shares (book: ``examples_vs_text.md``, "The example route").

The example route is the capability :meth:`~nandlib.detectors.base.Detector.add_normal_examples`: the
features of a few images of the new normality join the detector's memory of normal features (PatchCore's
memory bank, WinCLIP+'s reference windows and patches, APRIL-GAN's few-shot patch memory), without text
and without retraining. With ``masks`` (the named option, off by default) only the patches whose cell
touches the defect join; without, every patch of the example images joins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from nandlib.detectors.base import MapGeometry
from nandlib.geometry import crop_to_region

__all__ = ["check_examples", "continued_coreset", "patch_fractions"]


def check_examples(
    images: Sequence[Image.Image], masks: Sequence[np.ndarray] | None
) -> list[np.ndarray] | None:
    """Boolean ``[H, W]`` masks matching ``images`` one to one (``None`` when no masks are given).

    Raises:
        ValueError: No example images; a mask count, shape or content that does not fit its image,
            naming the mask by its index.
    """
    if len(images) == 0:
        raise ValueError("images: need at least one example image")
    if masks is None:
        return None
    if len(masks) != len(images):
        raise ValueError(f"masks: {len(masks)} masks for {len(images)} example images")
    checked = []
    for index, (image, mask) in enumerate(zip(images, masks, strict=True)):
        mask = np.asarray(mask)
        expected = (image.height, image.width)
        if mask.shape != expected:
            raise ValueError(
                f"masks[{index}]: shape {mask.shape} does not match example image {index} "
                f"({image.width}x{image.height} pixels, mask [H, W] = {expected})"
            )
        if not mask.any():
            raise ValueError(f"masks[{index}]: no defect pixel, so no patch of example {index} would join")
        checked.append(mask.astype(bool))
    return checked


def patch_fractions(
    masks: Sequence[np.ndarray], geometry: MapGeometry, grid: tuple[int, int], samples: int = 8
) -> torch.Tensor:
    """Fraction of each patch cell's pixels that are defect pixels, ``[K, rows · columns]`` (row-major).

    The masks are first cut to the part of the image the detector sees (``geometry.region``: PatchCore's
    centre crop, the whole image for squashing detectors), sampled at ``samples`` points per cell side
    (nearest) and averaged per cell. A cell with fraction > 0 "touches the defect".
    """
    rows, cols = grid
    side = samples * max(rows, cols)
    fractions = []
    for mask in masks:
        height, width = mask.shape
        full = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None]
        crop = crop_to_region(full, geometry.region(width, height), side, mode="nearest")
        fractions.append(F.adaptive_avg_pool2d(crop[None], (rows, cols)).reshape(-1))
    return torch.stack(fractions)


@torch.no_grad()
def continued_coreset(
    bank: torch.Tensor, new: torch.Tensor, ratio: float, projection: torch.Tensor | None
) -> torch.Tensor:
    """Indices of the ``max(1, int(len(new) · ratio))`` rows of ``new`` the greedy coreset rule adds.

    PatchCore's farthest-point rule (paper Alg. 1) continued from the current memory: every new feature's
    distance starts as its distance to the nearest bank item, then the farthest is selected and the
    distances lowered to it, as in :func:`~nandlib.detectors.patchcore.coreset.approximate_greedy_coreset`
    (in the same random projection, ``None`` for none). Our reading: the official code never grows a bank.
    """
    if projection is not None:
        weight = projection.to(new.device, torch.float32)
        bank, new = bank.float() @ weight.T, new.float() @ weight.T
    distance = torch.cdist(new.float(), bank.float()).amin(dim=1)
    selected = torch.empty(max(1, int(len(new) * ratio)), dtype=torch.long, device=new.device)
    for step in range(len(selected)):
        index = torch.argmax(distance)
        selected[step] = index
        torch.minimum(distance, (new - new[index]).norm(dim=1), out=distance)
        distance[index] = -math.inf
    return selected
