"""Approximate greedy coreset: size, uniqueness, determinism and equality with a brute-force greedy."""

import numpy as np
import pytest
import torch

from nandlib.detectors.patchcore.coreset import approximate_greedy_coreset, random_projection, starting_points


def brute_force_greedy(features, ratio, projection, starts):
    """Plain farthest-point greedy with exact distances, as Alg. 1 of the paper with mean-distance init."""
    points = features @ projection.T
    distance = torch.stack([(points - points[s]).norm(dim=1) for s in starts.tolist()], dim=1).mean(1)
    selected = []
    for _ in range(int(len(points) * ratio)):
        best = max((i for i in range(len(points)) if i not in selected), key=lambda i: distance[i].item())
        selected.append(best)
        distance = torch.minimum(distance, (points - points[best]).norm(dim=1))
    return selected


def _features(count=300, dim=32, seed=0):
    return torch.randn(count, dim, generator=torch.Generator().manual_seed(seed))


def test_selection_equals_brute_force_greedy():
    features = _features()
    projection = random_projection(32, 8, seed=3)
    starts = starting_points(len(features), 10, seed=3)
    ours = approximate_greedy_coreset(features, 0.1, projection_dim=8, seed=3, chunk_size=64)
    assert ours.tolist() == brute_force_greedy(features, 0.1, projection, starts)


def test_size_uniqueness_and_determinism():
    features = _features(count=500)
    first = approximate_greedy_coreset(features, 0.25, projection_dim=16, seed=0)
    assert len(first) == int(500 * 0.25)
    assert len(set(first.tolist())) == len(first)
    assert torch.equal(
        first, approximate_greedy_coreset(features, 0.25, projection_dim=16, seed=0, chunk_size=7)
    )
    assert not torch.equal(first, approximate_greedy_coreset(features, 0.25, projection_dim=16, seed=1))


def test_identical_features_give_distinct_indices():
    selected = approximate_greedy_coreset(torch.ones(200, 4), 0.1, projection_dim=2)
    assert len(selected) == 20
    assert len(set(selected.tolist())) == 20


def test_projection_is_seeded_linear_default_init():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        linear = torch.nn.Linear(64, 16, bias=False)
    assert torch.equal(random_projection(64, 16, seed=7), linear.weight.detach())


def test_starting_points_are_the_official_numpy_draw():
    np.random.seed(4)
    expected = np.random.choice(1000, 10, replace=False)
    assert starting_points(1000, 10, seed=4).tolist() == expected.tolist()
    assert sorted(starting_points(3, 10, seed=4).tolist()) == [0, 1, 2]


def test_no_projection_when_dimension_already_matches():
    features = _features(dim=8)
    identity = torch.eye(8)
    unprojected = approximate_greedy_coreset(features, 0.1, projection_dim=8)
    assert torch.equal(
        unprojected, approximate_greedy_coreset(features, 0.1, projection_dim=8, projection=identity)
    )


def test_ratio_one_keeps_everything_and_bad_ratios_fail():
    assert torch.equal(approximate_greedy_coreset(_features(count=5), 1.0), torch.arange(5))
    for ratio in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="coreset_ratio"):
            approximate_greedy_coreset(_features(count=5), ratio)
    with pytest.raises(ValueError, match="keeps none"):
        approximate_greedy_coreset(_features(count=5), 0.1)
