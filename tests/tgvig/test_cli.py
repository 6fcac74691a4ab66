"""``nand generate``: bad input fails with one clear line before any model is loaded."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from nandlib.cli import app

runner = CliRunner()


def _folder(tmp_path: Path, name: str, *sizes: int) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for index, size in enumerate(sizes):
        Image.new("RGB", (size, size)).save(folder / f"{index}.png")
    return folder


def test_no_images_mixed_sizes_and_empty_name_are_clear_errors(tmp_path: Path) -> None:
    empty = runner.invoke(
        app, ["generate", "prompts", "--images", str(_folder(tmp_path, "e")), "--name", "x"]
    )
    assert empty.exit_code == 1 and "at least one image" in empty.output
    mixed = _folder(tmp_path, "mixed", 32, 64)
    result = runner.invoke(app, ["generate", "images", "--images", str(mixed), "--name", "x", "--out", "o"])
    assert result.exit_code == 1 and "one size" in result.output
    same = _folder(tmp_path, "same", 32)
    result = runner.invoke(app, ["generate", "prompts", "--images", str(same), "--name", " "])
    assert result.exit_code == 1 and "--name" in result.output
