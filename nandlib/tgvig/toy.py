"""The toy world's VQGAN: :data:`~nandlib.tgvig.generator.TOY_CONFIG` pretrained on its auxiliary classes.

The auxiliary classes (:data:`nandlib.toy.world.AUX_CLASSES`) play ImageNet's part: the paper starts its
generator from an ImageNet VQGAN (§4.1.2), the toy world from one trained here on images of classes that are
not evaluated. Seed 0's is shipped with nandlib under ``shipped/seed0/`` (``save_pretrained``'s files and
``training.json``), checked against ``shipped/manifest.json`` (SHA-256 and size of each file, the training
record) before use; other seeds, budgets or recipes are trained on first use into
``<user data folder>/tgvig/vqgan-seed<SEED>``. Book: ``generated_normals.md``, "Variance-aware image
generator".

``python -m nandlib.tgvig.toy --seed 0`` retrains into the user data folder; maintainers add ``--ship`` to
copy the result into the package source and rewrite the manifest (after a recipe change).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import PositiveFloat, PositiveInt
from tqdm.auto import tqdm

from nandlib.checkpoints import file_fingerprint
from nandlib.config import Settings
from nandlib.paths import data_home, writable_folder
from nandlib.provenance import code_commit
from nandlib.tgvig.generator import TOY_CONFIG, build_vqmodel, load_vqmodel
from nandlib.toy.shipping import (
    MANIFEST_NAME,
    check_files,
    manifest_entry,
    read_manifest,
    shipped_or_trained,
)

# Bumped whenever the training code changes what a budget trains (a shipped or saved VQGAN of another
# recipe is not used).
RECIPE = 1
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
WEIGHTS = "diffusion_pytorch_model.safetensors"
FILES = ("config.json", WEIGHTS, "training.json")


class ToyVQBudget(Settings):
    """How the toy VQGAN is trained: Adam on L1 reconstruction + codebook/commitment loss.

    Attributes:
        steps: Adam steps.
        batch_size: Images per step, drawn with replacement.
        per_class: Images per auxiliary class (half good, half defective).
        lr: Adam's learning rate.
    """

    steps: PositiveInt = 300
    batch_size: PositiveInt = 16
    per_class: PositiveInt = 64
    lr: PositiveFloat = 2e-3


def retrain_command(seed: int) -> str:
    """The command that retrains the toy VQGAN of ``seed`` into the user data folder."""
    return f"`python -m nandlib.tgvig.toy --seed {seed}`"


def toy_vqgan_dir(seed: int = 0) -> Path:
    """Where the toy VQGAN of ``seed`` is trained into (the user data folder)."""
    return data_home() / "tgvig" / f"vqgan-seed{seed}"


def auxiliary_images(seed: int, per_class: int) -> torch.Tensor:
    """The auxiliary classes' images (good and defective), ``[N, 3, 64, 64]`` in [-1, 1]."""
    from nandlib.toy.world import AUX_CLASSES, clip_images

    array = torch.from_numpy(clip_images(seed, per_class, 64, AUX_CLASSES).images)
    return array.permute(0, 3, 1, 2).float() / 127.5 - 1


def init_codebook(model, images: torch.Tensor, generator: torch.Generator) -> None:
    """Set the codebook to encoder outputs of ``images`` at random positions (one per code).

    diffusers initialises the codebook uniformly in ``±1/n_codes``, far from the encoder's outputs: every
    latent then maps to the same few codes and the decoder learns a flat image. Starting from encoder
    outputs (as k-means initialisations of VQ codebooks do) keeps the codes in use.
    """
    with torch.no_grad():
        latents = model.encode(images).latents
        vectors = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
        codebook = model.quantize.embedding.weight
        chosen = torch.randperm(len(vectors), generator=generator)[: len(codebook)]
        codebook.copy_(vectors[chosen])


def train_toy_vqgan(seed: int = 0, budget: ToyVQBudget | None = None, progress: bool = True):
    """Train :data:`TOY_CONFIG` from a seeded random init on :func:`auxiliary_images`.

    Returns:
        ``(model, record)``: the ``VQModel`` in eval mode and its training record (recipe, seed, budget,
        seconds, machine, load average at the end, threads, torch and diffusers versions, code commit, loss
        every 10 % of the steps).
    """
    import diffusers

    budget = budget or ToyVQBudget()
    start = time.perf_counter()
    images = auxiliary_images(seed, budget.per_class)
    model = build_vqmodel(TOY_CONFIG, seed).train()
    rng = torch.Generator().manual_seed(seed)
    init_codebook(model, images[torch.randperm(len(images), generator=rng)[:64]], rng)
    optimiser = torch.optim.Adam(model.parameters(), lr=budget.lr)
    losses, every = [], max(1, budget.steps // 10)
    for step in tqdm(range(budget.steps), desc="toy VQGAN", disable=not progress):
        batch = images[torch.randint(len(images), (budget.batch_size,), generator=rng)]
        output = model(batch)
        loss = F.l1_loss(output.sample, batch) + output.commit_loss.mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if (step + 1) % every == 0:
            losses.append(round(float(loss.detach()), 4))
    record = {
        "recipe": RECIPE,
        "seed": seed,
        "budget": budget.model_dump(),
        "seconds": round(time.perf_counter() - start, 1),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.node()}",
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "code_commit": code_commit(),
        "loss": losses,
    }
    return model.eval(), record


