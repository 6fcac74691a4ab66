"""TGVIG's Table 3 and Fig. 4 analogues in the toy world: PatchCore with and without generated normals.

On the shipped toy CLIP (``toy:clip``, seed 0) and the shipped toy VQGAN (:mod:`nandlib.tgvig.toy`), runs
:func:`nandlib.tgvig.evaluate.toy_ablation` (one-, 5- and full-shot, every ablation row) and
:func:`nandlib.tgvig.evaluate.saturation` (one-shot, number of generated images) and writes
``<out>.csv`` (ablation, one row per class × shots × seed × row), ``<out>_saturation.csv``, ``<out>.json``
(machine and load, commit, weights, settings, reconstruction error, timings) and ``<out>.png`` (Fig. 7
analogue). The book's chapter ``generated_normals.md`` reads them.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/tgvig_toy.py --out book/data/tgvig_toy
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _common import machine

from nandlib.backbones import load_clip
from nandlib.checkpoints import provenance
from nandlib.provenance import code_commit
from nandlib.tgvig.evaluate import FULL_SHOT, ROWS, TGVIG_ROW, saturation, toy_ablation, toy_split
from nandlib.tgvig.generator import load_vqmodel
from nandlib.tgvig.images import to_tensor
from nandlib.tgvig.integrator import IntegratorSettings
from nandlib.tgvig.toy import auxiliary_images, describe, reconstruction_error, toy_vqgan_folder
from nandlib.toy.train import toy_weights


def figure(class_name: str, examples: dict, path: Path) -> None:
    """Fig. 7 analogue: originals, generated with σ = 1 and with the estimated variance, prompt scores."""
    import matplotlib.pyplot as plt

    from nandlib.tgvig.images import to_pil

    original = toy_split(class_name, 0, 1).train
    unit, estimated = examples[class_name, "+ keyword-to-prompt, σ = 1"], examples[class_name, TGVIG_ROW]
    rows = {"original": original, "σ = 1": unit.images[:5], "estimated variance": estimated.images[:5]}
    fig = plt.figure(figsize=(9, 4.4))
    grid = fig.add_gridspec(3, 7, width_ratios=[1] * 5 + [0.1, 3.2])
    for r, (label, images) in enumerate(rows.items()):
        for c in range(5):
            ax = fig.add_subplot(grid[r, c])
            ax.axis("off")
            if c < len(images):
                ax.imshow(images[c] if isinstance(images[c], type(original[0])) else to_pil(images[c]))
            if c == 0:
                ax.set_title(label, loc="left", fontsize=9)
    choice = estimated.choice
    order = sorted(range(len(choice.candidates)), key=lambda i: choice.cosine[i])[-10:]
    ax = fig.add_subplot(grid[:, 6])
    colours = ["tab:red" if choice.candidates[i] == choice.prompt else
               "tab:blue" if choice.kept[i] else "tab:grey" for i in order]  # fmt: skip
    low = min(choice.cosine[i] for i in order) - 0.05
    ax.barh(range(len(order)), [choice.cosine[i] - low for i in order], left=low, color=colours, alpha=0.5)
    for y, i in enumerate(order):  # the prompt inside its bar
        ax.text(low + 0.005, y, choice.candidates[i], va="center", fontsize=7)
    ax.set_yticks([])
    ax.set_xlabel("cos(f(I°), G(S_t)) (Eq. 1)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_xlim(low, max(choice.cosine) + 0.01)
    ax.set_title("prompt scores (red: P; grey: filtered out)", fontsize=8)
    fig.suptitle(f"toy {class_name}, one-shot, seed 0: the images each row added (first 5 of the kept set)",
                 fontsize=9)  # fmt: skip
    fig.savefig(path, dpi=100, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Output path without suffix.")
    # classes whose WordNet words the toy CLIP knows (hazelnut's it knows none of)
    parser.add_argument("--classes", nargs="+", default=["bottle", "capsule"])
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 5, FULL_SHOT])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--counts", nargs="+", type=int, default=[0, 5, 10, 20, 40])
    parser.add_argument("--rounds", type=int, default=3, help="L")
    parser.add_argument("--images-per-round", type=int, default=20, help="M (paper: 20)")
    parser.add_argument("--n-augmented", type=int, default=8, help="N")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # the code that runs (its outputs, written below, would make the checkout dirty)
    timings, load_before, commit = {}, machine(), code_commit()

    weights = toy_weights(0)
    clip = load_clip("nand-toy", checkpoint=weights.clip, image_size=64)
    start = time.perf_counter()
    folder = toy_vqgan_folder(0)
    timings["vqgan_load_or_train_s"] = round(time.perf_counter() - start, 1)
    vqmodel = load_vqmodel(folder).eval()
    vq_record = json.loads((folder / "training.json").read_text())
    reconstruction = {"auxiliary, held out (seed 1)": reconstruction_error(vqmodel, auxiliary_images(1, 8))}
    for class_name in args.classes:
        good = to_tensor(toy_split(class_name, 0, 20).train)
        reconstruction[f"{class_name}, good"] = reconstruction_error(vqmodel, good)

    settings = IntegratorSettings(
        images_per_round=args.images_per_round, rounds=args.rounds, n_augmented=args.n_augmented
    )
    start = time.perf_counter()
    frame, examples = toy_ablation(args.classes, clip, vqmodel, args.shots, args.seeds, settings)
    timings["ablation_s"] = round(time.perf_counter() - start, 1)
    timings["generation_s"] = round(frame["generation_s"].sum(), 1)
    start = time.perf_counter()
    curve = saturation(args.classes, clip, vqmodel, args.counts, args.seeds, settings)
    timings["saturation_s"] = round(time.perf_counter() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out.with_suffix(".csv"), index=False)
    curve.to_csv(args.out.with_name(args.out.name + "_saturation.csv"), index=False)
    first = examples[args.classes[0], TGVIG_ROW].choice
    info = {
        "what": "TGVIG toy-world ablation: synthetic images, the toy world's CLIP and VQGAN; not the paper's",
        "machine_at_start": load_before,
        "machine_at_end": machine(),
        "commit": commit,
        "classes": args.classes, "shots": args.shots, "full_shot": FULL_SHOT, "seeds": args.seeds,
        "counts": args.counts, "rows": list(ROWS),
        "test_set": "per class and seed: 20 good, 20 defective 64 px images (evaluate.toy_split)",
        "integrator": settings.model_dump(),
        "toy_clip": provenance(weights.clip),
        "toy_vqgan": describe(folder),
        "vqgan_training": {key: vq_record[key] for key in
                           ("budget", "seconds", "threads", "torch", "code_commit", "recipe")},
        "reconstruction": reconstruction,
        "figure_prompt": {"class": args.classes[0], "prompt": first.prompt,
                          "candidates": len(first.candidates), "kept": sum(first.kept)},
        "timings": timings,
        "detector": "PatchCore, random-initialised ResNet-18 at 64 px, layers 2-3, seed = run seed",
    }  # fmt: skip
    args.out.with_suffix(".json").write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n")
    figure(args.classes[0], examples, args.out.with_suffix(".png"))
    print(frame.groupby(["shots", "row"], sort=False)[["image_auroc", "pixel_auroc"]].agg(["mean", "std"]))
    print(curve.groupby("generated")[["image_auroc", "pixel_auroc"]].agg(["mean", "std"]))
    print(timings)


if __name__ == "__main__":
    main()
