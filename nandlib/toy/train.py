"""``nand toy train``: build the toy world and train everything in it (book: ``reproducing.md``, "Toy world").

Steps: (1) caption-free images of every class for CLIP (captions are drawn per step), (2) the toy CLIP
(:mod:`nandlib.toy.clip_training`), (3) the auxiliary dataset in MVTec AD's layout, (4) APRIL-GAN's linear
layers on it with the authors' losses, started from CLIP's own patch projection
(:mod:`nandlib.training.adapters`), optionally with our normality loss.
Outputs: ``clip.pt`` (open_clip state dict of ``nand-toy``), ``adapters.pth`` (authors' format) and
``training.json`` (budget, losses, seconds). The profile ``toy`` uses them through :func:`toy_weights`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from nandlib.backbones import load_clip
from nandlib.profiles import Profile
from nandlib.toy.clip_training import TOY_MODEL, ClipTraining, save_clip, train_clip
from nandlib.toy.world import DEFAULT_SIZE, clip_images, defect_phrases, write_aux_dataset
from nandlib.training.adapters import AdapterTraining, train_adapters

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_WEIGHTS = Path(__file__).parent / "weights"
CACHE_DIR = REPO_ROOT / "data" / "toy"
FILES = ("clip.pt", "adapters.pth", "training.json")
# Revision of the training code, recorded in training.json: bumped whenever a change alters the weights a
# budget trains (2: captions encoded up to the longest one), so that a cached world of another revision is
# retrained rather than reused.
RECIPE = 2


@dataclass(frozen=True)
class ToyBudget:
    """How much of the toy world is trained; the defaults are the book's (minutes on a laptop CPU).

    Attributes:
        clip: CLIP's steps and hyper-parameters.
        images_per_class: CLIP training images per class.
        adapters: APRIL-GAN's linear layers: the authors' losses and optimiser, started from the toy CLIP's
            own patch projection for 3 epochs (our change; the authors start at random for 15 epochs on
            VisA, see :func:`nandlib.training.adapters.init_from_projection`); ``normality_weight`` > 0
            turns on our normality loss.
        aux_good: Good images per auxiliary class (test split).
        aux_per_type: Defect images per auxiliary type.
    """

    clip: ClipTraining = ClipTraining()
    images_per_class: int = 96
    adapters: AdapterTraining = AdapterTraining(epochs=3, init="projection")
    aux_good: int = 24
    aux_per_type: int = 8


@dataclass(frozen=True)
class ToyWeights:
    """Paths of a trained toy world."""

    clip: Path
    adapters: Path
    report: Path
    info: dict = field(default_factory=dict)


def _with_seed(budget: ToyBudget, seed: int) -> ToyBudget:
    return dataclasses.replace(
        budget,
        clip=dataclasses.replace(budget.clip, seed=seed),
        adapters=dataclasses.replace(budget.adapters, seed=seed),
    )


def train_toy(
    out: str | Path, seed: int = 0, budget: ToyBudget = ToyBudget(), log: Callable[[str], None] | None = None
) -> ToyWeights:
    """Train the toy CLIP and APRIL-GAN's linear layers into ``out`` (created; existing files replaced).

    Args:
        out: Output folder.
        seed: Seed of everything (images, initialisation, batches).
        budget: Training budget (:class:`ToyBudget`).
        log: Progress messages.
    """
    say = log or (lambda _message: None)
    budget = _with_seed(budget, seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    images = clip_images(seed, budget.images_per_class, DEFAULT_SIZE)
    say(f"toy world: {len(images.keys)} captioned CLIP images ({time.perf_counter() - started:.0f} s)")
    every = max(1, budget.clip.steps // 20)
    backbone, clip_losses = train_clip(
        images,
        budget.clip,
        log=lambda step, loss: (
            say(f"clip step {step + 1}/{budget.clip.steps} loss {loss:.3f}")
            if (step + 1) % every == 0 or step == 0
            else None
        ),
    )
    clip_path = save_clip(backbone, out / "clip.pt")
    clip_seconds = time.perf_counter() - started
    aux = out / "aux"
    shutil.rmtree(aux, ignore_errors=True)
    write_aux_dataset(aux, seed, DEFAULT_SIZE, budget.aux_good, budget.aux_per_type)
    backbone = load_clip(TOY_MODEL, checkpoint=clip_path)
    adapters, adapter_losses = train_adapters(
        backbone,
        aux,
        config=budget.adapters,
        phrases=defect_phrases,
        log=lambda epoch, loss: say(f"adapters epoch {epoch + 1}/{budget.adapters.epochs} loss {loss:.3f}"),
    )
    adapters_path = out / "adapters.pth"
    adapters.save(adapters_path)
    info = {
        "recipe": RECIPE,
        "seed": seed,
        "budget": asdict(budget),
        "clip_loss": [round(x, 4) for x in clip_losses],
        "adapter_loss": [round(x, 4) for x in adapter_losses],
        "seconds": {"clip": round(clip_seconds, 1), "total": round(time.perf_counter() - started, 1)},
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
    report = out / "training.json"
    report.write_text(json.dumps(info, indent=1))
    say(f"toy world trained in {info['seconds']['total']:.0f} s -> {out}")
    return ToyWeights(clip_path, adapters_path, report, info)


def toy_weights(
    seed: int = 0, budget: ToyBudget = ToyBudget(), log: Callable[[str], None] | None = None
) -> ToyWeights:
    """The toy world of ``seed``: shipped weights, else the cache under ``data/toy/``, else trained now.

    A folder is used only if its ``training.json`` records this very budget and :data:`RECIPE` (a cache
    trained with other settings or code is retrained, not silently reused).
    """
    wanted = json.loads(json.dumps(asdict(_with_seed(budget, seed))))
    for folder in (SHIPPED_WEIGHTS / f"seed{seed}", CACHE_DIR / f"seed{seed}"):
        if all((folder / name).is_file() for name in FILES):
            info = json.loads((folder / FILES[2]).read_text())
            if info.get("budget") == wanted and info.get("recipe") == RECIPE:
                return ToyWeights(*(folder / name for name in FILES), info)
    return train_toy(CACHE_DIR / f"seed{seed}", seed, budget, log)


def with_toy_weights(profile: Profile, log: Callable[[str], None] | None = None) -> Profile:
    """``profile`` with toy weights filled in (trained on first use): ND CLIP, adapters, WinCLIP's CLIP."""
    weights = toy_weights(profile.seed, log=log)
    nd = {**profile.nd, "clip_checkpoint": str(weights.clip), "adapters": str(weights.adapters)}
    detectors = {
        name: {**settings, "clip_checkpoint": str(weights.clip)} if name.startswith("winclip") else settings
        for name, settings in profile.detectors.items()
    }
    return dataclasses.replace(profile, nd=nd, detectors=detectors)
