"""Sweeps on a Dask cluster: ``nand sweep --cluster`` and ``nand book --cluster``.

``--cluster`` names where the units run: ``local`` (a Dask ``LocalCluster`` of ``--workers`` processes, each
offering one ``GPU``: they share the machine's default GPU, as the process pool's do), a
scheduler address (``tcp://host:8786``) or a cluster file (YAML, :class:`ClusterFile`: a ``LocalCluster``,
dask-cuda's ``LocalCUDACluster`` or a dask-jobqueue ``SLURMCluster``, ``PBSCluster`` or ``LSFCluster``; the
examples shipped in ``nandlib/clusters`` by name: ``slurm``, ``multi-gpu``).
Without it the units run in local processes (:class:`nandlib.engines.LocalEngine`). The sweep still decides
which units run, locks them and reports progress; :class:`DaskEngine` only submits them. Needs the
``cluster`` extra. Book: ``reproducing.md``, "Running on a cluster".
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nandlib.config import ConfigError, read_yaml
from nandlib.engines import Engine, LocalEngine, Outcome, shared_cores, start_method

CLUSTER_CLASSES = {
    "local": ("distributed", "LocalCluster"),
    "local-cuda": ("dask_cuda", "LocalCUDACluster"),
    "slurm": ("dask_jobqueue", "SLURMCluster"),
    "pbs": ("dask_jobqueue", "PBSCluster"),
    "lsf": ("dask_jobqueue", "LSFCluster"),
}
"""``kind`` of a cluster file -> (module, class) of the Dask cluster it builds."""

_EXTRA = "pip install 'nandlib[cluster]'"


class ClusterFile(BaseModel):
    """A cluster file (YAML), e.g. the shipped ``nandlib/clusters/slurm.yaml`` (``--cluster slurm``).

    Attributes:
        kind: ``local``, ``local-cuda`` (one worker per GPU; needs ``dask-cuda``), ``slurm``, ``pbs``
            or ``lsf`` (dask-jobqueue).
        workers: Worker processes to start (``cluster.scale(workers)``; a job holds ``processes`` of them;
            ``local-cuda``: one per GPU unless given).
        resources: What each worker offers, e.g. ``{GPU: 1}``: a unit on ``cuda`` takes one ``GPU``.
        retries: Reruns of a unit that raised (a unit whose worker died is rerun by the scheduler, up to
            Dask's ``distributed.scheduler.allowed-failures``).
        cluster: Keyword arguments of the cluster class (queue, cores, memory, walltime, ...).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "local-cuda", "slurm", "pbs", "lsf"]
    workers: int | None = Field(None, ge=1)
    resources: dict[str, float] = Field(default_factory=dict)
    retries: int = Field(1, ge=0)
    cluster: dict[str, Any] = Field(default_factory=dict)


def read_cluster_file(path: Path) -> ClusterFile:
    """Read and check a cluster file.

    Raises:
        ConfigError: Naming the file and what is wrong in it.
    """
    try:
        return ClusterFile.model_validate(read_yaml(path) or {})
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in error.errors())
        raise ConfigError(f"cluster file {path}: {problems}") from error


def shipped_cluster_files() -> dict[str, Path]:
    """The example cluster files shipped in ``nandlib.clusters``, by name (``slurm``, ``multi-gpu``)."""
    folder = Path(str(files("nandlib.clusters")))
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))}


