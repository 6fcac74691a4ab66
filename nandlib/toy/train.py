"""``nand toy train``: build the toy world and train everything in it (book: ``reproducing.md``, "Toy world").

Steps: (1) caption-free images of every class for CLIP (captions are drawn per step), (2) the toy CLIP
(:mod:`nandlib.toy.clip_training`), (3) the auxiliary dataset in MVTec AD's layout, (4) APRIL-GAN's linear
layers on it with the authors' losses, started from CLIP's own patch projection
(:mod:`nandlib.training.adapters`), optionally with our normality loss.
Outputs: ``clip.pt`` (open_clip state dict of ``nand-toy``), ``adapters.pth`` (authors' format) and
``training.json`` (recipe, budget, seed, losses, seconds, threads, torch version, code commit), under the
user data folder (:func:`nandlib.paths.toy_dir`). Seed 0's world ships with nandlib
(:mod:`nandlib.toy.shipping`). A profile names them ``toy:clip`` and ``toy:adapters``
(:func:`resolve_toy_weights`).
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
from typing import Any

import torch

from nandlib.backbones import load_clip
from nandlib.config import ConfigError, Settings
from nandlib.paths import toy_dir, writable_folder
from nandlib.provenance import code_commit
from nandlib.toy.clip_training import ClipTraining, save_clip, train_clip
from nandlib.toy.shipping import REFERENCES, shipped_or_trained, shipped_record, verified_files
from nandlib.toy.world import DEFAULT_SIZE, clip_images, defect_phrases, write_aux_dataset
from nandlib.training.adapters import AdapterTraining, train_adapters

REFERENCE_PREFIX = "toy:"
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
            VisA, see :func:`nandlib.training.adapters.init_from_projection`), with our normality loss
            at weight 1 (``normality_weight``; 0 is the official recipe): it makes NAND's ``A_sup``
            specific to the named defect on the object classes (``benchmarks/README.md``, "Toy world").
        aux_good: Good images per auxiliary class (test split).
        aux_per_type: Defect images per auxiliary type.
    """

    clip: ClipTraining = ClipTraining()
    images_per_class: int = 96
    adapters: AdapterTraining = AdapterTraining(epochs=3, init="projection", normality_weight=1.0)
    aux_good: int = 24
    aux_per_type: int = 8


@dataclass(frozen=True)
class ToyWeights:
    """Paths of a trained toy world and its training record."""

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
    backbone = load_clip(budget.clip.model, checkpoint=clip_path)
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
        "torch": torch.__version__,
        "code_commit": code_commit(),
    }
    report = out / "training.json"
    report.write_text(json.dumps(info, indent=1))
    say(f"toy world trained in {info['seconds']['total']:.0f} s -> {out}")
    return ToyWeights(clip_path, adapters_path, report, info)


def _matches(record: dict, budget: ToyBudget, seed: int) -> bool:
    """Whether a training record is of this code's :data:`RECIPE` and of ``budget`` with ``seed``."""
    wanted = json.loads(json.dumps(asdict(_with_seed(budget, seed))))
    return record.get("recipe") == RECIPE and record.get("budget") == wanted


def read_world(folder: Path) -> ToyWeights | None:
    """The world trained into ``folder`` (its :data:`FILES`, with its record), ``None`` if one is missing."""
    if not all((folder / name).is_file() for name in FILES):
        return None
    return ToyWeights(*(folder / name for name in FILES), json.loads((folder / FILES[2]).read_text()))


def _trained_world(seed: int, budget: ToyBudget) -> ToyWeights | None:
    """The world of ``seed`` trained earlier into the user data folder with ``budget`` by this recipe."""
    world = read_world(toy_dir() / f"seed{seed}")
    return world if world is not None and _matches(world.info, budget, seed) else None


def toy_weights(
    seed: int = 0, budget: ToyBudget = ToyBudget(), log: Callable[[str], None] | None = None
) -> ToyWeights:
    """The toy world of ``seed``: the shipped one where it was trained with this budget and
    :data:`RECIPE` (seed 0, :mod:`nandlib.toy.shipping`), else the user data folder's, trained there on
    first use.

    A user data folder's world is used only if its ``training.json`` records this very budget and
    :data:`RECIPE` (a world trained with other settings or code is retrained, not silently reused). When a
    shipped file is missing or corrupt, a matching world in the user data folder (e.g. from
    ``nand toy train --seed 0``) is used instead, with a warning naming the file.

    Raises:
        ShippedWeightsError: A shipped file is missing or corrupt and the user data folder holds no
            matching world; the message names the file and the command that retrains.
        PermissionError: Training is needed and the user data folder is not writable (named).
    """
    record = shipped_record(seed)

    def shipped() -> ToyWeights:
        files = verified_files(seed)
        return ToyWeights(*(files[name] for name in FILES), record)

    found = shipped_or_trained(
        shipped if record is not None and _matches(record, budget, seed) else None,
        lambda: _trained_world(seed, budget),
        lambda world: world.clip.parent,
    )
    if found is not None:
        return found
    writable_folder(toy_dir(), "toy world folder (user data folder)")
    return train_toy(toy_dir() / f"seed{seed}", seed, budget, log)


def _references(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set().union(*(_references(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(_references(item) for item in value))
    return {value} if isinstance(value, str) and value.startswith(REFERENCE_PREFIX) else set()


def _known_references(data: dict) -> set[str]:
    """The ``toy:`` references of a config's data.

    Raises:
        ConfigError: A reference other than ``toy:clip`` and ``toy:adapters``.
    """
    found = _references(data)
    unknown = sorted(found - set(REFERENCES))
    if unknown:
        raise ConfigError(f"unknown toy weights {unknown}: use toy:clip or toy:adapters")
    return found


def _replace(value: Any, files: dict[str, str], model: str) -> Any:
    if isinstance(value, dict):
        if value.get("checkpoint") == "toy:clip":  # a CLIP's settings: the world's architecture too
            value = {**value, "model": model}
        return {key: _replace(item, files, model) for key, item in value.items()}
    if isinstance(value, list):
        return [_replace(item, files, model) for item in value]
    return files.get(value, value) if isinstance(value, str) else value


def with_toy_world(config: Settings, weights: ToyWeights) -> Settings:
    """``config`` with its ``toy:clip`` and ``toy:adapters`` values replaced by the files of ``weights``,
    and the model of each ``toy:clip`` CLIP by the architecture the world was trained as (its record's
    ``budget.clip.model``).

    Raises:
        ConfigError: A ``toy:`` reference other than ``toy:clip`` and ``toy:adapters``.
    """
    data = config.model_dump()
    _known_references(data)
    files = {"toy:clip": str(weights.clip), "toy:adapters": str(weights.adapters)}
    model = weights.info.get("budget", {}).get("clip", {}).get("model", ClipTraining().model)
    return type(config).model_validate(_replace(data, files, model))


def resolve_toy_weights(config: Settings, log: Callable[[str], None] | None = None) -> Settings:
    """A profile or unit config with its ``toy:clip`` and ``toy:adapters`` values replaced by the files of
    the toy world of the config's seed (:func:`with_toy_world`).

    That world is the shipped one or trained on first use (:func:`toy_weights`); provenance records name
    its files ``toy:clip (seed 0, shipped, sha256 …)``, not by their path
    (:func:`nandlib.toy.shipping.toy_reference`). A config without such references is returned as it is.

    Raises:
        ConfigError: A ``toy:`` reference other than ``toy:clip`` and ``toy:adapters``.
    """
    if not _known_references(config.model_dump()):
        return config
    return with_toy_world(config, toy_weights(config.seed, log=log))
