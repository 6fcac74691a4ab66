"""Dask sweeps (issue 19): same results as the process pool, killed workers and sweeps, failures, clusters.

The slow tests share one process-pool sweep (the reference) and one LocalCluster of 2 worker processes;
the profile is the offline one cut to 2 classes x 2 detectors on tiny images.
"""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from importlib.resources import files
from pathlib import Path

import nbformat
import psutil
import pytest
import yaml

from nandlib.cluster import DaskEngine, open_engine, read_cluster_file
from nandlib.config import ConfigError, parse_profile
from nandlib.fingerprints import unit_fingerprint
from nandlib.outputs import OutputLayout, release, try_lock
from nandlib.profiles import load_profile
from nandlib.sweep import UnitTask, run_sweep, unit_configs

distributed = pytest.importorskip("distributed")

FAKE = Path(__file__).parent / "fixtures" / "fake_run_class.ipynb"
UNITS = 4
NAND = str(Path(sys.executable).parent / "nand")


@pytest.fixture(scope="module")
def profile():
    """The offline profile cut to carpet and bottle, APRIL-GAN and WinCLIP 0-shot, on tiny images."""
    raw = load_profile("offline").model_dump(mode="json")
    raw["nd"]["clip"]["image_size"] = 56
    winclip = {"kind": "winclip", "clip": {"model": "nand-tiny-p16", "image_size": 64}, "shots": 0}
    raw |= {
        "classes": ["carpet", "bottle"],
        "detectors": {"aprilgan": {"kind": "aprilgan"}, "winclip-0": winclip},
    }
    return parse_profile(raw)


def _sweep(profile, data, out, **options):
    return run_sweep(profile, data, out, cache_dir=str(out.parent / f"{out.name}-cache"), **options)


def _outputs(out: Path) -> dict[str, bytes]:
    """Every results and diagnostics frame, by path inside ``out``."""
    found = [*out.glob("results/*/*.csv"), *out.glob("diagnostics/*/*.csv")]
    return {str(path.relative_to(out)): path.read_bytes() for path in found}


def _temporaries(out: Path) -> list[Path]:
    return [path for path in out.rglob(".*.tmp")]


