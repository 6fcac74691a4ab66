"""`nand sweep` as a subprocess, stopped by signals: finished units are kept, nothing is left running."""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from nandlib.outputs import OutputLayout, kernel_log, release, try_lock
from nandlib.sweep import _remove_sockets_of_dead_processes

FAKE = Path(__file__).parent / "fixtures" / "fake_run_class.ipynb"
# The CLI with the sweep's run notebook replaced by the fake one (sleeps in the classes of NAND_TEST_SLOW_ON).
SWEEP = (
    f"import nandlib.sweep as s; s.notebook = lambda name: {str(FAKE)!r}; from nandlib.cli import app; app()"
)

pytestmark = pytest.mark.slow


def _dataset(root: Path, classes) -> Path:
    for name in classes:
        (root / name / "train" / "good").mkdir(parents=True)
        (root / name / "train" / "good" / "000.png").write_bytes(name.encode())
    return root


def _start(tmp_path: Path, classes: list[str], slow: list[str], workers: int) -> subprocess.Popen:
    data = _dataset(tmp_path / "data", classes)
    command = [sys.executable, "-c", SWEEP, "sweep", "--profile", "offline", "--data", str(data)]
    command += ["--out", str(tmp_path / "out"), "--classes", ",".join(classes), "--detectors", "aprilgan"]
    command += ["--workers", str(workers)]
    environment = {**os.environ, "NAND_TEST_SLOW_ON": ",".join(slow)}
    return subprocess.Popen(
        command,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.1)


def _started(out: Path, classes: list[str], sweep: subprocess.Popen) -> list[int]:
    """Wait until the slow units' kernels are running; their pids and their workers' pids."""
    files = [out / f"started-{name}" for name in classes]
    _wait_for(
        lambda: all(f.is_file() and f.read_text() for f in files) or sweep.poll() is not None, 60, "units"
    )
    assert sweep.poll() is None, sweep.communicate()
    return [int(pid) for f in files for pid in f.read_text().split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _kill_leftovers(sweep: subprocess.Popen, pids: list[int]) -> None:
    for pid in [sweep.pid, *pids]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_the_sweep_and_keeps_finished_units(tmp_path, signum):
    classes = ["carpet", "grid", "leather"]  # one worker: carpet finishes, grid runs (slow), leather waits
    sweep = _start(tmp_path, classes, slow=["grid"], workers=1)
    pids: list[int] = []
    try:
        pids = _started(tmp_path / "out", ["grid"], sweep)
        sweep.send_signal(signum)
        stdout, stderr = sweep.communicate(timeout=60)
        assert sweep.returncode == 128 + signum, stderr
        status = {line.split()[0]: line.split()[2] for line in stdout.splitlines()[1:]}
        assert status == {"carpet": "done", "grid": "cancelled", "leather": "cancelled"}, stdout
        assert f"stopped by {signal.Signals(signum).name}" in stderr
        assert "Traceback" not in stderr
        _wait_for(lambda: not any(_alive(pid) for pid in pids), 20, "the worker and its kernel to end")
    finally:
        _kill_leftovers(sweep, pids)
    layout = OutputLayout(tmp_path / "out")
    assert layout.fingerprint("aprilgan", "carpet").is_file()  # the finished unit is intact
    assert kernel_log(layout.run_record("aprilgan", "carpet")).is_file()  # kernels write there, not to stderr
    assert not layout.fingerprint("aprilgan", "grid").exists()
    assert (tmp_path / "out" / "executions.log").read_text().split() == ["aprilgan/carpet"]


def test_killed_sweep_leaves_no_workers_or_kernels_and_no_locks(tmp_path):
    classes = ["grid", "leather"]
    sweep = _start(tmp_path, classes, slow=classes, workers=2)
    pids: list[int] = []
    try:
        pids = _started(tmp_path / "out", classes, sweep)
        sweep.kill()
        sweep.communicate(timeout=30)
        _wait_for(lambda: not any(_alive(pid) for pid in pids), 20, "workers and kernels to end")
    finally:
        _kill_leftovers(sweep, pids)
    for name in classes:
        lock = try_lock(OutputLayout(tmp_path / "out").lock("aprilgan", name))
        assert lock is not None  # a new sweep can run the unit
        release(lock)
    _remove_sockets_of_dead_processes()  # what the next sweep's units do first
    workers = pids[1::2]
    assert not [p for w in workers for p in Path(tempfile.gettempdir()).glob(f"nand-kernel-{w}-*")]
