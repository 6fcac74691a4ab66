"""The toy world's goal lines measured on hand-built results with known answers."""

import pandas as pd
import pytest

from nandlib.goals import goal_lines

# class, group, detector, Δ (points), others before, others after (fractions)
ROWS = [
    ("carpet", "cut", "aprilgan", 12.0, 0.90, 0.90),
    ("carpet", "hole", "aprilgan", 8.0, 0.90, 0.91),
    ("bottle", "broken", "aprilgan", 5.0, 0.80, 0.74),
    ("carpet", "cut", "winclip-0", 1.0, 0.70, 0.70),
    ("bottle", "broken", "winclip-0", 2.0, 0.70, 0.70),
]


def _frames(rows):
    results = pd.DataFrame(
        [(c, g, d, 0.5, 0.5 + delta / 100) for c, g, d, delta, *_ in rows],
        columns=["class", "group", "detector", "auroc_before", "auroc_after"],
    )
    diagnostics = pd.DataFrame(
        [(c, g, d, before, after, 0.5, 0.6) for c, g, d, _, before, after in rows],
        columns=["class", "group", "detector", "others_before", "others_after", "g_vs_good_after",
                 "sup_specificity"],
    )
    return results, diagnostics


def test_goal_lines_measure_each_detector_and_name_the_goals_missed():
    lines = goal_lines(*_frames(ROWS)).set_index("detector")
    april = lines.loc["aprilgan"]
    assert (april["textures_delta"], april["objects_delta"], april["delta"]) == (10.0, 5.0, 8.3)
    assert april["paper_delta"] == pytest.approx(4.5)
    assert april["others_change"] == pytest.approx(-1.7)
    assert (april["worst_class"], april["worst_class_change"]) == ("bottle", -6.0)
    assert april["missed"] == "every class's others within ±5"
    assert lines.loc["winclip-0", "missed"] == "Δ ≥ paper's Δ"  # 1.5 < the paper's 4.0


def test_goal_lines_pass_when_every_line_is_met():
    rows = [(*row[:4], 0.9, 0.9) for row in ROWS if row[2] == "aprilgan"]
    assert goal_lines(*_frames(rows))["missed"].tolist() == [""]


def test_goal_lines_over_seeds_are_the_seeds_means_with_their_spread():
    results, diagnostics = _frames(ROWS)
    again, again_diagnostics = _frames([(*row[:3], row[3] + 2.0, *row[4:]) for row in ROWS])  # Δ + 2
    seeds = [frame.assign(seed=seed) for seed, frame in ((0, results), (1, again))]
    seed_diagnostics = [frame.assign(seed=seed) for seed, frame in ((0, diagnostics), (1, again_diagnostics))]
    lines = goal_lines(pd.concat(seeds), pd.concat(seed_diagnostics)).set_index("detector")
    april = lines.loc["aprilgan"]
    assert (april["n_seeds"], april["n_groups"]) == (2, 3)
    assert (april["textures_delta"], april["objects_delta"], april["delta"]) == (11.0, 6.0, 9.3)
    assert april["textures_delta_sd"] == pytest.approx(1.4)  # sd of 10 and 12
    assert april["others_change_sd"] == 0.0
    assert (april["worst_class"], april["worst_class_change"]) == ("bottle", -6.0)
    assert list(lines.columns[:5]) == ["n_groups", "textures_delta", "objects_delta", "delta", "paper_delta"]
