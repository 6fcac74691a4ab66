"""The toy experiment: each ablation row generates with its own prompt and variance; image and pixel AUROC."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nandlib.tgvig import evaluate
from nandlib.tgvig.evaluate import ROWS, summary, toy_ablation, toy_split
from nandlib.tgvig.integrator import Integration
from nandlib.tgvig.pipeline import GeneratedNormals


def test_the_split_has_good_then_defective_images_with_masks_of_their_defects() -> None:
    split = toy_split("bottle", 0, 2, n_good=3, n_defect=4)
    assert len(split.train) == 2 and len(split.test) == 7 and split.labels.tolist() == [0] * 3 + [1] * 4
    assert split.masks.shape == (7, 64, 64) and split.masks.dtype == bool
    assert not split.masks[:3].any() and all(mask.any() for mask in split.masks[3:])
    again = toy_split("bottle", 0, 2, n_good=3, n_defect=4)
    assert np.array_equal(np.asarray(again.test[4]), np.asarray(split.test[4]))


def test_each_row_generates_with_its_prompt_and_variance(monkeypatch) -> None:
    calls = []

    def generate(images, name, clip, vqmodel, settings, prompt, seed, progress):
        calls.append((prompt, settings.variance))
        return GeneratedNormals(list(images), f"{prompt} prompt", None, Integration(None, [0.1, 0.3], 1, []))

    monkeypatch.setattr(evaluate, "generate_normals", generate)
    frame, examples = toy_ablation(["bottle"], None, None, shots=[1], seeds=[0])
    assert calls == [parts for parts in ROWS.values() if parts]
    assert frame["row"].tolist() == list(ROWS) and frame["generated"].tolist() == [0, 1, 1, 1]
    assert frame["set_score"].tolist()[1:] == [0.3] * 3 and frame["prompt"].iloc[1] == "naive prompt"
    assert set(examples) == {("bottle", row) for row, parts in ROWS.items() if parts}
    assert frame[["image_auroc", "pixel_auroc"]].apply(lambda x: x.between(0, 100)).all().all()


def test_summary_is_mean_and_sd_per_group() -> None:
    frame = pd.DataFrame({"row": ["a", "a", "b"], "image_auroc": [70, 80, 90.0], "pixel_auroc": [1, 1, 2.0]})
    table = summary(frame, ["row"])
    assert table.loc["a", "image AUROC (%)"] == "75.0 ± 7.1" and table.loc["b", "runs"] == 1
