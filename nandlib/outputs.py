"""The output layout of runs and sweeps, and the one atomic writer every output goes through.

A sweep's (or one ``nand run``'s) output folder holds, per unit ``<detector>/<class>``::

    results/<detector>/<class>.csv             tidy results (written last by the unit)
    results/<detector>/<class>.fingerprint     what the results depend on (a sweep writes it last: finished)
    results/<detector>/<class>.json            provenance (weights, data, profile, commit, config)
    results/<detector>/<class>.examples.npz    Fig. 5 examples
    diagnostics/<detector>/<class>.csv         suppression diagnostics (:mod:`nandlib.diagnostics`)
    runs/<detector>/<class>.ipynb              the executed run notebook (sweeps only)
    runs/<detector>/<class>.lock               held by the sweep running the unit (sweeps only)
    runs/<detector>/<class>.attempt            held by the process running the unit (one attempt at once)

and once per folder ``sweep_status.json``, ``OWNER.txt`` (the profile whose results these are),
``profile.yaml`` (the profile the book ran) and the executed aggregation notebooks ``tables.ipynb`` and
``figure5.ipynb``.
Book: ``reproducing.md``, "Outputs".
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

TEMPORARY_PATTERN = r"\..+\.[0-9a-f]{8}\.tmp"
"""Names of :func:`atomic_write`'s temporaries (``.<name>.<8 hex>.tmp``), for cleaning up after a kill."""


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Write ``path`` through a temporary file in its folder and rename it: readers never see half a file.

    The temporary is created with mode ``0o666`` less the umask (as any new file) and keeps it even when
    ``write`` replaces the file (safetensors writes through its own ``0o600`` temporary).

    Args:
        path: Destination (its folder is created).
        write: Writes the content to the temporary path it is given.

    Raises:
        OutputError: The file cannot be written (no such folder, not writable, disk full), naming ``path``
            and why; a partial temporary is removed.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        mode = os.fstat(descriptor).st_mode & 0o777
        os.close(descriptor)
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as error:
        raise OutputError(error.errno, f"cannot write {path}: {_why(error, path)}", str(path)) from error
    finally:
        with suppress(OSError):  # gone (renamed), never made, or its folder unusable
            tmp.unlink()
    return path


class OutputError(OSError):
    """An output that cannot be written; the message names the file and why (``str(error)``)."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def _why(error: OSError, path: Path) -> str:
    blocking = next((folder for folder in path.parents if folder.is_file()), None)
    if blocking is not None:
        return f"{blocking} is a file, not a folder"
    return error.strerror or str(error)


def check_writable(folder: Path) -> None:
    """Write and delete a small file in ``folder`` through :func:`atomic_write`, before any long work.

    Raises:
        OutputError: ``folder`` cannot be created or written (read-only, a file in its place, disk full).
    """
    probe = atomic_write(folder / f".write-check-{os.getpid()}", lambda p: p.write_bytes(b"nandlib"))
    probe.unlink()


def kernel_log(notebook: str | Path) -> Path:
    """Where the kernel that executes ``notebook`` writes its standard error: beside it."""
    return Path(notebook).with_suffix(".kernel.log")


def remove_temporaries(path: Path) -> None:
    """Delete :func:`atomic_write`'s temporaries of ``path`` (left by a killed writer of that file)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        if re.fullmatch(TEMPORARY_PATTERN, stale.name):
            stale.unlink(missing_ok=True)


def try_lock(path: Path) -> int | None:
    """Hold an exclusive lock on ``path`` (created) if no other process holds it; its descriptor, or None.

    The lock lives as long as the descriptor (in this process and the children it forks), so a killed
    holder never leaves it behind. Release with :func:`release`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


def release(descriptor: int) -> None:
    """Release a lock taken by :func:`try_lock` (in forked children too) and close it."""
    fcntl.flock(descriptor, fcntl.LOCK_UN)
    os.close(descriptor)


@dataclass(frozen=True)
class OutputLayout:
    """Paths inside one output folder (see the module docstring)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def results(self, detector: str, class_name: str) -> Path:
        """A unit's results frame (written last by the unit; a sweep's units are finished by their
        :meth:`fingerprint`)."""
        return self.root / "results" / detector / f"{class_name}.csv"

    def fingerprint(self, detector: str, class_name: str) -> Path:
        """What a finished unit's results depend on (:mod:`nandlib.fingerprints`); written last."""
        return self.results(detector, class_name).with_suffix(".fingerprint")

    def lock(self, detector: str, class_name: str) -> Path:
        """Held while a sweep runs the unit."""
        return self.run_record(detector, class_name).with_suffix(".lock")

    def attempt(self, detector: str, class_name: str) -> Path:
        """Held by the process running the unit: a rerun of it (a cluster's retry) waits for it."""
        return self.run_record(detector, class_name).with_suffix(".attempt")

    def unit_files(self, detector: str, class_name: str) -> list[Path]:
        """Every file a unit writes."""
        return [
            self.results(detector, class_name),
            self.fingerprint(detector, class_name),
            self.provenance(detector, class_name),
            self.examples(detector, class_name),
            self.diagnostics(detector, class_name),
            self.run_record(detector, class_name),
            kernel_log(self.run_record(detector, class_name)),
        ]

    def provenance(self, detector: str, class_name: str) -> Path:
        """A unit's provenance record."""
        return self.results(detector, class_name).with_suffix(".json")

    def examples(self, detector: str, class_name: str) -> Path:
        """A unit's Fig. 5 examples."""
        return self.results(detector, class_name).with_suffix(".examples.npz")

    def diagnostics(self, detector: str, class_name: str) -> Path:
        """A unit's diagnostics frame."""
        return self.root / "diagnostics" / detector / f"{class_name}.csv"

    def run_record(self, detector: str, class_name: str) -> Path:
        """A sweep unit's executed notebook."""
        return self.root / "runs" / detector / f"{class_name}.ipynb"

    def aggregate(self, name: str) -> Path:
        """An executed aggregation notebook (``tables``, ``figure5``)."""
        return self.root / f"{name}.ipynb"

    @property
    def status(self) -> Path:
        """The last sweep's status per unit."""
        return self.root / "sweep_status.json"

    @property
    def owner(self) -> Path:
        """Which profile's results the folder holds."""
        return self.root / "OWNER.txt"

    @property
    def profile(self) -> Path:
        """The profile a book build ran, as YAML."""
        return self.root / "profile.yaml"

    def result_files(self) -> list[Path]:
        """Every finished unit's results frame, sorted."""
        return sorted(self.root.glob("results/*/*.csv"))

    def provenance_files(self) -> list[Path]:
        """Every finished unit's provenance record, sorted."""
        return sorted(self.root.glob("results/*/*.json"))

    def diagnostics_files(self) -> list[Path]:
        """Every unit's diagnostics frame, sorted."""
        return sorted(self.root.glob("diagnostics/*/*.csv"))
