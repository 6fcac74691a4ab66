"""TGVIG in the toy world: PatchCore one- and few-shot with and without generated normals (Table 3 analogue).

Rows, each adding one part to the one above (the paper's Table 3 ablates them one at a time):
``baseline`` (the k originals only), ``+ generated, naive prompt`` (σ = 1, "a photo of a {object}"),
``+ keyword-to-prompt`` (σ = 1, Eq. 1's prompt) and ``+ variance`` (Eq. 3's estimated variance: TGVIG).
Book: ``generated_normals.md``, "Toy world".
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from nandlib.tgvig.integrator import IntegratorSettings
from nandlib.tgvig.pipeline import generate_normals

ROWS: dict[str, tuple[str, str] | None] = {
    "baseline": None,
    "+ generated, naive prompt": ("naive", "unit"),
    "+ keyword-to-prompt": ("keywords", "unit"),
    "+ variance (TGVIG)": ("keywords", "estimated"),
}


def _rng(seed: int, *key: object) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32("/".join(map(str, ("tgvig", *key))).encode())])


def toy_split(
    class_name: str, seed: int, shots: int, n_good: int = 20, n_defect: int = 20, size: int = 64
) -> tuple[list[Image.Image], list[Image.Image], np.ndarray]:
    """``shots`` good training images and a test set (good, then defects spread over the class's types)."""
    from nandlib.data import ANOMALY_TYPES
    from nandlib.data.synthetic import render_sample

    def draw(kind: str, split: str, index: int) -> Image.Image:
        return render_sample(class_name, kind, _rng(seed, class_name, split, kind, index), size)[0].convert(
            "RGB"
        )

    types = ANOMALY_TYPES[class_name]
    train = [draw("good", "train", i) for i in range(shots)]
    test = [draw("good", "test", i) for i in range(n_good)]
    test += [draw(types[i % len(types)], "test", i) for i in range(n_defect)]
    return train, test, np.r_[np.zeros(n_good), np.ones(n_defect)]


def toy_patchcore(seed: int):
    """PatchCore on a random-initialised ResNet-18 at 64 px (the toy world has no ImageNet weights)."""
    from nandlib.detectors.patchcore import PatchCore

    return PatchCore("resnet18", None, resize=64, crop=64, pretrain_dim=256, target_dim=256, seed=seed)


def image_auroc(
    train: Sequence[Image.Image], test: Sequence[Image.Image], labels: np.ndarray, seed: int
) -> float:
    """Image AUROC (%) of :func:`toy_patchcore` fitted on ``train``."""
    scores = toy_patchcore(seed).fit(list(train)).predict(list(test)).scores.numpy()
    return 100 * roc_auc_score(labels, scores)


def toy_ablation(
    classes: Sequence[str],
    clip,
    vqmodel,
    shots: Sequence[int] = (1, 5),
    seeds: Sequence[int] = (0, 1, 2),
    settings: IntegratorSettings | None = None,
) -> pd.DataFrame:
    """One row per class × shots × seed × ablation row: image AUROC, images generated, seconds, prompt."""
    settings = settings or IntegratorSettings()
    records = []
    jobs = [(c, k, s) for c in classes for k in shots for s in seeds]
    for class_name, k, seed in tqdm(jobs, desc="TGVIG toy ablation"):
        train, test, labels = toy_split(class_name, seed, k)
        for row, parts in ROWS.items():
            start, prompt, generated = time.perf_counter(), "", []
            if parts is not None:
                row_settings = settings.model_copy(update={"variance": parts[1]})
                made = generate_normals(train, class_name, clip, vqmodel, row_settings, parts[0], seed, False)
                prompt, generated = made.prompt, made.images
            seconds = time.perf_counter() - start
            records.append({
                "class": class_name, "shots": k, "seed": seed, "row": row, "generated": len(generated),
                "prompt": prompt, "image_auroc": image_auroc([*train, *generated], test, labels, seed),
                "generation_s": round(seconds, 2),
            })  # fmt: skip
    return pd.DataFrame.from_records(records)


PAPER_SOURCE = (
    "Lee & Choi, arXiv 2403.06247, Table 3: PatchCore one-shot on MVTec AD, mean (± sd) AUROC in percent, "
    "as printed"
)


def paper_table3() -> pd.DataFrame:
    """TGVIG's own Table 3 (:data:`PAPER_SOURCE`), shipped as package data."""
    from importlib import resources

    with resources.files(__package__).joinpath("tgvig_table3.csv").open("r", encoding="utf-8") as handle:
        return pd.read_csv(handle)
