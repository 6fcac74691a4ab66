"""The toy world's VQGAN: :data:`~nandlib.tgvig.generator.TOY_CONFIG` pretrained on its auxiliary classes.

The auxiliary classes (:data:`nandlib.toy.world.AUX_CLASSES`) play ImageNet's part: the paper starts its
generator from an ImageNet VQGAN, the toy world from one trained here on images of classes that are not
evaluated. Trained on first use into ``<user data folder>/tgvig/vqgan-seed<SEED>`` (``save_pretrained``'s
layout, loadable with :func:`nandlib.tgvig.generator.load_vqmodel`). Book: ``generated_normals.md``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import PositiveFloat, PositiveInt
from tqdm.auto import tqdm

from nandlib.config import Settings
from nandlib.paths import data_home, writable_folder
from nandlib.tgvig.generator import TOY_CONFIG, build_vqmodel, load_vqmodel


class ToyVQBudget(Settings):
    """How the toy VQGAN is trained: Adam on L1 reconstruction + codebook/commitment loss."""

    steps: PositiveInt = 600
    batch_size: PositiveInt = 16
    per_class: PositiveInt = 64
    lr: PositiveFloat = 2e-3


def toy_vqgan_dir(seed: int = 0) -> Path:
    """Where the toy VQGAN of ``seed`` is kept."""
    return data_home() / "tgvig" / f"vqgan-seed{seed}"


def auxiliary_images(seed: int, per_class: int) -> torch.Tensor:
    """The auxiliary classes' images (good and defective), ``[N, 3, 64, 64]`` in [-1, 1]."""
    from nandlib.toy.world import AUX_CLASSES, clip_images

    array = torch.from_numpy(clip_images(seed, per_class, 64, AUX_CLASSES).images)
    return array.permute(0, 3, 1, 2).float() / 127.5 - 1


def train_toy_vqgan(seed: int = 0, budget: ToyVQBudget | None = None, progress: bool = True):
    """Train :data:`TOY_CONFIG` from a seeded random init on :func:`auxiliary_images`.

    Returns:
        ``(model, seconds)``: the ``VQModel`` in eval mode and the training time.
    """
    budget = budget or ToyVQBudget()
    start = time.perf_counter()
    images = auxiliary_images(seed, budget.per_class)
    model = build_vqmodel(TOY_CONFIG, seed).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=budget.lr)
    rng = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(budget.steps), desc="toy VQGAN", disable=not progress):
        batch = images[torch.randint(len(images), (budget.batch_size,), generator=rng)]
        output = model(batch)
        loss = F.l1_loss(output.sample, batch) + output.commit_loss.mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval(), time.perf_counter() - start


def toy_vqgan(seed: int = 0, budget: ToyVQBudget | None = None, progress: bool = True):
    """The toy VQGAN of ``seed`` from :func:`toy_vqgan_dir`, trained and saved there first if absent."""
    folder = toy_vqgan_dir(seed)
    if not (folder / "config.json").is_file():
        model, _ = train_toy_vqgan(seed, budget, progress)
        model.save_pretrained(writable_folder(folder, "toy VQGAN folder"))
    return load_vqmodel(folder).eval()
