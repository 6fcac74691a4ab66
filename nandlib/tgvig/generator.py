"""Variance-aware image generator (TGVIG §4.1.2, Eq. 2–3) on diffusers' ``VQModel`` (a VQGAN).

Eq. 2: ``E(I) = [e(q_1(I)), ..., e(q_D(I))]``, each encoder output ``q_d(I)`` replaced by its nearest codebook
vector, and ``I' = p^o(E(I))`` decodes them. Eq. 3: from the augmented images ``I_1..I_N``, the per-position
mean ``E_i[E(I_i)]`` and variance ``Σ_i(E(I_i))`` of the quantised latents; each generated image draws every
latent position from ``N(mean_d, var_d)`` (the paper's ``σ = 1`` baseline draws from ``N(mean_d, 1)``),
quantises the draw to the codebook and decodes it. Book: ``generated_normals.md``, "Variance-aware
image generator".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from nandlib.tgvig import require

# A VQGAN for the toy world's 64 px images: 4× down to a 16 × 16 grid of 4-dim latents, 256 codes; narrow
# (16-32 channels, 0.24 M parameters) so that it trains in minutes on two CPU threads (nandlib.tgvig.toy).
TOY_CONFIG: dict = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [16, 32, 32],
    "layers_per_block": 1,
    "latent_channels": 4,
    "vq_embed_dim": 4,
    "num_vq_embeddings": 256,
    "norm_num_groups": 8,
    "sample_size": 64,
}
# The paper's generator: taming-transformers' ImageNet VQGAN (f = 16, 16384 codes of 256 dims) in
# diffusers' layout. Its weights load with :func:`load_vqmodel` from a converted local folder or hub id.
PAPER_CONFIG: dict = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4 + ["AttnDownEncoderBlock2D"],
    "up_block_types": ["AttnUpDecoderBlock2D"] + ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 128, 256, 256, 512],
    "layers_per_block": 2,
    "latent_channels": 256,
    "vq_embed_dim": 256,
    "num_vq_embeddings": 16384,
    "norm_num_groups": 32,
    "sample_size": 256,
}


def build_vqmodel(config: dict, seed: int = 0):
    """A ``diffusers.VQModel`` of ``config`` with random weights (seeded)."""
    diffusers = require("diffusers")
    torch.manual_seed(seed)
    return diffusers.VQModel(**config)


def load_vqmodel(source: str | Path, subfolder: str | None = None):
    """A ``diffusers.VQModel`` from a local folder (``save_pretrained``'s) or a Hugging Face hub id.

    Raises:
        FileNotFoundError: ``source`` is neither a folder holding a VQModel nor a reachable hub id.
    """
    diffusers = require("diffusers")
    try:
        return diffusers.VQModel.from_pretrained(str(source), subfolder=subfolder, low_cpu_mem_usage=False)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(f"generator: cannot load a VQModel from {source!r}: {error}") from error


@dataclass(frozen=True)
class LatentStatistics:
    """Eq. 3's ``E_i[E(I_i)]`` and ``Σ_i(E(I_i))``: per-position mean and variance ``[C, h, w]``."""

    mean: torch.Tensor
    var: torch.Tensor


class VarianceAwareGenerator:
    """Eq. 2–3 around a ``VQModel`` (its parameters are the integrator's to train).

    Args:
        model: ``diffusers.VQModel`` (:func:`build_vqmodel`, :func:`load_vqmodel`, or the toy world's).
    """

    def __init__(self, model) -> None:
        self.model = model

    def quantise(self, latents: torch.Tensor) -> torch.Tensor:
        """Each latent vector → its nearest codebook vector ``e(q_d)`` (Eq. 2), exactly in the forward pass.

        Gradients pass straight through to ``latents`` (VQ-VAE's estimator); the codebook learns from the
        codebook term of ``L_vq``. Unlike diffusers' ``z + (e - z).detach()``, the values are the codebook's
        own, to the last bit.
        """
        _, _, (_, _, indices) = self.model.quantize(latents)
        b, c, h, w = latents.shape
        codes = self.model.quantize.get_codebook_entry(indices.reshape(-1), (b, h, w, c))
        return codes + (latents - latents.detach())

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Eq. 2's ``E(I)``: quantised latents ``[B, C, h, w]`` of images in [-1, 1]."""
        return self.quantise(self.model.encode(images).latents)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """``p``: quantise ``latents`` to the codebook and decode them to images in [-1, 1]."""
        return self.model.decode(self.quantise(latents), force_not_quantize=True).sample

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Eq. 2's deterministic reconstruction ``I' = p^o(E(I))``."""
        return self.decode(self.encode(images))

    def statistics(self, augmented: torch.Tensor) -> LatentStatistics:
        """Eq. 3's mean and variance over the augmented images ``I_1..I_N`` ``[N, 3, H, W]``.

        The variance is the population variance (divides by ``N``): ``0`` for ``N = 1``.
        """
        if augmented.ndim != 4 or len(augmented) == 0:
            raise ValueError("augmented: at least one image [N, 3, H, W] is needed")
        latents = self.encode(augmented)
        return LatentStatistics(latents.mean(0), latents.var(0, correction=0))

    @staticmethod
    def draw_latents(
        stats: LatentStatistics, m: int, generator: torch.Generator | None = None, unit: bool = False
    ) -> torch.Tensor:
        """``m`` draws ``[m, C, h, w]``, each position from ``N(mean, var)`` (``N(mean, 1)`` if ``unit``)."""
        if m < 1:
            raise ValueError(f"m: must be a positive integer, got {m!r}")
        shape = (m, *stats.mean.shape)
        noise = torch.randn(shape, generator=generator, device=stats.mean.device, dtype=stats.mean.dtype)
        scale = torch.ones_like(stats.var) if unit else stats.var.clamp_min(0).sqrt()
        return stats.mean + scale * noise

    def sample(
        self, stats: LatentStatistics, m: int, generator: torch.Generator | None = None, unit: bool = False
    ) -> torch.Tensor:
        """Eq. 3: ``m`` generated images ``I^+_1..I^+_m`` ``[m, 3, H, W]`` in [-1, 1]."""
        return self.decode(self.draw_latents(stats, m, generator, unit))
