"""Run the per-class notebook through papermill for every class × detector of a profile.

Each unit (class, detector) executes ``notebooks/run_class.ipynb`` into
``<out>/runs/<detector>/<class>.ipynb`` (kept as the record of that unit) and writes its results
frame atomically to ``<out>/results/<detector>/<class>.csv``; that file marks the unit finished,
so a rerun skips it and a crashed sweep resumes. Units run in a process pool (papermill changes
the working directory process-wide, so no threads). Book: ``reproducing.md``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import papermill
from tqdm import tqdm

from nandlib.profiles import Profile

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
RUN_NOTEBOOK = NOTEBOOK_DIR / "run_class.ipynb"
_KERNEL_START_ERRORS = ("Kernel didn't respond", "Address already in use", "Kernel died before replying")


@dataclass(frozen=True)
class Unit:
    """One piece of a sweep: a class run with one detector (``aprilgan``, ``winclip-K``, ``patchcore``)."""

    class_name: str
    detector: str

    def notebook_path(self, out: Path) -> Path:
        """Executed notebook, the record of this unit."""
        return out / "runs" / self.detector / f"{self.class_name}.ipynb"

    def results_path(self, out: Path) -> Path:
        """Results frame; its existence marks the unit finished."""
        return out / "results" / self.detector / f"{self.class_name}.csv"


def unit_parameters(
    profile: Profile, unit: Unit, data_root: Path, out: Path, cache_dir: str | None = None
) -> dict[str, Any]:
    """The run notebook's parameters for ``unit`` under ``profile`` (absolute paths).

    ``cache_dir`` is the feature cache (``None``: the default root; ``"off"``: none), see
    :class:`nandlib.run.UnitConfig`.
    """
    settings = profile.detectors[unit.detector]
    family, _, shots = unit.detector.partition("-")
    return {
        "class_name": unit.class_name,
        "detector": family,
        "shots": int(shots or settings.get("shots", 0)),
        "data_root": str(Path(data_root).resolve()),
        "output_dir": str(out.resolve()),
        "profile_name": profile.name,
        "profile_description": profile.description,
        "seed": profile.seed,
        "device": profile.device,
        "precision": profile.precision,
        "batch_size": profile.batch_size,
        "cache_dir": cache_dir,
        "nd_model": profile.nd["model"],
        "nd_image_size": profile.nd.get("image_size"),
        "nd_pretrained": profile.nd.get("pretrained"),
        "nd_clip_checkpoint": profile.nd.get("clip_checkpoint"),
        "adapters": profile.nd.get("adapters"),
        "detector_model": settings.get("model"),
        "detector_image_size": settings.get("image_size"),
        "detector_pretrained": settings.get("pretrained"),
        "detector_clip_checkpoint": settings.get("clip_checkpoint"),
        "detector_weights": settings.get("weights"),
    }


def _hide_injected_parameters(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "hide-input" not in tags:
            cell.metadata["tags"] = [*tags, "hide-input"]
    nbformat.write(notebook, path)


def check_parameters(notebook: Path, parameters: dict[str, Any]) -> None:
    """Refuse parameters the notebook's ``parameters`` cell does not declare (papermill only warns).

    Raises:
        ValueError: Naming the unknown parameters and the notebook.
    """
    declared = papermill.inspect_notebook(str(notebook))
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ValueError(f"parameters {unknown} are not declared in {notebook}'s parameters cell")


def _describe(err: Exception) -> str:
    if isinstance(err, papermill.PapermillExecutionError):
        return f"{err.ename}: {err.evalue}"[:300]
    return f"{type(err).__name__}: {err}"[:300]


def execute_unit(notebook: str, output: str, parameters: dict[str, Any], retries: int = 2) -> str:
    """Execute one unit's notebook with papermill, retrying when the kernel fails to start.

    Returns:
        ``"done"``; raises the papermill error when a cell fails.
    """
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        try:
            papermill.execute_notebook(
                notebook,
                output,
                parameters=parameters,
                kernel_name="python3",
                start_timeout=180,
                progress_bar=False,
                cwd=str(Path(notebook).parent),
            )
            break
        except (RuntimeError, TimeoutError) as err:
            if attempt == retries or not any(s in str(err) for s in _KERNEL_START_ERRORS):
                raise
    _hide_injected_parameters(Path(output))
    return "done"


@contextmanager
def _shared_cores(workers: int) -> Iterator[None]:
    """Give each of ``workers`` kernels its share of the CPU cores, unless ``OMP_NUM_THREADS`` says otherwise.

    Without it every kernel starts as many threads as there are cores; with two workers on two cores the
    spinning OpenMP threads of one kernel then stall the other's (PatchCore units ran several times slower).
    """
    if workers <= 1 or "OMP_NUM_THREADS" in os.environ:
        yield
        return
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    try:
        yield
    finally:
        del os.environ["OMP_NUM_THREADS"]


def run_sweep(
    profile: Profile,
    data_root: Path,
    out: Path,
    *,
    classes: Iterable[str] | None = None,
    detectors: Iterable[str] | None = None,
    workers: int = 2,
    notebook: Path = RUN_NOTEBOOK,
    cache_dir: str | None = None,
) -> pd.DataFrame:
    """Run every unfinished unit; return one status row per unit.

    Args:
        profile: The run profile.
        data_root: MVTec-layout dataset root.
        out: Output folder (``runs/``, ``results/`` and ``sweep_status.json`` go there).
        classes: Subset of the profile's classes (default: all).
        detectors: Subset of the profile's detectors (default: all).
        workers: Parallel papermill processes.
        notebook: The per-class notebook to execute.
        cache_dir: Feature cache shared by the units (``None``: default root; ``"off"``: none).

    Returns:
        Frame ``class, detector, status`` (``done``, ``skipped`` — finished earlier — or ``failed: ...``).
    """
    classes = list(classes or profile.classes)
    detectors = list(detectors or profile.detectors)
    for name in detectors:
        if name not in profile.detectors:
            raise ValueError(f"detectors: {name!r} is not in profile {profile.name!r}")
    units = [Unit(c, d) for d in detectors for c in classes]
    status: dict[Unit, str] = {u: "skipped" for u in units if u.results_path(out).is_file()}
    todo = [u for u in units if u not in status]
    if todo:
        check_parameters(notebook, unit_parameters(profile, todo[0], data_root, out, cache_dir))
    with _shared_cores(workers), ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {
            pool.submit(
                execute_unit,
                str(notebook),
                str(u.notebook_path(out)),
                unit_parameters(profile, u, data_root, out, cache_dir),
            ): u
            for u in todo
        }
        for future in tqdm(as_completed(futures), total=len(futures), desc=f"sweep {profile.name}"):
            unit = futures[future]
            try:
                status[unit] = future.result()
            except Exception as err:  # noqa: BLE001 - every unit's fate is collected, none is lost
                status[unit] = f"failed: {_describe(err)} (record: {unit.notebook_path(out)})"
    frame = pd.DataFrame(
        [{**asdict(u), "status": status[u]} for u in units], columns=["class_name", "detector", "status"]
    ).rename(columns={"class_name": "class"})
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep_status.json").write_text(json.dumps(frame.to_dict(orient="records"), indent=1))
    return frame
