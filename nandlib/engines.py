"""Where a sweep's units run: an engine starts unit callables and reports each one's outcome as it finishes.

The sweep (:mod:`nandlib.sweep`) decides which units run (finished, stale, locked by another sweep) and
reports progress and status; an engine only decides where the units run. A unit is a picklable callable
without arguments that writes its results itself (:func:`nandlib.sweep.run_unit_notebook`). Any object with
the two methods of :class:`Engine` is an engine; :class:`LocalEngine`, a pool of local processes, is the
default. Book: ``reproducing.md``, "Sweeps".
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Hashable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Outcome:
    """How one unit ended.

    Attributes:
        key: The unit's key, as given to :meth:`Engine.run`.
        error: ``None`` when the unit finished, else what it raised.
    """

    key: Hashable
    error: BaseException | None = None


class Engine(Protocol):
    """Runs units somewhere: local processes (:class:`LocalEngine`), a cluster, ..."""

    def run(self, units: Mapping[Hashable, Callable[[], object]]) -> Iterator[Outcome]:
        """Start every unit; yield each unit's outcome as it finishes (in any order).

        Closing the iterator early (an exception in the caller, :meth:`cancel`) stops the units not yet
        finished; their outcomes are not yielded.
        """
        ...

    def cancel(self) -> None:
        """Drop the queued units and stop the running ones; safe to call from a signal handler."""
        ...


class LocalEngine:
    """Units in a pool of local worker processes (papermill changes the working directory, so no threads).

    Workers ignore SIGINT (the sweep decides what Ctrl-C does), die with the sweep (Linux: parent-death
    signal) and take their children with them (the notebook kernels, which run in sessions of their own).

    Args:
        workers: Units run at once.
    """

    def __init__(self, workers: int = 2) -> None:
        self.workers = max(1, workers)
        self._pool: ProcessPoolExecutor | None = None

    def run(self, units: Mapping[Hashable, Callable[[], object]]) -> Iterator[Outcome]:
        """See :meth:`Engine.run`."""
        if not units:
            return
        with shared_cores(self.workers):
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context(start_method()),
                initializer=_worker_setup,
                initargs=(os.getpid(),),
            )
            futures: dict[Future, Hashable] = {self._pool.submit(unit): key for key, unit in units.items()}
        pending = set(futures)
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    if not future.cancelled():
                        yield Outcome(futures[future], future.exception())
        finally:
            if pending:
                self.cancel()
            else:
                self._pool.shutdown()
            self._pool = None

    def cancel(self) -> None:
        """See :meth:`Engine.cancel`: queued units are dropped, workers (and their kernels) terminated."""
        pool = self._pool
        if pool is None:
            return
        processes = list((pool._processes or {}).values())  # noqa: SLF001 - no public way to stop workers
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(timeout=10)


def start_method() -> str:
    """How local worker processes start, the pool's and a local Dask cluster's alike.

    The platform's :mod:`multiprocessing` default (``fork`` on Linux up to Python 3.13): a forked worker
    starts in a fraction of a second with the sweep's imports (torch, nandlib) already done, where a spawned
    one imports them again (seconds per worker). Units run their notebooks in kernels of their own, so the
    workers never compute with torch themselves.
    """
    return multiprocessing.get_start_method()


@contextmanager
def shared_cores(workers: int) -> Iterator[None]:
    """Give each of ``workers`` kernels its share of the CPU cores, unless ``OMP_NUM_THREADS`` says otherwise.

    Without it every kernel starts as many threads as there are cores; with two workers on two cores the
    spinning OpenMP threads of one kernel then stall the other's (PatchCore units ran several times slower).
    Workers (and their kernels) inherit the environment when they start, at submission.
    """
    if workers <= 1 or "OMP_NUM_THREADS" in os.environ:
        yield
        return
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    try:
        yield
    finally:
        del os.environ["OMP_NUM_THREADS"]


def _worker_setup(parent: int) -> None:
    """Worker initializer: ignore SIGINT, die with ``parent``, end the worker's children on SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _end_with_children)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the sweep died before the parent-death signal was set
        _end_with_children(signal.SIGTERM, None)


def _end_with_children(signum: int, _frame: object) -> None:
    """Kill this worker's child processes (kernels run in their own sessions) and exit."""
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            os.killpg(child.pid, signal.SIGKILL) if os.getpgid(child.pid) == child.pid else child.kill()
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    os._exit(128 + signum)
