"""Examples vs text on the toy world (issue 20; not a test): every route, several draws, and A2N.

For each class, trains (or loads) the toy world of the ``toy`` profile (seed 0) and runs protocol (a) of
:mod:`nandlib.examples` with PatchCore (all example patches join, and the continued-coreset variant) and
APRIL-GAN: NAND (text), the example route with k = 1 and 5, text + examples and visual ND (our addition),
``--draws`` seeded draws, the drawn images removed from evaluation in every row. Then Saito et al.'s A2N
split (:mod:`nandlib.a2n`) with PatchCore: retrain (refitted on train + the moved half, the upper bound),
the moved half as examples, and NAND (text), with S-AUROC. Writes ``examples.csv``, ``a2n.csv``,
``summary.csv``, ``figure.npz`` (one image's maps under each route) and ``provenance.json`` to ``--out``
and prints the summary. Book: ``examples_vs_text.ipynb``.

PatchCore here is a random ResNet-18 at 64 px (layers 2 and 3), not the profile's WideResNet50 at 224 px:
a size this shared CPU can run for every draw.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -u benchmarks/examples_report.py --threads 2 \\
        --classes carpet,grid,leather,bottle,hazelnut,screw --draws 3 --out book/data/examples_vs_text
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _common import machine
from toy_report import evaluation_data, kind_of

from nandlib.a2n import a2n_rows, a2n_split
from nandlib.cache import cache_from_setting
from nandlib.data import anomaly_groups, read_class
from nandlib.evaluation import ClassEvaluation, LazyImages
from nandlib.examples import ExampleProtocol
from nandlib.geometry import crop_image
from nandlib.nand import NANDDetector
from nandlib.paths import toy_dir
from nandlib.profiles import load_profile
from nandlib.run import build_detector, build_nd
from nandlib.toy.train import resolve_toy_weights

PATCHCORE = {"kind": "patchcore", "backbone": "resnet18", "resize": 64, "crop": 64}
VARIANTS = {  # label -> (profile detector, settings override, add_normal_examples options)
    "patchcore": ("patchcore", PATCHCORE, {}),
    "patchcore-coreset": ("patchcore", PATCHCORE, {"coreset": True}),
    "aprilgan": ("aprilgan", None, {}),
    "winclip-1": ("winclip-1", None, {}),
}
SHOWN = ["delta", "others_change", "g_vs_good_after", "sup_specificity"]


def build(class_name: str, variant: str, data: Path, cache_dir: Path):
    """The unit's fitted detector and ND module for one variant (toy profile, toy weights resolved)."""
    key, settings, _ = VARIANTS[variant]
    unit = load_profile("toy").unit(class_name, key, data, toy_dir() / "examples-report", cache_dir="off")
    if settings is not None:
        unit = unit.model_validate({**unit.model_dump(), "detector": settings})
    cfg = resolve_toy_weights(unit, log=print)
    torch.manual_seed(cfg.seed)
    cache = cache_from_setting(str(cache_dir))
    nd = build_nd(cfg, cache)
    detector = build_detector(cfg, nd, cache)
    return detector.fit(LazyImages(read_class(data, class_name).train)), nd, cfg


def figure_arrays(protocol: ExampleProtocol, group: str) -> dict[str, np.ndarray]:
    """One evaluated image of ``group`` (draw 0) under every route: image, mask, maps (float16)."""
    drawn, keep, routes = protocol.route_maps(group, 0)
    position = next(
        i for i, index in enumerate(keep) if protocol.types[index] in protocol.evaluation.groups[group]
    )
    sample = protocol.data.test[keep[position]]
    image = sample.image()
    geometry = protocol.evaluation.detector.geometry
    names = [f"{route} k={k}" if k else route for route, k in routes]
    return {
        "image": crop_image(image, geometry.region(*image.size)),
        "mask": protocol.evaluation.masks[keep[position]].numpy(),
        "routes": np.array(names),
        "maps": np.stack([maps[position].numpy() for maps, _ in routes.values()]).astype(np.float16),
        "title": np.array(f"{protocol.data.name}/{group}: {sample.anomaly_type}/{sample.path.name}"),
        "examples": np.array([f"{protocol.types[i]}/{protocol.data.test[i].path.name}" for i in drawn]),
    }


