"""``make book`` end to end: data, sweep, aggregation notebooks, Jupyter Book build.

1. the profile's dataset (generated once under the user data folder, :func:`nandlib.paths.datasets_dir`,
   for synthetic profiles, or the user's MVTec AD);
2. the sweep (:func:`nandlib.sweep.run_sweep`) into ``<book>/generated/``;
3. the aggregation notebooks (``tables``, ``figure5``, shipped in ``nandlib.notebooks``) executed by
   papermill into ``<book>/generated/``;
4. ``jupyter-book build <book>`` with warnings as errors, then a check that ``_build/html/index.html``
   exists (Jupyter Book 2.x exits 0 on a 1.x layout having built nothing).

``<book>`` is the book's source folder (``book/`` of a checkout: ``nand book --book-dir``).

Book: ``reproducing.md``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from nandlib.config import Profile
from nandlib.data import generate_dataset, is_complete
from nandlib.outputs import OutputLayout, atomic_write, check_writable
from nandlib.paths import datasets_dir, writable_folder

BOOK_PROFILE_ENV = "NAND_BOOK_PROFILE"
"""Set by :func:`build_html` to the profile the book's tables ran with (read by
:func:`nandlib.playground.book_profile`)."""

AGGREGATES = ("tables", "figure5")


def prepare_data(profile: Profile, data_root: Path | None = None) -> Path:
    """The dataset root of ``profile``: the user's, or a generated one (made once, then reused).

    Raises:
        FileNotFoundError: A given root that does not exist.
    """
    if data_root is not None or profile.data.root:
        root = Path(data_root or profile.data.root)
        if not root.is_dir():
            raise FileNotFoundError(f"data: no dataset folder at {root}")
        return root
    spec = profile.data.synthetic
    root = datasets_dir() / f"synth-{profile.name}-seed{spec.seed}-{spec.scale}-{spec.size}"
    if not is_complete(root):
        writable_folder(datasets_dir(), "datasets folder (user data folder)")
        shutil.rmtree(root, ignore_errors=True)
        generate_dataset(root, profile.classes, seed=spec.seed, scale=spec.scale, size=spec.size)
    return root


def resolve_weights(profile: Profile) -> Profile:
    """Fill in the weights a profile names by reference (``toy:clip``: the toy world, trained once)."""
    from nandlib.toy.train import resolve_toy_weights

    return resolve_toy_weights(profile, log=print)


def claim_output(out: Path, profile: str) -> None:
    """Mark ``out`` as holding one profile's results; refuse to mix in another's.

    Whether a unit's results are current (same config, data and weights) is decided per unit by the
    sweep's fingerprints (:mod:`nandlib.fingerprints`); this only keeps two profiles' units apart.

    Raises:
        RuntimeError: ``out`` holds results of another profile (nothing is deleted).
        OutputError: ``out`` cannot be written.
    """
    marker = OutputLayout(out).owner
    if marker.is_file() and marker.read_text().strip() != profile:
        raise RuntimeError(
            f"{out} holds results of profile '{marker.read_text().strip()}', not '{profile}': "
            f"choose another output folder, move it away or run `make clean` (deletes it) first"
        )
    check_writable(out)
    atomic_write(marker, lambda p: p.write_text(profile + "\n"))


def aggregate(out: Path) -> None:
    """Execute the aggregation notebooks into ``out`` (Tables 2–3, Fig. 5)."""
    from nandlib.sweep import execute_notebook, notebook

    for name in AGGREGATES:
        target = OutputLayout(out).aggregate(name)
        execute_notebook(str(notebook(name)), str(target), {"output_dir": str(out.resolve())})


def write_profile(profile: Profile, root: Path, path: Path) -> Path:
    """Save the profile a book runs (weights filled in, its dataset root fixed) as YAML for its pages."""
    ran = {**profile.model_dump(mode="json"), "data": {"root": str(root.resolve())}}
    text = yaml.safe_dump(ran, sort_keys=False)
    return atomic_write(path, lambda p: p.write_text(text))


def build_html(profile: str | Path, book_dir: Path) -> Path:
    """``jupyter-book build`` with warnings as errors; returns the index page.

    ``profile`` (a name or a YAML file, e.g. from :func:`write_profile`) reaches the executed pages as
    ``$NAND_BOOK_PROFILE`` (:func:`nandlib.playground.book_profile`), so that the playground runs the
    models and images the tables ran with.

    Raises:
        RuntimeError: The build failed or produced no ``index.html``.
    """
    command = [
        str(Path(sys.executable).parent / "jupyter-book"),
        "build",
        str(book_dir),
        "-W",
        "--keep-going",
    ]
    environment = {**os.environ, BOOK_PROFILE_ENV: str(profile)}
    done = subprocess.run(command, cwd=book_dir.parent, env=environment, check=False)
    index = book_dir.parent / "_build" / "html" / "index.html"
    if done.returncode != 0 or not index.is_file():
        raise RuntimeError(
            f"jupyter-book build failed (exit {done.returncode}); no {index}"
            if not index.is_file()
            else f"jupyter-book build failed (exit {done.returncode}); see the log above"
        )
    return index


def build(
    profile: Profile,
    book_dir: Path,
    data_root: Path | None = None,
    workers: int = 2,
    html: bool = True,
    cluster: str | None = None,
) -> pd.DataFrame:
    """Run the whole companion for ``profile`` and build the book whose sources are ``book_dir``.

    Returns:
        The sweep's status frame.

    Raises:
        FileNotFoundError: ``book_dir`` has no ``_toc.yml``.
        RuntimeError: A unit failed (the others are kept; rerun to resume), or the book build failed.
    """
    from nandlib.cluster import open_engine
    from nandlib.sweep import run_sweep

    if not (book_dir / "_toc.yml").is_file():
        raise FileNotFoundError(f"book: no Jupyter Book sources (_toc.yml) in {book_dir}; pass --book-dir")
    generated = book_dir / "generated"
    root = prepare_data(profile, data_root)
    profile = resolve_weights(profile)
    with open_engine(cluster, workers) as engine:
        status = run_sweep(profile, root, generated, engine=engine)
    failed = status[~status["status"].str.startswith(("done", "skipped"))]
    if not failed.empty:
        raise RuntimeError(
            "sweep units failed or are locked by another sweep (finished ones are kept; rerun to resume):\n"
            + failed.to_string(index=False)
        )
    ran = write_profile(profile, root, OutputLayout(generated).profile)
    aggregate(generated)
    if html:
        build_html(ran, book_dir)
    return status
