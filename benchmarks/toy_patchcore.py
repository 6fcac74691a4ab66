"""PatchCore in the toy world: the paper's input size and backbone against the toy profile's (issue 17).

Runs PatchCore + NAND units of the ``toy`` profile (its data, ND module and shipped weights) through
:func:`nandlib.run.run_unit`, once with PatchCore's paper settings (:class:`PatchCoreSettings` defaults:
random WideResNet50, layers 2+3, 256 → 224) and once with the toy profile's own PatchCore settings, and
appends one row per setting and class to ``benchmarks/results/toy_patchcore.csv``: image AUROC before and
after NAND (mean over the class's groups, fractions), the unit's wall time and the machine. Rows already in
the file are kept and not rerun (the old setting costs minutes per class on 2 cores). Book:
``reproducing.md``, "PatchCore in the toy world".

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -u benchmarks/toy_patchcore.py --setting toy
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -u benchmarks/toy_patchcore.py --setting paper \\
        --classes bottle,carpet,screw
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
from _common import machine

from nandlib.companion import prepare_data
from nandlib.config import parse_profile
from nandlib.detectors.patchcore.detector import PatchCoreSettings
from nandlib.outputs import atomic_write
from nandlib.profiles import load_profile
from nandlib.run import run_unit

RESULTS = Path(__file__).resolve().parent / "results" / "toy_patchcore.csv"
COLUMNS = [
    "setting", "backbone", "layers", "resize", "crop", "class", "auroc_before", "auroc_after",
    "n_groups", "seconds", "machine",
]  # fmt: skip


def settings(name: str) -> PatchCoreSettings:
    """``paper``: PatchCore's defaults (the toy profile's before issue 17); ``toy``: the toy profile's."""
    toy = load_profile("toy").detectors["patchcore"].settings
    return PatchCoreSettings() if name == "paper" else toy


def run(setting: str, class_name: str, data: Path, out: Path) -> dict:
    """One PatchCore + NAND unit of the toy profile with ``setting``'s PatchCore settings."""
    chosen = settings(setting)
    raw = load_profile("toy").model_dump()
    raw["detectors"]["patchcore"] = {"kind": "patchcore", **chosen.model_dump()}
    config = parse_profile(raw).unit(class_name, "patchcore", data, out, cache_dir="off")
    started = time.perf_counter()
    frame = run_unit(config, progress=False)
    return {
        "setting": setting,
        "backbone": chosen.backbone,
        "layers": "+".join(chosen.layers),
        "resize": chosen.resize,
        "crop": chosen.crop,
        "class": class_name,
        "auroc_before": round(frame["auroc_before"].mean(), 4),
        "auroc_after": round(frame["auroc_after"].mean(), 4),
        "n_groups": len(frame),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=["paper", "toy"], required=True)
    parser.add_argument("--classes", default=None, help="comma-separated (default: the profile's 14)")
    args = parser.parse_args()
    profile = load_profile("toy")
    classes = args.classes.split(",") if args.classes else profile.classes
    data = prepare_data(profile)
    print(machine())
    for class_name in classes:
        done = pd.read_csv(RESULTS) if RESULTS.is_file() else pd.DataFrame(columns=COLUMNS)
        if ((done["setting"] == args.setting) & (done["class"] == class_name)).any():
            continue
        with tempfile.TemporaryDirectory() as out:
            row = run(args.setting, class_name, data, Path(out))
        print(row)
        frame = pd.concat([done, pd.DataFrame([row])], ignore_index=True)[COLUMNS]
        RESULTS.parent.mkdir(exist_ok=True)
        atomic_write(RESULTS, lambda tmp, frame=frame: frame.to_csv(tmp, index=False))


if __name__ == "__main__":
    main()
