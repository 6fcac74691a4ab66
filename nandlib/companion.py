"""``make book`` end to end: data, sweep, aggregation notebooks, Jupyter Book build.

1. the profile's dataset (generated once under ``data/`` for synthetic profiles, or the user's MVTec AD);
2. the sweep (:func:`nandlib.sweep.run_sweep`) into ``book/generated/``;
3. the aggregation notebooks (``notebooks/tables.ipynb``, ``notebooks/figure5.ipynb``) executed by
   papermill into ``book/generated/``;
4. ``jupyter-book build book/`` with warnings as errors, then a check that ``_build/html/index.html``
   exists (Jupyter Book 2.x exits 0 on a 1.x layout having built nothing).

Book: ``reproducing.md``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from nandlib.data import generate_dataset, is_complete
from nandlib.profiles import Profile
from nandlib.sweep import NOTEBOOK_DIR, execute_unit, run_sweep

BOOK_PROFILE_ENV = "NAND_BOOK_PROFILE"
"""Set by :func:`build_html` to the profile the book's tables ran with (read by
:func:`nandlib.playground.book_profile`)."""

REPO_ROOT = Path(__file__).resolve().parents[1]
BOOK_DIR = REPO_ROOT / "book"
GENERATED = BOOK_DIR / "generated"
AGGREGATES = ("tables", "figure5")


def prepare_data(profile: Profile, data_root: Path | None = None) -> Path:
    """The dataset root of ``profile``: the user's, or a generated one (made once, then reused).

    Raises:
        FileNotFoundError: A given root that does not exist.
    """
    if data_root is not None or "root" in profile.data:
        root = Path(data_root or profile.data["root"])
        if not root.is_dir():
            raise FileNotFoundError(f"data: no dataset folder at {root}")
        return root
    spec = profile.data["synthetic"]
    root = REPO_ROOT / "data" / f"synth-{profile.name}-seed{spec['seed']}-{spec['scale']}-{spec['size']}"
    if not is_complete(root):
        shutil.rmtree(root, ignore_errors=True)
        generate_dataset(root, profile.classes, seed=spec["seed"], scale=spec["scale"], size=spec["size"])
    return root


def resolve_weights(profile: Profile) -> Profile:
    """Fill in the weights a profile trains here (``trained_here: toy``: trained once, then cached)."""
    if profile.trained_here is None:
        return profile
    if profile.trained_here != "toy":
        raise ValueError(f"trained_here: unknown value {profile.trained_here!r} (only 'toy')")
    from nandlib.toy.train import with_toy_weights

    return with_toy_weights(profile, log=print)


def output_owner(profile: Profile, root: Path) -> str:
    """Who a generated folder belongs to: profile, dataset root and a digest of the weights it ran with.

    The digest covers the ND module's and the detectors' settings with every local weight file replaced by
    a hash of its bytes, so that retraining the toy world (same paths, new weights) or pointing the profile
    at another checkpoint is refused by :func:`claim_output` instead of resuming units of the old weights.
    """

    def content(value: object) -> object:
        if isinstance(value, dict):
            return {key: content(item) for key, item in value.items()}
        if isinstance(value, str) and Path(value).is_file():
            return hashlib.sha256(Path(value).read_bytes()).hexdigest()
        return value

    settings = json.dumps(content({"nd": profile.nd, "detectors": profile.detectors}), sort_keys=True)
    return f"{profile.name} {root.resolve()} weights {hashlib.sha256(settings.encode()).hexdigest()[:12]}"


def claim_output(out: Path, owner: str) -> None:
    """Mark ``out`` as holding one profile's results; refuse to mix in another's.

    Raises:
        RuntimeError: ``out`` holds results of another profile, dataset or weights (nothing is deleted).
    """
    marker = out / "OWNER.txt"
    if marker.is_file() and marker.read_text().strip() != owner:
        raise RuntimeError(
            f"{out} holds results of '{marker.read_text().strip()}', not '{owner}': "
            f"move it away or run `make clean` (deletes it) first"
        )
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(owner + "\n")


def aggregate(out: Path) -> None:
    """Execute the aggregation notebooks into ``out`` (Tables 2–3, Fig. 5)."""
    for name in AGGREGATES:
        execute_unit(
            str(NOTEBOOK_DIR / f"{name}.ipynb"),
            str(out / f"{name}.ipynb"),
            {"output_dir": str(out.resolve())},
        )


def write_profile(profile: Profile, root: Path, path: Path) -> Path:
    """Save the profile a book runs (weights filled in, its dataset root fixed) as YAML for its pages."""
    ran = {**dataclasses.asdict(profile), "data": {"root": str(root.resolve())}}
    path.write_text(yaml.safe_dump(ran, sort_keys=False))
    return path


def build_html(profile: str | Path, book_dir: Path = BOOK_DIR) -> Path:
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
    profile: Profile, data_root: Path | None = None, workers: int = 2, html: bool = True
) -> pd.DataFrame:
    """Run the whole companion for ``profile`` and build the book.

    Returns:
        The sweep's status frame.

    Raises:
        RuntimeError: A unit failed (the others are kept; rerun to resume), or the book build failed.
    """
    root = prepare_data(profile, data_root)
    profile = resolve_weights(profile)
    claim_output(GENERATED, output_owner(profile, root))
    ran = write_profile(profile, root, GENERATED / "profile.yaml")
    status = run_sweep(profile, root, GENERATED, workers=workers)
    failed = status[status["status"].str.startswith("failed")]
    if not failed.empty:
        raise RuntimeError(
            "sweep units failed (finished ones are kept; rerun to resume):\n" + failed.to_string(index=False)
        )
    aggregate(GENERATED)
    if html:
        build_html(ran)
    return status
