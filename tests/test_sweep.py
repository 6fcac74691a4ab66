"""The papermill sweep: every unit runs once, failures are collected, a rerun resumes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nandlib.config import ConfigError, parse_profile
from nandlib.engines import shared_cores
from nandlib.fingerprints import unit_fingerprint
from nandlib.outputs import OutputLayout, release, try_lock
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


def test_sweep_runs_each_unit_once_and_resumes(profile, tmp_path, capfd):
    out = tmp_path / "out"
    sweep = dict(classes=["carpet", "grid"], detectors=["aprilgan", "winclip-1"], run_notebook=FAKE)
    first = run_sweep(profile, tmp_path, out, workers=2, **sweep)
    assert set(first["status"]) == {"done"}
    log = capfd.readouterr().err
    assert "without encryption" not in log  # kernels on local sockets, not TCP (issue 17)
    assert "sweep offline: 100%" in log and "4/4" in log  # one bar over the units, done/total
    assert "fingerprints" not in log
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
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    with shared_cores(2):
        assert os.environ["OMP_NUM_THREADS"] == "4"
    assert "OMP_NUM_THREADS" not in os.environ
    with shared_cores(1):
        assert "OMP_NUM_THREADS" not in os.environ
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    with shared_cores(2):
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
    out, layout = tmp_path / "out", OutputLayout(tmp_path / "out")
    layout.results("aprilgan", "carpet").parent.mkdir(parents=True)
    layout.results("aprilgan", "carpet").write_text("class,group\ncarpet,g\n")
    (config,) = unit_configs(profile, tmp_path, out, classes=["carpet"], detectors=["aprilgan"]).values()
    layout.fingerprint("aprilgan", "carpet").write_text(unit_fingerprint(config).to_json())
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


def _dataset(root: Path) -> Path:
    for name in ("carpet", "grid"):
        (root / name / "train" / "good").mkdir(parents=True)
        (root / name / "train" / "good" / "000.png").write_bytes(name.encode())
    return root


def test_stale_units_rerun_and_the_status_says_why(tmp_path):
    """Changed image bytes, retrained weights (same path) or another setting rerun exactly the units they
    touch; with nothing changed every unit is skipped."""
    data, out, weights = _dataset(tmp_path / "data"), tmp_path / "out", tmp_path / "clip.pt"
    weights.write_bytes(b"first training")
    raw = load_profile("offline").model_dump()
    raw["nd"]["clip"]["checkpoint"] = str(weights)

    def sweep(**changes):
        frame = run_sweep(
            parse_profile({**raw, **changes}),
            data,
            out,
            classes=["carpet", "grid"],
            detectors=["aprilgan"],
            workers=1,
            run_notebook=FAKE,
        )
        return dict(zip(frame["class"], frame["status"], strict=True))

    assert sweep() == {"carpet": "done", "grid": "done"}
    assert sweep() == {"carpet": "skipped", "grid": "skipped"}
    (data / "grid" / "train" / "good" / "000.png").write_bytes(b"other bytes")
    assert sweep() == {"carpet": "skipped", "grid": "done (rerun, stale: data changed)"}
    weights.write_bytes(b"second training")
    assert set(sweep().values()) == {"done (rerun, stale: weights changed)"}
    assert set(sweep(seed=1).values()) == {"done (rerun, stale: config changed)"}
    assert _executions(out).count("aprilgan/grid") == 4
    (data / "carpet" / "train" / "good" / "000.png").rename(data / "carpet" / "train" / "good" / "001.png")
    assert sweep(seed=1)["carpet"] == "done (rerun, stale: data changed)"


def test_results_without_a_fingerprint_are_rerun(profile, tmp_path):
    """Results of a unit killed before its fingerprint was written (or older ones) are not trusted."""
    data, out = _dataset(tmp_path / "data"), tmp_path / "out"
    layout = OutputLayout(out)
    layout.results("aprilgan", "carpet").parent.mkdir(parents=True)
    layout.results("aprilgan", "carpet").write_text("class,group\ncarpet,g\n")
    frame = run_sweep(profile, data, out, classes=["carpet"], detectors=["aprilgan"], run_notebook=FAKE)
    assert list(frame["status"]) == ["done (rerun, stale: unfinished or older results)"]
    assert layout.fingerprint("aprilgan", "carpet").is_file()


def test_a_sweep_leaves_a_unit_locked_by_another_alone(profile, tmp_path):
    data, out = _dataset(tmp_path / "data"), tmp_path / "out"
    held = OutputLayout(out).lock("aprilgan", "carpet")
    held.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import fcntl,sys;f=open({str(held)!r},'w');fcntl.flock(f,2);print(1,flush=1);sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == b"1"  # the other sweep holds the lock
        frame = run_sweep(
            profile, data, out, classes=["carpet", "grid"], detectors=["aprilgan"], run_notebook=FAKE
        )
        status = dict(zip(frame["class"], frame["status"], strict=True))
        assert status["carpet"].startswith("locked: another sweep is running it")
        assert status["grid"] == "done"
        assert _executions(out) == ["aprilgan/grid"]
    finally:
        holder.communicate(b"", timeout=30)
    lock = try_lock(held)
    assert lock is not None  # released with its holder
    release(lock)


def test_a_rerun_unit_loses_the_temporaries_of_a_killed_sweep(profile, tmp_path):
    data, out = _dataset(tmp_path / "data"), tmp_path / "out"
    layout = OutputLayout(out)
    left = layout.fingerprint("aprilgan", "carpet").with_name(".carpet.fingerprint.0123abcd.tmp")
    left.parent.mkdir(parents=True)
    left.write_text("half")
    run_sweep(profile, data, out, classes=["carpet"], detectors=["aprilgan"], run_notebook=FAKE)
    assert not left.exists() and layout.fingerprint("aprilgan", "carpet").is_file()


def test_kernel_sockets_of_killed_workers_are_removed(tmp_path, monkeypatch):
    import tempfile

    from nandlib.sweep import _remove_sockets_of_dead_processes

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed, alive = tmp_path / f"nand-kernel-{dead.pid}-x1", tmp_path / f"nand-kernel-{os.getpid()}-x2"
    for folder in (killed, alive):
        folder.mkdir()
        (folder / "kernel-1").write_text("")
    _remove_sockets_of_dead_processes()
    assert not killed.exists() and alive.exists()


def test_a_notebook_given_by_a_relative_path_runs_and_keeps_its_kernel_log(tmp_path, monkeypatch):
    """``nand book`` passes relative outputs; the kernel starts in the notebook's folder."""
    import nbformat

    from nandlib.outputs import kernel_log
    from nandlib.sweep import execute_notebook

    monkeypatch.chdir(tmp_path)
    cell = nbformat.v4.new_code_cell("import sys; print(1, file=sys.stderr)")
    source = nbformat.v4.new_notebook(cells=[cell])
    nbformat.write(source, "source.ipynb")
    assert execute_notebook("source.ipynb", "out/run.ipynb", {}) == "done"
    assert (tmp_path / "out" / "run.ipynb").is_file() and kernel_log(tmp_path / "out" / "run.ipynb").is_file()
