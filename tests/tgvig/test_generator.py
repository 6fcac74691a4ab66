"""Variance-aware generator (Eq. 2–3) on a small random diffusers VQModel."""

from __future__ import annotations

import pytest
import torch

from nandlib.tgvig.generator import (
    PAPER_CONFIG,
    TOY_CONFIG,
    VarianceAwareGenerator,
    build_vqmodel,
    load_vqmodel,
)

SMALL = {**TOY_CONFIG, "sample_size": 32}


@pytest.fixture(scope="module")
def generator() -> VarianceAwareGenerator:
    return VarianceAwareGenerator(build_vqmodel(SMALL, seed=0).eval())


@torch.no_grad()
def test_zero_variance_reproduces_the_deterministic_reconstruction(generator) -> None:
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    stats = generator.statistics(image.expand(5, -1, -1, -1))  # five identical "augmentations"
    assert torch.equal(stats.var, torch.zeros_like(stats.var))
    assert torch.equal(
        generator.sample(stats, 1, torch.Generator().manual_seed(0)), generator.reconstruct(image)
    )
    # in a batch of 3: the very same codes; the decoder's batched convolutions round differently (1e-6)
    draws = generator.quantise(generator.draw_latents(stats, 3, torch.Generator().manual_seed(0)))
    assert torch.equal(draws, generator.encode(image).expand(3, -1, -1, -1))
    assert torch.allclose(generator.sample(stats, 3), generator.reconstruct(image), atol=1e-5)


@torch.no_grad()
def test_statistics_are_the_per_position_mean_and_variance_of_quantised_latents(generator) -> None:
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    latents = generator.encode(images)
    assert latents.shape == (6, 4, 8, 8)
    # quantised: every latent vector is a codebook entry
    codebook = generator.model.quantize.embedding.weight
    vectors = latents.permute(0, 2, 3, 1).reshape(-1, 4)
    assert torch.cdist(vectors, codebook).min(1).values.max() < 1e-5
    stats = generator.statistics(images)
    assert torch.allclose(stats.mean, latents.mean(0)) and torch.allclose(
        stats.var, latents.var(0, correction=0)
    )


def test_drawn_latents_have_the_estimated_variance() -> None:
    """20 000 draws: each position's sample variance has relative sd sqrt(2/n) = 1 %; tolerance 6 % (6 sd)."""
    rng = torch.Generator().manual_seed(3)
    mean = torch.randn(4, 8, 8, generator=rng)
    var = torch.rand(4, 8, 8, generator=rng) * 2 + 0.1
    from nandlib.tgvig.generator import LatentStatistics

    draws = VarianceAwareGenerator.draw_latents(LatentStatistics(mean, var), 20_000, rng)
    assert ((draws.var(0) / var - 1).abs().max()) < 0.06
    assert ((draws.mean(0) - mean).abs() / var.sqrt()).max() < 0.06
    unit = VarianceAwareGenerator.draw_latents(LatentStatistics(mean, var), 20_000, rng, unit=True)
    assert ((unit.var(0) - 1).abs().max()) < 0.06


def test_bad_counts_are_errors(generator) -> None:
    with pytest.raises(ValueError, match="augmented"):
        generator.statistics(torch.empty(0, 3, 32, 32))
    with pytest.raises(ValueError, match="m:"):
        generator.sample(generator.statistics(torch.zeros(1, 3, 32, 32)), 0)


def test_loads_a_saved_model_and_names_a_missing_one(generator, tmp_path) -> None:
    generator.model.save_pretrained(tmp_path / "vq")
    loaded = load_vqmodel(tmp_path / "vq")
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), generator.model.state_dict().values(), strict=True)
    )
    with pytest.raises(FileNotFoundError, match="generator"):
        load_vqmodel(tmp_path / "absent")


@pytest.mark.slow
@torch.no_grad()
def test_paper_architecture_on_random_weights() -> None:
    """The paper's ImageNet VQGAN (f = 16, 16384 codes of 256 dims) in diffusers' layout, run at 64 px
    (loading from a folder is the same code as the small model's above)."""
    generator = VarianceAwareGenerator(build_vqmodel(PAPER_CONFIG, seed=0).eval())
    assert generator.model.quantize.embedding.weight.shape == (16384, 256)
    image = torch.zeros(1, 3, 64, 64)
    assert generator.encode(image).shape == (1, 256, 4, 4)
    assert generator.reconstruct(image).shape == (1, 3, 64, 64)
