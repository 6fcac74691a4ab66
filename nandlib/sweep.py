"""Run the per-class notebook through papermill for every class × detector of a profile.

Each unit is one :class:`nandlib.config.UnitConfig`, given to the run notebook (``nandlib.notebooks``,
shipped with the package) as its one parameter ``config``. The executed notebook is kept as the unit's
record; the unit's fingerprint (:mod:`nandlib.fingerprints`), written after its results, marks it
finished, so a rerun skips it while its config, data and weights are unchanged and a crashed or stopped
sweep resumes. The sweep decides which units run (finished, stale, locked by another sweep) and reports
their status; an engine (:mod:`nandlib.engines`, by default a pool of local processes) decides where.
Needs the ``book`` extra (papermill). Book: ``reproducing.md``, "Outputs".
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from nandlib.config import ConfigError, Profile, UnitConfig
from nandlib.engines import Engine, LocalEngine
from nandlib.fingerprints import UnitFingerprint, unit_fingerprint
from nandlib.outputs import OutputLayout, atomic_write, kernel_log, release, remove_temporaries, try_lock

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


_SOCKETS_PREFIX = "nand-kernel-"


def _remove_sockets_of_dead_processes() -> None:
    """Delete kernel socket folders whose process was killed (``nand-kernel-<pid>-*`` in the temp folder)."""
    import psutil

    def dead(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # killed, not yet reaped
        except psutil.NoSuchProcess:
            return True

    for folder in Path(tempfile.gettempdir()).glob(f"{_SOCKETS_PREFIX}*-*"):
        pid = folder.name.removeprefix(_SOCKETS_PREFIX).partition("-")[0]
        if pid.isdigit() and dead(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _kernel_manager_class():
    """A jupyter_client kernel manager whose kernels write their standard error to a file of their own.

    A kernel would otherwise share the terminal of the sweep that started it; jupyter_client interrupts
    every kernel it shuts down, and ipykernel may log that interrupt as a traceback there.
    """
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import Unicode

    class LoggedKernelManager(AsyncKernelManager):
        stderr_path = Unicode("", config=True, help="file the kernel's standard error is appended to")

        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            with open(self.stderr_path, "ab") as log:
                await super()._async_launch_kernel(kernel_cmd, **{**kw, "stderr": log})

    return LoggedKernelManager


def execute_notebook(source: str, output: str, parameters: dict[str, Any], retries: int = 2) -> str:
    """Execute a notebook with papermill, retrying when the kernel fails to start.

    The kernel talks to papermill over local (IPC) sockets in a temporary folder of its own: over TCP,
    ipykernel warns in every kernel's log that the traffic is unencrypted. Its standard error goes to
    :func:`kernel_log`, not to the terminal of the process that runs it.

    Returns:
        ``"done"``; raises the papermill error when a cell fails.
    """
    papermill = _papermill()
    from traitlets.config import Config

    Path(output).parent.mkdir(parents=True, exist_ok=True)
    _remove_sockets_of_dead_processes()
    for attempt in range(retries + 1):
        try:
            with tempfile.TemporaryDirectory(prefix=f"{_SOCKETS_PREFIX}{os.getpid()}-") as sockets:
                papermill.execute_notebook(
                    source,
                    output,
                    parameters=parameters,
                    kernel_name="python3",
                    start_timeout=180,
                    progress_bar=False,
                    cwd=str(Path(output).parent),
                    kernel_manager_class=_kernel_manager_class(),
                    config=Config(
                        KernelManager={"transport": "ipc", "ip": f"{sockets}/kernel"},
                        # absolute: the kernel starts in the notebook's folder (``cwd``)
                        LoggedKernelManager={"stderr_path": str(kernel_log(output).resolve())},
                    ),
                )
            break
        except (RuntimeError, TimeoutError) as err:
            if attempt == retries or not any(s in str(err) for s in _KERNEL_START_ERRORS):
                raise
    _hide_injected_parameters(Path(output))
    return "done"


@dataclass(frozen=True)
class UnitTask:
    """One unit as an engine runs it (picklable, pure): the run notebook executed on the unit's config,
    which writes the unit's outputs; then the unit's fingerprint, written last, marks it finished.

    Attributes:
        notebook: The run notebook (path).
        config: The unit's :class:`nandlib.config.UnitConfig` as JSON.
        fingerprint: What the results will depend on (:meth:`UnitFingerprint.to_json`).
    """

    notebook: str
    config: str
    fingerprint: str

    def __call__(self) -> None:
        """Run the unit.

        Raises:
            RuntimeError: The notebook finished without writing the unit's results.
        """
        unit = UnitConfig.model_validate_json(self.config)
        layout, label, name = unit.outputs, unit.label, unit.class_name
        with _alone(layout.attempt(label, name)):
            marker = layout.fingerprint(label, name)
            if marker.is_file() and marker.read_text() == self.fingerprint:
                return  # finished by an earlier attempt (a cluster worker given up for dead)
            for path in layout.unit_files(label, name):
                remove_temporaries(path)
            execute_notebook(self.notebook, str(layout.run_record(label, name)), {"config": self.config})
            if not layout.results(label, name).is_file():
                raise RuntimeError(f"{self.notebook} finished without writing {layout.results(label, name)}")
            atomic_write(marker, lambda p: p.write_text(self.fingerprint))

    @property
    def resources(self) -> dict[str, float]:
        """What the unit asks of a cluster worker (:mod:`nandlib.cluster`): one ``GPU`` on ``cuda``."""
        return {"GPU": 1} if json.loads(self.config)["device"].startswith("cuda") else {}


@contextmanager
def _alone(path: Path) -> Iterator[None]:
    """Hold ``path``'s lock, waiting while another attempt of the unit holds it.

    The sweep's lock keeps other sweeps away; this one keeps a cluster's rerun of a unit from running
    beside an attempt the scheduler gave up on that is still alive (a worker cut off from it).
    """
    while (lock := try_lock(path)) is None:
        time.sleep(1)
    try:
        yield
    finally:
        release(lock)


class SweepInterrupted(Exception):
    """The sweep was stopped by a signal; finished units are kept.

    Attributes:
        signum: The signal (``signal.SIGINT``, ``signal.SIGTERM``).
        status: The status frame at the stop (unfinished units ``cancelled``), as :func:`run_sweep` returns.
    """

    def __init__(self, signum: int, status: pd.DataFrame | None = None) -> None:
        super().__init__(f"sweep stopped by {signal.Signals(signum).name}")
        self.signum = signum
        self.status = status


@contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """Turn the first SIGINT or SIGTERM into :class:`SweepInterrupted`; ignore more while stopping."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: object) -> None:
        for each in (signal.SIGINT, signal.SIGTERM):
            signal.signal(each, signal.SIG_IGN)
        raise SweepInterrupted(signum)

    previous = {each: signal.signal(each, stop) for each in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)


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


