"""The output layout of runs and sweeps, and the one atomic writer every output goes through.

A sweep's (or one ``nand run``'s) output folder holds, per unit ``<detector>/<class>``::

    results/<detector>/<class>.csv             tidy results (written last: marks the unit finished)
    results/<detector>/<class>.json            provenance (weights, data, profile, commit, config)
    results/<detector>/<class>.examples.npz    Fig. 5 examples
    diagnostics/<detector>/<class>.csv         suppression diagnostics (:mod:`nandlib.diagnostics`)
    runs/<detector>/<class>.ipynb              the executed run notebook (sweeps only)

and once per folder ``sweep_status.json``, ``OWNER.txt`` (whose results these are), ``profile.yaml`` (the
profile the book ran) and the executed aggregation notebooks ``tables.ipynb`` and ``figure5.ipynb``.
Book: ``reproducing.md``, "Outputs".
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
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
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    mode = os.fstat(descriptor).st_mode & 0o777
    os.close(descriptor)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@dataclass(frozen=True)
class OutputLayout:
    """Paths inside one output folder (see the module docstring)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def results(self, detector: str, class_name: str) -> Path:
        """A unit's results frame; its presence marks the unit finished."""
        return self.root / "results" / detector / f"{class_name}.csv"

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
        """Whose results the folder holds (profile, data, weights digest)."""
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
