"""WinCLIP's scores: class probabilities, harmonic aggregation, visual association.

Every function follows anomalib's ``models/image/winclip/utils.py`` step by step (book:
``protocol.md``, "WinCLIP"); the loops there are vectorised here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nandlib.detectors.winclip.windows import ImageEmbeddings


def cosine_similarity(embeddings: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every embedding with every row of ``others``.

    Args:
        embeddings: ``[..., N, D]``.
        others: ``[M, D]``.

    Returns:
        ``[..., N, M]``.
    """
    return F.normalize(embeddings, dim=-1) @ F.normalize(others, dim=-1).T


def class_probabilities(embeddings: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softmax over classes of cosine similarity divided by ``temperature`` (WinCLIP Eq. 1).

    Args:
        embeddings: Image or window embeddings ``[..., N, D]``.
        text: One (unnormalised) text embedding per class, ``[M, D]``; WinCLIP uses
            ``[normal, anomalous]``, so column 1 is the anomaly probability.
        temperature: Softmax temperature (0.07 in WinCLIP).

    Returns:
        ``[..., N, M]`` probabilities.
    """
    return (cosine_similarity(embeddings, text) / temperature).softmax(dim=-1)


def harmonic_aggregation(
    window_scores: torch.Tensor, grid: tuple[int, int], masks: torch.Tensor
) -> torch.Tensor:
    """Score per grid cell: harmonic mean of the scores of all windows covering it.

    Cell value ``n / Σ_{w ∋ cell} 1 / score_w`` with ``n`` the number of covering windows. A zero
    window score makes its cells zero; like anomalib, NaN and +inf results become 0.

    Args:
        window_scores: ``[B, n_windows]``.
        grid: ``(H, W)`` of the patch grid.
        masks: ``[cells_per_window, n_windows]`` raster indices (see :func:`make_window_masks`).

    Returns:
        ``[B, H, W]``.
    """
    height, width = grid
    batch = window_scores.shape[0]
    cells = masks.long().reshape(-1)  # cell of every (position-in-window, window) pair
    inverse = (1.0 / window_scores).repeat(1, masks.shape[0])  # same (position, window) order
    sums = window_scores.new_zeros(batch, height * width).scatter_add_(1, cells.expand(batch, -1), inverse)
    counts = torch.bincount(cells, minlength=height * width).to(window_scores.dtype)
    return (counts / sums).nan_to_num(nan=0.0, posinf=0.0).reshape(batch, height, width)


def visual_association_score(embeddings: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Smallest cosine distance ``(1 − cos) / 2`` to any reference vector (WinCLIP Eq. 4).

    Args:
        embeddings: ``[B, N, D]`` query embeddings.
        references: ``[..., D]`` reference embeddings, pooled over all images and positions.

    Returns:
        ``[B, N]``.
    """
    similarity = cosine_similarity(embeddings, references.reshape(-1, embeddings.shape[-1]))
    return (1.0 - similarity).amin(dim=-1) / 2.0


def make_window_masks(grid: tuple[int, int], kernel: int, stride: int = 1) -> torch.Tensor:
    """Raster indices of the cells of every sliding window on the patch grid.

    Column ``j`` is the window at raster position ``j``; its entries are the covered cells in
    row-major order (anomalib ``make_masks``: an unfold of ``arange(H * W)``).

    Args:
        grid: ``(H, W)`` of the patch grid.
        kernel: Window side in patches.
        stride: Window step in patches.

    Returns:
        Long tensor ``[kernel * kernel, n_windows]``.

    Raises:
        ValueError: If ``kernel`` or ``stride`` is below 1 or ``kernel`` exceeds a grid side.
    """
    if kernel < 1 or stride < 1:
        raise ValueError(f"kernel ({kernel}) and stride ({stride}) must be at least 1")
    if any(side < kernel for side in grid):
        raise ValueError(f"scales: window side {kernel} exceeds the patch grid {grid}")
    cells = torch.arange(grid[0] * grid[1], dtype=torch.float64).reshape(1, *grid)
    return F.unfold(cells, kernel_size=kernel, stride=stride).long()


def zero_shot_scores(
    embeddings: ImageEmbeddings,
    text: torch.Tensor,
    masks: list[torch.Tensor],
    grid: tuple[int, int],
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """WinCLIP zero-shot image scores and grid maps (anomalib ``_compute_zero_shot_scores``).

    The image score is the anomaly probability of the full-image embedding. The map is the
    harmonic mean over ``[image score broadcast, one harmonic-aggregated window map per scale]``.

    Args:
        embeddings: Embeddings of ``B`` images.
        text: ``[2, D]`` text embeddings, normal then anomalous.
        masks: Window masks, one per scale, in the order of ``embeddings.windows``.
        grid: ``(H, W)`` patch grid.
        temperature: Softmax temperature.

    Returns:
        ``(image_scores [B], maps [B, H, W])``.
    """
    image_scores = class_probabilities(embeddings.image, text, temperature)[..., 1]
    maps = [image_scores[:, None, None].expand(-1, *grid)]
    for windows, mask in zip(embeddings.windows, masks, strict=True):
        window_scores = class_probabilities(windows, text, temperature)[..., 1]
        maps.append(harmonic_aggregation(window_scores, grid, mask))
    return image_scores, len(maps) / (1.0 / torch.stack(maps)).sum(dim=0)


def few_shot_map(
    embeddings: ImageEmbeddings, references: ImageEmbeddings, masks: list[torch.Tensor], grid: tuple[int, int]
) -> torch.Tensor:
    """WinCLIP+ few-shot grid map (anomalib ``_compute_few_shot_scores``).

    Arithmetic mean of ``[patch-token association on the grid, harmonic-aggregated window
    association per scale]``, each against the pooled reference memory.

    Args:
        embeddings: Embeddings of ``B`` query images.
        references: Embeddings of the ``K`` reference images (the memory).
        masks: Window masks, one per scale.
        grid: ``(H, W)`` patch grid.

    Returns:
        ``[B, H, W]``.
    """
    batch = embeddings.patches.shape[0]
    maps = [visual_association_score(embeddings.patches, references.patches).reshape(batch, *grid)]
    for windows, reference_windows, mask in zip(embeddings.windows, references.windows, masks, strict=True):
        maps.append(harmonic_aggregation(visual_association_score(windows, reference_windows), grid, mask))
    return torch.stack(maps).mean(dim=0)
