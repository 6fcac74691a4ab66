"""Fetch, verify and unpack MVTec AD (book: ``reproducing.md``, "Getting MVTec AD").

The download resumes (HTTP ``Range``) into a ``.part`` file, the archive is checked against its SHA-256, and
the dataset is unpacked in a staging folder that is renamed to ``root`` only when complete. MVTec's hosting
link has moved several times; when it is dead, download the archive by hand and pass it as ``archive``.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from nandlib.data.classes import MVTEC_CLASSES
from nandlib.data.layout import ensure_empty, is_complete, staged_dataset

ARCHIVE_NAME = "mvtec_anomaly_detection.tar.xz"
DEFAULT_URL = (
    "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/420938113-1629952094/"
    + ARCHIVE_NAME
)
MVTEC_SHA256 = "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d"
MANUAL_HINT = (
    "download mvtec_anomaly_detection.tar.xz by hand from MVTec's website "
    "(https://www.mvtec.com/company/research/datasets/mvtec-ad), then pass --archive PATH "
    "(Python: download_mvtec(root, archive=PATH))"
)
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """The archive could not be fetched or is not the expected one."""


def sha256_of(path: Path) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, target: Path, timeout: float) -> None:
    """Download ``url`` to ``target``, resuming from ``target.part`` when the server honours ``Range``."""
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = have > 0 and getattr(response, "status", None) == 206
            with part.open("ab" if resumed else "wb") as handle:
                shutil.copyfileobj(response, handle, _CHUNK)
    except urllib.error.HTTPError as error:
        if error.code != 416 or not have:  # 416: the .part file already holds the whole archive
            raise DownloadError(
                f"could not download {url}: HTTP {error.code} {error.reason}; {MANUAL_HINT}"
            ) from error
    except (urllib.error.URLError, OSError) as error:
        raise DownloadError(
            f"could not download {url}: {error}; rerun to resume from {part}, or {MANUAL_HINT}"
        ) from error
    part.replace(target)


def _verify(path: Path, sha256: str | None, downloaded: bool) -> None:
    if sha256 is None:
        return
    actual = sha256_of(path)
    if actual != sha256.lower():
        if downloaded:
            path.unlink()
        raise DownloadError(
            f"checksum mismatch for {path}: SHA-256 {actual}, expected {sha256}"
            + (" (the corrupt download was deleted; rerun)" if downloaded else "")
        )


def _extract(archive: Path, staging: Path) -> None:
    """Unpack ``archive`` into ``staging`` so that the class folders lie directly in it."""
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="data")
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DownloadError(f"cannot extract {archive}: {error}") from error
    found = [p for p in staging.iterdir() if p.is_dir()]
    if not any(p.name in MVTEC_CLASSES for p in found) and len(found) == 1:  # one wrapping folder
        wrapper = found[0]
        for child in wrapper.iterdir():
            child.rename(staging / child.name)
        wrapper.rmdir()
    if not any((staging / name).is_dir() for name in MVTEC_CLASSES):
        raise DownloadError(f"{archive} holds no MVTec AD class folder (bottle, cable, ...)")


def download_mvtec(
    root: str | Path,
    url: str = DEFAULT_URL,
    archive: str | Path | None = None,
    sha256: str | None = MVTEC_SHA256,
    timeout: float = 60.0,
    keep_archive: bool = False,
) -> Path:
    """Download (or take a local archive of) MVTec AD, verify it and unpack it at ``root``.

    Does nothing if ``root`` already holds a complete dataset written by this function. The download goes
    to ``<root>.tar.xz.part`` next to ``root`` and resumes from there after an interruption.

    Args:
        root: Dataset folder to create (class folders go directly in it).
        url: Where to download the archive from (``http(s)://`` or ``file://``).
        archive: A local copy of the archive; skips the download. It is never deleted.
        sha256: Expected SHA-256 of the archive; ``None`` skips the check (for your own archive).
        timeout: Network timeout in seconds.
        keep_archive: Keep the downloaded archive next to ``root`` after unpacking.

    Returns:
        ``root``.

    Raises:
        DownloadError: Dead link or network failure (with how to download by hand), checksum mismatch,
            or an archive that is not MVTec AD.
        FileNotFoundError: ``archive`` does not exist.
        FileExistsError: ``root`` exists, is not empty and is not a complete download.
    """
    root = Path(root)
    if is_complete(root):
        return root
    ensure_empty(root)
    if archive is not None:
        source = Path(archive)
        if not source.is_file():
            raise FileNotFoundError(f"archive not found: {source}")
    else:
        root.parent.mkdir(parents=True, exist_ok=True)
        source = root.with_name(root.name + ".tar.xz")
        if not source.exists():
            _fetch(url, source, timeout)
    _verify(source, sha256, downloaded=archive is None)
    note = f"MVTec AD from {archive or url}, SHA-256 {sha256 or 'not checked'}"
    with staged_dataset(root, note) as staging:
        _extract(source, staging)
    if archive is None and not keep_archive:
        source.unlink()
    return root
