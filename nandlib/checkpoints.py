"""Reading weight files for every loader (CLIP, APRIL-GAN's adapters, PatchCore's ResNet), with clear errors.

A weights file that cannot be used raises :class:`CheckpointError` (a ``ValueError``) naming the file and
what is wrong: empty, truncated or not a torch file, not a state dict, or keys and shapes that do not fit
the model (the first few of each). :func:`file_fingerprint` identifies a file by its content (size and
SHA-256), hashed once per file per process, so feature caches and provenance do not depend on the path the
file was given by.

APRIL-GAN-style combined checkpoints ``{"clip": <CLIP state dict>, "linear": <adapter state dict>}`` are
read by both :func:`nandlib.backbones.load_clip` and :meth:`nandlib.adapters.Adapters.load`, each taking its
own part (:data:`COMBINED_CLIP_KEY`, :data:`COMBINED_LINEAR_KEY`).
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

COMBINED_CLIP_KEY = "clip"
COMBINED_LINEAR_KEY = "linear"
SHOWN_KEYS = 5


class CheckpointError(ValueError):
    """A weights file that cannot be loaded; the message names the file and what is wrong with it."""


@dataclass(frozen=True)
class FileFingerprint:
    """Content identity of a file.

    Attributes:
        size: Size in bytes.
        sha256: SHA-256 of the bytes (64 hex).
    """

    size: int
    sha256: str

    def __str__(self) -> str:
        return f"sha256:{self.sha256} size:{self.size}"


_FINGERPRINTS: dict[tuple[Path, int, int], FileFingerprint] = {}


def file_fingerprint(path: str | Path) -> FileFingerprint:
    """Size and SHA-256 of a file, hashed once per process for each (resolved path, size, mtime).

    Raises:
        FileNotFoundError: No file at ``path``.
    """
    path = Path(path)
    stat = path.stat()
    key = (path.resolve(), stat.st_size, stat.st_mtime_ns)
    if key not in _FINGERPRINTS:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _FINGERPRINTS[key] = FileFingerprint(stat.st_size, digest.hexdigest())
    return _FINGERPRINTS[key]


def provenance(path: str | Path) -> str:
    """Where weights came from, for reports: ``"checkpoint:<path> sha256:<16 hex>"``, except for the toy
    world's files, named by reference instead of by a path that says nothing to a reader of a published
    report (:func:`nandlib.toy.shipping.toy_reference`): ``"toy:clip (seed 0, shipped, sha256 <12 hex>)"``.
    Cache keys use the content (:func:`file_fingerprint`) either way."""
    from nandlib.toy.shipping import toy_reference  # imported here: the toy package loads weights itself

    digest = file_fingerprint(path).sha256
    named = toy_reference(path)
    if named:
        return f"{named[0]} ({named[1]}, sha256 {digest[:12]})"
    return f"checkpoint:{path} sha256:{digest[:16]}"


def _is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (OpenAI's CLIP releases): a zip with ``constants.pkl``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def read_checkpoint(path: str | Path, what: str = "checkpoint") -> object:
    """The object stored in a weights file (``torch.load`` with ``weights_only``, or a TorchScript archive's
    state dict), on CPU.

    Args:
        path: The file.
        what: What the file is for, leading every message (``"checkpoint"``, ``"weights"``).

    Raises:
        FileNotFoundError: No file at ``path``.
        CheckpointError: The file is empty, truncated, or not a torch file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no file at {path}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{what} {path}: the file is empty (0 bytes)")
    try:
        if _is_torchscript(path):
            return torch.jit.load(path, map_location="cpu").state_dict()
        return torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise  # names the file, and is not about its content
    except Exception as error:  # torch raises RuntimeError, OSError, EOFError, KeyError, UnpicklingError, ...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else "no message"
        raise CheckpointError(
            f"{what} {path}: truncated or not a torch file ({size} bytes; {type(error).__name__}: {reason})"
        ) from error


def describe(value: object) -> str:
    """What a checkpoint holds, for messages: a dict's first keys, or the type."""
    if isinstance(value, Mapping):
        return f"a dict with keys {_first(value)}"
    return f"a {type(value).__name__}"


def _first(keys: object) -> str:
    """The first :data:`SHOWN_KEYS` of ``keys``, quoted, and how many more."""
    keys = [str(key) for key in keys]
    shown = ", ".join(repr(key) for key in keys[:SHOWN_KEYS])
    return shown + (f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else "")


def as_state_dict(value: object, path: str | Path, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """``value`` as a state dict (``module.`` prefixes of ``DataParallel`` removed).

    Raises:
        CheckpointError: ``value`` is not a dict of tensors (the message says what it is instead).
    """
    if not isinstance(value, Mapping) or not value:
        raise CheckpointError(f"{what} {path}: not a state dict, but {describe(value)}")
    others = [key for key, tensor in value.items() if not isinstance(tensor, torch.Tensor)]
    if others:
        raise CheckpointError(
            f"{what} {path}: not a state dict: {_first(others)} hold no tensors "
            f"(top-level keys {_first(value)})"
        )
    return {str(key).removeprefix("module."): tensor for key, tensor in value.items()}


def load_state_dict(
    module: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, what: str, target: str
) -> None:
    """Load ``state`` into ``module`` strictly, or say which keys and shapes do not fit.

    Args:
        module: The model.
        state: Its state dict from the file.
        path: The file, for messages.
        what: What the file is for (``"checkpoint"``, ``"weights"``).
        target: What ``module`` is, for messages (``"ViT-B-16"``, ``"4 adapters"``).

    Raises:
        CheckpointError: Missing or unexpected keys, or shapes that differ (the first few of each).
    """
    expected = module.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    shapes = [
        f"{key} (file {list(state[key].shape)}, model {list(tensor.shape)})"
        for key, tensor in expected.items()
        if key in state and state[key].shape != tensor.shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_first(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_first(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} wrong shapes: {', '.join(shapes[:SHOWN_KEYS])}")
    if problems:
        details = "; ".join(problems)
        raise CheckpointError(f"{what} {path} does not fit {target} (wrong architecture?): {details}")
    module.load_state_dict(state, strict=True)
