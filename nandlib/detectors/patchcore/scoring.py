"""PatchCore scoring: nearest-neighbour patch scores, image scores (max or paper Eq. 7) and maps.

Book: ``method.md``, "PatchCore".
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter


@torch.no_grad()
def nearest_neighbours(
    queries: torch.Tensor, bank: torch.Tensor, k: int = 1, chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k-nearest neighbours in squared Euclidean distance (the official ``faiss.IndexFlatL2``).

    Neighbours are ranked by ``|q|² + |m|² − 2 q·m`` in blocks of ``chunk_size`` queries (memory
    ``chunk_size × len(bank)``); the returned distances are then recomputed as ``Σ (q − m)²``, so a
    query equal to a bank row scores exactly 0 (faiss returns the expansion, clamped at 0).

    Args:
        queries: ``[M, D]``.
        bank: ``[K, D]`` on the same device.
        k: Number of neighbours (at most ``K``).
        chunk_size: Queries per block.

    Returns:
        Squared distances ``[M, k]`` (ascending) and bank indices ``[M, k]``.

    Raises:
        ValueError: ``k`` exceeds the bank size.
    """
    if k > len(bank):
        raise ValueError(f"num_neighbors: {k} exceeds the memory bank size {len(bank)}")
    bank_sq = (bank * bank).sum(1)
    distances, indices = [], []
    for chunk in queries.split(chunk_size):
        expansion = (chunk * chunk).sum(1, keepdim=True) - 2 * (chunk @ bank.T) + bank_sq
        nearest = expansion.topk(k, dim=1, largest=False).indices
        exact = ((chunk[:, None, :] - bank[nearest]) ** 2).sum(-1)
        exact, order = exact.sort(dim=1)
        distances.append(exact)
        indices.append(nearest.gather(1, order))
    return torch.cat(distances), torch.cat(indices)


@torch.no_grad()
def reweighted_scores(
    features: torch.Tensor,
    patch_scores: torch.Tensor,
    nearest: torch.Tensor,
    bank: torch.Tensor,
    support_size: int,
) -> torch.Tensor:
    """Image scores re-weighted by the paper's Eq. 7 (not in the official code, issues #27/#54).

    ``s = (1 − exp‖m_test* − m*‖ / Σ_{m ∈ N_b(m*)} exp‖m_test* − m‖) · s*`` where ``m_test*`` is the
    patch with the largest score, ``m*`` its nearest memory item, ``N_b(m*)`` the ``b`` nearest
    memory items of ``m*`` (``m*`` itself included, as anomalib does) and ``s* = ‖m_test* − m*‖``
    the Euclidean distance, i.e. the square root of the (squared) patch score.

    Args:
        features: Patch features ``[B, L, D]``.
        patch_scores: Patch scores ``[B, L]`` (squared distances).
        nearest: Index ``[B, L]`` of each patch's nearest memory item.
        bank: Memory bank ``[K, D]``.
        support_size: ``b``; clipped to ``K``.

    Returns:
        Image scores ``[B]``.
    """
    worst = patch_scores.argmax(1, keepdim=True)  # m_test*
    star_score = patch_scores.gather(1, worst)[:, 0].sqrt()
    test_feature = features.gather(1, worst[..., None].expand(-1, -1, features.shape[2]))  # [B, 1, D]
    star = bank[nearest.gather(1, worst)[:, 0]]  # m*
    _, support = nearest_neighbours(star, bank, k=min(support_size, len(bank)))  # N_b(m*)
    support_distance = (test_feature - bank[support]).norm(dim=-1)  # [B, b]
    star_distance = (test_feature[:, 0] - star).norm(dim=-1)
    weight = 1 - torch.exp(star_distance - torch.logsumexp(support_distance, dim=1))
    return weight * star_score


def anomaly_maps(patch_scores: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """Official ``RescaleSegmentor``: bilinear resize (``align_corners=False``) of the patch-score grid
    to ``size × size``, then ``scipy.ndimage.gaussian_filter(sigma)`` (truncate 4, mode reflect).

    Args:
        patch_scores: ``[B, h, w]``.
        size: Side of the output map (the crop).
        sigma: Gaussian standard deviation in output pixels.

    Returns:
        Maps ``[B, size, size]``, float32 on CPU.
    """
    grids = patch_scores[:, None].float()
    resized = F.interpolate(grids, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    smoothed = [gaussian_filter(grid, sigma=sigma) for grid in resized.cpu().numpy()]
    return torch.from_numpy(np.stack(smoothed))
