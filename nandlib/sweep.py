"""Run the per-class notebook through papermill for every class × detector of a profile.

Each unit is one :class:`nandlib.config.UnitConfig`, given to the run notebook (``nandlib.notebooks``,
shipped with the package) as its one parameter ``config``. The executed notebook is kept as the unit's
record and its results frame marks the unit finished (:class:`nandlib.outputs.OutputLayout`), so a rerun
skips it and a crashed sweep resumes. The sweep decides which units run and reports their status; an engine
(:mod:`nandlib.engines`, by default a pool of local processes) decides where. Needs the ``book`` extra
(papermill). Book: ``reproducing.md``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from nandlib.config import ConfigError, Profile, UnitConfig
from nandlib.engines import Engine, LocalEngine
from nandlib.outputs import OutputLayout, atomic_write

_KERNEL_START_ERRORS = ("Kernel didn't respond", "Address already in use", "Kernel died before replying")


def notebook(name: str) -> Path:
    """A notebook shipped with nandlib (``run_class``, ``tables``, ``figure5``)."""
    return Path(str(files("nandlib.notebooks") / f"{name}.ipynb"))


def _papermill():
    try:
        import papermill
    except ImportError as error:
        raise RuntimeError("running notebooks needs papermill: pip install 'nandlib[book]'") from error
    return papermill


@dataclass(frozen=True)
class Unit:
    """One piece of a sweep: a class run with one of the profile's detectors (by name)."""

    class_name: str
    detector: str


def check_parameters(path: Path, parameters: dict[str, Any]) -> None:
    """Refuse parameters the notebook's ``parameters`` cell does not declare (papermill only warns).

    Raises:
        ValueError: Naming the unknown parameters and the notebook.
    """
    declared = _papermill().inspect_notebook(str(path))
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ValueError(f"parameters {unknown} are not declared in {path}'s parameters cell")


def _hide_injected_parameters(path: Path) -> None:
    import nbformat

    document = nbformat.read(path, as_version=4)
    for cell in document.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "hide-input" not in tags:
            cell.metadata["tags"] = [*tags, "hide-input"]
    nbformat.write(document, path)


def _describe(err: Exception) -> str:
    if type(err).__name__ == "PapermillExecutionError":
        return f"{err.ename}: {err.evalue}"[:300]
    return f"{type(err).__name__}: {err}"[:300]


def execute_notebook(source: str, output: str, parameters: dict[str, Any], retries: int = 2) -> str:
    """Execute a notebook with papermill, retrying when the kernel fails to start.

    Returns:
        ``"done"``; raises the papermill error when a cell fails.
    """
    papermill = _papermill()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        try:
            papermill.execute_notebook(
                source,
                output,
                parameters=parameters,
                kernel_name="python3",
                start_timeout=180,
                progress_bar=False,
                cwd=str(Path(output).parent),
            )
            break
        except (RuntimeError, TimeoutError) as err:
            if attempt == retries or not any(s in str(err) for s in _KERNEL_START_ERRORS):
                raise
    _hide_injected_parameters(Path(output))
    return "done"


@dataclass(frozen=True)
class UnitTask:
    """One unit as an engine runs it: the run notebook executed on the unit's config (picklable, pure).

    Attributes:
        notebook: The run notebook (path).
        config: The unit's :class:`nandlib.config.UnitConfig` as JSON.
    """

    notebook: str
    config: str

    def __call__(self) -> None:
        """Execute the notebook into the unit's run record; the notebook writes the unit's outputs."""
        unit = UnitConfig.model_validate_json(self.config)
        record = unit.outputs.run_record(unit.label, unit.class_name)
        execute_notebook(self.notebook, str(record), {"config": self.config})


def unit_configs(
    profile: Profile,
    data_root: Path,
    out: Path,
    *,
    classes: Iterable[str] | None = None,
    detectors: Iterable[str] | None = None,
    cache_dir: str | None = None,
) -> dict[Unit, UnitConfig]:
    """Every unit's config (all of the profile's classes and detectors unless narrowed).

    Raises:
        ConfigError: A detector or class the profile cannot run, named.
    """
    chosen = list(detectors or profile.detectors)
    unknown = [name for name in chosen if name not in profile.detectors]
    if unknown:
        raise ConfigError(
            f"detectors: {unknown} are not in profile {profile.name!r}: {list(profile.detectors)}"
        )
    return {
        Unit(c, d): profile.unit(c, d, data_root, out, cache_dir=cache_dir)
        for d in chosen
        for c in classes or profile.classes
    }


def run_sweep(
    profile: Profile,
    data_root: Path,
    out: Path,
    *,
    classes: Iterable[str] | None = None,
    detectors: Iterable[str] | None = None,
    workers: int = 2,
    engine: Engine | None = None,
    run_notebook: Path | None = None,
    cache_dir: str | None = None,
) -> pd.DataFrame:
    """Run every unfinished unit; return one status row per unit.

    Args:
        profile: The run profile.
        data_root: MVTec-layout dataset root.
        out: Output folder (:class:`nandlib.outputs.OutputLayout`).
        classes: Subset of the profile's classes (default: all).
        detectors: Subset of the profile's detectors by name (default: all).
        workers: Units at once in the default engine (:class:`nandlib.engines.LocalEngine`).
        engine: Where units run (default: local processes).
        run_notebook: The per-class notebook to execute (default: the shipped ``run_class``).
        cache_dir: Feature cache shared by the units (``None``: default root; ``"off"``: none).

    Returns:
        Frame ``class, detector, status`` (``done``, ``skipped`` — finished earlier — or ``failed: ...``).
    """
    source = run_notebook or notebook("run_class")
    layout = OutputLayout(out)
    configs = unit_configs(profile, data_root, out, classes=classes, detectors=detectors, cache_dir=cache_dir)
    status = {u: "skipped" for u in configs if layout.results(u.detector, u.class_name).is_file()}
    todo = {u: UnitTask(str(source), configs[u].to_json()) for u in configs if u not in status}
    if todo:
        check_parameters(source, {"config": ""})
    engine = engine or LocalEngine(workers)
    with tqdm(total=len(configs), initial=len(status), desc=f"sweep {profile.name}", unit="unit") as bar:
        for outcome in engine.run(todo):
            unit = outcome.key
            if outcome.error is None:
                status[unit] = "done"
            else:
                record = layout.run_record(unit.detector, unit.class_name)
                status[unit] = f"failed: {_describe(outcome.error)} (record: {record})"
            bar.update()
    frame = pd.DataFrame(
        [{"class": u.class_name, "detector": u.detector, "status": status[u]} for u in configs],
        columns=["class", "detector", "status"],
    )
    text = json.dumps(frame.to_dict(orient="records"), indent=1)
    atomic_write(layout.status, lambda p: p.write_text(text))
    return frame
