"""Tables 2 and 3 beside the paper's numbers; the paper's own numbers must reproduce its averages."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nandlib.paper import PAPER_TABLES, read_paper_table
from nandlib.tables import PAPER_METHOD_NAMES, paper_table2, paper_table3, side_by_side, table2, table3

SHARED_PAPER = Path(__file__).resolve().parents[1].parent / "shared" / "paper"


def _as_results(paper_rows: pd.DataFrame, detector: str = "aprilgan") -> pd.DataFrame:
    return paper_rows.assign(
        detector=detector,
        auroc_before=paper_rows["auroc_before"] / 100,
        auroc_after=paper_rows["auroc_after"] / 100,
    )


def test_paper_tables_load():
    t2, t3 = paper_table2(), paper_table3()
    assert len(t2) == 56 + 14 and (t2["group"] == "AVERAGE").sum() == 14
    assert t3.set_index("detector").loc["aprilgan", ["auroc_before", "auroc_after"]].tolist() == [70.6, 75.1]
    assert t3["detector"].tolist() == list(PAPER_METHOD_NAMES)


def test_shipped_tables_match_shared_originals():
    if not SHARED_PAPER.is_dir():
        pytest.skip(f"{SHARED_PAPER} not present")
    for name in PAPER_TABLES:
        pd.testing.assert_frame_equal(read_paper_table(name), pd.read_csv(SHARED_PAPER / f"{name}.csv"))


def test_table2_from_paper_groups_reproduces_paper_averages():
    paper = paper_table2()
    table = table2(_as_results(paper[paper["group"] != "AVERAGE"]))
    averages = table[table["group"] == "AVERAGE"]
    assert len(averages) == 14
    # the paper's AVERAGE is the mean over its groups (within rounding of the printed group values)
    assert np.abs(averages["diff_before"]).max() <= 0.05 + 1e-9
    assert np.abs(averages["diff_after"]).max() <= 0.05 + 1e-9
    groups = table[table["group"] != "AVERAGE"]
    assert (groups["diff_before"] == 0).all() and (groups["diff_after"] == 0).all()
    bottle = table[table["class"] == "bottle"]
    assert bottle["group"].tolist() == ["AVERAGE", "broken", "contamination"]
    assert bottle["before_after"].tolist()[0] == "56.6 → 75.2 (+18.6)"


def test_table3_gives_paper_mean_for_aprilgan():
    paper = paper_table2()
    from_averages = table3(_as_results(paper[paper["group"] == "AVERAGE"]))
    assert from_averages.loc[0, "before_after"] == "70.6 → 75.1 (+4.5)"
    assert (from_averages.loc[0, "method"], from_averages.loc[0, "n_classes"]) == ("APRIL-GAN", 14)
    assert from_averages.loc[0, "diff_before"] == from_averages.loc[0, "diff_after"] == 0
    # from the printed (rounded) group values the mean after NAND is 75.04: 75.0, 0.1 below the paper
    from_groups = table3(_as_results(paper[paper["group"] != "AVERAGE"])).iloc[0]
    assert (from_groups["before"], from_groups["after"], from_groups["diff_after"]) == (70.6, 75.0, -0.1)


def test_tables_on_hand_made_results():
    results = pd.DataFrame(
        {
            "class": ["bottle", "bottle", "carpet"],
            "group": ["broken", "contamination", "cut"],
            "detector": ["winclip-1", "winclip-1", "winclip-1"],
            "auroc_before": [0.5, 0.7, 0.9],
            "auroc_after": [0.75, 0.8, 0.861],
        }
    )
    t2 = table2(results, detector="winclip-1")
    assert t2["group"].tolist() == ["AVERAGE", "broken", "contamination", "AVERAGE", "cut"]
    assert t2["before_after"].tolist()[:2] == ["60.0 → 77.5 (+17.5)", "50.0 → 75.0 (+25.0)"]
    assert t2.loc[4, "delta"] == -3.9
    assert t2["paper_before"].isna().all()  # the paper's Table 2 is APRIL-GAN's only
    assert table2(results.assign(detector="aprilgan")).loc[1, "paper_before"] == 23.5
    t3 = table3(pd.concat([results, results.assign(detector="mine")]))
    assert t3["method"].tolist() == ["WinCLIP-1", "mine"]
    # mean over classes of class means: (60.0 + 90.0) / 2 and (77.5 + 86.1) / 2
    assert t3.loc[0, ["before", "after", "delta"]].tolist() == [75.0, 81.8, 6.8]
    assert t3.loc[0, "paper_before"] == 67.4 and np.isnan(t3.loc[1, "paper_before"])


def test_side_by_side_shows_ours_the_papers_and_the_gap_in_four_columns():
    results = _as_results(paper_table2().query("`class` == 'carpet' and group != 'AVERAGE'"))
    shifted = results.assign(auroc_after=results["auroc_after"] + 0.01)  # ours: 1 point more Δ
    view = side_by_side(table2(shifted), ["class", "group"])
    assert view.index.names == ["class", "group"]
    assert view.columns.tolist() == ["ours", "paper", "Δ − paper's Δ"]
    paper = paper_table2().query("`class` == 'carpet'").set_index("group")
    before, after = paper.loc["cut", ["auroc_before", "auroc_after"]]
    row = view.loc[("carpet", "cut")]
    assert row["paper"] == f"{before:.1f} → {after:.1f} ({after - before:+.1f})"
    assert row["ours"] == f"{before:.1f} → {after + 1:.1f} ({after + 1 - before:+.1f})"
    assert (view["Δ − paper's Δ"] == 1.0).all()
    other = side_by_side(table2(shifted.assign(detector="winclip-1"), detector="winclip-1"), ["group"])
    assert (other["paper"] == "—").all() and other["Δ − paper's Δ"].isna().all()


def test_bad_results_are_named():
    with pytest.raises(ValueError, match="auroc_after"):
        table3(pd.DataFrame({"class": ["a"], "group": ["g"], "detector": ["d"], "auroc_before": [0.5]}))
    frame = _as_results(paper_table2().head(3))
    with pytest.raises(ValueError, match="'patchcore'"):
        table2(frame, detector="patchcore")
