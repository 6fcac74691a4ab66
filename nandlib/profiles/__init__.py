"""Run profiles as data: which dataset, classes, models and weights a sweep uses.

``toy`` (default of ``make book``) runs on generated data with models trained here (the toy world, named
``toy:clip`` and ``toy:adapters``); ``offline`` runs the same pipeline with small random-init models (a smoke
test, minutes); ``paper`` is the paper's configuration on MVTec AD with pretrained weights. A profile is a
YAML file parsed into :class:`nandlib.config.Profile`; ``${VAR}`` values are read from the environment
(unset → ``null``). Book: ``reproducing.md``.
"""

from __future__ import annotations

from pathlib import Path

from nandlib.config import ConfigError, Profile, parse_profile, read_yaml

PROFILE_DIR = Path(__file__).parent

__all__ = ["PROFILE_DIR", "Profile", "available_profiles", "load_profile"]


def available_profiles() -> list[str]:
    """Names of the profiles shipped with nandlib."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | Path, *, data_root: str | Path | None = None) -> Profile:
    """Read a shipped profile by name or a YAML file by path.

    Args:
        name_or_path: ``"toy"``, ``"offline"``, ``"paper"`` or a path to a profile YAML.
        data_root: Dataset root overriding the profile's ``data`` (a real or generated MVTec layout).

    Raises:
        ConfigError: Unknown profile name, missing file, a misspelt key or wrong type (naming the file and
            the key), or a profile that needs a dataset root and has none.
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"profile: unknown profile {name_or_path!r}; choose one of {available_profiles()}"
            )
    raw = read_yaml(path)
    if data_root and isinstance(raw, dict):
        raw = {**raw, "data": {"root": str(data_root)}}
    profile = parse_profile(raw, source=str(path))
    if profile.data.synthetic is None and not profile.data.root:
        raise ConfigError(f"profile {profile.name!r} needs a dataset: pass DATA=/path/to/mvtec (--data)")
    return profile
