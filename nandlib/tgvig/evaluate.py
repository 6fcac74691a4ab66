"""TGVIG in the toy world: PatchCore one-, few- and full-shot with and without generated normals.

The analogue of the paper's Table 3 ablation and Fig. 4 (one-, 5- and full-shot). Rows, each adding one part
to the one above: ``baseline`` (the k originals only); ``+ generated, naive prompt, σ = 1`` (generated images
from latents drawn with unit variance, scored against "a photo of a {object}"); ``+ keyword-to-prompt,
σ = 1`` (Eq. 1's prompt); ``+ variance (TGVIG)`` (Eq. 3's estimated variance: the full method). Image and
pixel AUROC (the toy world's defects come with masks). Book: ``generated_normals.md``, "In the toy world".
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from nandlib.protocol import image_auroc, pixel_auroc
from nandlib.tgvig.integrator import IntegratorSettings
from nandlib.tgvig.pipeline import GeneratedNormals, generate_normals

# row → (prompt, variance) of the generated images; None: no generated images
ROWS: dict[str, tuple[str, str] | None] = {
    "baseline": None,
    "+ generated, naive prompt, σ = 1": ("naive", "unit"),
    "+ keyword-to-prompt, σ = 1": ("keywords", "unit"),
    "+ variance (TGVIG)": ("keywords", "estimated"),
}
TGVIG_ROW = "+ variance (TGVIG)"
# "Full-shot" in the toy world: this many good training images (MVTec AD's classes have 60-400; ten keep
# the toy experiment within 15 min on a shared 2-core CPU).
FULL_SHOT = 10


def _rng(seed: int, *key: object) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32("/".join(map(str, ("tgvig", *key))).encode())])


@dataclass
class ToySplit:
    """One class's training and test images.

    Attributes:
        train: ``shots`` good images.
        test: Good images, then defective ones spread over the class's anomaly types.
        labels: 0 (good) / 1 (defective) per test image.
        masks: Defect masks ``[N, H, W]`` of the test images (all ``False`` for good ones).
    """

    train: list[Image.Image]
    test: list[Image.Image]
    labels: np.ndarray
    masks: np.ndarray


def toy_split(
    class_name: str, seed: int, shots: int, n_good: int = 20, n_defect: int = 20, size: int = 64
) -> ToySplit:
    """``shots`` good training images and a test set of ``n_good`` good and ``n_defect`` defective ones."""
    from nandlib.data import ANOMALY_TYPES
    from nandlib.data.synthetic import render_sample

    def draw(kind: str, split: str, index: int) -> tuple[Image.Image, np.ndarray]:
        image, mask = render_sample(class_name, kind, _rng(seed, class_name, split, kind, index), size)
        return image.convert("RGB"), mask

    types = ANOMALY_TYPES[class_name]
    train = [draw("good", "train", i)[0] for i in range(shots)]
    test = [draw("good", "test", i) for i in range(n_good)]
    test += [draw(types[i % len(types)], "test", i) for i in range(n_defect)]
    labels = np.r_[np.zeros(n_good), np.ones(n_defect)].astype(int)
    return ToySplit(train, [image for image, _ in test], labels, np.stack([mask for _, mask in test]))


def toy_patchcore(seed: int):
    """PatchCore on a random-initialised ResNet-18 at 64 px (the toy world has no ImageNet weights)."""
    from nandlib.detectors.patchcore import PatchCore

    return PatchCore("resnet18", None, resize=64, crop=64, pretrain_dim=256, target_dim=256, seed=seed)


def aurocs(train: Sequence[Image.Image], split: ToySplit, seed: int) -> tuple[float, float]:
    """Image and pixel AUROC (%) of :func:`toy_patchcore` fitted on ``train``, tested on ``split``.

    The maps cover the whole 64 px image (resize = crop = 64), the masks' geometry.
    """
    prediction = toy_patchcore(seed).fit(list(train)).predict(split.test)
    image = image_auroc(split.labels, prediction.scores.numpy())
    pixel = pixel_auroc(split.masks, prediction.maps.numpy())
    return 100 * image, 100 * pixel


def _generate(
    split: ToySplit, class_name: str, clip, vqmodel, settings: IntegratorSettings, parts, seed: int
) -> tuple[GeneratedNormals, float]:
    start = time.perf_counter()
    settings = settings.model_copy(update={"variance": parts[1]})
    made = generate_normals(split.train, class_name, clip, vqmodel, settings, parts[0], seed, False)
    return made, time.perf_counter() - start


def toy_ablation(
    classes: Sequence[str],
    clip,
    vqmodel,
    shots: Sequence[int] = (1, 5, FULL_SHOT),
    seeds: Sequence[int] = (0, 1, 2),
    settings: IntegratorSettings | None = None,
) -> tuple[pd.DataFrame, dict[tuple[str, str], GeneratedNormals]]:
    """Every :data:`ROWS` row for each class × shots × seed.

    Returns:
        ``(frame, examples)``: one frame row per class × shots × seed × ablation row (image and pixel AUROC
        in %, images generated, prompt, the round Eq. 5 kept and its ``cos(z_v, z_t)``, generation seconds);
        and what each generating row made for the fewest shots and the first seed, by ``(class, row)`` (for
        the figure).
    """
    settings = settings or IntegratorSettings()
    records, examples = [], {}
    jobs = [(c, k, s) for c in classes for k in shots for s in seeds]
    for class_name, k, seed in tqdm(jobs, desc="TGVIG toy ablation"):
        split = toy_split(class_name, seed, k)
        for row, parts in ROWS.items():
            made, seconds = (None, 0.0) if parts is None else _generate(
                split, class_name, clip, vqmodel, settings, parts, seed
            )  # fmt: skip
            if made is not None and k == min(shots) and seed == seeds[0]:
                examples[class_name, row] = made
            generated = made.images if made else []
            image, pixel = aurocs([*split.train, *generated], split, seed)
            kept = made.integration.best_round if made else None
            records.append({
                "class": class_name, "shots": k, "seed": seed, "row": row, "generated": len(generated),
                "prompt": made.prompt if made else "", "kept_round": kept,
                "set_score": made.integration.scores[kept] if made else None,
                "image_auroc": image, "pixel_auroc": pixel, "generation_s": round(seconds, 2),
            })  # fmt: skip
    return pd.DataFrame.from_records(records), examples


def saturation(
    classes: Sequence[str],
    clip,
    vqmodel,
    counts: Sequence[int] = (0, 5, 10, 20, 40),
    seeds: Sequence[int] = (0, 1, 2),
    settings: IntegratorSettings | None = None,
    shots: int = 1,
) -> pd.DataFrame:
    """Full TGVIG with ``M`` = each of ``counts`` generated images (0: the originals only), ``shots`` shots.

    Returns:
        One row per class × seed × count: image and pixel AUROC (%), generation seconds.
    """
    settings = settings or IntegratorSettings()
    records = []
    for class_name, seed in tqdm([(c, s) for c in classes for s in seeds], desc="TGVIG saturation"):
        split = toy_split(class_name, seed, shots)
        for count in counts:
            generated, seconds = [], 0.0
            if count:
                made, seconds = _generate(
                    split, class_name, clip, vqmodel, settings.model_copy(update={"images_per_round": count}),
                    ROWS[TGVIG_ROW], seed,
                )  # fmt: skip
                generated = made.images
            image, pixel = aurocs([*split.train, *generated], split, seed)
            records.append({
                "class": class_name, "shots": shots, "seed": seed, "generated": count,
                "image_auroc": image, "pixel_auroc": pixel, "generation_s": round(seconds, 2),
            })  # fmt: skip
    return pd.DataFrame.from_records(records)


def summary(frame: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Mean ± sd (over classes and seeds) of image and pixel AUROC per ``by`` group, as the book shows it."""
    grouped = frame.groupby(list(by), sort=False)
    table = pd.DataFrame({
        f"{kind} AUROC (%)": grouped[f"{kind}_auroc"].mean().map("{:.1f}".format)
        + " ± " + grouped[f"{kind}_auroc"].std().map("{:.1f}".format)
        for kind in ("image", "pixel")
    })  # fmt: skip
    table["runs"] = grouped.size()
    return table


PAPER_SOURCE = (
    "Lee & Choi, arXiv 2403.06247, Table 3: PatchCore one-shot on MVTec AD, mean (± sd) AUROC in percent, "
    "as printed"
)


def paper_table3() -> pd.DataFrame:
    """TGVIG's own Table 3 (:data:`PAPER_SOURCE`), shipped as package data."""
    from importlib import resources

    with resources.files(__package__).joinpath("tgvig_table3.csv").open("r", encoding="utf-8") as handle:
        return pd.read_csv(handle)
