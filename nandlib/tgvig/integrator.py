"""Text-guided knowledge integrator (TGVIG §4.2, Eq. 4–7): L rounds of M generated images, keep the best set.

Each round ``l`` generates ``M`` images with the variance-aware generator (Eq. 3), scores the set by
``cos(z_v^l, z_t)`` where ``z_v^l`` is the mean CLIP image feature of the set (Eq. 4) and ``z_t = G(P)`` the
best prompt's text feature, keeps the best-scoring set over all rounds (Eq. 5) and updates every generator
parameter with Adam on ``L_mse`` (Eq. 6) ``+ λ L_vq`` (Eq. 7). Book: ``generated_normals.md``,
"Text-guided knowledge integrator".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import NonNegativeFloat, PositiveFloat, PositiveInt
from tqdm.auto import tqdm

from nandlib.config import Settings
from nandlib.tgvig.generator import VarianceAwareGenerator
from nandlib.tgvig.images import augment, augmenter


class IntegratorSettings(Settings):
    """The integrator's parameters (paper's values where it gives them).

    Attributes:
        images_per_round: ``M``, images generated per round (paper: 20).
        rounds: ``L``, generation rounds (the paper gives none; its Fig. 8 plots tens).
        n_augmented: ``N``, augmented copies per original for Eq. 3 (the paper gives none).
        vq_weight: ``λ`` of Eq. 7 (the paper gives none).
        lr: Adam's learning rate (the paper gives none).
        variance: ``"estimated"`` (Eq. 3) or ``"unit"`` (σ = 1, the paper's ablation "w/o variance").
        degrees, translate, jitter, flip: The augmentations (:func:`nandlib.tgvig.images.augmenter`).
    """

    images_per_round: PositiveInt = 20
    rounds: PositiveInt = 5
    n_augmented: PositiveInt = 16
    vq_weight: NonNegativeFloat = 1.0
    lr: PositiveFloat = 1e-4
    variance: Literal["estimated", "unit"] = "estimated"
    degrees: NonNegativeFloat = 10.0
    translate: NonNegativeFloat = 0.05
    jitter: NonNegativeFloat = 0.1
    flip: bool = True


def set_feature(features: torch.Tensor) -> torch.Tensor:
    """Eq. 4: ``z_v = E_m[f(I^+_m)]``, the mean of the set's normalised CLIP image features."""
    return F.normalize(features.float(), dim=-1).mean(0)


def set_score(features: torch.Tensor, text: torch.Tensor) -> float:
    """``cos(z_v, z_t)``: how well a generated set matches the best prompt (§4.2)."""
    return float(F.cosine_similarity(set_feature(features), text.float().flatten(), dim=0))


def mse_loss(originals: torch.Tensor, generated: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Eq. 6: ``1/n Σ_m ||I^o - I^+_m||²``, each generated image against its own original ``source[m]``
    (``n``: the number of pixel values of the set, our reading)."""
    return F.mse_loss(generated, originals[source])


def vq_loss(model, augmented: torch.Tensor) -> torch.Tensor:
    """``L_vq`` of Eq. 7 on ``I_1..I_N``: L1 reconstruction + codebook and commitment terms.

    VQGAN's perceptual and adversarial terms are left out (no pretrained LPIPS or discriminator here).
    """
    output = model(augmented)
    return F.l1_loss(output.sample, augmented) + output.commit_loss.mean()


@dataclass
class Integration:
    """The integrator's result.

    Attributes:
        images: The best set ``{Î^+_1..Î^+_M}`` (Eq. 5), ``[M, 3, H, W]`` in [-1, 1].
        scores: ``cos(z_v^l, z_t)`` of every round.
        best_round: Index of the kept round.
        losses: Eq. 7's loss after each round.
    """

    images: torch.Tensor
    scores: list[float]
    best_round: int
    losses: list[float]


def integrate(
    generator: VarianceAwareGenerator,
    originals: torch.Tensor,
    text: torch.Tensor,
    image_features: Callable[[torch.Tensor], torch.Tensor],
    settings: IntegratorSettings | None = None,
    seed: int = 0,
    progress: bool = True,
) -> Integration:
    """Run §4.2: ``L`` rounds of generate → score (Eq. 4) → keep the best (Eq. 5) → update (Eq. 6–7).

    With ``K`` originals, the ``M`` images of a round are shared out in turn: image ``m`` is drawn from the
    latent statistics of original ``m mod K``'s augmentations and compared with it in Eq. 6.

    Args:
        generator: The variance-aware generator; its model is trained in place.
        originals: ``I^o``, ``[K, 3, H, W]`` in [-1, 1].
        text: ``z_t = G(P)``, ``[D]``.
        image_features: ``f``: images ``[M, 3, H, W]`` in [-1, 1] → CLIP features ``[M, D]``.
        settings: :class:`IntegratorSettings` (default: its defaults).
        seed: Seed of augmentations and draws.
        progress: Show a progress bar over rounds.
    """
    settings = settings or IntegratorSettings()
    if originals.ndim != 4 or len(originals) == 0:
        raise ValueError("originals: at least one image [K, 3, H, W] is needed")
    rng = torch.Generator().manual_seed(seed)
    transform = augmenter(settings.degrees, settings.translate, settings.jitter, settings.flip)
    model = generator.model
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr)
    k, m = len(originals), settings.images_per_round
    source = torch.arange(m) % k
    best, scores, losses = None, [], []
    for _ in tqdm(range(settings.rounds), desc="TGVIG rounds", disable=not progress):
        model.train()
        augmented = augment(originals, settings.n_augmented, transform, rng)
        counts = torch.bincount(source, minlength=k).tolist()
        generated = torch.cat([
            generator.sample(generator.statistics(augmented[i]), counts[i], rng, settings.variance == "unit")
            for i in range(k) if counts[i]
        ])  # fmt: skip
        order = torch.cat([torch.full((c,), i) for i, c in enumerate(counts) if c])
        with torch.no_grad():
            scores.append(set_score(image_features(generated.detach()), text))
        if best is None or scores[-1] > scores[best[0]]:
            best = (len(scores) - 1, generated.detach().clone())
        loss = mse_loss(originals, generated, order) + settings.vq_weight * vq_loss(
            model, augmented.flatten(0, 1)
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    model.eval()
    return Integration(best[1], scores, best[0], losses)
