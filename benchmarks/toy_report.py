"""The toy world's report: does NAND work when every model is trained here? (issues #8, #22; not a test).

For each seed, runs the ``toy`` profile's units (every detector, all 14 classes, the book's data: synthetic
seed 0, MVTec AD's counts, 64 px) with that seed's toy world through :func:`nandlib.run.run_unit`: the
profile's own world (seed 0 ships with nandlib; other seeds are trained on first use into the user data
folder, :func:`nandlib.toy.train.toy_weights`), or the worlds of ``--world`` (trained by
``nand toy train --out <world>/seed<N>``, for ablations). Seed 0 of the profile's world is the default
book's sweep. Writes into ``--out``:

- ``seed<N>/``: that seed's ``results.csv`` and ``diagnostics.csv`` (every unit's frames, with a ``seed``
  column) and ``run.json`` (its world: architecture, hashes, training time; the machine, the code, the
  minutes); a later call for other seeds or detectors adds or replaces seed folders;
- over every seed folder present: ``groups.csv``, per detector, class and group, Δ and the diagnostics
  (points), mean and sd over seeds, with the ceiling of Δ (:func:`delta_ceiling`); ``goals.csv``, the
  goal lines over the seeds (:func:`nandlib.goals.goal_lines`);
- ``report.json``: the seeds' ``run.json`` records together.

The book's "Toy world" (``reproducing.md``) reads them. Prints the goal lines and the texture/object
averages of APRIL-GAN.

    cd benchmarks
    OMP_WAIT_POLICY=PASSIVE ../.venv/bin/python -u toy_report.py --seeds 0 --threads 2 \\
        --out ../book/data/toy_report
    OMP_WAIT_POLICY=PASSIVE ../.venv/bin/python -u toy_report.py --seeds 1,2 --detectors aprilgan \\
        --threads 2 --out ../book/data/toy_report

(the goal lines for every detector are the issue's on seed 0, the default book's sweep; those of
APRIL-GAN over three seeds).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from _common import machine

from nandlib.checkpoints import file_fingerprint
from nandlib.companion import prepare_data
from nandlib.data import read_class
from nandlib.data.classes import GOOD, TEXTURE_CLASSES
from nandlib.diagnostics import summarize_seeds
from nandlib.goals import goal_lines
from nandlib.profiles import load_profile
from nandlib.provenance import code_commit
from nandlib.run import run_unit
from nandlib.tables import DIAGNOSTIC_SHOWN, with_diagnostics
from nandlib.toy.train import FILES, ToyWeights, read_world, toy_weights, with_toy_world

KEYS = ["detector", "class", "group"]
SHOWN = [*DIAGNOSTIC_SHOWN, "delta_ceiling"]


def world_of(seed: int, world: Path | None) -> ToyWeights:
    """The toy world of ``seed``: ``world/seed<N>`` when given, else the profile's (shipped or trained)."""
    if world is None:
        return toy_weights(seed, log=print)
    folder = world / f"seed{seed}"
    found = read_world(folder)
    if found is None:
        raise SystemExit(f"--world: {folder} lacks one of {FILES}; train it: nand toy train --out {folder}")
    return found


def run_seed(seed: int, world: Path | None, detectors: list[str], classes: list[str], out: Path) -> None:
    """Every unit of one seed into ``out/seed<N>/``: ``results.csv``, ``diagnostics.csv`` (``seed`` column)
    and ``run.json`` (the world, the machine, the code, the minutes), each written when the seed is done."""
    started, host = time.perf_counter(), machine()
    profile = load_profile("toy").model_copy(update={"seed": seed, "classes": classes})
    data = prepare_data(profile)
    weights = world_of(seed, world)
    results, diagnostics = [], []
    with tempfile.TemporaryDirectory(prefix="toy-report-") as units:
        for detector in detectors:
            for class_name in classes:
                config = with_toy_world(
                    profile.unit(class_name, detector, data, units, cache_dir="off"), weights
                )
                results.append(run_unit(config, progress=False))
                diagnostics.append(pd.read_csv(config.outputs.diagnostics(config.label, class_name)))
            minutes = (time.perf_counter() - started) / 60
            print(f"seed {seed}: {detector} done ({minutes:.1f} min)", flush=True)
    record = {
        "world": str(world / f"seed{seed}") if world else "the toy profile's (shipped seed 0, else trained)",
        "model": weights.info.get("budget", {}).get("clip", {}).get("model"),
        "sha256": {f.name: file_fingerprint(f).sha256 for f in (weights.clip, weights.adapters)},
        "training_seconds": weights.info.get("seconds"),
        "training_threads": weights.info.get("threads"),
        "training_commit": weights.info.get("code_commit"),
        "detectors": detectors,
        "machine": host,
        "code_commit": code_commit(),
        "minutes": round((time.perf_counter() - started) / 60, 1),
    }
    folder = out / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    for name, frames in (("results", results), ("diagnostics", diagnostics)):
        pd.concat(frames, ignore_index=True).assign(seed=seed).to_csv(folder / f"{name}.csv", index=False)
    (folder / "run.json").write_text(json.dumps(record, indent=1))


