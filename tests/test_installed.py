"""nandlib works installed from a wheel, not only checked out: nothing resolved relative to the checkout,
nothing written inside the installed package, no Jupyter in the core install."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from nandlib.tgvig import toy as tgvig_toy
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
    for folder, package in ((SHIPPED_DIR, "nandlib/toy"), (tgvig_toy.SHIPPED_DIR, "nandlib/tgvig")):
        files = [path.relative_to(folder) for path in folder.rglob("*") if path.is_file()]
        assert files, f"nothing shipped in {folder}"
        shipped = {f"{package}/shipped/{path}" for path in files}
        assert shipped <= set(names), f"{package}'s shipped weights and manifest are package data"


def _snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if "__pycache__" not in p.parts}


@dataclass
class Installed:
    """The wheel installed for real in a fresh venv that sees this environment's dependencies (a .pth
    line), with its own kernel, an empty working folder and a user data folder of its own."""

    python: Path
    package: Path
    work: Path
    home: Path
    env: dict[str, str]

    def run(self, *args: str | Path) -> str:
        done = subprocess.run(
            [str(a) for a in args], cwd=self.work, env=self.env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout


def _install(wheel: Path, tmp_path: Path) -> Installed:
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
    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("NAND_CACHE_DIR", "PYTHONPATH")}
    env |= {
        "NAND_HOME": str(tmp_path / "home"),
        "PATH": f"{venv / 'bin'}:{env['PATH']}",
        "JUPYTER_PATH": str(venv / "share" / "jupyter"),  # its kernel before any user's
    }
    installed = Installed(python, site / "nandlib", work, tmp_path / "home", env)
    installed.run(python, "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3")
    return installed


@pytest.mark.slow
def test_synth_run_sweep_and_playground_from_an_empty_folder(wheel, tmp_path):
    installed = _install(wheel, tmp_path)
    python, package, work, run = installed.python, installed.package, installed.work, installed.run
    before = _snapshot(package)

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


def _outputs(notebook: dict, tag: str = "") -> list[dict]:
    return [
        output
        for cell in notebook["cells"]
        if cell["cell_type"] == "code" and (not tag or tag in "".join(cell["source"]))
        for output in cell.get("outputs", [])
    ]


@pytest.mark.slow
def test_the_playground_and_a_run_notebook_run_from_the_installed_package(wheel, tmp_path):
    """What Colab does: the notebook alone (no checkout), its install cell finding nandlib installed,
    PHRASES edited through papermill parameters; then one sweep unit's notebook from the package."""
    installed = _install(wheel, tmp_path)
    before = _snapshot(installed.package)
    shutil.copy(CHECKOUT / "book" / "try_your_normality.ipynb", installed.work / "playground.ipynb")
    parameters = installed.work / "parameters.yaml"
    # The notebook's default profile, the toy world: shipped weights, data generated on first use.
    parameters.write_text(yaml.safe_dump({"PHRASES": ["cut carpet"]}))
    papermill = [installed.python, "-m", "papermill", "-k", "python3"]
    installed.run(*papermill, "playground.ipynb", "ran.ipynb", "-f", parameters)
    ran = json.loads((installed.work / "ran.ipynb").read_text())
    (yours,) = [o for o in _outputs(ran, "try_normality(PHRASES") if "text/html" in o.get("data", {})]
    table = "".join(yours["data"]["text/html"])
    assert ">after<" in table and "cut carpet" in table and "a cut in the carpet" not in table
    figures = [o for o in _outputs(ran) if "image/png" in o.get("data", {})]
    assert len(figures) == 2, "expected the maps of your phrases and the comparison with every group"
    assert not [o for o in _outputs(ran) if o["output_type"] == "error"]
    assert list((installed.home / "datasets").iterdir()), "the data was not generated in the user data folder"

    tiny = ["--set", "nd.clip.image_size=56", "--set", "batch_size=4"]
    config = installed.run(
        "nand", "run", "--profile", "offline", "--class", "carpet", "--out", "unit", *tiny, "--show-config"
    )
    (installed.work / "unit.yaml").write_text(config)
    run_class = installed.package / "notebooks" / "run_class.ipynb"
    installed.run(*papermill, run_class, "unit.ipynb", "-p", "config", "unit.yaml")
    assert (installed.work / "unit" / "results" / "aprilgan" / "carpet.csv").is_file()
    assert "Provenance" in (installed.work / "unit.ipynb").read_text()
    assert _snapshot(installed.package) == before, "files were written inside the installed package"
