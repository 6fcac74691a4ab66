"""The toy world nandlib ships: seed 0's weights as package data, checked against a manifest.

``nand toy train --seed 0`` (the current :data:`nandlib.toy.train.RECIPE` and default
:class:`nandlib.toy.train.ToyBudget`) trained the files under ``shipped/seed0/``; ``shipped/manifest.json``
holds the SHA-256 and size of each file and the training record (recipe, budget, seed, code commit, seconds,
threads, torch version). :func:`nandlib.toy.train.toy_weights` uses them when their record matches the asked
recipe and budget, after checking every file against the manifest. Book: ``reproducing.md``, "Toy world".

Maintainers re-ship after a recipe change with ``python -m nandlib.toy.shipping <trained folder> --seed 0``
from a checkout (it copies the files into the package source and rewrites the manifest).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from nandlib.checkpoints import file_fingerprint
from nandlib.paths import toy_dir

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
MANIFEST_NAME = "manifest.json"
# How a profile names the toy world's weights (nandlib.toy.train.resolve_toy_weights): reference -> file.
REFERENCES = {"toy:clip": "clip.pt", "toy:adapters": "adapters.pth"}


Found = TypeVar("Found")


class ShippedWeightsError(ValueError):
    """A shipped toy-world file that is missing or does not match its manifest entry."""


def retrain_hint(seed: int) -> str:
    """The command that trains the toy world of ``seed`` into the user data folder."""
    return f"`nand toy train --seed {seed}`"


def toy_reference(path: str | Path) -> tuple[str, str] | None:
    """How provenance names a toy world's weights file: ``("toy:clip", "seed 0, shipped")`` for a shipped
    one, ``("toy:clip", "seed 3, trained here")`` for one under the user data folder, ``None`` for any
    other file."""
    path = Path(path).resolve()
    reference = next((ref for ref, name in REFERENCES.items() if name == path.name), None)
    folder = path.parent
    if reference is None or not folder.name.removeprefix("seed").isdigit():
        return None
    origins = {SHIPPED_DIR.resolve(): "shipped", toy_dir().resolve(): "trained here"}
    origin = origins.get(folder.parent)
    return (reference, f"seed {folder.name.removeprefix('seed')}, {origin}") if origin else None


def earlier_world_note(reference: str) -> str:
    """A warning for a results file whose provenance names shipped toy weights that are not shipped now.

    Args:
        reference: A provenance entry such as ``"toy:clip (seed 0, shipped, sha256 0aede29d485f)"``.

    Returns:
        ``""`` when the entry names the shipped file of this nandlib (or no shipped file), else one
        sentence naming both hashes.
    """
    match = re.fullmatch(r"(toy:\w+) \(seed (\d+), shipped, sha256 ([0-9a-f]+)\)", reference.strip())
    if match is None:
        return ""
    name, seed, recorded = match.groups()
    entry = _manifest().get(f"seed{seed}", {}).get("files", {}).get(REFERENCES.get(name, ""))
    if entry is None or entry["sha256"].startswith(recorded):
        return ""
    return (
        f"Measured on an earlier shipped toy world ({name} sha256 {recorded}); this nandlib ships "
        f"sha256 {entry['sha256'][:len(recorded)]}. The numbers are those of the earlier weights."
    )


def read_manifest(folder: Path) -> dict:
    """The manifest of the shipped files under ``folder`` by seed (``{}`` when nothing is shipped there)."""
    path = folder / MANIFEST_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


def _manifest() -> dict:
    return read_manifest(SHIPPED_DIR)


def shipped_or_trained(
    shipped: Callable[[], Found] | None,
    trained: Callable[[], Found | None],
    where: Callable[[Found], Path],
) -> Found | None:
    """The shipped weights when they match what is asked, else a matching trained copy (user data folder).

    A shipped file that is missing or corrupt falls back to a matching trained copy, with a warning naming
    the file; without one, the error stands. Shared by the toy world (:func:`nandlib.toy.train.toy_weights`)
    and the toy VQGAN (:func:`nandlib.tgvig.toy.toy_vqgan_folder`).

    Args:
        shipped: Checks and returns the shipped weights (raises :class:`ShippedWeightsError`); ``None``
            when no shipped weights match the asked seed, budget and recipe.
        trained: The user data folder's matching weights, or ``None``.
        where: The folder a trained copy lies in (for the warning).

    Returns:
        The weights found, or ``None`` when they must be trained.

    Raises:
        ShippedWeightsError: A shipped file is broken and no trained copy matches.
    """
    if shipped is not None:
        try:
            return shipped()
        except ShippedWeightsError as error:
            fallback = trained()
            if fallback is None:
                raise
            warnings.warn(f"{error}; using the trained copy in {where(fallback)}", stacklevel=3)
            return fallback
    return trained()


def shipped_record(seed: int) -> dict | None:
    """The training record of the shipped world of ``seed`` (``None``: no world of that seed is shipped)."""
    entry = _manifest().get(f"seed{seed}")
    return entry and entry["record"]


def verified_files(seed: int) -> dict[str, Path]:
    """The shipped files of ``seed``'s world by name, each checked against the manifest (size, SHA-256).

    Raises:
        ShippedWeightsError: A file is missing or its content differs from the manifest's; the message names
            the file and the command that retrains the world.
    """
    files = _manifest()[f"seed{seed}"]["files"]
    return check_files(SHIPPED_DIR / f"seed{seed}", files, f"the toy world with {retrain_hint(seed)}")


def check_files(folder: Path, files: dict[str, dict], retrain: str) -> dict[str, Path]:
    """Shipped files by name, each checked against its manifest entry (``{"sha256": …, "size": …}``).

    Args:
        folder: Where the files lie.
        files: Manifest entries by file name.
        retrain: What the error tells the user to retrain, and how (``"the toy world with `…`"``).

    Raises:
        ShippedWeightsError: A file is missing or its content differs from its entry; the message names the
            file and ``retrain``.
    """
    verified = {}
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            problem = "is missing"
        else:
            found = file_fingerprint(path)
            problem = (
                None
                if (found.size, found.sha256) == (expected["size"], expected["sha256"])
                else f"is corrupt (sha256 {found.sha256[:12]}, {found.size} bytes; "
                f"manifest: sha256 {expected['sha256'][:12]}, {expected['size']} bytes)"
            )
        if problem:
            raise ShippedWeightsError(
                f"shipped toy weights {path} {problem}: reinstall nandlib, or retrain {retrain} into "
                "the user data folder"
            )
        verified[name] = path
    return verified


def manifest_entry(folder: Path, names: list[str] | tuple[str, ...], record: dict) -> dict:
    """A manifest entry: SHA-256 and size of each file ``folder/name``, and the training record."""
    fingerprints = {name: file_fingerprint(folder / name) for name in names}
    return {
        "files": {name: {"sha256": f.sha256, "size": f.size} for name, f in fingerprints.items()},
        "record": record,
    }


def ship(trained: Path, seed: int) -> Path:
    """Copy a trained world into the package source and record it in the manifest (maintainers only).

    Args:
        trained: Folder written by ``nand toy train`` (``clip.pt``, ``adapters.pth``, ``training.json``).
        seed: The world's seed.

    Returns:
        The manifest's path.
    """
    from nandlib.toy.train import FILES

    folder = SHIPPED_DIR / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(trained / name, folder / name)
    record = json.loads((folder / "training.json").read_text())
    if record.get("seed") != seed:
        raise ValueError(f"{trained}: trained with seed {record.get('seed')}, not {seed}")
    manifest = _manifest()
    manifest[f"seed{seed}"] = manifest_entry(
        folder, FILES, {key: value for key, value in record.items() if not key.endswith("_loss")}
    )
    path = SHIPPED_DIR / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=ship.__doc__.splitlines()[0])
    parser.add_argument("trained", type=Path, help="folder written by `nand toy train`")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    print(ship(arguments.trained, arguments.seed))
