"""Approximate greedy coreset subsampling of PatchCore's memory bank (paper Sec. 3.2, Alg. 1).

Follows the official ``sampler.py::ApproximateGreedyCoresetSampler``: a random linear projection
to ``projection_dim`` dimensions, ``num_starts`` random starting points whose mean distance
initialises every point's distance to the coreset, then iterative farthest-point selection.
Book: ``method.md``, "PatchCore".
"""

from __future__ import annotations

import math

import numpy as np
import torch


def random_projection(in_dim: int, out_dim: int, seed: int) -> torch.Tensor:
    """Weight ``[out_dim, in_dim]`` of ``torch.nn.Linear(in_dim, out_dim, bias=False)`` created after
    ``torch.manual_seed(seed)`` (Kaiming-uniform default init), without touching the global RNG."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.empty(out_dim, in_dim)
    return torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)


def starting_points(num_features: int, num_starts: int, seed: int) -> torch.Tensor:
    """``min(num_starts, num_features)`` distinct random indices, as the official
    ``np.random.choice(N, n, replace=False)`` draws them right after ``np.random.seed(seed)``."""
    count = min(num_starts, num_features)
    return torch.from_numpy(np.random.RandomState(seed).choice(num_features, count, replace=False))


def euclidean_distances(a: torch.Tensor, b: torch.Tensor, a_sq: torch.Tensor) -> torch.Tensor:
    """Distances ``[len(a), len(b)]`` by the official expansion ``sqrt(max(|a|² + |b|² − 2a·b, 0))``;
    ``a_sq`` holds the squared norms of ``a``."""
    return (-2 * (a @ b.T) + a_sq[:, None] + (b * b).sum(1)[None, :]).clamp_min(0).sqrt()


@torch.no_grad()
def approximate_greedy_coreset(
    features: torch.Tensor,
    ratio: float,
    *,
    projection_dim: int = 128,
    num_starts: int = 10,
    seed: int = 0,
    chunk_size: int = 16384,
    projection: torch.Tensor | None = None,
    start_indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """Indices of an approximate greedy coreset of ``features``.

    1. Project to ``projection_dim`` dims with ``projection`` (default: :func:`random_projection`
       seeded by ``seed``); skipped when the features already have that dimension, as officially.
    2. Every point's distance to the coreset starts as its mean distance to ``start_indices``
       (default: :func:`starting_points`). The starting points are not selected themselves.
    3. ``int(N · ratio)`` times: select the point of largest distance, then lower every distance to
       its distance from the selected point.

    Deviation: a selected point's distance is set to ``-inf``, so no index is selected twice (the
    official code can re-select one when the remaining points duplicate selected ones).

    Args:
        features: ``[N, D]`` features (any device; computed there).
        ratio: Fraction of points kept, in (0, 1]; 1 keeps all (the official identity sampler).
        projection_dim: Dimension of the random projection.
        num_starts: Number of random starting points.
        seed: Seed of the projection and of the starting points.
        chunk_size: Rows per block when projecting and initialising distances (bounds extra memory).
        projection: Optional ``[projection_dim, D]`` weight to use instead of the seeded one.
        start_indices: Optional starting-point indices to use instead of the seeded ones.

    Returns:
        ``int(N · ratio)`` distinct indices (long, on ``features.device``) in selection order.

    Raises:
        ValueError: ``ratio`` outside (0, 1], or so small that no point would be kept.
    """
    num_features = len(features)
    if not 0 < ratio <= 1:
        raise ValueError(f"coreset_ratio: must be in (0, 1], got {ratio}")
    device = features.device
    if ratio == 1:
        return torch.arange(num_features, device=device)
    size = int(num_features * ratio)
    if size < 1:
        raise ValueError(f"coreset_ratio: {ratio} of {num_features} features keeps none; use a larger ratio")
    if features.shape[1] == projection_dim and projection is None:
        reduced = features.float()
    else:
        if projection is None:
            projection = random_projection(features.shape[1], projection_dim, seed)
        weight = projection.to(device=device, dtype=torch.float32)
        reduced = torch.cat([chunk.float() @ weight.T for chunk in features.split(chunk_size)])
    if start_indices is None:
        start_indices = starting_points(num_features, num_starts, seed)
    squared_norms = (reduced * reduced).sum(1)
    starts = reduced[start_indices.to(device)]
    distance = torch.cat(
        [
            euclidean_distances(chunk, starts, norms).mean(1)
            for chunk, norms in zip(reduced.split(chunk_size), squared_norms.split(chunk_size), strict=True)
        ]
    )
    selected = torch.empty(size, dtype=torch.long, device=device)
    for step in range(size):
        index = torch.argmax(distance).view(1)  # stays on device: no host sync per step
        selected[step] = index[0]
        point = reduced.index_select(0, index)[0]
        # The official expansion on 1-D vectors ([N, 1] operands take a slow broadcasting path on CPU).
        to_selected = (-2 * (reduced @ point) + squared_norms + (point * point).sum()).clamp_min(0).sqrt()
        torch.minimum(distance, to_selected, out=distance)
        distance.index_fill_(0, index, -math.inf)
    return selected
