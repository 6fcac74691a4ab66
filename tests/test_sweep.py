"""The papermill sweep: every unit runs once, failures are collected, a rerun resumes."""

from pathlib import Path

import pytest

from nandlib.config import ConfigError
from nandlib.engines import _shared_cores
from nandlib.outputs import OutputLayout
from nandlib.profiles import load_profile
from nandlib.sweep import run_sweep, unit_configs

FAKE = Path(__file__).parent / "fixtures" / "fake_run_class.ipynb"


@pytest.fixture(scope="module")
def profile():
    return load_profile("offline")


def _executions(out: Path) -> list[str]:
    log = out / "executions.log"
    return log.read_text().split() if log.exists() else []


def test_unit_configs_come_from_the_profile(profile, tmp_path):
    configs = unit_configs(profile, tmp_path, tmp_path / "out", classes=["carpet"], detectors=["winclip-5"])
    (config,) = configs.values()
    assert (config.detector.kind, config.detector.settings.shots, config.label) == ("winclip", 5, "winclip-5")
    assert config.detector.settings.clip.model == "nand-tiny-p16"
    assert Path(config.output_dir).is_absolute()


def test_sweep_runs_each_unit_once_and_resumes(profile, tmp_path):
    out = tmp_path / "out"
    sweep = dict(classes=["carpet", "grid"], detectors=["aprilgan", "winclip-1"], run_notebook=FAKE)
    first = run_sweep(profile, tmp_path, out, workers=2, **sweep)
    assert set(first["status"]) == {"done"}
    assert sorted(_executions(out)) == [
        "aprilgan/carpet",
        "aprilgan/grid",
        "winclip-1/carpet",
        "winclip-1/grid",
    ]
    assert OutputLayout(out).run_record("winclip-1", "grid").is_file()

    OutputLayout(out).results("aprilgan", "grid").unlink()  # as if that unit had crashed
    second = run_sweep(profile, tmp_path, out, workers=1, **sweep)
    assert _executions(out).count("aprilgan/grid") == 2
    assert len(_executions(out)) == 5
    assert (second["status"] == "skipped").sum() == 3


def test_failed_unit_is_reported_and_others_finish(profile, tmp_path, monkeypatch):
    monkeypatch.setenv("NAND_TEST_FAIL_ON", "grid")
    out = tmp_path / "out"
    frame = run_sweep(
        profile,
        tmp_path,
        out,
        classes=["carpet", "grid"],
        detectors=["aprilgan"],
        workers=1,
        run_notebook=FAKE,
    )
    status = dict(zip(frame["class"], frame["status"], strict=True))
    assert status["carpet"] == "done"
    assert status["grid"].startswith("failed") and "planned failure" in status["grid"]
    assert not OutputLayout(out).results("aprilgan", "grid").exists()


def test_unknown_detector_is_named(profile, tmp_path):
    with pytest.raises(ConfigError, match="padim"):
        run_sweep(profile, tmp_path, tmp_path, detectors=["padim"], run_notebook=FAKE)


def test_workers_share_the_cores_unless_the_user_chose(monkeypatch):
    import os

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


class RecordingEngine:
    """An engine that runs nothing: it records the units it was given and reports one of them failed."""

    def __init__(self):
        self.given = []

    def run(self, units):
        from nandlib.engines import Outcome

        self.given = sorted((u.detector, u.class_name) for u in units)
        for key in units:
            yield Outcome(key, RuntimeError("lost node") if key.class_name == "grid" else None)

    def cancel(self):
        pass


def test_sweep_decides_what_runs_and_the_engine_only_where(profile, tmp_path):
    out = tmp_path / "out"
    OutputLayout(out).results("aprilgan", "carpet").parent.mkdir(parents=True)
    OutputLayout(out).results("aprilgan", "carpet").write_text("class,group\ncarpet,g\n")
    engine = RecordingEngine()
    frame = run_sweep(
        profile,
        tmp_path,
        out,
        classes=["carpet", "grid"],
        detectors=["aprilgan"],
        engine=engine,
        run_notebook=FAKE,
    )
    assert engine.given == [("aprilgan", "grid")]  # the finished unit never reaches the engine
    status = dict(zip(frame["class"], frame["status"], strict=True))
    assert status["carpet"] == "skipped"
    assert status["grid"].startswith("failed: RuntimeError: lost node")


def test_local_engine_reports_each_unit_and_its_error():
    from functools import partial

    from nandlib.engines import LocalEngine

    units = {1: partial(int, "1"), 2: partial(int, "x")}
    outcomes = {o.key: o.error for o in LocalEngine(2).run(units)}
    assert outcomes[1] is None
    assert isinstance(outcomes[2], ValueError)
