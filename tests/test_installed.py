"""nandlib works installed from a wheel, not only checked out: nothing resolved relative to the checkout,
nothing written inside the installed package, no Jupyter in the core install."""

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from nandlib.toy.shipping import SHIPPED_DIR

CHECKOUT = Path(__file__).resolve().parents[1]
NOT_CORE = ("papermill", "jupyter-book", "ipykernel", "seaborn")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(CHECKOUT),
        ],
        check=True,
        cwd=out,
    )
    (built,) = out.glob("nandlib-*.whl")
    return built


def test_core_requirements_have_no_jupyter_and_the_notebooks_ship(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    core = [
        line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    assert core and not [line for line in core if any(name in line for name in NOT_CORE)], core
    extras = [line for line in metadata.splitlines() if 'extra == "book"' in line]
    assert all(any(name in line for line in extras) for name in NOT_CORE)
    for notebook in ("run_class", "tables", "figure5"):
        assert f"nandlib/notebooks/{notebook}.ipynb" in names
    assert "nandlib/profiles/toy.yaml" in names and "nandlib/model_configs/nand-toy.json" in names
    files = [path.relative_to(SHIPPED_DIR) for path in SHIPPED_DIR.rglob("*") if path.is_file()]
    shipped = {f"nandlib/toy/shipped/{path}" for path in files}
    assert shipped <= set(names), "the shipped toy world (weights and manifest) is package data"


def _snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if "__pycache__" not in p.parts}


@pytest.mark.slow
def test_synth_run_sweep_and_playground_from_an_empty_folder(wheel, tmp_path):
    """A fresh venv sees this environment's dependencies (a .pth line) and the wheel, installed for real."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)]
    subprocess.run(pip, check=True)
    package = site / "nandlib"
    before = _snapshot(package)
    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("NAND_CACHE_DIR", "PYTHONPATH")}
    env |= {"NAND_HOME": str(tmp_path / "home"), "PATH": f"{venv / 'bin'}:{env['PATH']}"}

    def run(*args: str) -> str:
        done = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    assert run(str(python), "-c", "import nandlib; print(nandlib.__file__)").strip() == str(
        package / "__init__.py"
    )
    run("nand", "synth", "--out", "data", "--classes", "carpet,bottle", "--scale", "small", "--size", "64")
    tiny = ["--set", "nd.clip.image_size=56", "--set", "batch_size=4"]
    run("nand", "run", "--profile", "offline", "--data", "data", "--class", "carpet", "--out", "one", *tiny)
    assert (work / "one" / "results" / "aprilgan" / "carpet.csv").is_file()
    status = run(
        "nand", "sweep", "--profile", "offline", "--data", "data", "--classes", "carpet,bottle",
        "--detectors", "aprilgan", "--out", "swept", "--workers", "1",
    )  # fmt: skip
    assert status.count("done") == 2, status
    playground = (
        "from nandlib.playground import profile_playground\n"
        "print(profile_playground('carpet', 'offline', data_root='data').try_group('cut').to_string())\n"
    )
    assert "cut" in run(str(python), "-c", playground)
    assert (tmp_path / "home" / "cache").is_dir()  # the feature cache went to the user data folder
    assert _snapshot(package) == before, "files were written inside the installed package"
