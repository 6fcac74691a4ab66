"""The install cell of the notebooks a reader opens in Colab, stamped from one setting.

Colab opens a notebook straight from the repository, so the committed notebook must say where to install
nandlib from. That place is written once, as ``repository.url`` and ``repository.branch`` in the
checkout's ``_config.yml`` (the book's launch buttons read the same keys); a fork changes it there and
runs ``make colab-sync`` (``python -m nandlib.colab``; ``make book`` runs it too), which rewrites the cell
tagged :data:`INSTALL_TAG` in each of :data:`NOTEBOOKS`. A test fails when a committed cell disagrees.

The cell installs ``nandlib[book]`` from that repository where nandlib is not importable (a fresh Colab
runtime) and does nothing where it is (a checkout's venv, the sweep's kernels).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import yaml

from nandlib.outputs import atomic_write

INSTALL_TAG = "colab-install"
NOTEBOOKS = ("book/try_your_normality.ipynb", "notebooks/run_class.ipynb")
"""Notebooks with an install cell, relative to the checkout."""
CONFIG = "_config.yml"


def repository(checkout: Path) -> tuple[str, str]:
    """``(url, branch)`` of ``repository`` in the checkout's ``_config.yml``.

    Raises:
        FileNotFoundError: No ``_config.yml`` in ``checkout``.
        ValueError: It lacks ``repository.url``.
    """
    path = checkout / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"colab: no {CONFIG} in {checkout} (run from the checkout's root)")
    settings = (yaml.safe_load(path.read_text()) or {}).get("repository") or {}
    if not settings.get("url"):
        raise ValueError(f"{path}: repository.url is not set (the repository the install cell uses)")
    return str(settings["url"]).rstrip("/"), str(settings.get("branch") or "main")


def install_cell(url: str, branch: str) -> str:
    """The source of the install cell for ``url`` at ``branch``."""
    return (
        f"# In Colab: install nandlib from this book's repository ({CONFIG},\n"
        "# stamped by `make colab-sync`). Where nandlib is installed: nothing.\n"
        "import importlib.util\n"
        "import subprocess\n"
        "import sys\n"
        "\n"
        f'REPOSITORY = "{url}"\n'
        f'BRANCH = "{branch}"\n'
        'if not importlib.util.find_spec("nandlib"):\n'
        '    source = f"nandlib[book] @ git+{REPOSITORY}@{BRANCH}"\n'
        "    subprocess.run(\n"
        '        [sys.executable, "-m", "pip", "install", "-q", source],\n'
        "        check=True,\n"
        "    )"
    )


def _install_cells(notebook: dict) -> list[dict]:
    return [c for c in notebook["cells"] if INSTALL_TAG in c.get("metadata", {}).get("tags", [])]


def installed_source(path: Path) -> str:
    """The source of the one install cell of the notebook at ``path``.

    Raises:
        ValueError: The notebook has no cell tagged :data:`INSTALL_TAG`, or several.
    """
    cells = _install_cells(json.loads(path.read_text()))
    if len(cells) != 1:
        raise ValueError(f"{path}: expected one cell tagged {INSTALL_TAG!r}, found {len(cells)}")
    source = cells[0]["source"]
    return "".join(source) if isinstance(source, list) else source


def stamp(path: Path, url: str, branch: str) -> bool:
    """Rewrite the install cell of the notebook at ``path`` for ``url``/``branch``.

    Returns:
        Whether the notebook changed.
    """
    wanted = install_cell(url, branch)
    if installed_source(path) == wanted:
        return False
    notebook = json.loads(path.read_text())
    _install_cells(notebook)[0]["source"] = wanted.splitlines(keepends=True)
    text = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
    atomic_write(path, lambda p: p.write_text(text))
    return True


def sync(checkout: Path) -> list[Path]:
    """Stamp every notebook of :data:`NOTEBOOKS` from ``_config.yml``; returns those that changed."""
    url, branch = repository(checkout)
    return [checkout / name for name in NOTEBOOKS if stamp(checkout / name, url, branch)]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nandlib.colab [CHECKOUT]``: resync the install cells (``make colab-sync``)."""
    parser = argparse.ArgumentParser(description="Stamp the Colab install cells from _config.yml.")
    parser.add_argument("checkout", type=Path, nargs="?", default=Path("."))
    changed = sync(parser.parse_args(argv).checkout)
    for path in changed:
        print(f"colab: stamped the install cell of {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