def _why_rerun(layout: OutputLayout, unit: Unit, now: UnitFingerprint) -> str | None:
    """``None`` when the unit's results are finished and current; else why it runs."""
    if not layout.results(unit.detector, unit.class_name).is_file():
        return "new"
    marker = layout.fingerprint(unit.detector, unit.class_name)
    stored = UnitFingerprint.from_json(marker.read_text()) if marker.is_file() else None
    if stored is None:
        return "stale: unfinished or older results"
    changed = now.changes(stored)
    return f"stale: {' and '.join(changed)} changed" if changed else None


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
    """Run every unit whose results are missing or stale; return one status row per unit.

    A unit is skipped when its finished results carry the fingerprint (:mod:`nandlib.fingerprints`) of its
    config, data and weights as they are now; otherwise it runs again. A unit another sweep is running
    (its lock, :meth:`OutputLayout.lock`) is left to it. SIGINT or SIGTERM cancels the queued units and
    stops the running ones; finished ones are kept.

    Args:
        profile: The run profile.
        data_root: MVTec-layout dataset root.
        out: Output folder (:class:`nandlib.outputs.OutputLayout`); refused if it holds another profile's.
        classes: Subset of the profile's classes (default: all).
        detectors: Subset of the profile's detectors by name (default: all).
        workers: Units at once in the default engine (:class:`nandlib.engines.LocalEngine`).
        engine: Where units run (default: local processes).
        run_notebook: The per-class notebook to execute (default: the shipped ``run_class``).
        cache_dir: Feature cache shared by the units (``None``: default root; ``"off"``: none).

    Returns:
        Frame ``class, detector, status``; status is ``skipped`` (finished and current), ``done``,
        ``done (rerun, stale: data changed)`` (or config, weights), ``failed: ...`` or ``locked: ...``.

    Raises:
        SweepInterrupted: On SIGINT/SIGTERM, after writing the status (unfinished units ``cancelled``).
        RuntimeError: ``out`` holds another profile's results.
    """
    from nandlib.companion import claim_output

    source = run_notebook or notebook("run_class")
    layout = OutputLayout(out)
    configs = unit_configs(profile, data_root, out, classes=classes, detectors=detectors, cache_dir=cache_dir)
    claim_output(out, profile.name)
    engine = engine or LocalEngine(workers)
    status: dict[Unit, str] = {}
    locks: dict[Unit, int] = {}
    todo: dict[Unit, UnitTask] = {}
    unfinished: set[Unit] = set()
    try:
        with _stopped_by_signals():
            digests: dict[tuple[str, str], str] = {}  # each class's data read once per sweep
            for unit, config in configs.items():
                now = unit_fingerprint(config, digests)
                status[unit] = _plan_unit(layout, unit, now, config, str(source), locks, todo)
            if todo:
                check_parameters(source, {"config": ""})
            unfinished |= set(todo)
            done = len(configs) - len(todo)
            with tqdm(total=len(configs), initial=done, desc=f"sweep {profile.name}", unit="unit") as bar:
                for outcome in engine.run(todo):
                    unit = outcome.key
                    unfinished.discard(unit)
                    if outcome.error is not None:
                        record = layout.run_record(unit.detector, unit.class_name)
                        status[unit] = f"failed: {_describe(outcome.error)} (record: {record})"
                    release(locks.pop(unit))
                    bar.update()
    except SweepInterrupted as stop:
        engine.cancel()
        status |= {unit: "cancelled" for unit in configs if unit in unfinished or unit not in status}
        stop.status = _write_status(layout, configs, status)
        raise
    finally:
        for lock in locks.values():
            release(lock)
    return _write_status(layout, configs, status)


