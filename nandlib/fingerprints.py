"""What a unit's results depend on, as digests: its config, its class's data files and its weight files.

A sweep stores a unit's :class:`UnitFingerprint` with its finished results and skips the unit on a later
sweep only when the fingerprint is unchanged; otherwise the unit is stale and rerun, and the sweep's status
says which part changed. File contents are hashed through :func:`nandlib.checkpoints.file_fingerprint`
(size and SHA-256, once per file per process), so a sweep hashes each file at most once and a moved or
renamed file with the same bytes changes nothing. Book: ``reproducing.md``, "Outputs".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from nandlib.checkpoints import file_fingerprint
from nandlib.config import UnitConfig

COSMETIC_KEYS = ("output_dir", "cache_dir", "data_root", "profile")
"""Config keys that do not change a unit's numbers: where outputs and the feature cache go, the dataset's
path (its content is the ``data`` part), and the profile's name and description."""


@dataclass(frozen=True)
class UnitFingerprint:
    """Digests of the three things a unit's numbers depend on.

    Attributes:
        config: The unit's config less :data:`COSMETIC_KEYS`, weight files by content.
        data: Every file of the class's folder (relative path, size, SHA-256).
        weights: The weight files the config names (key, size, SHA-256).
    """

    config: str
    data: str
    weights: str

    def changes(self, earlier: UnitFingerprint) -> list[str]:
        """The parts that differ from ``earlier`` (``["data"]``, ...)."""
        return [f.name for f in fields(self) if getattr(self, f.name) != getattr(earlier, f.name)]

    def to_json(self) -> str:
        """As stored with a unit's results."""
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> UnitFingerprint | None:
        """A stored fingerprint, or ``None`` for text that is not one (an older or damaged file)."""
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError):
            return None


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _weight_files(value: object, key: str = "") -> dict[str, str]:
    """Every string in ``value`` that names an existing file, by its dotted key, as its content."""
    if isinstance(value, dict):
        return {k: v for name, item in value.items() for k, v in _weight_files(item, f"{key}.{name}").items()}
    if isinstance(value, str) and value and Path(value).is_file():
        return {key.lstrip("."): str(file_fingerprint(value))}
    return {}


def _without_files(value: object) -> object:
    if isinstance(value, dict):
        return {name: _without_files(item) for name, item in value.items()}
    if isinstance(value, str) and value and Path(value).is_file():
        return "<file>"
    return value


def data_digest(root: str | Path, class_name: str) -> str:
    """A digest of every file under ``<root>/<class_name>`` (relative path, size, SHA-256)."""
    folder = Path(root) / class_name
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return _digest([[str(p.relative_to(folder)), str(file_fingerprint(p))] for p in files])


def unit_fingerprint(
    config: UnitConfig, data_digests: dict[tuple[str, str], str] | None = None
) -> UnitFingerprint:
    """The fingerprint of ``config``'s unit as it would run now.

    Args:
        config: The unit's config.
        data_digests: Class data digests already computed, by (data root, class), filled in here: a sweep
            passes one dict for all its units, so each class folder is read once.
    """
    settings = config.model_dump(mode="json")
    for key in COSMETIC_KEYS:
        settings.pop(key, None)
    known = {} if data_digests is None else data_digests
    key = (config.data_root, config.class_name)
    if key not in known:
        known[key] = data_digest(*key)
    return UnitFingerprint(
        config=_digest(_without_files(settings)), data=known[key], weights=_digest(_weight_files(settings))
    )
