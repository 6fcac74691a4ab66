"""`nand run`: one class end to end from the command line, on generated data and tiny random models."""

import pandas as pd
import pytest
from typer.testing import CliRunner

from nandlib.cli import app

TINY = ["--model", "nand-tiny-p14", "--random-init", "--detector-model", "nand-tiny-p16"]


def _run(synth_root, out, *extra):
    return CliRunner().invoke(
        app, ["run", "--data", str(synth_root), "--class", "carpet", "--out", str(out), *TINY, *extra]
    )


@pytest.mark.parametrize("detector", [["--detector", "aprilgan"], ["--detector", "winclip", "--shots", "1"]])
def test_run_writes_one_row_per_group(synth_root, tmp_path, detector):
    result = _run(synth_root, tmp_path, *detector)
    assert result.exit_code == 0, result.output
    label = "aprilgan" if detector[1] == "aprilgan" else "winclip-1"
    frame = pd.read_csv(tmp_path / "results" / label / "carpet.csv")
    assert list(frame["group"]) == ["thread", "metal", "color", "cut"]
    assert (frame["detector"] == label).all()
    assert (tmp_path / "results" / label / "carpet.json").is_file()


@pytest.mark.slow
def test_run_patchcore(synth_root, tmp_path):
    result = _run(synth_root, tmp_path, "--detector", "patchcore")
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "results" / "patchcore" / "carpet.csv")) == 4


def test_run_refuses_random_weights_unless_asked(synth_root, tmp_path):
    result = CliRunner().invoke(
        app, ["run", "--data", str(synth_root), "--class", "carpet", "--out", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "--random-init" in result.output


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--class", "unicorn"], "unicorn"),
        (["--class", "toothbrush"], "toothbrush"),
        (["--class", "carpet", "--detector", "padim"], "padim"),
        (["--class", "carpet", "--detector", "winclip", "--shots", "50"], "50"),
    ],
)
def test_bad_input_names_the_parameter(synth_root, tmp_path, args, named):
    base = ["run", "--data", str(synth_root), "--out", str(tmp_path), *TINY]
    result = CliRunner().invoke(app, [*base, *args])
    assert result.exit_code == 1, result.output
    assert named in result.output


def test_missing_dataset_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    result = CliRunner().invoke(
        app, ["run", "--data", str(missing), "--class", "carpet", "--out", str(tmp_path), *TINY]
    )
    assert result.exit_code == 1
    assert "nowhere" in result.output
