"""TGVIG's Table 3 analogue in the toy world: PatchCore one- and 5-shot with and without generated normals.

Trains (or loads) the toy VQGAN and the toy CLIP, runs :func:`nandlib.tgvig.evaluate.toy_ablation` and writes
``<out>.csv`` (one row per class × shots × seed × ablation row) and ``<out>.json`` (machine, load, settings,
training and generation seconds). The book's chapter ``generated_normals.md`` reads them.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/tgvig_toy.py --out book/data/tgvig_toy
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import torch
from _common import machine

from nandlib.backbones import load_clip
from nandlib.paths import data_home
from nandlib.tgvig.evaluate import toy_ablation
from nandlib.tgvig.integrator import IntegratorSettings
from nandlib.tgvig.toy import ToyVQBudget, toy_vqgan, toy_vqgan_dir, train_toy_vqgan
from nandlib.toy.clip_training import ClipTraining, save_clip, train_clip
from nandlib.toy.train import toy_weights
from nandlib.toy.world import clip_images


def toy_clip(steps: int | None):
    """The profile's ``toy:clip``, or a toy CLIP trained for ``steps`` (cached in the user data folder)."""
    if steps is None:
        return load_clip("nand-toy", checkpoint=toy_weights(0).clip, image_size=64)
    path = data_home() / "tgvig" / f"clip-steps{steps}.pt"
    if not path.is_file():
        backbone, _ = train_clip(clip_images(0, 48), ClipTraining(steps=steps))
        save_clip(backbone, path)
    return load_clip("nand-toy", checkpoint=path, image_size=64)


def figure(class_name: str, vqmodel, settings: IntegratorSettings, path: Path) -> None:
    """Fig. 9 analogue: one original, Eq. 3 draws with σ = 1 and with the estimated variance."""
    import matplotlib.pyplot as plt

    from nandlib.tgvig.evaluate import toy_split
    from nandlib.tgvig.generator import VarianceAwareGenerator
    from nandlib.tgvig.images import augment, augmenter, to_pil, to_tensor

    original = to_tensor(toy_split(class_name, 0, 1)[0])
    rng = torch.Generator().manual_seed(0)
    generator = VarianceAwareGenerator(vqmodel)
    with torch.no_grad():
        stats = generator.statistics(augment(original, settings.n_augmented, augmenter(), rng)[0])
        rows = {
            "original / reconstruction": torch.cat([original, generator.reconstruct(original)]),
            "σ = 1": generator.sample(stats, 4, rng, unit=True),
            "estimated variance": generator.sample(stats, 4, rng),
        }
    fig, axes = plt.subplots(3, 4, figsize=(6, 4.8))
    for ax_row, (label, images) in zip(axes, rows.items(), strict=True):
        ax_row[0].set_title(label, loc="left", fontsize=9)
        for ax, image in zip(ax_row, [*to_pil(images), None, None][:4], strict=True):
            ax.axis("off")
            if image is not None:
                ax.imshow(image)
    fig.suptitle(f"toy {class_name}: toy VQGAN, Eq. 3 draws (no integrator rounds)", fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Output path without suffix.")
    # classes whose WordNet words the toy CLIP knows (hazelnut's it knows none of)
    parser.add_argument("--classes", nargs="+", default=["screw", "bottle", "capsule"])
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 5])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=3, help="L")
    parser.add_argument("--images-per-round", type=int, default=20, help="M (paper: 20)")
    parser.add_argument("--vq-steps", type=int, default=ToyVQBudget().steps)
    parser.add_argument("--n-augmented", type=int, default=8, help="N")
    parser.add_argument(
        "--clip-steps",
        type=int,
        default=None,
        help="Train a shorter toy CLIP (this many steps) instead of the profile's toy:clip",
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    clip = toy_clip(args.clip_steps)
    clip_seconds = time.perf_counter() - start
    budget = ToyVQBudget(steps=args.vq_steps)
    vq_seconds = None
    if not (toy_vqgan_dir(0) / "config.json").is_file():
        model, vq_seconds = train_toy_vqgan(0, budget)
        model.save_pretrained(toy_vqgan_dir(0))
    vqmodel = toy_vqgan(0)

    settings = IntegratorSettings(
        images_per_round=args.images_per_round, rounds=args.rounds, n_augmented=args.n_augmented
    )
    start = time.perf_counter()
    frame = toy_ablation(args.classes, clip, vqmodel, args.shots, args.seeds, settings)
    ablation_seconds = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out.with_suffix(".csv"), index=False)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    info = {
        "what": "TGVIG toy-world ablation: synthetic data, toy CLIP and VQGAN trained here; not the paper's",
        "machine": machine(),
        "commit": commit.strip(),
        "classes": args.classes, "shots": args.shots, "seeds": args.seeds,
        "integrator": settings.model_dump(),
        "vqgan_budget": budget.model_dump(),
        "vqgan_training_s": vq_seconds,
        "toy_clip": f"toy CLIP, {args.clip_steps or 'toy:clip'} steps",
        "toy_clip_s": round(clip_seconds, 1),
        "ablation_s": round(ablation_seconds, 1),
        "detector": "PatchCore, random-initialised ResNet-18 at 64 px, layers 2-3",
    }  # fmt: skip
    args.out.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    figure(args.classes[0], vqmodel, settings, args.out.with_suffix(".png"))
    summary = frame.groupby(["shots", "row"], sort=False)["image_auroc"].agg(["mean", "std"]).round(1)
    print(summary.to_string())
    print(f"ablation {ablation_seconds:.0f} s; VQGAN training {vq_seconds} s")


if __name__ == "__main__":
    main()
