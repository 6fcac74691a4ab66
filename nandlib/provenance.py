"""Where numbers come from: code version, machine, dataset and weights of a unit (its provenance record).

Every table and figure of the book is drawn under :func:`nandlib.report.provenance_box`, which summarises
these records. Book: ``results.md``.
"""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from nandlib import __version__

PACKAGE_DIR = Path(__file__).resolve().parent


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(PACKAGE_DIR), *args], capture_output=True, text=True, timeout=10, check=True
    )
    return done.stdout.strip()


def code_commit() -> str:
    """``git describe`` of the checkout nandlib runs from; ``"unknown"`` when installed from a wheel."""
    try:
        if Path(_git("rev-parse", "--show-toplevel")).resolve() != PACKAGE_DIR.parent:
            return "unknown"
        return _git("describe", "--always", "--dirty")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine(device: str) -> str:
    """Host, device, CPU count and torch version."""
    name = torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu"
    return f"{platform.node()} ({name}, {os.cpu_count()} CPUs, torch {torch.__version__})"


def dataset_description(root: str | Path) -> str:
    """What a dataset root holds (the first lines of a generated dataset's README) and where."""
    readme = Path(root) / "README.txt"
    if readme.is_file():  # generated data says so in its first lines
        lines = " ".join(line for line in readme.read_text().splitlines()[:3] if line.strip())
        return f"{lines} At {root}."
    return f"MVTec AD layout at {root}"


def record(
    profile: str, description: str, data_root: str | Path, device: str, weights: dict[str, str], **extra: Any
) -> dict[str, Any]:
    """A provenance record: profile, dataset, weights, code version, date, machine, and ``extra``."""
    return {
        "profile": profile,
        "description": description,
        "dataset": dataset_description(data_root),
        "weights": weights,
        "nandlib": __version__,
        "commit": code_commit(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(device),
        **extra,
    }
