"""PatchCore scoring: exact kNN, paper Eq. 7 on a hand-built case, and the official map smoothing."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from nandlib.detectors.patchcore.scoring import anomaly_maps, nearest_neighbours, reweighted_scores


@pytest.mark.parametrize("k", [1, 3])
def test_nearest_neighbours_equal_brute_force(k):
    generator = torch.Generator().manual_seed(0)
    queries, bank = torch.randn(50, 16, generator=generator), torch.randn(40, 16, generator=generator)
    distances, indices = nearest_neighbours(queries, bank, k=k, chunk_size=7)
    brute = ((queries[:, None, :] - bank[None, :, :]) ** 2).sum(-1)
    expected_distances, expected_indices = brute.sort(dim=1)
    assert torch.equal(indices, expected_indices[:, :k])
    torch.testing.assert_close(distances, expected_distances[:, :k])


def test_more_neighbours_than_bank_rows_fail():
    with pytest.raises(ValueError, match="num_neighbors"):
        nearest_neighbours(torch.zeros(2, 3), torch.zeros(4, 3), k=5)


def test_queries_in_the_bank_score_exactly_zero():
    bank = 100 * torch.randn(30, 64, generator=torch.Generator().manual_seed(1))
    distances, indices = nearest_neighbours(bank, bank)
    assert torch.equal(distances[:, 0], torch.zeros(30))
    assert torch.equal(indices[:, 0], torch.arange(30))


def test_reweighted_score_matches_equation_7_by_hand():
    bank = torch.tensor([[0.0, 0.0], [1.0, 0.0], [4.0, 0.0]])
    features = torch.tensor([[[0.0, 0.0], [0.0, 2.0]]])  # patch 1 is m_test*, its m* is bank[0]
    distances, nearest = nearest_neighbours(features[0], bank)
    patch_scores = distances[:, 0][None]
    assert patch_scores.tolist() == [[0.0, 4.0]]
    score = reweighted_scores(features, patch_scores, nearest[:, 0][None], bank, support_size=2)
    # N_2(m*) = {bank[0], bank[1]}; ‖m_test* − m‖ = 2 and √5; s* = 2.
    expected = (1 - math.exp(2) / (math.exp(2) + math.exp(math.sqrt(5)))) * 2
    torch.testing.assert_close(score, torch.tensor([expected]))


def test_anomaly_maps_resize_bilinear_then_scipy_gaussian():
    grid = torch.rand(2, 7, 7, generator=torch.Generator().manual_seed(2))
    maps = anomaly_maps(grid, 56, sigma=4.0)
    resized = F.interpolate(grid[:, None], size=(56, 56), mode="bilinear", align_corners=False)[:, 0].numpy()
    expected = np.stack([gaussian_filter(r, sigma=4, truncate=4.0, mode="reflect") for r in resized])
    assert maps.dtype == torch.float32 and maps.shape == (2, 56, 56)
    assert np.array_equal(maps.numpy(), expected)


def test_constant_scores_give_constant_maps():
    maps = anomaly_maps(torch.full((1, 4, 4), 2.5), 32, sigma=4.0)
    torch.testing.assert_close(maps, torch.full((1, 32, 32), 2.5))
