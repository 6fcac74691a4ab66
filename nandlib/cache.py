"""On-disk cache of per-image backbone features, shared by runs, groups, prompts and detectors.

Encoding an image through the backbone is the expensive part of every unit (seconds per image for
ViT-L-14-336 at 518 on a CPU); everything NAND adds afterwards is cheap. :class:`FeatureCache` stores
each image's features once, keyed by

* a **namespace**: what kind of features (``"clip-layers"``: raw ViT block outputs and the image
  embedding, shared by APRIL-GAN and the ND module; ``"winclip"``; ``"patchcore"``);
* a **fingerprint** of every setting that changes them (model, weights provenance, input size,
  layers, precision, ...; see :func:`fingerprint`);
* the **image digest**: SHA-256 of the *decoded* pixels with mode and size (:func:`image_digest`),
  because detectors receive PIL images, not files. A lossless re-save of a picture hits; a different
  JPEG encoding of it misses.

Layout: ``<root>/<namespace>/<fingerprint>/<digest>.safetensors``, one file per image, beside a
``settings.json`` that says what the fingerprint stands for, and a ``.nandlib-cache`` marker in the root.
Files are written to a temporary name and renamed (``os.replace``), so concurrent workers never see a
partial entry; the last writer wins and both wrote the same features. A hit refreshes the file's
modification time, which :meth:`FeatureCache.prune` reads as "last used". The default root is
``$NAND_CACHE_DIR`` or ``cache/`` in the user data folder. Book: ``reproducing.md``, "Feature cache".

Reliability: the cache is only an optimisation. Each entry holds a SHA-256 of its tensors (safetensors
metadata), checked on every read; an entry that fails it (or has none) is a miss and is rewritten. A failed
write (read-only folder, full disk) warns once (:class:`CacheWriteWarning`) and the run goes on without
caching. Temporaries left by a killed writer are removed after an hour, on the next use or prune. Prune
deletes only what the cache wrote: entry files in folders whose ``settings.json`` hashes to the folder's
name, under a root holding the marker. Files get the umask's permissions, like any other file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from nandlib.outputs import TEMPORARY_PATTERN, atomic_write
from nandlib.paths import data_home

CACHE_ENV = "NAND_CACHE_DIR"
SETTINGS_FILE = "settings.json"
SUFFIX = ".safetensors"
DISABLED = ("", "off")
ROOT_MARKER = ".nandlib-cache"
CHECKSUM_KEY = "nandlib.sha256"
STALE_SECONDS = 3600.0
_ENTRY_NAME = re.compile(rf"[0-9a-f]{{32}}{re.escape(SUFFIX)}")
# Ours: ".<name>.<8 random>.tmp"; safetensors' own (it writes through a temporary too): ".tmp<6 random>".
_TEMPORARY_NAME = re.compile(rf"{TEMPORARY_PATTERN}|\.tmp[A-Za-z0-9]{{6}}")
_log = logging.getLogger(__name__)


class CacheWriteWarning(UserWarning):
    """The feature cache could not write an entry; features are computed without caching."""


def default_root() -> Path:
    """``$NAND_CACHE_DIR`` if set, else ``cache/`` in the user data folder (``nandlib.paths``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return data_home() / "cache"


def image_digest(image: Image.Image) -> str:
    """SHA-256 (32 hex) of an image's decoded pixel bytes, mode and size."""
    digest = hashlib.sha256(f"{image.mode}|{image.size[0]}x{image.size[1]}|".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()[:32]


def fingerprint(settings: Mapping[str, Any]) -> str:
    """16-hex identifier of feature settings (JSON, keys sorted; non-JSON values by ``str``)."""
    text = json.dumps(dict(settings), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tensors_checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (64 hex) of named tensors: names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def check_namespace(namespace: str) -> str:
    """Return ``namespace`` if it is a plain folder name (it cannot leave the cache root).

    Raises:
        ValueError: Naming ``namespace``: empty, hidden (``.``, ``..``) or holding a path separator.
    """
    separators = {"/", "\\", os.sep}
    if not namespace or namespace.startswith(".") or any(s in namespace for s in separators):
        raise ValueError(f"namespace: expected a plain folder name inside the cache root, got {namespace!r}")
    return namespace


@dataclass(frozen=True)
class CacheGroup:
    """The entries of one ``(namespace, fingerprint)`` folder.

    Attributes:
        namespace: Kind of features.
        fingerprint: Key of the settings.
        settings: The settings the fingerprint stands for (from ``settings.json``).
        entries: Number of cached images.
        bytes: Total size of the entries in bytes.
        last_used: Latest modification time of an entry (seconds since the epoch; 0 when empty).
    """

    namespace: str
    fingerprint: str
    settings: dict[str, Any]
    entries: int
    bytes: int
    last_used: float


def _entry_files(folder: Path) -> list[Path]:
    """The entry files of a cache folder (``<32 hex>.safetensors``; nothing else is an entry)."""
    return sorted(p for p in folder.iterdir() if _ENTRY_NAME.fullmatch(p.name) and p.is_file())


def _is_cache_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a ``settings.json`` whose :func:`fingerprint` is the folder's name."""
    try:
        settings = json.loads((folder / SETTINGS_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(settings, dict) and fingerprint(settings) == folder.name


def _remove_stale_temporaries(folder: Path) -> None:
    """Delete temporaries of killed writers in ``folder`` (older than :data:`STALE_SECONDS`)."""
    cutoff = time.time() - STALE_SECONDS
    try:
        with os.scandir(folder) as found:
            stale = [
                Path(e.path) for e in found
                if _TEMPORARY_NAME.fullmatch(e.name) and e.is_file() and e.stat().st_mtime < cutoff
            ]  # fmt: skip
    except OSError:
        return  # no folder yet, or one that vanished while listed
    for path in stale:
        try:
            path.unlink()
        except OSError:
            pass  # renamed by its writer meanwhile, or a read-only cache


class FeatureCache:
    """Per-image feature store on disk (see the module docstring for keys, layout and reliability).

    Args:
        root: Cache folder; default :func:`default_root`.

    Attributes:
        hits: Entries read since creation (for reports and tests).
        misses: Entries computed since creation.
        writable: ``False`` after a failed write: entries are then only read, never written.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.hits = 0
        self.misses = 0
        self.writable = True
        self._swept: set[Path] = set()

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.root)!r})"

    def folder(self, namespace: str, settings: Mapping[str, Any]) -> Path:
        """Folder of the entries of ``namespace`` made with ``settings``."""
        return self.root / check_namespace(namespace) / fingerprint(settings)

    def get_or_compute(
        self,
        namespace: str,
        settings: Mapping[str, Any],
        images: Sequence[Image.Image],
        compute: Callable[[Sequence[Image.Image]], Mapping[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        """Features of ``images``: read where cached, computed (in one call) and stored where not.

        Args:
            namespace: Kind of features, e.g. ``"clip-layers"``.
            settings: Everything that changes the features (hashed by :func:`fingerprint`).
            images: The images, in order.
            compute: Maps a list of images to named tensors whose first dimension runs over them;
                called once with the images that miss, never when all hit.

        Returns:
            Name -> ``[len(images), ...]`` tensor on CPU, in input order.

        Raises:
            ValueError: If ``images`` is empty or ``compute`` returns tensors of the wrong length.
        """
        if len(images) == 0:
            raise ValueError("images: need at least one image")
        folder = self.folder(namespace, settings)
        if folder not in self._swept:
            _remove_stale_temporaries(folder)
            self._swept.add(folder)
        paths = [folder / f"{image_digest(image)}{SUFFIX}" for image in images]
        rows: list[dict[str, torch.Tensor] | None] = [self._read(path) for path in paths]
        missing = [i for i, row in enumerate(rows) if row is None]
        self.hits += len(images) - len(missing)
        self.misses += len(missing)
        if missing:
            computed = {name: t.detach().cpu() for name, t in compute([images[i] for i in missing]).items()}
            wrong = {name: len(t) for name, t in computed.items() if len(t) != len(missing)}
            if wrong:
                raise ValueError(f"compute: returned {wrong} rows for {len(missing)} images")
            for position, index in enumerate(missing):
                rows[index] = {name: t[position].contiguous() for name, t in computed.items()}
            self._write(folder, settings, [(paths[i], rows[i]) for i in missing])
        names = rows[0].keys()
        return {name: torch.stack([row[name] for row in rows]) for name in names}

    def _read(self, path: Path) -> dict[str, torch.Tensor] | None:
        """An entry's tensors, or ``None`` if absent, unreadable or failing its checksum (then recomputed)."""
        try:
            with safe_open(str(path), framework="pt") as handle:
                stored = (handle.metadata() or {}).get(CHECKSUM_KEY)
                row = {name: handle.get_tensor(name) for name in handle.keys()}
        except (FileNotFoundError, SafetensorError, OSError):
            return None
        if stored is None:
            return None  # written before checksums: rewritten with one
        if stored != tensors_checksum(row):
            _log.warning("feature cache: %s fails its checksum (corrupt on disk); recomputing it", path)
            return None
        try:
            os.utime(path)  # "last used", for prune
        except OSError:
            pass  # read-only cache: still usable
        return row

    def _write(
        self,
        folder: Path,
        settings: Mapping[str, Any],
        entries: Iterable[tuple[Path, dict[str, torch.Tensor]]],
    ) -> None:
        """Store entries (with their checksums); on the first failure warn once and stop writing."""
        if not self.writable:
            return
        try:
            self._write_marker()
            self._write_settings(folder, settings)
            for path, row in entries:
                metadata = {CHECKSUM_KEY: tensors_checksum(row)}
                atomic_write(path, lambda tmp, row=row, metadata=metadata: save_file(row, str(tmp), metadata))
        except (OSError, SafetensorError) as error:
            self.writable = False
            warnings.warn(
                f"feature cache: cannot write to {folder} ({error}); going on without caching",
                CacheWriteWarning,
                stacklevel=3,
            )

    def _write_marker(self) -> None:
        marker = self.root / ROOT_MARKER
        if not marker.is_file():
            note = "nandlib feature cache: `nand cache prune` deletes only the entries it wrote here.\n"
            atomic_write(marker, lambda tmp: tmp.write_text(note))

    @staticmethod
    def _write_settings(folder: Path, settings: Mapping[str, Any]) -> None:
        target = folder / SETTINGS_FILE
        if not target.is_file():
            text = json.dumps(dict(settings), sort_keys=True, indent=1, default=str)
            atomic_write(target, lambda tmp: tmp.write_text(text))

    def _folders(self) -> list[Path]:
        """The ``(namespace, fingerprint)`` folders this cache wrote (see :func:`_is_cache_folder`).

        Raises:
            NotADirectoryError: The root exists but is not a folder.
        """
        if not self.root.exists():
            return []
        if not self.root.is_dir():
            raise NotADirectoryError(f"cache root {self.root} is a file, not a folder")
        return sorted(p for p in self.root.glob("*/*") if p.is_dir() and _is_cache_folder(p))

    def info(self) -> list[CacheGroup]:
        """One :class:`CacheGroup` per ``(namespace, fingerprint)`` folder, sorted by namespace.

        Raises:
            NotADirectoryError: The root exists but is not a folder.
        """
        groups = []
        for folder in self._folders():
            stats = [entry.stat() for entry in _entry_files(folder)]
            groups.append(
                CacheGroup(
                    namespace=folder.parent.name,
                    fingerprint=folder.name,
                    settings=json.loads((folder / SETTINGS_FILE).read_text()),
                    entries=len(stats),
                    bytes=sum(s.st_size for s in stats),
                    last_used=max((s.st_mtime for s in stats), default=0.0),
                )
            )
        return groups

    def size(self) -> int:
        """Total bytes of all entries."""
        return sum(group.bytes for group in self.info())

    def prune(
        self,
        *,
        namespace: str | None = None,
        unused_days: float | None = None,
        max_bytes: int | None = None,
    ) -> tuple[int, int]:
        """Delete entries; with no criterion, every entry of ``namespace`` (all namespaces if ``None``).

        Only entries the cache wrote are ever deleted (see the module docstring), with their folder's
        ``settings.json`` once no entry is left; stale temporaries of killed writers go too.

        Args:
            namespace: Only consider this namespace (one the cache holds).
            unused_days: Delete entries not used (read or written) for this many days.
            max_bytes: Then delete least recently used entries until the considered ones total at most
                this many bytes.

        Returns:
            ``(entries deleted, bytes freed)``.

        Raises:
            ValueError: Negative ``unused_days`` or ``max_bytes``; a ``namespace`` that is not a plain
                folder name or not in the cache; a root without the cache's marker file.
            NotADirectoryError: The root exists but is not a folder.
        """
        if (unused_days is not None and unused_days < 0) or (max_bytes is not None and max_bytes < 0):
            raise ValueError(f"unused_days ({unused_days}) and max_bytes ({max_bytes}) must be >= 0")
        folders = self._prunable_folders(namespace)
        for folder in folders:
            _remove_stale_temporaries(folder)
        entries = sorted(
            ((s.st_mtime, s.st_size, p) for f in folders for p in _entry_files(f) for s in [p.stat()]),
            key=lambda e: e[0],
        )
        if unused_days is None and max_bytes is None:
            doomed = entries
        else:
            cutoff = time.time() - 86400 * unused_days if unused_days is not None else float("-inf")
            doomed = [e for e in entries if e[0] < cutoff]
            kept = [e for e in entries if e[0] >= cutoff]
            total = sum(size for _, size, _ in kept)
            for entry in kept:  # oldest first
                if max_bytes is None or total <= max_bytes:
                    break
                doomed.append(entry)
                total -= entry[1]
        for _, _, path in doomed:
            path.unlink(missing_ok=True)
        for folder in {path.parent for _, _, path in doomed}:
            if not _entry_files(folder):
                (folder / SETTINGS_FILE).unlink(missing_ok=True)
                try:
                    folder.rmdir()
                except OSError:
                    pass  # holds files the cache did not write: left alone
        return len(doomed), sum(size for _, size, _ in doomed)

    def _prunable_folders(self, namespace: str | None) -> list[Path]:
        """The cache folders ``prune`` may delete from, after checking the root and ``namespace``."""
        if namespace is not None:
            check_namespace(namespace)
        folders = self._folders()
        if self.root.exists() and not (self.root / ROOT_MARKER).is_file():
            raise ValueError(
                f"{self.root} is not a nandlib feature cache (no {ROOT_MARKER} marker file); prune deletes "
                f"only what the cache wrote. For a cache older than the marker, create the empty file "
                f"{self.root / ROOT_MARKER}"
            )
        if namespace is None:
            return folders
        known = sorted({folder.parent.name for folder in folders})
        if namespace not in known:
            raise ValueError(
                f"namespace {namespace!r}: not in cache {self.root}; it holds {', '.join(known) or 'none'}"
            )
        return [folder for folder in folders if folder.parent.name == namespace]


def cache_from_setting(setting: FeatureCache | str | Path | None) -> FeatureCache | None:
    """A cache from a config value: ``None`` -> default root, ``""`` or ``"off"`` -> no cache, else a path."""
    if isinstance(setting, FeatureCache):
        return setting
    if isinstance(setting, str) and setting.strip().lower() in DISABLED:
        return None
    return FeatureCache(setting)
