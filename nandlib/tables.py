"""Tables 2 and 3 from our results, beside the paper's numbers (book: ``results.md``).

Input is the tidy results frame of :func:`nandlib.protocol.class_results` (AUROCs as fractions). Output is in
percent with one decimal, as in the paper. Δ and the differences to the paper are computed from the rounded
numbers, so every row reads consistently ("70.6 → 75.1 (+4.5)").

Detector names map to the paper's method names by :data:`PAPER_METHOD_NAMES`: ``aprilgan`` → APRIL-GAN,
``winclip-0/1/5`` → WinCLIP-0/1/5 (k-shot), ``patchcore`` → PatchCore. Other detectors get no paper numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from nandlib.paper import read_paper_table

PAPER_METHOD_NAMES = {
    "aprilgan": "APRIL-GAN",
    "winclip-0": "WinCLIP-0",
    "winclip-1": "WinCLIP-1",
    "winclip-5": "WinCLIP-5",
    "patchcore": "PatchCore",
}
AVERAGE = "AVERAGE"
TABLE2_DETECTOR = "aprilgan"  # the paper's Table 2 is APRIL-GAN's
_NEEDED = ("class", "group", "detector", "auroc_before", "auroc_after")


def paper_table2() -> pd.DataFrame:
    """The paper's Table 2 (APRIL-GAN before/after NAND, percent).

    Columns ``class, group, auroc_before, auroc_after``; ``group`` is ``AVERAGE`` for a class's mean over
    its groups.
    """
    return read_paper_table("table2_aprilgan_nand")


def paper_table3() -> pd.DataFrame:
    """The paper's Table 3 (percent): ``detector, method, auroc_before, auroc_after``."""
    table = read_paper_table("table3_methods")
    detectors = {paper: ours for ours, paper in PAPER_METHOD_NAMES.items()}
    table.insert(0, "detector", table["method"].map(detectors))
    return table


def _check(results: pd.DataFrame) -> None:
    missing = [c for c in _NEEDED if c not in results.columns]
    if missing:
        raise ValueError(f"results frame lacks column(s) {missing}; see nandlib.protocol.RESULT_COLUMNS")
    if results.empty:
        raise ValueError("results frame is empty")


