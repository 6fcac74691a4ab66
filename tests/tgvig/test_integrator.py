"""Text-guided knowledge integrator (Eq. 4–7): it keeps the generated set with the highest Eq. 4 score."""

from __future__ import annotations

import pytest
import torch

from nandlib.tgvig.generator import TOY_CONFIG, VarianceAwareGenerator, build_vqmodel
from nandlib.tgvig.integrator import IntegratorSettings, integrate, set_feature, set_score

SMALL = {**TOY_CONFIG, "sample_size": 32}


def test_set_score_is_the_cosine_of_the_mean_normalised_feature() -> None:
    features = torch.tensor([[3.0, 0.0], [0.0, 1.0]])  # normalised: (1, 0), (0, 1); mean (0.5, 0.5)
    assert torch.allclose(set_feature(features), torch.tensor([0.5, 0.5]))
    assert set_score(features, torch.tensor([1.0, 1.0])) == pytest.approx(1.0)
    assert set_score(features, torch.tensor([1.0, 0.0])) == pytest.approx(2**-0.5)


def test_integrator_returns_the_best_scoring_set_of_those_generated() -> None:
    seen: list[torch.Tensor] = []

    def mean_colour(images: torch.Tensor) -> torch.Tensor:  # a stand-in for CLIP's f: [M, 3] features
        seen.append(images.clone())
        return images.mean((2, 3)) + torch.tensor([0.0, 0.0, 2.0])

    text = torch.tensor([1.0, -1.0, 0.5])
    originals = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    generator = VarianceAwareGenerator(build_vqmodel(SMALL, seed=0))
    before = [p.detach().clone() for p in generator.model.parameters()]
    settings = IntegratorSettings(images_per_round=5, rounds=4, n_augmented=3, lr=1e-2)
    result = integrate(generator, originals, text, mean_colour, settings, seed=0, progress=False)

    expected = [set_score(mean_colour(images), text) for images in list(seen)]
    assert len(seen) == 2 * 4 and result.scores == pytest.approx(expected[:4])
    best = max(range(4), key=lambda i: expected[i])
    assert result.best_round == best and torch.equal(result.images, seen[best])
    assert result.images.shape == (5, 3, 32, 32) and len(set(result.scores)) == 4
    assert any(not torch.equal(a, b) for a, b in zip(before, generator.model.parameters(), strict=True))


def test_integrator_refuses_no_originals() -> None:
    generator = VarianceAwareGenerator(build_vqmodel(SMALL, seed=0))
    with pytest.raises(ValueError, match="originals"):
        integrate(
            generator, torch.empty(0, 3, 32, 32), torch.ones(3), lambda x: x.mean((2, 3)), progress=False
        )
