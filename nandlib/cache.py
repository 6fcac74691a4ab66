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
``settings.json`` that says what the fingerprint stands for. Files are written to a temporary name
and renamed (``os.replace``), so concurrent workers never see a partial entry; the last writer wins
and both wrote the same features. A hit refreshes the file's modification time, which
:meth:`FeatureCache.prune` reads as "last used". The default root is ``$NAND_CACHE_DIR`` or
``cache/`` in the user data folder. Book: ``reproducing.md``, "Feature cache".
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nandlib.paths import data_home

CACHE_ENV = "NAND_CACHE_DIR"
SETTINGS_FILE = "settings.json"
SUFFIX = ".safetensors"
DISABLED = ("", "off")


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


@dataclass(frozen=True)
class CacheGroup:
    """The entries of one ``(namespace, fingerprint)`` folder.

    Attributes:
        namespace: Kind of features.
        fingerprint: Key of the settings.
        settings: The settings the fingerprint stands for (from ``settings.json``; ``{}`` if missing).
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


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write through a temporary file in the same folder, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


class FeatureCache:
    """Per-image feature store on disk (see the module docstring for keys and layout).

    Args:
        root: Cache folder; default :func:`default_root`.

    Attributes:
        hits: Entries read since creation (for reports and tests).
        misses: Entries computed since creation.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.root)!r})"

    def folder(self, namespace: str, settings: Mapping[str, Any]) -> Path:
        """Folder of the entries of ``namespace`` made with ``settings``."""
        if not namespace or "/" in namespace or namespace.startswith("."):
            raise ValueError(f"namespace: expected a plain folder name, got {namespace!r}")
        return self.root / namespace / fingerprint(settings)

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
            self._write_settings(folder, settings)
            for position, index in enumerate(missing):
                row = {name: t[position].contiguous() for name, t in computed.items()}
                _atomic_write(paths[index], lambda tmp, row=row: save_file(row, tmp))
                rows[index] = row
        names = rows[0].keys()
        return {name: torch.stack([row[name] for row in rows]) for name in names}

    def _read(self, path: Path) -> dict[str, torch.Tensor] | None:
        """An entry's tensors, or ``None`` if absent or unreadable (then it is recomputed)."""
        try:
            row = load_file(str(path))
        except (FileNotFoundError, SafetensorError, OSError):
            return None
        try:
            os.utime(path)  # "last used", for prune
        except OSError:
            pass  # read-only cache: still usable
        return row

    @staticmethod
    def _write_settings(folder: Path, settings: Mapping[str, Any]) -> None:
        target = folder / SETTINGS_FILE
        if not target.is_file():
            text = json.dumps(dict(settings), sort_keys=True, indent=1, default=str)
            _atomic_write(target, lambda tmp: Path(tmp).write_text(text))

    def info(self) -> list[CacheGroup]:
        """One :class:`CacheGroup` per ``(namespace, fingerprint)`` folder, sorted by namespace."""
        groups = []
        if not self.root.is_dir():
            return groups
        for folder in sorted(p for p in self.root.glob("*/*") if p.is_dir()):
            stats = [entry.stat() for entry in folder.glob(f"*{SUFFIX}")]
            settings_file = folder / SETTINGS_FILE
            settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
            groups.append(
                CacheGroup(
                    namespace=folder.parent.name,
                    fingerprint=folder.name,
                    settings=settings,
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

        Args:
            namespace: Only consider this namespace.
            unused_days: Delete entries not used (read or written) for this many days.
            max_bytes: Then delete least recently used entries until the considered ones total at most
                this many bytes.

        Returns:
            ``(entries deleted, bytes freed)``.

        Raises:
            ValueError: Negative ``unused_days`` or ``max_bytes``.
        """
        if (unused_days is not None and unused_days < 0) or (max_bytes is not None and max_bytes < 0):
            raise ValueError(f"unused_days ({unused_days}) and max_bytes ({max_bytes}) must be >= 0")
        pattern = f"{namespace or '*'}/*/*{SUFFIX}"
        entries = sorted(
            ((p.stat().st_mtime, p.stat().st_size, p) for p in self.root.glob(pattern)), key=lambda e: e[0]
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
            if not any(folder.glob(f"*{SUFFIX}")):
                shutil.rmtree(folder, ignore_errors=True)
        return len(doomed), sum(size for _, size, _ in doomed)


def cache_from_setting(setting: FeatureCache | str | Path | None) -> FeatureCache | None:
    """A cache from a config value: ``None`` -> default root, ``""`` or ``"off"`` -> no cache, else a path."""
    if isinstance(setting, FeatureCache):
        return setting
    if isinstance(setting, str) and setting.strip().lower() in DISABLED:
        return None
    return FeatureCache(setting)
