"""What running a sweep's units on Dask costs against the local process pool (issue 19).

1. The reduced sweep (offline profile, carpet and bottle x APRIL-GAN and WinCLIP 0-shot, feature cache off)
   end to end, engine started and closed included: the process pool (``--workers 2``) against a Dask
   ``LocalCluster`` of 2 worker processes (``--cluster local --workers 2``), alternating, best of
   ``--repeat``. Goal: ratio <= 1.1.
2. Scheduling overhead per unit: ``--trivial`` units that do nothing through each engine (started once),
   and what starting (workers ready) and closing each engine costs.

Writes ``book/data/dask_overhead.json`` and ``book/data/dask_overhead.md`` in the checkout (the book's
"Running on a cluster" includes the table) and prints ``RATIO`` lines.

    .venv/bin/python benchmarks/dask_overhead.py [--repeat 2] [--trivial 200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from functools import partial
from pathlib import Path

from _common import machine

from nandlib.cluster import open_engine
from nandlib.config import parse_profile
from nandlib.data import generate_dataset
from nandlib.outputs import atomic_write
from nandlib.profiles import load_profile
from nandlib.sweep import run_sweep

CLASSES, DETECTORS = ["carpet", "bottle"], ["aprilgan", "winclip-0"]
RESULTS = Path(__file__).resolve().parents[1] / "book" / "data"


def sweep_seconds(cluster: str | None, profile, data: Path, out: Path) -> tuple[float, float]:
    """Wall time of one sweep into the fresh folder ``out``: engine start and close included, and not."""
    start = time.perf_counter()
    with open_engine(cluster, 2) as engine:
        ready = time.perf_counter()
        status = run_sweep(profile, data, out, engine=engine, cache_dir="off")
        done = time.perf_counter()
    seconds = time.perf_counter() - start
    if set(status["status"]) != {"done"}:
        raise RuntimeError(f"the sweep did not finish:\n{status}")
    return seconds, done - ready


def engine_costs(cluster: str | None, count: int) -> tuple[float, float]:
    """Seconds to start, warm and close the engine, and per unit of ``count`` units doing nothing."""
    start = time.perf_counter()
    with open_engine(cluster, 2) as engine:
        list(engine.run({i: partial(int, "1") for i in range(4)}))  # warm: workers started
        ready = time.perf_counter()
        outcomes = list(engine.run({i: partial(int, "1") for i in range(count)}))
        done = time.perf_counter()
    assert len(outcomes) == count and not any(o.error for o in outcomes)
    return ready - start + time.perf_counter() - done, (done - ready) / count


def table(found: dict) -> str:
    """The Markdown table the book includes."""
    sweep, started = found["sweep_seconds"], found["sweep_seconds_engine_started"]
    unit, fixed = found["per_unit_ms"], found["start_and_close_seconds"]
    return (
        f"| Measured ({found['machine']}) | process pool | Dask LocalCluster | ratio |\n"
        f"|---|---|---|---|\n"
        f"| reduced sweep, {found['units']} units, 2 workers (best of {found['repeat']}) "
        f"| {sweep['pool']:.1f} s | {sweep['dask']:.1f} s | **{found['ratio']:.3f}** |\n"
        f"| same, engine already started (its start and close left out) "
        f"| {started['pool']:.1f} s | {started['dask']:.1f} s | **{found['ratio_engine_started']:.3f}** |\n"
        f"| scheduling overhead per unit ({found['trivial']} empty units) "
        f"| {unit['pool']:.2f} ms | {unit['dask']:.2f} ms | {unit['dask'] / unit['pool']:.2f} |\n"
        f"| engine start (workers ready) and close, no units "
        f"| {fixed['pool']:.1f} s | {fixed['dask']:.1f} s | |\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--trivial", type=int, default=200)
    args = parser.parse_args()
    raw = load_profile("offline").model_dump(mode="json")
    raw |= {"classes": CLASSES, "detectors": {name: raw["detectors"][name] for name in DETECTORS}}
    profile = parse_profile(raw)
    with tempfile.TemporaryDirectory() as folder:
        data = generate_dataset(Path(folder) / "data", CLASSES, seed=0, scale="small", size=128)
        times: dict[str, list[tuple[float, float]]] = {"pool": [], "dask": []}
        for round_ in range(args.repeat):
            for name, cluster in (("pool", None), ("dask", "local")):
                out = Path(folder) / f"{name}-{round_}"
                times[name].append(sweep_seconds(cluster, profile, data, out))
                print(f"{name} sweep {round_}: {times[name][-1][0]:.1f} s", flush=True)
    best = {name: min(total for total, _ in values) for name, values in times.items()}
    started = {name: min(units for _, units in values) for name, values in times.items()}
    costs = {name: engine_costs(c, args.trivial) for name, c in (("pool", None), ("dask", "local"))}
    unit = {name: 1000 * per_unit for name, (_, per_unit) in costs.items()}
    found = {
        "machine": machine(),
        "units": len(CLASSES) * len(DETECTORS),
        "repeat": args.repeat,
        "trivial": args.trivial,
        "sweep_seconds": best,
        "sweep_seconds_engine_started": started,
        "sweep_runs": times,
        "ratio": best["dask"] / best["pool"],
        "ratio_engine_started": started["dask"] / started["pool"],
        "per_unit_ms": unit,
        "start_and_close_seconds": {name: fixed for name, (fixed, _) in costs.items()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write(RESULTS / "dask_overhead.json", lambda p: p.write_text(json.dumps(found, indent=1)))
    atomic_write(RESULTS / "dask_overhead.md", lambda p: p.write_text(table(found)))
    print(table(found))
    print(f"RATIO dask/pool sweep wall time {found['ratio']:.3f} (goal <= 1.1)")
    print(f"RATIO dask/pool sweep wall time, engine started {found['ratio_engine_started']:.3f}")
    print(f"RATIO per-unit scheduling overhead dask {unit['dask']:.2f} ms, pool {unit['pool']:.2f} ms")


if __name__ == "__main__":
    main()
