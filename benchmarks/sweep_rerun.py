"""A rerun of a finished sweep with nothing changed costs seconds (issue 17, item 3), fingerprints included.

The offline profile's sweep (14 classes x 5 detectors) over a generated dataset is marked finished by a
stand-in engine that writes each unit's results frame and fingerprint as a unit does, without running
notebooks. Then, timed:

1. ``run_sweep`` again in this process, its memo of file hashes cleared: every unit's fingerprint
   computed (each data file hashed once), every unit skipped;
2. ``nand sweep`` as a new process (imports included), as a user reruns it;
3. one image of one class changed: the units that are stale (that class's, and only those).

    .venv/bin/python benchmarks/sweep_rerun.py [--scale small|paper] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from _common import machine, timed

from nandlib.checkpoints import _FINGERPRINTS
from nandlib.config import UnitConfig
from nandlib.data import generate_dataset
from nandlib.engines import Outcome
from nandlib.outputs import atomic_write
from nandlib.profiles import load_profile
from nandlib.sweep import run_sweep


class FinishingEngine:
    """Marks units finished as a unit would (results frame, then fingerprint), running nothing."""

    def run(self, units):
        for key, task in units.items():
            unit = UnitConfig.model_validate_json(task.config)
            layout, label, name = unit.outputs, unit.label, unit.class_name
            atomic_write(layout.results(label, name), lambda p: p.write_text("class,group\n"))  # noqa: B023
            atomic_write(layout.fingerprint(label, name), lambda p: p.write_text(task.fingerprint))  # noqa: B023
            yield Outcome(key)

    def cancel(self):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="small", choices=["small", "paper"])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "nand-bench-sweep-rerun")
    args = parser.parse_args()
    print(machine())
    profile = load_profile("offline")
    data, out = args.work / f"data-{args.scale}", args.work / f"out-{args.scale}"
    if not data.is_dir():
        generate_dataset(data, profile.classes, seed=0, scale=args.scale, size=128)
    files = [p for p in data.rglob("*") if p.is_file()]
    megabytes = sum(p.stat().st_size for p in files) / 2**20
    first = run_sweep(profile, data, out, engine=FinishingEngine())
    print(f"{len(first)} units finished by a stand-in engine; data: {len(files)} files, {megabytes:.0f} MiB")

    _FINGERPRINTS.clear()  # as in a new process: every file hashed again
    in_process_s, again = timed(lambda: run_sweep(profile, data, out, engine=FinishingEngine()))
    print(f"rerun, run_sweep in process: {in_process_s:.2f} s, statuses {dict(Counter(again['status']))}")

    nand = str(Path(sys.executable).parent / "nand")
    command = [nand, "sweep", "--profile", "offline", "--data", str(data), "--out", str(out)]
    environment = {**os.environ, "NAND_HOME": str(args.work / "home")}
    cli_s, done = timed(lambda: subprocess.run(command, env=environment, capture_output=True, text=True))
    skipped = done.stdout.count(" skipped")
    print(f"rerun, `nand sweep` as a new process: {cli_s:.2f} s (exit {done.returncode}, {skipped} skipped)")

    image = next((data / "carpet" / "test").rglob("*.png"))
    image.write_bytes(image.read_bytes() + b"\0")
    changed_s, stale = timed(lambda: run_sweep(profile, data, out, engine=FinishingEngine()))
    reruns = stale[stale["status"].str.startswith("done")]
    print(
        f"one carpet image changed: {changed_s:.2f} s; rerun {len(reruns)} units "
        f"({', '.join(sorted(set(reruns['class'])))}: {', '.join(sorted(set(reruns['status'])))})"
    )
    print(f"RATIO rerun_cli_seconds {cli_s:.2f}")


if __name__ == "__main__":
    main()
