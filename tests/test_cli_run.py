"""`nand run`: one class end to end from the command line, on generated data and tiny random models."""

import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from nandlib.cli import app

TINY = [
    "--profile",
    "offline",
    "--set",
    "nd.clip.image_size=56",
    "--set",
    "batch_size=4",
    "--cache-dir",
    "off",
]


def _run(synth_root, out, *extra):
    args = ["run", "--data", str(synth_root), "--class", "carpet", "--out", str(out), *TINY, *extra]
    return CliRunner().invoke(app, args)


@pytest.mark.parametrize("detector", ["aprilgan", "winclip-1"])
def test_run_writes_one_row_per_group(synth_root, tmp_path, detector):
    result = _run(synth_root, tmp_path, "--detector", detector)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "results" / detector / "carpet.csv")
    assert list(frame["group"]) == ["thread", "metal", "color", "cut"]
    assert (frame["detector"] == detector).all()
    assert (tmp_path / "results" / detector / "carpet.json").is_file()


@pytest.mark.slow
def test_run_patchcore(synth_root, tmp_path):
    result = _run(synth_root, tmp_path, "--detector", "patchcore")
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "results" / "patchcore" / "carpet.csv")) == 4


def test_flags_and_set_change_single_keys_of_the_profiles_unit(synth_root, tmp_path):
    result = _run(synth_root, tmp_path, "--detector", "winclip-5", "--seed", "3", "--show-config")
    assert result.exit_code == 0, result.output
    unit = yaml.safe_load(result.output)
    assert (unit["seed"], unit["batch_size"], unit["nd"]["clip"]["image_size"]) == (3, 4, 56)
    assert unit["detector"] == {
        "kind": "winclip", "name": "winclip-5", "shots": 5,
        "clip": {"model": "nand-tiny-p16", "image_size": 240, "pretrained": None, "checkpoint": None},
    }  # fmt: skip
    assert unit["profile"]["name"] == "offline"


def test_a_shown_config_runs_as_given(synth_root, tmp_path):
    shown = _run(synth_root, tmp_path / "a", "--show-config")
    config = tmp_path / "unit.yaml"
    config.write_text(shown.output)
    result = CliRunner().invoke(app, ["run", "--config", str(config), "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "b" / "results" / "aprilgan" / "carpet.csv").is_file()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--class", "unicorn"], "unicorn"),
        (["--class", "toothbrush"], "toothbrush"),
        (["--class", "carpet", "--detector", "padim"], "padim"),
        (["--class", "carpet", "--set", "detector.shots=many"], "shots"),
        (["--class", "carpet", "--set", "nd.clip.modle=x"], "nd.clip.modle"),
        (["--class", "carpet", "--batch-size", "0"], "batch-size"),
        (["--class", "carpet", "--set", "phrases={scratch: [a scratch]}"], "scratch"),
        (["--class", "carpet", "--set", "nd.clip.image_size=0"], "nd.clip.image_size"),
        pytest.param(
            ["--class", "carpet", "--device", "cuda"],
            "device: 'cuda': torch sees no CUDA GPU",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible"),
        ),
    ],
)
def test_bad_input_names_the_parameter(synth_root, tmp_path, args, named):
    base = ["run", "--data", str(synth_root), "--out", str(tmp_path), *TINY]
    result = CliRunner().invoke(app, [*base, *args])
    assert result.exit_code in (1, 2), result.output
    assert named in result.output


def test_missing_dataset_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    result = CliRunner().invoke(
        app, ["run", "--data", str(missing), "--class", "carpet", "--out", str(tmp_path), *TINY]
    )
    assert result.exit_code == 1
    assert "nowhere" in result.output


@pytest.mark.parametrize(
    "args",
    [["train-adapters", "--data", ".", "--out", "x.pt"], ["synth", "--out", "x"]],
    ids=["train", "synth"],
)
def test_image_size_zero_is_refused_naming_the_option(args, tmp_path):
    option = "--image-size" if args[0] == "train-adapters" else "--size"
    result = CliRunner().invoke(app, [*args, option, "0"])
    assert result.exit_code == 2
    assert f"Invalid value for '{option}'" in result.output


@pytest.mark.parametrize("command", [["run"], ["sweep"], ["cache", "prune"], ["toy", "train"]])
def test_help_is_wrapped_not_cut_at_80_columns(command):
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0
    assert "…" not in result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    if command == ["run"]:
        assert "(results/<detector>/<class>.csv" in result.output  # whole, not cut
