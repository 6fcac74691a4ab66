"""Diagnostics beside Δ, on hand-built scores and suppression values with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nandlib.diagnostics import DIAGNOSTIC_COLUMNS, defect_pixels, group_diagnostics, summarize_seeds

# carpet's groups: thread, metal (metal_contamination), color, cut (cut, hole)
TYPES = ["good", "good", "thread", "thread", "hole", "color"]


def test_image_aurocs_of_others_and_of_the_group() -> None:
    before = np.array([0.1, 0.2, 0.9, 0.8, 0.7, 0.6])
    after = {"thread": np.array([0.1, 0.2, 0.15, 0.05, 0.7, 0.1])}  # thread suppressed, color too
    row = group_diagnostics("carpet", "aprilgan", TYPES, before, after).iloc[0]
    assert list(row.index) == list(DIAGNOSTIC_COLUMNS)
    assert row["others_before"] == 1.0 and row["g_vs_good_before"] == 1.0
    # good {0.1, 0.2} vs others {0.7, 0.1}: pairs won 2 + 0.5 (tie) of 4
    assert row["others_after"] == pytest.approx(2.5 / 4)
    # good {0.1, 0.2} vs thread {0.15, 0.05}: 1 of 4 pairs
    assert row["g_vs_good_after"] == pytest.approx(1 / 4)
    assert np.isnan(row["sup_specificity"])


def test_specificity_ranks_the_groups_defect_pixels_against_other_defects() -> None:
    masks = np.zeros((6, 2, 2), dtype=bool)
    masks[2, 0, 0] = masks[3, 0, :] = True  # thread pixels: 3
    masks[4, 1, 1] = masks[5, 1, :] = True  # hole and color pixels: 3
    pixel_types = defect_pixels(masks, TYPES)
    assert list(pixel_types) == ["thread"] * 3 + ["hole"] + ["color"] * 2
    perfect = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.3])
    inverted = perfect[::-1].copy()
    scores = {"thread": np.zeros(6), "cut": np.zeros(6)}
    frame = group_diagnostics(
        "carpet",
        "aprilgan",
        TYPES,
        np.zeros(6),
        scores,
        pixel_types=pixel_types,
        defect_suppression={"thread": perfect, "cut": inverted},
    ).set_index("group")
    assert frame.loc["thread", "sup_specificity"] == 1.0
    # cut = {hole}: its one pixel holds 0.7 of `inverted`, above 0.3, 0.2 and 0.1 of five -> 3 of 5
    assert frame.loc["cut", "sup_specificity"] == pytest.approx(3 / 5)


def test_summary_over_seeds_gives_mean_and_sd() -> None:
    keys = {"class": ["carpet"], "group": ["cut"], "detector": ["aprilgan"]}
    frames = [pd.DataFrame({**keys, "delta": [d]}) for d in (1.0, 3.0)]
    summary = summarize_seeds(frames)
    assert summary.loc[0, "delta_mean"] == 2.0 and summary.loc[0, "delta_sd"] == pytest.approx(np.sqrt(2))