@pytest.fixture(scope="module")
def reference(profile, synth_root, tmp_path_factory):
    """One finished process-pool sweep: its results and diagnostics frames."""
    out = tmp_path_factory.mktemp("pool") / "out"
    status = _sweep(profile, synth_root, out, workers=2)
    assert list(status["status"]) == ["done"] * UNITS
    frames = _outputs(out)
    assert len([name for name in frames if name.startswith("results")]) == UNITS
    return frames


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of 2 worker processes, as ``--cluster local --workers 2`` starts it."""
    with open_engine("local", 2) as engine:
        yield engine.client


@pytest.mark.slow
def test_dask_sweep_equals_the_process_pool_bit_for_bit(profile, synth_root, tmp_path, reference, client):
    status = _sweep(profile, synth_root, tmp_path / "out", engine=DaskEngine(client))
    assert list(status["status"]) == ["done"] * UNITS
    assert _outputs(tmp_path / "out") == reference


@pytest.mark.slow
def test_a_worker_killed_mid_unit_is_rerun_and_leaves_no_partial_file(
    profile, synth_root, tmp_path, reference, client
):
    out = tmp_path / "out"
    result = {}
    sweep = threading.Thread(
        target=lambda: result.update(status=_sweep(profile, synth_root, out, engine=DaskEngine(client)))
    )
    sweep.start()
    deadline = time.monotonic() + 120
    while not list(out.glob("runs/*/*.ipynb")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # the unit's kernel is running
    busy = [worker for worker, keys in client.processing().items() if keys]
    assert busy, "no unit was running"
    pids = client.run(os.getpid, workers=busy[:1])
    os.kill(pids[busy[0]], signal.SIGKILL)
    sweep.join(timeout=600)
    assert list(result["status"]["status"]) == ["done"] * UNITS
    assert _outputs(out) == reference  # each unit once, equal to the uninterrupted run
    assert not _temporaries(out)
    for record in out.glob("runs/*/*.ipynb"):
        nbformat.validate(nbformat.read(record, as_version=4))
    assert busy[0] not in client.scheduler_info()["workers"]  # that worker was gone


@pytest.mark.slow
def test_a_killed_sweep_resumes_on_another_engine_without_rerunning_finished_units(
    profile, synth_root, tmp_path, reference, client
):
    out, layout = tmp_path / "out", OutputLayout(tmp_path / "out")
    profile_file = tmp_path / "tiny.yaml"
    profile_file.write_text(yaml.safe_dump(profile.model_dump(mode="json")))
    command = [NAND, "sweep", "--profile", str(profile_file), "--data"]
    command += [str(synth_root), "--out", str(out), "--workers", "1"]
    command += ["--cache-dir", str(tmp_path / "out-cache")]
    sweep = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(out.glob("results/*/*.fingerprint")) and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = psutil.Process(sweep.pid).children(recursive=True)
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    _, alive = psutil.wait_procs(workers, timeout=30)  # its workers (holding its locks) die with it
    assert not alive
    finished = {path: path.stat().st_mtime_ns for path in out.glob("results/*/*.csv")}
    finished = {p: t for p, t in finished.items() if p.with_suffix(".fingerprint").is_file()}
    assert 1 <= len(finished) < UNITS

    status = _sweep(profile, synth_root, out, engine=DaskEngine(client))
    assert (status["status"] == "skipped").sum() == len(finished)
    assert status["status"].str.startswith("done").sum() == UNITS - len(finished)
    assert {path: path.stat().st_mtime_ns for path in finished} == finished  # not rewritten
    assert _outputs(out) == reference
    assert not _temporaries(out)
    assert all(layout.fingerprint(*csv.relative_to(out / "results").with_suffix("").parts).is_file()
               for csv in out.glob("results/*/*.csv"))  # fmt: skip


@pytest.mark.slow
def test_two_sweeps_over_one_folder_run_each_unit_once(profile, synth_root, tmp_path, client):
    out = tmp_path / "out"
    other = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from nandlib.config import parse_profile;"
            "from nandlib.sweep import run_sweep; import json;"
            "p = parse_profile(json.loads(sys.argv[1]));"
            "a = [Path(x) for x in sys.argv[2:]];"
            "s = run_sweep(p, a[0], a[1], workers=2, run_notebook=a[2]);"
            "print(s.to_json(orient='records'))",
            profile.model_dump_json(),
            str(synth_root),
            str(out),
            str(FAKE),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    here = run_sweep(profile, synth_root, out, engine=DaskEngine(client), run_notebook=FAKE)
    there = yaml.safe_load(other.communicate(timeout=300)[0])
    assert other.returncode == 0
    ran = [s for s in [*here["status"], *(row["status"] for row in there)] if s.startswith("done")]
    assert len(ran) == UNITS  # every unit done by exactly one of the two sweeps
    log = (out / "executions.log").read_text().split()
    assert sorted(log) == sorted(set(log)) and len(log) == UNITS
    again = run_sweep(profile, synth_root, out, engine=DaskEngine(client), run_notebook=FAKE)
    assert set(again["status"]) == {"skipped"}


@pytest.mark.slow
def test_a_failing_unit_is_reported_with_its_record_and_the_sweep_exits_non_zero(
    profile, synth_root, tmp_path
):
    data = tmp_path / "data"
    shutil.copytree(synth_root, data)
    broken = sorted((data / "bottle" / "test").rglob("*.png"))[0]
    broken.write_bytes(b"not an image")
    profile_file = tmp_path / "tiny.yaml"
    profile_file.write_text(yaml.safe_dump(profile.model_dump(mode="json")))
    cluster = tmp_path / "cluster.yaml"  # a LocalCluster of 2 workers; a failing unit is not retried
    cluster.write_text("kind: local\nworkers: 2\nretries: 0\n")
    out = tmp_path / "out"
    command = [NAND, "sweep", "--profile", str(profile_file), "--data", str(data), "--out", str(out)]
    command += ["--detectors", "aprilgan", "--cluster", str(cluster)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if "aprilgan" in line}
    assert rows["carpet"].split()[-1] == "done"
    assert (
        "failed:" in rows["bottle"]
        and str(OutputLayout(out).run_record("aprilgan", "bottle")) in rows["bottle"]
    )
    assert "Dask dashboard: http" in done.stderr


def test_a_rerun_waits_for_a_live_attempt_and_does_not_redo_what_it_finished(profile, synth_root, tmp_path):
    """A cluster may rerun a unit while the attempt it gave up on still runs (a worker cut off from it)."""
    out, layout = tmp_path / "out", OutputLayout(tmp_path / "out")
    (config,) = unit_configs(profile, synth_root, out, classes=["carpet"], detectors=["aprilgan"]).values()
    task = UnitTask(str(FAKE), config.to_json(), unit_fingerprint(config).to_json())
    earlier = try_lock(layout.attempt("aprilgan", "carpet"))
    rerun = threading.Thread(target=task)
    rerun.start()
    time.sleep(2)
    assert rerun.is_alive()  # waits for the earlier attempt
    layout.results("aprilgan", "carpet").parent.mkdir(parents=True)
    layout.results("aprilgan", "carpet").write_text("class,group\ncarpet,g\n")
    layout.fingerprint("aprilgan", "carpet").write_text(task.fingerprint)
    release(earlier)  # the earlier attempt finished the unit
    rerun.join(timeout=30)
    assert not rerun.is_alive()
    assert not (out / "executions.log").exists()  # the notebook did not run again


def test_units_on_cuda_ask_for_one_gpu(profile, synth_root, tmp_path):
    gpu = parse_profile(profile.model_dump(mode="json") | {"device": "cuda"})
    for chosen, wanted in ((profile, {}), (gpu, {"GPU": 1})):
        (config,) = unit_configs(
            chosen, synth_root, tmp_path, classes=["carpet"], detectors=["aprilgan"]
        ).values()
        assert UnitTask(str(FAKE), config.to_json(), "").resources == wanted


def _threads_client():
    return distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None)


def test_dask_engine_reports_each_unit_and_its_error():
    units = {1: partial(int, "1"), 2: partial(int, "x")}
    with _threads_client() as client:
        outcomes = {o.key: o.error for o in DaskEngine(client, retries=0).run(units)}
        assert outcomes[1] is None
        assert isinstance(outcomes[2], ValueError)


class _GpuUnit:
    resources = {"GPU": 1}

    def __call__(self):
        return None


def test_gpu_units_are_refused_when_no_worker_offers_a_gpu():
    with _threads_client() as client:
        with pytest.raises(RuntimeError, match=r"\['GPU'\].*--resources GPU=1"):
            list(DaskEngine(client).run({1: _GpuUnit()}))


_SWEEP_STATE: list[str] = []
"""Set by the test below in the sweep's process only: a worker sees it only when forked from that process."""