def a2n_class(class_name: str, data: Path, cache_dir: Path) -> pd.DataFrame:
    """A2N rows of PatchCore for every group: retrain, the moved half as examples, NAND (text)."""
    before, nd, cfg = build(class_name, "patchcore", data, cache_dir)
    classes = read_class(data, class_name)
    frames = []
    for group, members in anomaly_groups(class_name).items():
        split = a2n_split(classes, members)
        retrain = build(class_name, "patchcore", data, cache_dir)[0]
        retrain.fit(LazyImages([*classes.train, *split.moved]))
        examples = copy.copy(before).add_normal_examples([s.image() for s in split.moved])
        text = NANDDetector(before, nd, [nd.normality(group=group)])
        routes = {"retrain": retrain, "examples": examples, "text": text}
        frames.append(a2n_rows(classes, group, before, routes, batch=cfg.batch_size))
    return pd.concat(frames, ignore_index=True)


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per detector, route and k: texture and object means of :data:`SHOWN` (points), mean ± sd over draws.

    Each draw's value is the mean over the classes and groups of that kind; the sd is over draws.
    """
    frame = frame.assign(
        kind=frame["class"].map(kind_of),
        delta=100 * (frame["auroc_after"] - frame["auroc_before"]),
        others_change=100 * (frame["others_after"] - frame["others_before"]),
        g_vs_good_after=100 * frame["g_vs_good_after"],
        sup_specificity=100 * frame["sup_specificity"],
    )
    keys = ["detector", "route", "k", "kind"]
    per_draw = frame.groupby([*keys, "draw"], sort=False)[SHOWN].mean().reset_index()
    stats = per_draw.groupby(keys, sort=False)[SHOWN].agg(["mean", "std"])
    stats.columns = [f"{name}_{stat}" for name, stat in stats.columns]
    return stats.reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", default="carpet,grid,leather,bottle,hazelnut,screw")
    parser.add_argument(
        "--variants", default="patchcore,patchcore-coreset,aprilgan", help=f"of {list(VARIANTS)}"
    )
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--figure", default="carpet/thread", help="class/group of the figure")
    parser.add_argument("--no-a2n", action="store_true", help="skip the A2N part")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="default: <user data>/toy/examples-report")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or toy_dir() / "examples-report"
    out.mkdir(parents=True, exist_ok=True)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    figure_class, figure_group = args.figure.split("/")
    started = time.perf_counter()
    print(machine())
    data = evaluation_data(toy_dir() / "eval-synthetic-64", classes)
    cache_dir = toy_dir() / "examples-report" / "cache"
    frames, seconds = [], {}
    for variant in args.variants.split(","):
        for class_name in classes:
            tick = time.perf_counter()
            detector, nd, cfg = build(class_name, variant, data, cache_dir)
            evaluation = ClassEvaluation(
                detector, nd, read_class(data, class_name), label=variant, batch_size=cfg.batch_size
            )
            protocol = ExampleProtocol(
                evaluation, ks=(1, 5), draws=args.draws, seed=cfg.seed,
                example_options=VARIANTS[variant][2], batch_size=cfg.batch_size,
            )  # fmt: skip
            frames.append(protocol.results())
            if class_name == figure_class and variant == "patchcore":
                arrays = figure_arrays(protocol, figure_group)
                np.savez_compressed(out / "figure.npz", **arrays)
            seconds[f"{variant}/{class_name}"] = round(time.perf_counter() - tick, 1)
            print(f"{variant}/{class_name}: {seconds[f'{variant}/{class_name}']} s", flush=True)
    frame = pd.concat(frames, ignore_index=True)
    frame.to_csv(out / "examples.csv", index=False)
    table = summary(frame)
    table.to_csv(out / "summary.csv", index=False)
    pd.set_option("display.width", 250)
    print(f"\nExamples vs text on the toy world (points; {args.draws} draws, seed {cfg.seed})")
    print(table.round(1).to_string(index=False))
    if not args.no_a2n:
        a2n = pd.concat([a2n_class(c, data, cache_dir) for c in classes], ignore_index=True)
        a2n.to_csv(out / "a2n.csv", index=False)
        print("\nA2N (PatchCore; fractions)")
        print(a2n.groupby("route")[["auroc_before", "auroc_after", "s_auroc"]].mean().round(3).to_string())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    record = {
        "what": "toy world (generated data, models trained here); not the paper's results",
        "machine": machine(), "commit": commit.strip(), "seed": cfg.seed, "classes": classes,
        "draws": args.draws, "ks": [1, 5], "variants": {v: VARIANTS[v][1:] for v in args.variants.split(",")},
        "weights": {"nd_clip": nd.aprilgan.backbone.weights, "nd_adapters": nd.aprilgan.adapters.weights},
        "seconds": seconds, "total_seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    (out / "provenance.json").write_text(json.dumps(record, indent=1, default=str))


if __name__ == "__main__":
    main()
