"""``make book`` as a reader meets it: a fresh clone, install included; a rerun; a rerun after a prose edit.

Issue 17, item 3. Clones this repository's committed branch into a temporary folder (its own ``.venv``
and user data folder ``<clone>/.nand``: nothing shared with this checkout), then times

1. ``make book`` (install, data, sweep, aggregation, Jupyter Book) — target 15 min on 2 cores;
2. ``make book`` again, nothing changed — target 1 min;
3. ``make book`` after one sentence is added to a page's prose — target 1 min, and no unit may rerun
   (counted from the sweep's status frame, ``book/generated/sweep_status.json``: every unit ``skipped``).

    .venv/bin/python benchmarks/book_build.py [--profile toy] [--page book/method.md] [--keep]

Use a reduced profile YAML (``--profile path.yaml``, e.g. two classes) to check the script quickly; the
numbers that count are the default profile's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from _common import machine

CHECKOUT = Path(__file__).resolve().parents[1]
TARGETS = {"fresh clone": 15 * 60, "rerun, nothing changed": 60, "rerun after a prose edit": 60}


def _branch() -> str:
    done = subprocess.run(
        ["git", "-C", str(CHECKOUT), "rev-parse", "--abbrev-ref", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def _make_book(clone: Path, profile: str, log: Path) -> float:
    """Seconds of one ``make book`` in ``clone``; its output goes to ``log``.

    Raises:
        RuntimeError: ``make book`` failed (naming the log).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("NAND_HOME", "NAND_CACHE_DIR", "VIRTUAL_ENV")}
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(
            ["make", "book", f"PROFILE={profile}"], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"make book failed in {clone} (exit {done.returncode}); see {log}")
    return seconds


def _unit_statuses(clone: Path) -> dict[str, int]:
    frame = json.loads((clone / "book" / "generated" / "sweep_status.json").read_text())
    counts: dict[str, int] = {}
    for row in frame:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="toy", help="toy | offline | paper | a profile YAML")
    parser.add_argument("--branch", default=None, help="Branch to clone (default: this checkout's).")
    parser.add_argument("--page", default="book/method.md", help="The page whose prose is edited.")
    parser.add_argument("--work", type=Path, default=None, help="Folder for the clone (default: a temp one).")
    parser.add_argument("--keep", action="store_true", help="Keep the clone afterwards.")
    args = parser.parse_args()
    profile = str(Path(args.profile).resolve()) if Path(args.profile).is_file() else args.profile
    work = args.work or Path(tempfile.mkdtemp(prefix="nand-book-build-"))
    clone = work / "clone"
    print(machine())
    subprocess.run(
        ["git", "clone", "-q", "--branch", args.branch or _branch(), str(CHECKOUT), str(clone)], check=True
    )
    commit = subprocess.run(
        ["git", "-C", str(clone), "describe", "--always"], capture_output=True, text=True, check=True
    ).stdout.strip()
    print(f"fresh clone of {CHECKOUT} at {commit} in {clone}; profile {profile}")
    try:
        times = {"fresh clone": _make_book(clone, profile, work / "make-book-1.log")}
        print(f"units after the first build: {_unit_statuses(clone)}")
        times["rerun, nothing changed"] = _make_book(clone, profile, work / "make-book-2.log")
        page = clone / args.page
        page.write_text(page.read_text() + "\nOne more sentence of prose (benchmarks/book_build.py).\n")
        times["rerun after a prose edit"] = _make_book(clone, profile, work / "make-book-3.log")
        statuses = _unit_statuses(clone)
        rerun = sum(n for status, n in statuses.items() if status != "skipped")
        print(f"units after the prose edit: {statuses} -> {rerun} unit(s) reran (target 0)")
        for name, seconds in times.items():
            verdict = "ok" if seconds <= TARGETS[name] else "OVER"
            print(f"RESULT {name}: {seconds / 60:.1f} min (target {TARGETS[name] / 60:.0f} min) {verdict}")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