def _with_deltas(table: pd.DataFrame, ours: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Add percent columns for ours and the paper, Δ, a "before → after (Δ)" string and the differences."""
    table["before"] = (100 * ours["auroc_before"].to_numpy()).round(1)
    table["after"] = (100 * ours["auroc_after"].to_numpy()).round(1)
    table["delta"] = (table["after"] - table["before"]).round(1)
    table["before_after"] = [f"{b:.1f} → {a:.1f} ({d:+.1f})" for b, a, d in
                             zip(table["before"], table["after"], table["delta"], strict=True)]
    table["paper_before"] = paper["auroc_before"].to_numpy()
    table["paper_after"] = paper["auroc_after"].to_numpy()
    table["paper_delta"] = (table["paper_after"] - table["paper_before"]).round(1)
    table["diff_before"] = (table["before"] - table["paper_before"]).round(1)
    table["diff_after"] = (table["after"] - table["paper_after"]).round(1)
    return table


def class_averages(results: pd.DataFrame) -> pd.DataFrame:
    """Mean AUROC over each class's groups, per detector: ``detector, class, auroc_before, auroc_after``."""
    _check(results)
    return results.groupby(["detector", "class"], as_index=False, sort=True)[
        ["auroc_before", "auroc_after"]
    ].mean()


def table2(results: pd.DataFrame, detector: str = TABLE2_DETECTOR) -> pd.DataFrame:
    """Table 2: per class an ``AVERAGE`` row (mean over its groups), then one row per group.

    Args:
        results: Tidy results (:data:`nandlib.protocol.RESULT_COLUMNS`).
        detector: Which detector's rows to tabulate (the paper's Table 2 is APRIL-GAN's).

    Returns:
        ``class, group, before, after, delta, before_after, paper_before, paper_after, paper_delta,
        diff_before, diff_after`` in percent; paper columns are NaN where the paper has no such row
        (and for detectors other than APRIL-GAN).
        Classes are sorted; groups keep their order in ``results``.
    """
    _check(results)
    rows = results[results["detector"] == detector]
    if rows.empty:
        raise ValueError(f"no results for detector {detector!r}; have {sorted(results['detector'].unique())}")
    averages = class_averages(rows).assign(group=AVERAGE)
    ours = pd.concat([averages, rows], ignore_index=True)
    ours["rank"] = np.where(ours["group"] == AVERAGE, -1, ours.index)
    ours = ours.sort_values(["class", "rank"], kind="stable").reset_index(drop=True)
    printed = paper_table2() if detector == TABLE2_DETECTOR else paper_table2().iloc[:0]
    paper = ours[["class", "group"]].merge(printed, on=["class", "group"], how="left")
    return _with_deltas(ours[["class", "group"]].copy(), ours, paper)


def table3(results: pd.DataFrame) -> pd.DataFrame:
    """Table 3: per detector, the mean over classes of the class averages, before and after NAND.

    Args:
        results: Tidy results of one or more detectors.

    Returns:
        ``detector, method, n_classes, before, after, delta, before_after, paper_before, paper_after,
        paper_delta, diff_before, diff_after`` in percent. The paper averages 14 classes; compare with care
        where ``n_classes`` is smaller. Rows follow the paper's order, then other detectors by name.
    """
    averages = class_averages(results)
    ours = averages.groupby("detector", as_index=False).agg(
        n_classes=("class", "size"),
        auroc_before=("auroc_before", "mean"),
        auroc_after=("auroc_after", "mean"),
    )
    order = {name: i for i, name in enumerate(PAPER_METHOD_NAMES)}
    ours["rank"] = ours["detector"].map(order).fillna(len(order))
    ours = ours.sort_values(["rank", "detector"]).reset_index(drop=True)
    table = ours[["detector"]].copy()
    table["method"] = ours["detector"].map(PAPER_METHOD_NAMES).fillna(ours["detector"])
    table["n_classes"] = ours["n_classes"]
    paper = ours[["detector"]].merge(paper_table3(), on="detector", how="left")
    return _with_deltas(table, ours, paper)


def _arrow(before: float, after: float, delta: float) -> str:
    return "—" if np.isnan(before) else f"{before:.1f} → {after:.1f} ({delta:+.1f})"


def side_by_side(table: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """A page-wide view of :func:`table2` or :func:`table3`: ours and the paper's, each as
    "before → after (Δ)", and how far our Δ is from the paper's.

    Args:
        table: Output of :func:`table2` or :func:`table3`.
        keys: The columns that name a row (``["class", "group"]``, ``["method", "n_classes"]``).

    Returns:
        Indexed by ``keys``: ``ours``, ``paper`` ("—" where the paper has no such row), ``Δ − paper's Δ``
        (NaN there).
    """
    view = table[list(keys)].copy()
    view["ours"] = [_arrow(*row) for row in table[["before", "after", "delta"]].to_numpy()]
    view["paper"] = [_arrow(*row) for row in table[["paper_before", "paper_after", "paper_delta"]].to_numpy()]
    view["Δ − paper's Δ"] = (table["delta"] - table["paper_delta"]).round(1)
    return view.set_index(list(keys))


DIAGNOSTIC_SHOWN = (
    "delta",
    "others_before",
    "others_after",
    "others_change",
    "g_vs_good_after",
    "sup_specificity",
)


def with_diagnostics(results: pd.DataFrame, diagnostics: pd.DataFrame) -> pd.DataFrame:
    """Each result row with its group's diagnostics (:mod:`nandlib.diagnostics`), plus ``delta`` (Δ of the
    relabelled protocol) and ``others_change`` (after − before of good vs the other defects), as fractions.
    Frames of several seeds (a ``seed`` column in both) are joined seed by seed.

    Raises:
        ValueError: Missing columns, or no diagnostics row matches a result.
    """
    _check(results)
    keys = ["class", "group", "detector"] + (["seed"] if "seed" in results and "seed" in diagnostics else [])
    joined = results.merge(diagnostics, on=keys, how="inner")
    if joined.empty:
        raise ValueError("diagnostics: no row matches the results (run the units again to write them)")
    joined["delta"] = joined["auroc_after"] - joined["auroc_before"]
    joined["others_change"] = joined["others_after"] - joined["others_before"]
    return joined


def diagnostics_table(results: pd.DataFrame, diagnostics: pd.DataFrame, by: str = "detector") -> pd.DataFrame:
    """Δ beside the diagnostics (:mod:`nandlib.diagnostics`), in percent, averaged over groups per ``by``.

    Columns: ``by``, ``n_groups``, then :data:`DIAGNOSTIC_SHOWN`: Δ of the relabelled protocol, good vs the
    other defects before/after NAND and its change (NAND should leave it unchanged), good vs the added
    group after NAND (should fall towards 50), and the suppression map's specificity (50 = chance).

    Args:
        results: Tidy results frame.
        diagnostics: The units' diagnostics (:func:`nandlib.report.load_diagnostics`).
        by: ``"detector"`` (one row per detector), or e.g. ``["detector", "class", "group"]``.

    Raises:
        ValueError: Missing columns, or no diagnostics row matches a result.
    """
    grouped = with_diagnostics(results, diagnostics).groupby(by, sort=False)
    table = grouped[list(DIAGNOSTIC_SHOWN)].mean().mul(100).round(1)
    table.insert(0, "n_groups", grouped.size())
    return table.reset_index()