def save_toy_vqgan(model, record: dict, folder: Path) -> Path:
    """``model.save_pretrained(folder)`` and the training record as ``folder/training.json``."""
    model.save_pretrained(writable_folder(folder, "toy VQGAN folder"))
    (folder / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    return folder


def _manifest() -> dict:
    return read_manifest(SHIPPED_DIR)


def _matches(record: dict, seed: int, budget: ToyVQBudget) -> bool:
    return (record.get("recipe"), record.get("seed"), record.get("budget")) == (
        RECIPE,
        seed,
        budget.model_dump(),
    )


def _trained(seed: int, budget: ToyVQBudget) -> Path | None:
    """The user data folder's VQGAN of ``seed`` if it was trained with ``budget`` by this recipe."""
    folder = toy_vqgan_dir(seed)
    if all((folder / name).is_file() for name in FILES):
        if _matches(json.loads((folder / "training.json").read_text()), seed, budget):
            return folder
    return None


def toy_vqgan_folder(seed: int = 0, budget: ToyVQBudget | None = None, progress: bool = True) -> Path:
    """The folder of the toy VQGAN of ``seed``: the shipped one where its record matches ``budget`` and
    :data:`RECIPE` (files checked against the manifest), else the user data folder's, trained on first use.

    Raises:
        ShippedWeightsError: A shipped file is missing or corrupt and the user data folder holds no matching
            VQGAN; the message names the file and :func:`retrain_command`.
    """
    budget = budget or ToyVQBudget()
    entry = _manifest().get(f"seed{seed}")

    def shipped() -> Path:
        check_files(SHIPPED_DIR / f"seed{seed}", entry["files"], f"it with {retrain_command(seed)}")
        return SHIPPED_DIR / f"seed{seed}"

    found = shipped_or_trained(
        shipped if entry is not None and _matches(entry["record"], seed, budget) else None,
        lambda: _trained(seed, budget),
        lambda folder: folder,
    )
    if found is not None:
        return found
    model, record = train_toy_vqgan(seed, budget, progress)
    return save_toy_vqgan(model, record, toy_vqgan_dir(seed))


def toy_vqgan(seed: int = 0, budget: ToyVQBudget | None = None, progress: bool = True):
    """The toy VQGAN of ``seed`` (:func:`toy_vqgan_folder`) as a ``diffusers.VQModel`` in eval mode."""
    return load_vqmodel(toy_vqgan_folder(seed, budget, progress)).eval()


def describe(folder: Path) -> str:
    """How provenance names a toy VQGAN: ``toy VQGAN (seed 0, shipped, sha256 0123456789ab)``."""
    record = json.loads((folder / "training.json").read_text())
    origin = "shipped" if folder.resolve().parent == SHIPPED_DIR.resolve() else f"trained in {folder}"
    digest = file_fingerprint(folder / WEIGHTS).sha256[:12]
    return f"toy VQGAN (seed {record['seed']}, {origin}, sha256 {digest})"


@torch.no_grad()
def reconstruction_error(model, images: torch.Tensor) -> dict[str, float]:
    """Mean absolute error (images in [-1, 1]) and PSNR (dB, images in [0, 1]) of Eq. 2's ``p^o(E(I))``."""
    from nandlib.tgvig.generator import VarianceAwareGenerator

    made = VarianceAwareGenerator(model).reconstruct(images).clamp(-1, 1)
    mse = float(((made - images) / 2).pow(2).mean())
    return {"l1": round(float((made - images).abs().mean()), 4), "psnr": round(10 * math.log10(1 / mse), 2)}


def ship(seed: int) -> Path:
    """Copy the user data folder's VQGAN of ``seed`` into the package source, record it in the manifest.

    Returns:
        The manifest's path.

    Raises:
        FileNotFoundError: No VQGAN of ``seed`` trained with the default budget by this recipe.
    """
    trained = _trained(seed, ToyVQBudget())
    if trained is None:
        raise FileNotFoundError(f"no toy VQGAN of seed {seed} to ship: run {retrain_command(seed)} first")
    folder = SHIPPED_DIR / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(trained / name, folder / name)
    record = json.loads((folder / "training.json").read_text())
    manifest = _manifest()
    manifest[f"seed{seed}"] = manifest_entry(folder, FILES, {k: v for k, v in record.items() if k != "loss"})
    path = SHIPPED_DIR / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Train the toy VQGAN into the user data folder.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ship", action="store_true", help="then copy it into the package (maintainers)")
    arguments = parser.parse_args()
    made, made_record = train_toy_vqgan(arguments.seed)
    print(save_toy_vqgan(made, made_record, toy_vqgan_dir(arguments.seed)), f"{made_record['seconds']} s")
    if arguments.ship:
        print(ship(arguments.seed))