def _plan_unit(
    layout: OutputLayout,
    unit: Unit,
    now: UnitFingerprint,
    config: UnitConfig,
    source: str,
    locks: dict,
    todo: dict,
) -> str:
    """Decide one unit: skip it (finished and current), leave it to the sweep holding its lock, or lock
    it, clear its stale marker and temporaries and add it to ``todo``. Returns its status if it finishes."""
    if _why_rerun(layout, unit, now) is None:
        return "skipped"
    lock = try_lock(layout.lock(unit.detector, unit.class_name))
    if lock is None:
        return "locked: another sweep is running it (rerun when it is done)"
    why = _why_rerun(layout, unit, now)  # the other sweep may have finished it just now
    if why is None:
        release(lock)
        return "skipped"
    locks[unit] = lock
    for path in layout.unit_files(unit.detector, unit.class_name):
        remove_temporaries(path)
    layout.fingerprint(unit.detector, unit.class_name).unlink(missing_ok=True)
    todo[unit] = UnitTask(source, config.to_json(), now.to_json())
    return "done" if why == "new" else f"done (rerun, {why})"


def _write_status(layout: OutputLayout, units: Iterable[Unit], status: dict[Unit, str]) -> pd.DataFrame:
    frame = pd.DataFrame(
        [{"class": u.class_name, "detector": u.detector, "status": status[u]} for u in units],
        columns=["class", "detector", "status"],
    )
    text = json.dumps(frame.to_dict(orient="records"), indent=1)
    atomic_write(layout.status, lambda p: p.write_text(text))
    return frame