def _module(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as error:
        hint = "pip install dask-cuda" if name == "dask_cuda" else _EXTRA
        raise RuntimeError(f"--cluster needs {name} (the 'cluster' extra): {hint}") from error


class DaskEngine:
    """Units as tasks of a Dask cluster (:class:`nandlib.engines.Engine`).

    A unit's ``resources`` attribute, if any (``{"GPU": 1}`` for a unit on ``cuda``), is asked of the worker
    that runs it. Every submission gets a key of its own (so it runs, whatever ran before) and is retried
    ``retries`` times when it raises.

    Args:
        client: A ``distributed.Client``.
        retries: Reruns of a unit that raised.
    """

    def __init__(self, client: Any, retries: int = 1) -> None:
        self.client = client
        self.retries = retries
        self._futures: dict[Any, Hashable] = {}

    def run(self, units: Mapping[Hashable, Callable[[], object]]) -> Iterator[Outcome]:
        """See :meth:`nandlib.engines.Engine.run`."""
        if not units:
            return
        self._check_resources(units)
        distributed = _module("distributed")
        self._futures = {
            self.client.submit(
                unit, key=f"nand-unit {key} {uuid4().hex}", retries=self.retries, resources=_resources(unit)
            ): key
            for key, unit in units.items()
        }
        pending = set(self._futures)
        try:
            for future in distributed.as_completed(list(self._futures)):
                pending.discard(future)
                if future.cancelled():
                    continue
                error = future.exception() if future.status == "error" else None
                yield Outcome(self._futures[future], error)
        finally:
            if pending:
                self.cancel()
            self._futures = {}

    def cancel(self) -> None:
        """See :meth:`nandlib.engines.Engine.cancel`: queued and running tasks are cancelled."""
        if self._futures:
            self.client.cancel(list(self._futures), force=True)

    def _check_resources(self, units: Mapping[Hashable, Callable[[], object]]) -> None:
        """Refuse units that ask for a resource no connected worker offers (they would wait forever).

        Raises:
            RuntimeError: Naming the resource and how workers declare it.
        """
        workers = self.client.scheduler_info().get("workers", {})
        offered = {name for worker in workers.values() for name in (worker.get("resources") or {})}
        wanted = {name for unit in units.values() for name in _resources(unit) or {}}
        missing = sorted(wanted - offered)
        if workers and missing:
            raise RuntimeError(
                f"units need worker resources {missing} that no worker of {self.client.scheduler.address} "
                f"offers: start workers with `--resources {missing[0]}=1` (cluster file: resources:)"
            )


def _resources(unit: Callable[[], object]) -> dict[str, float] | None:
    return getattr(unit, "resources", None) or None


@contextmanager
def open_engine(cluster: str | None, workers: int = 2) -> Iterator[Engine]:
    """The engine ``--cluster`` names, closed (with any cluster it started) on exit.

    Args:
        cluster: ``None`` (local processes), ``local``, a scheduler address or a cluster file.
        workers: Local processes (``None``, ``local``).

    Raises:
        RuntimeError: The ``cluster`` extra is missing.
        ConfigError: A cluster file that does not exist or is invalid.
    """
    if cluster is None:
        yield LocalEngine(workers)
        return
    distributed = _module("distributed")
    with _start(cluster, workers) as (address, retries):
        with distributed.Client(address) as client:
            if client.dashboard_link:
                print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr)
            yield DaskEngine(client, retries)


@contextmanager
def _start(cluster: str, workers: int) -> Iterator[tuple[Any, int]]:
    """Start the cluster ``cluster`` names (none for an address); yield its address and retries."""
    if "://" in cluster:
        yield cluster, 1
        return
    if cluster == "local":
        spec = ClusterFile(kind="local", workers=workers, resources={"GPU": 1})
    elif Path(cluster).suffix in (".yaml", ".yml") and Path(cluster).is_file():
        spec = read_cluster_file(Path(cluster))
    elif cluster in shipped_cluster_files():
        spec = read_cluster_file(shipped_cluster_files()[cluster])
    else:
        raise ConfigError(
            f"--cluster: expected local, tcp://host:port, a cluster YAML file or one of "
            f"{sorted(shipped_cluster_files())}: {cluster!r}"
        )
    module, name = CLUSTER_CLASSES[spec.kind]
    with _worker_environment(spec), getattr(_module(module), name)(**_arguments(spec)) as started:
        if spec.workers and not spec.kind.startswith("local"):
            started.scale(spec.workers)
        yield started, spec.retries


def _arguments(spec: ClusterFile) -> dict[str, Any]:
    """The cluster class's keyword arguments: the file's, plus its workers and resources."""
    arguments = dict(spec.cluster)
    if spec.kind.startswith("local"):
        if spec.workers:
            arguments.setdefault("n_workers", spec.workers)
        arguments.setdefault("threads_per_worker", 1)  # one unit at a time: papermill changes directory
        arguments.setdefault("dashboard_address", ":0")
        if spec.resources:
            arguments.setdefault("resources", spec.resources)
    elif spec.resources:
        flags = " ".join(f"{name}={amount:g}" for name, amount in spec.resources.items())
        arguments["worker_extra_args"] = [*arguments.get("worker_extra_args", []), "--resources", flags]
    return arguments


@contextmanager
def _worker_environment(spec: ClusterFile) -> Iterator[None]:
    """While a local cluster lives, its workers start as the process pool's do
    (:func:`nandlib.engines.start_method`: forked, the sweep's imports done) and get the environment the
    pool's get, restarts included: their share of the cores, and none of Dask's own settings (1 thread,
    eager memory trimming)."""
    if spec.kind != "local":
        yield
        return
    import dask

    with shared_cores(spec.workers or 1):
        environment = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
    settings = {
        "distributed.nanny.pre-spawn-environ": environment,
        "distributed.worker.multiprocessing-method": start_method(),
    }
    with dask.config.set(settings):
        yield
