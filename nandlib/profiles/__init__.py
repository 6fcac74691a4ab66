"""Run profiles as data: which dataset, classes, models and weights a sweep uses.

``toy`` (default of ``make book``) runs on generated data with models trained here (the toy world);
``offline`` runs the same pipeline with small random-init models (a smoke test, minutes); ``paper`` is the
paper's configuration on MVTec AD with pretrained weights. A profile is a YAML file;
``${VAR}`` values are read from the environment (unset → ``null``). Book: ``reproducing.md``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROFILE_DIR = Path(__file__).parent
_ENV_VAR = re.compile(r"^\$\{(\w+)\}$")


@dataclass(frozen=True)
class Profile:
    """A parsed run profile.

    Attributes:
        name: Profile name (``offline``, ``paper``, ...).
        description: What its numbers are, printed in every provenance box.
        data: ``{"root": path}`` for a dataset on disk or ``{"synthetic": {...}}`` to generate one.
        classes: MVTec class names to run.
        seed: Global seed.
        device: ``cpu`` or ``cuda``.
        batch_size: Images per forward pass.
        precision: ``fp32``, or ``fp16``/``bf16`` autocast of the CLIP models on CUDA (optional key).
        nd: The ND module's (and APRIL-GAN's) backbone and weights.
        detectors: Detector name (``aprilgan``, ``winclip-K``, ``patchcore``) → its settings.
        trained_here: ``"toy"`` when the weights are the project's own toy world, trained on first use
            (:func:`nandlib.companion.resolve_weights`); ``None`` for weights named in the profile.
    """

    name: str
    description: str
    data: dict[str, Any]
    classes: list[str]
    seed: int
    device: str
    batch_size: int
    nd: dict[str, Any]
    detectors: dict[str, dict[str, Any]] = field(default_factory=dict)
    precision: str = "fp32"
    trained_here: str | None = None


def _expand(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v) for v in value]
    if isinstance(value, str) and (match := _ENV_VAR.match(value)):
        return os.environ.get(match.group(1)) or None
    return value


def available_profiles() -> list[str]:
    """Names of the profiles shipped with nandlib."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | Path, *, data_root: str | Path | None = None) -> Profile:
    """Read a shipped profile by name or a YAML file by path.

    Args:
        name_or_path: ``"offline"``, ``"paper"`` or a path to a profile YAML.
        data_root: Dataset root overriding the profile's ``data`` (a real or generated MVTec layout).

    Raises:
        ValueError: Unknown profile name, or a profile that needs a dataset root and has none.
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ValueError(
                f"profile: unknown profile {name_or_path!r}; choose one of {available_profiles()}"
            )
    elif not path.is_file():
        raise ValueError(f"profile: no file at {path}")
    raw = _expand(yaml.safe_load(path.read_text()))
    data = {"root": str(data_root)} if data_root else raw["data"]
    if "synthetic" not in data and not data.get("root"):
        raise ValueError(f"profile {raw['name']!r} needs a dataset: pass DATA=/path/to/mvtec (--data)")
    return Profile(
        name=raw["name"],
        description=" ".join(raw["description"].split()),
        data=data,
        classes=list(raw["classes"]),
        seed=int(raw["seed"]),
        device=raw["device"],
        batch_size=int(raw["batch_size"]),
        nd=dict(raw["nd"]),
        detectors={k: dict(v or {}) for k, v in raw["detectors"].items()},
        precision=raw.get("precision", "fp32"),
        trained_here=raw.get("trained_here"),
    )