def _fails_unless_forked_from_the_sweep() -> None:
    if _SWEEP_STATE != ["set in the sweep"]:
        raise RuntimeError("the worker started fresh (spawned), not forked from the sweep")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers fork on Linux only")
def test_local_cluster_workers_start_as_the_pools_do_and_keep_the_sweeps_state(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "_SWEEP_STATE", ["set in the sweep"])
    for cluster in (None, "local"):
        with open_engine(cluster, 1) as engine:
            outcomes = list(engine.run({"unit": _fails_unless_forked_from_the_sweep}))
        assert [o.error for o in outcomes] == [None], cluster


def test_cluster_file_errors_name_the_file_and_key(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("kind: slurm\nworkers: 0\nqeue: gpu\n")
    with pytest.raises(ConfigError, match=r"cluster\.yaml: workers: .*greater than or equal to 1.*qeue"):
        read_cluster_file(path)


def test_unknown_cluster_is_refused(tmp_path):
    expected = (
        r"--cluster: expected local, tcp://host:port, a cluster YAML file or one of \[.multi-gpu., .slurm.\]"
    )
    with pytest.raises(ConfigError, match=expected):
        with open_engine(str(tmp_path / "missing.yaml")):
            pass


def test_missing_extra_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(RuntimeError, match=r"nandlib\[cluster\]"):
        with open_engine("local"):
            pass


def test_shipped_slurm_file_asks_each_job_for_one_gpu_and_declares_it():
    pytest.importorskip("dask_jobqueue")
    from nandlib.cluster import CLUSTER_CLASSES, _arguments

    spec = read_cluster_file(Path(str(files("nandlib.clusters") / "slurm.yaml")))
    module, name = CLUSTER_CLASSES[spec.kind]
    arguments = _arguments(spec) | {"scheduler_options": {"dashboard_address": ":0"}}
    with getattr(__import__(module), name)(**arguments) as cluster:
        script = cluster.job_script()
    assert "#SBATCH --gres=gpu:1" in script
    assert "--resources GPU=1" in script
    assert "#SBATCH --cpus-per-task=8" in script
    assert "--nthreads 1 " in script  # one unit at a time per worker