def delta_ceiling(frame: pd.DataFrame, data: Path) -> pd.Series:
    """The most Δ a group could gain: every image of ``g`` scored below all others, the rest untouched.

    The relabelled AUROC then counts each (good, other defect) pair as the base detector does
    (``others_before``) and each (``g``, other defect) pair as won: ``(n_good · others_before + n_g) /
    (n_good + n_g)``, minus ``auroc_before``. Fractions.
    """
    n_good = frame["class"].map(
        {c: sum(s.anomaly_type == GOOD for s in read_class(data, c).test) for c in frame["class"].unique()}
    )
    n_group = frame["n_normal"] - n_good
    ceiling = (n_good * frame["others_before"] + n_group) / frame["n_normal"]
    return ceiling - frame["auroc_before"]


def group_table(results: pd.DataFrame, diagnostics: pd.DataFrame, data: Path) -> pd.DataFrame:
    """Per detector, class and group: Δ, the diagnostics and the ceiling of Δ in points, mean and sd."""
    joined = with_diagnostics(results, diagnostics)
    joined["delta_ceiling"] = delta_ceiling(joined, data)
    joined[SHOWN] = joined[SHOWN] * 100
    table = summarize_seeds([joined[KEYS + SHOWN]], keys=KEYS).round(2)
    table["kind"] = table["class"].map(lambda name: "texture" if name in TEXTURE_CLASSES else "object")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--world", type=Path, default=None, help="folder of trained worlds seed<N>/")
    parser.add_argument("--detectors", default=None, help="comma-separated (default: the profile's)")
    parser.add_argument("--classes", default=None, help="comma-separated (default: the profile's 14)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, required=True, help="output folder (book/data/toy_report)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    profile = load_profile("toy")
    detectors = args.detectors.split(",") if args.detectors else list(profile.detectors)
    classes = args.classes.split(",") if args.classes else list(profile.classes)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(machine(), flush=True)
    for seed in seeds:
        run_seed(seed, args.world, detectors, classes, args.out)
    summarize(args.out, profile.model_copy(update={"classes": classes}))


def summarize(out: Path, profile) -> None:
    """``groups.csv``, ``goals.csv`` and ``report.json`` over every seed run into ``out`` so far."""
    folders = sorted(out.glob("seed*/"), key=lambda f: int(f.name.removeprefix("seed")))
    results = pd.concat([pd.read_csv(f / "results.csv") for f in folders], ignore_index=True)
    diagnostics = pd.concat([pd.read_csv(f / "diagnostics.csv") for f in folders], ignore_index=True)
    groups = group_table(results, diagnostics, prepare_data(profile))
    groups.to_csv(out / "groups.csv", index=False)
    goals = goal_lines(results, diagnostics)
    goals.to_csv(out / "goals.csv", index=False)
    report = {
        "seeds": {f.name.removeprefix("seed"): json.loads((f / "run.json").read_text()) for f in folders},
        "data": "synthetic seed 0, MVTec AD's counts, 64 px (the toy profile's)",
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    pd.set_option("display.width", 250)
    print(goals.to_string(index=False))
    april = groups[groups["detector"] == "aprilgan"]
    print(april.groupby("kind")[[f"{c}_mean" for c in SHOWN]].mean().round(1).to_string())


if __name__ == "__main__":
    main()
