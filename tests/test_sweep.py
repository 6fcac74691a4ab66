"""The papermill sweep: every unit runs once, failures are collected, a rerun resumes."""

from pathlib import Path

import pytest

from nandlib.profiles import load_profile
from nandlib.sweep import Unit, run_sweep, unit_parameters

FAKE = Path(__file__).parent / "fixtures" / "fake_run_class.ipynb"


@pytest.fixture(scope="module")
def profile():
    return load_profile("offline")


def _executions(out: Path) -> list[str]:
    log = out / "executions.log"
    return log.read_text().split() if log.exists() else []


def test_unit_parameters_split_detector_family_and_shots(profile, tmp_path):
    params = unit_parameters(profile, Unit("carpet", "winclip-5"), tmp_path, tmp_path / "out")
    assert (params["detector"], params["shots"]) == ("winclip", 5)
    assert params["detector_model"] == "nand-tiny-p16"
    assert Path(params["output_dir"]).is_absolute()


def test_sweep_runs_each_unit_once_and_resumes(profile, tmp_path, monkeypatch):
    monkeypatch.setattr("nandlib.sweep.unit_parameters", _fake_parameters)
    out = tmp_path / "out"
    first = run_sweep(
        profile,
        tmp_path,
        out,
        classes=["carpet", "grid"],
        detectors=["aprilgan", "winclip-1"],
        workers=2,
        notebook=FAKE,
    )
    assert set(first["status"]) == {"done"}
    assert sorted(_executions(out)) == [
        "aprilgan/carpet",
        "aprilgan/grid",
        "winclip-1/carpet",
        "winclip-1/grid",
    ]
    assert Unit("grid", "winclip-1").notebook_path(out).is_file()

    (out / "results" / "aprilgan" / "grid.csv").unlink()  # as if that unit had crashed
    second = run_sweep(
        profile,
        tmp_path,
        out,
        classes=["carpet", "grid"],
        detectors=["aprilgan", "winclip-1"],
        workers=1,
        notebook=FAKE,
    )
    assert _executions(out).count("aprilgan/grid") == 2
    assert len(_executions(out)) == 5
    assert (second["status"] == "skipped").sum() == 3


def test_failed_unit_is_reported_and_others_finish(profile, tmp_path, monkeypatch):
    monkeypatch.setattr(
        "nandlib.sweep.unit_parameters",
        lambda p, u, d, o, c=None: {**_fake_parameters(p, u, d, o), "fail_on": "grid"},
    )
    out = tmp_path / "out"
    frame = run_sweep(
        profile, tmp_path, out, classes=["carpet", "grid"], detectors=["aprilgan"], workers=1, notebook=FAKE
    )
    status = dict(zip(frame["class"], frame["status"], strict=True))
    assert status["carpet"] == "done"
    assert status["grid"].startswith("failed") and "planned failure" in status["grid"]
    assert not Unit("grid", "aprilgan").results_path(out).exists()


def test_unknown_detector_is_named(profile, tmp_path):
    with pytest.raises(ValueError, match="padim"):
        run_sweep(profile, tmp_path, tmp_path, detectors=["padim"], notebook=FAKE)


def _fake_parameters(profile, unit, data_root, out, cache_dir=None):
    family, _, shots = unit.detector.partition("-")
    return {
        "class_name": unit.class_name,
        "detector": family,
        "shots": int(shots or 0),
        "output_dir": str(out.resolve()),
    }


def test_workers_share_the_cores_unless_the_user_chose(monkeypatch):
    import os

    from nandlib.sweep import _shared_cores

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    with _shared_cores(2):
        assert os.environ["OMP_NUM_THREADS"] == "4"
    assert "OMP_NUM_THREADS" not in os.environ
    with _shared_cores(1):
        assert "OMP_NUM_THREADS" not in os.environ
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    with _shared_cores(2):
        assert os.environ["OMP_NUM_THREADS"] == "3"
