"""How far a sweep is from the toy world's goals (book: ``results.md``, "Goals"; ``reproducing.md``).

NAND should lift the AUROC of the relabelled protocol (Δ) and leave good images against the *other*
defects where they were. The lines below are the project's goals for the toy world, set against the
paper's Table 3; :func:`goal_lines` measures each detector against them from one sweep's results and
diagnostics (:mod:`nandlib.diagnostics`).
"""

from __future__ import annotations

import pandas as pd

from nandlib.data.classes import TEXTURE_CLASSES
from nandlib.tables import PAPER_METHOD_NAMES, paper_table3, with_diagnostics

TEXTURES_DELTA = 10.0
"""APRIL-GAN + NAND: mean Δ over the texture classes' groups, at least (points)."""
OBJECTS_DELTA = 4.0
"""APRIL-GAN + NAND: mean Δ over the object classes' groups, at least (points)."""
OTHERS_MEAN = 2.0
"""Every detector: good vs the other defects moves by less than this on average over groups (points)."""
OTHERS_CLASS = 5.0
"""Every detector: ... and by less than this in any class (mean over the class's groups, points)."""
GOAL_DETECTOR = "aprilgan"
"""The detector the textures and objects lines are set for."""


def goal_lines(results: pd.DataFrame, diagnostics: pd.DataFrame) -> pd.DataFrame:
    """Per detector, the goal lines measured (percent points) and the goals missed.

    Columns: ``detector``, ``n_groups``, ``textures_delta`` and ``objects_delta`` (mean Δ over the groups of
    texture and object classes), ``delta`` (over all groups) beside ``paper_delta`` (the paper's Table 3 Δ,
    the line for every detector), ``others_change`` (mean over groups of good-vs-other-defects after −
    before), ``worst_class``/``worst_class_change`` (the class whose mean change is largest in size) and
    ``missed`` (the goals not met, ``""`` when none).

    Frames of several seeds (a ``seed`` column in both) give the lines averaged over seeds, the goals
    checked on those means, plus ``n_seeds`` and the standard deviation over seeds of each mean
    (``<line>_sd``); ``n_groups`` then counts groups once.

    Raises:
        ValueError: Missing columns, or no diagnostics row matches a result.
    """
    joined = with_diagnostics(results, diagnostics)
    joined[["delta", "others_change"]] *= 100
    joined["texture"] = joined["class"].isin(TEXTURE_CLASSES)
    if "seed" not in joined:
        joined["seed"] = 0
    paper = paper_table3().set_index("detector")
    rows = []
    for detector, frame in joined.groupby("detector", sort=False):
        per_seed = pd.DataFrame(
            {
                "textures_delta": frame[frame["texture"]].groupby("seed")["delta"].mean(),
                "objects_delta": frame[~frame["texture"]].groupby("seed")["delta"].mean(),
                "delta": frame.groupby("seed")["delta"].mean(),
                "others_change": frame.groupby("seed")["others_change"].mean(),
            }
        )
        by_class = frame.groupby("class")["others_change"].mean()  # over groups and seeds
        worst = by_class.abs().idxmax()
        row = {
            "detector": detector,
            "n_groups": len(frame) // len(per_seed),
            **per_seed.mean().to_dict(),
            "paper_delta": (
                paper.at[detector, "auroc_after"] - paper.at[detector, "auroc_before"]
                if detector in PAPER_METHOD_NAMES
                else float("nan")
            ),
            "worst_class": worst,
            "worst_class_change": by_class[worst],
        }
        if len(per_seed) > 1:
            row |= {"n_seeds": len(per_seed), **per_seed.std().add_suffix("_sd").to_dict()}
        rows.append(row)
    lines = pd.DataFrame(rows).round(1)  # goals are checked on the numbers shown
    first = ["detector", "n_groups", "textures_delta", "objects_delta", "delta", "paper_delta"]
    lines = lines[first + [c for c in lines if c not in first]]
    lines["missed"] = [", ".join(_missed(row)) for row in lines.to_dict("records")]
    return lines


def _missed(row: dict) -> list[str]:
    """The goal lines ``row`` (of :func:`goal_lines`) does not reach."""
    missed = []
    if row["detector"] == GOAL_DETECTOR:
        if not row["textures_delta"] >= TEXTURES_DELTA:
            missed.append(f"textures Δ ≥ +{TEXTURES_DELTA:g}")
        if not row["objects_delta"] >= OBJECTS_DELTA:
            missed.append(f"objects Δ ≥ +{OBJECTS_DELTA:g}")
    if row["delta"] < row["paper_delta"]:
        missed.append("Δ ≥ paper's Δ")
    if not abs(row["others_change"]) < OTHERS_MEAN:
        missed.append(f"others within ±{OTHERS_MEAN:g}")
    if not abs(row["worst_class_change"]) < OTHERS_CLASS:
        missed.append(f"every class's others within ±{OTHERS_CLASS:g}")
    return missed
