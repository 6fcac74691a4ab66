"""``nand synth`` and ``nand download``: success, and clean one-line errors with a non-zero exit."""

import hashlib
import io
import tarfile
from pathlib import Path

from typer.testing import CliRunner

from nandlib.cli import app
from nandlib.data import is_complete, read_class

runner = CliRunner()


def test_synth_writes_readable_dataset(tmp_path: Path):
    out = tmp_path / "synth"
    result = runner.invoke(
        app, ["synth", "--out", str(out), "--classes", "bottle", "--seed", "3", "--size", "32"]
    )
    assert result.exit_code == 0, result.output
    assert is_complete(out) and len(read_class(out, "bottle").test) == 5 + 3 * 3


def test_synth_errors_are_clean(tmp_path: Path):
    for args, named in [
        (["--classes", "bottle,rug"], "'rug'"),
        (["--scale", "huge"], "scale"),
        (["--size", "4"], "size"),
    ]:
        result = runner.invoke(app, ["synth", "--out", str(tmp_path / "x"), *args])
        assert result.exit_code == 1 and named in result.output and "Traceback" not in result.output
        assert isinstance(result.exception, SystemExit)
    assert not (tmp_path / "x").exists()


def test_download_from_local_archive(tmp_path: Path):
    archive = tmp_path / "a.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        info = tarfile.TarInfo("bottle/license.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    root = tmp_path / "mvtec"
    result = runner.invoke(app, ["download", "--root", str(root), "--archive", str(archive)])
    assert result.exit_code == 1 and "checksum mismatch" in result.output  # not MVTec AD's archive
    result = runner.invoke(
        app, ["download", "--root", str(root), "--archive", str(archive), "--sha256", "none"]
    )
    assert result.exit_code == 0 and is_complete(root)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    result = runner.invoke(
        app, ["download", "--root", str(tmp_path / "m2"), "--archive", str(archive), "--sha256", digest]
    )
    assert result.exit_code == 0


def test_download_errors_are_clean(tmp_path: Path):
    result = runner.invoke(
        app, ["download", "--root", str(tmp_path / "m"), "--archive", str(tmp_path / "no.tar.xz")]
    )
    assert result.exit_code == 1 and "no.tar.xz" in result.output and "Traceback" not in result.output
    result = runner.invoke(
        app, ["download", "--root", str(tmp_path / "m"), "--url", (tmp_path / "gone").as_uri()]
    )
    assert result.exit_code == 1 and "--archive PATH" in result.output
