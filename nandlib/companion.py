"""``make book`` end to end: data, sweep, aggregation notebooks, Jupyter Book build.

1. the profile's dataset (generated once under the user data folder, :func:`nandlib.paths.datasets_dir`,
   for synthetic profiles, or the user's MVTec AD);
2. the sweep (:func:`nandlib.sweep.run_sweep`) into ``<book>/generated/``;
3. the aggregation notebooks (``tables``, ``figure5``, shipped in ``nandlib.notebooks``) executed by
   papermill into ``<book>/generated/`` when their inputs changed;
4. ``jupyter-book build <book>`` with warnings as errors, then a check that ``_build/html/index.html``
   exists (Jupyter Book 2.x exits 0 on a 1.x layout having built nothing).

``<book>`` is the book's source folder (``book/`` of a checkout: ``nand book --book-dir``).

Book: ``reproducing.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import yaml

from nandlib import __version__, provenance
from nandlib.config import Profile
from nandlib.data import generate_dataset, is_complete
from nandlib.outputs import OutputLayout, atomic_write, check_writable
from nandlib.paths import datasets_dir, writable_folder

BOOK_PROFILE_ENV = "NAND_BOOK_PROFILE"
"""Set by :func:`build_html` to the profile the book's tables ran with (read by
:func:`nandlib.playground.book_profile`)."""

AGGREGATES = ("tables", "figure5")
BUILD_PAGE = "build.md"
"""Under ``<book>/generated/``: the front page's "This build" box (:func:`build_page`), included by
``intro.md``."""


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
    return _generated(profile, _synthetic_root(profile), profile.classes)


def _synthetic_root(profile: Profile) -> Path:
    spec = profile.data.synthetic
    return datasets_dir() / f"synth-{profile.name}-seed{spec.seed}-{spec.scale}-{spec.size}"


def _generated(profile: Profile, root: Path, classes: list[str]) -> Path:
    """``root`` holding at least ``classes``: generated when incomplete or missing one of them (with the
    classes it held: every image's seed derives from its class, so they come out the same)."""
    held = sorted(p.name for p in root.iterdir() if p.is_dir()) if is_complete(root) else []
    if not set(classes) <= set(held):
        spec = profile.data.synthetic
        writable_folder(datasets_dir(), "datasets folder (user data folder)")
        shutil.rmtree(root, ignore_errors=True)
        wanted = [*held, *(c for c in classes if c not in held)]
        generate_dataset(root, wanted, seed=spec.seed, scale=spec.scale, size=spec.size)
    return root


def prepare_class_data(profile: Profile, class_name: str) -> Path:
    """A dataset root holding ``class_name`` of a generated profile (the playground's): the profile's
    whole dataset where :func:`prepare_data` made it, else that class alone beside it, generated once
    (the same images: each image's seed derives from its class, split, type and index)."""
    whole = _synthetic_root(profile)
    if is_complete(whole):
        return whole
    return _generated(profile, whole.with_name(f"{whole.name}-{class_name}"), [class_name])


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


def _library_files() -> list[Path]:
    package = provenance.PACKAGE_DIR
    return [p for p in sorted(package.rglob("*")) if p.is_file() and "__pycache__" not in p.parts]


def _fingerprint(paths: list[Path], *extra: str) -> str:
    digest = hashlib.sha256("\0".join(extra).encode())
    for path in paths:
        digest.update(str(path).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _recorded_inputs(executed: Path) -> str | None:
    if not executed.is_file():
        return None
    return json.loads(executed.read_text()).get("metadata", {}).get("nandlib", {}).get("inputs")


def aggregate(out: Path) -> list[str]:
    """Execute the aggregation notebooks into ``out`` (Tables 2–3, Fig. 5), each only when its inputs
    changed: nandlib's files, the notebook, the units' results, provenance and diagnostics (their digest
    is kept in the executed notebook's metadata, ``nandlib.inputs``).

    Returns:
        The names of the notebooks executed.
    """
    from nandlib.sweep import execute_notebook, notebook

    layout = OutputLayout(out)
    units = layout.result_files() + layout.provenance_files() + layout.diagnostics_files()
    executed = []
    for name in AGGREGATES:
        target = layout.aggregate(name)
        inputs = _fingerprint(_library_files() + [notebook(name)] + units, str(out.resolve()))
        if _recorded_inputs(target) == inputs:
            continue
        execute_notebook(str(notebook(name)), str(target), {"output_dir": str(out.resolve())})
        record = json.loads(target.read_text())
        record["metadata"].setdefault("nandlib", {})["inputs"] = inputs
        text = json.dumps(record, indent=1, ensure_ascii=False)
        atomic_write(target, lambda p, text=text: p.write_text(text))
        executed.append(name)
    return executed


def write_profile(profile: Profile, root: Path, path: Path) -> Path:
    """Save the profile a book runs (weights filled in, its dataset root fixed) as YAML for its pages."""
    ran = {**profile.model_dump(mode="json"), "data": {"root": str(root.resolve())}}
    text = yaml.safe_dump(ran, sort_keys=False)
    return atomic_write(path, lambda p: p.write_text(text))


def build_page(profile: str | Path, generated: Path) -> str:
    """The front page's "This build" box: the profile, and the commit and date that produced the book
    (from the profile and the units' provenance records)."""
    from nandlib.profiles import load_profile
    from nandlib.report import load_provenance

    chosen = load_profile(profile)
    records = load_provenance(generated) if generated.is_dir() else []
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Profile **{chosen.name}**: {chosen.description}",
        "",
        f"Built {date} by nandlib {__version__}, commit `{provenance.code_commit()}`.",
    ]
    if records:
        commits = ", ".join(f"`{c}`" for c in sorted({r["commit"] for r in records}))
        dates = sorted(r["date"] for r in records)
        lines[-1] += f" Its {len(records)} units ran {dates[0]} – {dates[-1]} at commit {commits}."
    body = "\n".join(lines)
    return f"```{{admonition}} This build\n:class: tip\n{body}\n```\n"


def clear_stale_execution_cache(build_dir: Path, profile: str | Path, generated: Path) -> bool:
    """Empty Jupyter Book's execution cache when the library, the results or the profile changed.

    ``execute_notebooks: cache`` keys a page on its code cells only; the pages also depend on nandlib's
    code and data files, the sweep's results and ``profile``. Their digest is kept beside the cache.

    Returns:
        Whether the cache was cleared.
    """
    profile_file = Path(profile)
    results = OutputLayout(generated).result_files()
    key = _fingerprint(
        _library_files() + results + ([profile_file] if profile_file.is_file() else []), str(profile)
    )
    cache, stamp = build_dir / ".jupyter_cache", build_dir / ".jupyter_cache.key"
    if stamp.is_file() and stamp.read_text().strip() == key:
        return False
    shutil.rmtree(cache, ignore_errors=True)
    build_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(stamp, lambda p: p.write_text(key + "\n"))
    return True


def build_html(profile: str | Path, book_dir: Path) -> Path:
    """``jupyter-book build`` with warnings as errors; returns the index page.

    ``profile`` (a name or a YAML file, e.g. from :func:`write_profile`) reaches the executed pages as
    ``$NAND_BOOK_PROFILE`` (:func:`nandlib.playground.book_profile`), so that the playground runs the
    models and images the tables ran with. The front page's "This build" box (:func:`build_page`) is
    written to ``generated/build.md`` first; pages are executed once and cached until the library,
    the results or the profile change (:func:`clear_stale_execution_cache`).

    Raises:
        RuntimeError: The build failed or produced no ``index.html``.
    """
    generated = book_dir / "generated"
    generated.mkdir(parents=True, exist_ok=True)
    page = build_page(profile, generated)
    atomic_write(generated / BUILD_PAGE, lambda p: p.write_text(page))
    clear_stale_execution_cache(book_dir.parent / "_build", profile, generated)
    command = [
        str(Path(sys.executable).parent / "jupyter-book"),
        "build",
        str(book_dir),
        "-W",
        "--keep-going",
    ]
    chosen = Path(profile).resolve() if Path(profile).is_file() else profile  # pages run in book/
    environment = {**os.environ, BOOK_PROFILE_ENV: str(chosen)}
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
