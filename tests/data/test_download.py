"""The MVTec AD downloader on small archives served from file:// and a local HTTP server."""

import hashlib
import io
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from nandlib.data import DownloadError, download_mvtec, is_complete


def _archive_bytes(prefix: str = "") -> bytes:
    """A tar.xz shaped like MVTec AD's: class folders (optionally under ``prefix``) and a licence file."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name in ("bottle/train/good/000.png", "bottle/test/good/000.png"):
            png = io.BytesIO()
            Image.new("RGB", (4, 4), (10, 20, 30)).save(png, format="PNG")
            info = tarfile.TarInfo(prefix + name)
            info.size = len(png.getvalue())
            tar.addfile(info, io.BytesIO(png.getvalue()))
        licence = b"CC BY-NC-SA 4.0\n"
        info = tarfile.TarInfo(prefix + "license.txt")
        info.size = len(licence)
        tar.addfile(info, io.BytesIO(licence))
    return buffer.getvalue()


ARCHIVE = _archive_bytes()
SHA = hashlib.sha256(ARCHIVE).hexdigest()


class _Server(ThreadingHTTPServer):
    payload = ARCHIVE
    ranges: list


class _Handler(BaseHTTPRequestHandler):
    """Serves ``/mvtec.tar.xz`` with HTTP Range support; anything else is 404."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path != "/mvtec.tar.xz":
            self.send_error(404)
            return
        data, requested = self.server.payload, self.headers.get("Range")
        self.server.ranges.append(requested)
        start = int(requested.removeprefix("bytes=").rstrip("-")) if requested else 0
        if start >= len(data) > 0 and requested:
            self.send_response(416)
            self.end_headers()
            return
        self.send_response(206 if requested else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.ranges = []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _url(server: _Server, path: str = "/mvtec.tar.xz") -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def test_file_url_download_extracts_and_cleans_up(tmp_path: Path):
    source = tmp_path / "src.tar.xz"
    source.write_bytes(ARCHIVE)
    root = download_mvtec(tmp_path / "mvtec", url=source.as_uri(), sha256=SHA)
    assert is_complete(root) and (root / "bottle" / "train" / "good" / "000.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mvtec", "src.tar.xz"]
    assert download_mvtec(root, url="http://127.0.0.1:9/never-fetched", sha256=SHA) == root  # already done


def test_resumes_from_partial_file(tmp_path: Path, server: _Server):
    half = len(ARCHIVE) // 2
    (tmp_path / "mvtec.tar.xz.part").write_bytes(ARCHIVE[:half])
    root = download_mvtec(tmp_path / "mvtec", url=_url(server), sha256=SHA, timeout=10)
    assert server.ranges == [f"bytes={half}-"]
    assert (root / "bottle" / "test" / "good" / "000.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mvtec"]


def test_complete_partial_file_needs_no_more_bytes(tmp_path: Path, server: _Server):
    (tmp_path / "mvtec.tar.xz.part").write_bytes(ARCHIVE)
    download_mvtec(tmp_path / "mvtec", url=_url(server), sha256=SHA, timeout=10, keep_archive=True)
    assert server.ranges == [f"bytes={len(ARCHIVE)}-"]
    assert (tmp_path / "mvtec.tar.xz").read_bytes() == ARCHIVE


def test_server_ignoring_range_restarts_from_zero(tmp_path: Path):
    source = tmp_path / "src.tar.xz"
    source.write_bytes(ARCHIVE)
    (tmp_path / "mvtec.tar.xz.part").write_bytes(b"stale bytes")  # file:// ignores Range
    assert is_complete(download_mvtec(tmp_path / "mvtec", url=source.as_uri(), sha256=SHA))


def test_corrupted_download_fails_checksum_and_leaves_nothing(tmp_path: Path, server: _Server):
    server.payload = ARCHIVE[:-10] + bytes(10)
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_mvtec(tmp_path / "mvtec", url=_url(server), sha256=SHA, timeout=10)
    assert list(tmp_path.iterdir()) == []


def test_dead_link_explains_manual_download(tmp_path: Path, server: _Server):
    with pytest.raises(DownloadError, match=r"HTTP 404.*by hand.*--archive PATH"):
        download_mvtec(tmp_path / "mvtec", url=_url(server, "/moved"), sha256=SHA, timeout=10)
    with pytest.raises(DownloadError, match="--archive PATH"):
        download_mvtec(tmp_path / "mvtec", url=(tmp_path / "absent.tar.xz").as_uri(), sha256=SHA)
    assert not (tmp_path / "mvtec").exists()


def test_local_archive_checksum_and_own_archive(tmp_path: Path):
    archive = tmp_path / "mine.tar.xz"
    archive.write_bytes(_archive_bytes(prefix="mvtec_anomaly_detection/"))  # wrapped in one folder
    with pytest.raises(DownloadError, match="mine.tar.xz"):
        download_mvtec(tmp_path / "mvtec", archive=archive)  # default: MVTec AD's SHA-256
    assert archive.exists() and not (tmp_path / "mvtec").exists()
    root = download_mvtec(tmp_path / "mvtec", archive=archive, sha256=None)
    assert (root / "bottle" / "train" / "good" / "000.png").is_file() and (root / "license.txt").is_file()
    assert archive.exists()


def test_bad_inputs_are_named(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nope.tar.xz"):
        download_mvtec(tmp_path / "mvtec", archive=tmp_path / "nope.tar.xz")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("")
    with pytest.raises(FileExistsError, match="busy"):
        download_mvtec(tmp_path / "busy", archive=tmp_path / "nope.tar.xz")
    not_mvtec = tmp_path / "other.tar.xz"
    with tarfile.open(not_mvtec, "w:xz") as tar:
        tar.add(tmp_path / "busy" / "x", arcname="readme.txt")
    with pytest.raises(DownloadError, match="no MVTec AD class folder"):
        download_mvtec(tmp_path / "mvtec", archive=not_mvtec, sha256=None)
    garbage = tmp_path / "garbage.tar.xz"
    garbage.write_bytes(b"not an archive")
    with pytest.raises(DownloadError, match="cannot extract.*garbage.tar.xz"):
        download_mvtec(tmp_path / "mvtec", archive=garbage, sha256=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "garbage.tar.xz", "other.tar.xz"]
