"""run_unit: a rerun with the feature cache is identical and encodes nothing; diagnostics are right."""

import numpy as np
import pandas as pd
import pytest
import torch

from nandlib.data import read_class
from nandlib.run import build_nd, run_unit


def test_rerun_with_cache_is_identical_and_encodes_nothing(synth_root, tiny_unit, tmp_path, count_encodings):
    cache = str(tmp_path / "cache")
    cold = run_unit(tiny_unit(tmp_path / "cold", cache_dir=cache), progress=False)
    encoded = sum(count_encodings)
    assert encoded == len(read_class(synth_root, "carpet").test)  # each test image once
    warm = run_unit(tiny_unit(tmp_path / "warm", cache_dir=cache), progress=False)
    assert sum(count_encodings) == encoded  # the warm run encoded no image
    pd.testing.assert_frame_equal(cold, warm)


def test_unit_writes_diagnostics_equal_to_a_recomputation(synth_root, tiny_unit, tmp_path):
    """The diagnostics a unit writes match ones recomputed from whole suppression maps of all test images."""
    from nandlib.diagnostics import DIAGNOSTIC_COLUMNS
    from nandlib.geometry import FULL_IMAGE, crop_to_region
    from nandlib.protocol import pixel_auroc

    config = tiny_unit(tmp_path, batch_size=3, cache_dir="off")
    results = run_unit(config, progress=False)
    written = pd.read_csv(config.outputs.diagnostics("aprilgan", "carpet"))
    assert list(written.columns) == list(DIAGNOSTIC_COLUMNS)
    assert written["group"].tolist() == results["group"].tolist()

    nd = build_nd(config)
    data = read_class(synth_root, "carpet")
    features = nd.features([s.image() for s in data.test])
    full = [torch.from_numpy(s.mask()).float()[None] for s in data.test]
    masks = torch.cat([crop_to_region(m, FULL_IMAGE, mode="nearest") for m in full]).bool()
    types = np.array([s.anomaly_type for s in data.test])
    for group, members in {"cut": ["cut", "hole"], "color": ["color"]}.items():
        suppression = nd.suppression_map(features, nd.normality(group=group).f_add, nd.aprilgan.geometry)
        defect = masks.numpy()
        in_group = np.isin(types, members)[:, None, None] & defect
        expected = pixel_auroc(in_group[defect], suppression.numpy()[defect])
        got = written.set_index("group").loc[group, "sup_specificity"]
        assert got == pytest.approx(expected, abs=1e-6)


def test_edited_phrases_reach_the_unit_and_change_its_numbers(tiny_unit, tmp_path):
    shipped = run_unit(tiny_unit(tmp_path / "a", cache_dir="off"), progress=False)
    phrases = {"cut": ["carpet with a loose thread"]}
    edited = run_unit(tiny_unit(tmp_path / "b", cache_dir="off", phrases=phrases), progress=False)
    by_group = lambda frame: frame.set_index("group")["auroc_after"]  # noqa: E731
    assert by_group(edited)["cut"] != by_group(shipped)["cut"]
    assert by_group(edited).drop("cut").equals(by_group(shipped).drop("cut"))
