"""run_unit and `nand run` on bad input: incomplete classes and unwritable outputs fail before the work."""

import errno
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from nandlib.cli import app
from nandlib.outputs import OutputError
from nandlib.run import LayoutWarning, run_unit


@pytest.fixture
def data(synth_root, tmp_path) -> Path:
    """A copy of the synthetic carpet, to take folders out of."""
    return Path(shutil.copytree(synth_root / "carpet", tmp_path / "data" / "carpet")).parent


def _fail_writes_under(monkeypatch, folder: Path, code: int, only: str = "") -> None:
    """Make every file opened under ``folder`` (whose path contains ``only``) fail with ``code``."""
    real_open = os.open

    def failing_open(path, *args, **kwargs):
        if str(path).startswith(str(folder)) and only in str(path):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", failing_open)


def test_missing_group_is_warned_about_and_the_others_run(data, tiny_unit, tmp_path):
    shutil.rmtree(data / "carpet" / "test" / "color")
    with pytest.warns(LayoutWarning, match="group 'color' has no test images"):
        frame = run_unit(tiny_unit(tmp_path / "out", data_root=str(data), cache_dir="off"), progress=False)
    assert sorted(frame["group"]) == ["cut", "metal", "thread"]


@pytest.mark.parametrize(
    ("remove", "named"),
    [("train/good", "train/good"), ("test/[!g]*", "only good test images")],
)
def test_unusable_class_fails_before_any_encoding(data, tiny_unit, tmp_path, count_encodings, remove, named):
    for folder in (data / "carpet").glob(remove):
        shutil.rmtree(folder)
    with pytest.raises(ValueError, match=named):
        run_unit(tiny_unit(tmp_path / "out", data_root=str(data), cache_dir="off"), progress=False)
    assert count_encodings == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_unwritable_output_fails_before_any_encoding(tiny_unit, tmp_path, monkeypatch, count_encodings, code):
    out = tmp_path / "out"
    _fail_writes_under(monkeypatch, out, code)
    with pytest.raises(OutputError, match=f"cannot write {out}/results/aprilgan/"):
        run_unit(tiny_unit(out, cache_dir="off"), progress=False)
    assert count_encodings == []


def test_a_file_in_place_of_the_output_folder_is_named_before_any_encoding(
    tiny_unit, tmp_path, count_encodings
):
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(OutputError, match=f"{tmp_path / 'out'} is a file, not a folder"):
        run_unit(tiny_unit(tmp_path / "out", cache_dir="off"), progress=False)
    assert count_encodings == []


def _unit_file(tiny_unit, tmp_path, out: Path) -> Path:
    path = tmp_path / "unit.yaml"
    path.write_text(yaml.safe_dump(tiny_unit(out, cache_dir="off").model_dump(mode="json")))
    return path


def test_nand_run_names_an_unwritable_output_without_a_traceback(tiny_unit, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _fail_writes_under(monkeypatch, out, errno.ENOSPC)
    result = CliRunner().invoke(app, ["run", "--config", str(_unit_file(tiny_unit, tmp_path, out))])
    assert result.exit_code == 1
    assert f"Error: cannot write {out}/results/aprilgan/" in result.output
    assert "No space left on device" in result.output and "Traceback" not in result.output


def test_a_write_error_at_the_end_names_the_file_without_a_traceback(tiny_unit, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _fail_writes_under(monkeypatch, out, errno.ENOSPC, only="results/aprilgan/.carpet.csv")  # written last
    result = CliRunner().invoke(app, ["run", "--config", str(_unit_file(tiny_unit, tmp_path, out))])
    assert result.exit_code == 1
    target = out / "results" / "aprilgan" / "carpet.csv"
    assert f"Error: cannot write {target}: No space left on device" in result.output
    assert "Traceback" not in result.output
    assert not target.exists() and not list(target.parent.glob(".carpet.csv.*.tmp"))
    assert pd.read_csv(out / "diagnostics" / "aprilgan" / "carpet.csv").shape[0] == 4  # the rest was written


def test_run_notebook_by_hand_refuses_an_unknown_parameter(tiny_unit, tmp_path):
    """papermill only warns about a parameter the notebook does not declare; the notebook itself refuses."""
    import papermill

    from nandlib.sweep import notebook

    parameters = {"config": tiny_unit(tmp_path / "out", cache_dir="off").to_json(), "clas_name": "grid"}
    with pytest.raises(papermill.PapermillExecutionError, match=r"unknown parameters \['clas_name'\]"):
        papermill.execute_notebook(
            str(notebook("run_class")), str(tmp_path / "run.ipynb"), parameters, kernel_name="python3"
        )
    assert not (tmp_path / "out" / "results").exists()  # refused before the unit ran


def test_temporaries_of_a_killed_run_are_removed_by_the_next(tiny_unit, tmp_path):
    config = tiny_unit(tmp_path / "out", cache_dir="off")
    layout = config.outputs
    left = [
        layout.results("aprilgan", "carpet").with_name(".carpet.csv.0123abcd.tmp"),
        layout.examples("aprilgan", "carpet").with_name(".carpet.examples.npz.89abcdef.tmp"),
    ]
    other = layout.results("aprilgan", "bottle").with_name(".bottle.csv.0123abcd.tmp")  # another unit's
    for path in [*left, other]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
    run_unit(config, progress=False)
    assert not any(path.exists() for path in left)
    assert other.exists()


def test_a_run_by_hand_in_a_sweep_folder_makes_the_sweep_run_the_unit_again(tiny_unit, tmp_path):
    """The sweep's fingerprint vouched for its results; a `nand run` with other settings replaces them."""
    config = tiny_unit(tmp_path / "out", cache_dir="off", seed=3)
    marker = config.outputs.fingerprint("aprilgan", "carpet")
    marker.parent.mkdir(parents=True)
    marker.write_text('{"config": "seed 0", "data": "d", "weights": "w"}')
    run_unit(config, progress=False)
    assert not marker.exists()
