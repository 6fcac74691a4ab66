"""The prompt-edit loop: type a description of a defect, see its suppression map and the AUROC change.

:class:`Playground` encodes a class's test images once (detector maps and ND features); every new
phrase list then costs one text encoding and the cheap suppression maps, so the loop stays
interactive. Give the detectors a :class:`nandlib.cache.FeatureCache` (``AprilGAN(..., cache=...)``) and
rebuilding the playground, e.g. in a fresh kernel, reads the image features from disk.
Book: ``try_your_normality.ipynb``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

from nandlib.cache import FeatureCache
from nandlib.companion import BOOK_PROFILE_ENV, resolve_weights
from nandlib.data import anomaly_groups, generate_dataset, read_class
from nandlib.data.mvtec import MVTecClass
from nandlib.detectors.aprilgan import AprilGAN
from nandlib.detectors.base import Detector
from nandlib.geometry import crop_image, to_eval_grid
from nandlib.nand import NDFeatures, NormalityDetector, final_map, predict_with_features
from nandlib.profiles import load_profile
from nandlib.protocol import image_auroc, relabel


class Playground:
    """A class's test set with everything but the text precomputed.

    Args:
        data: The class (its test split is used).
        aprilgan: APRIL-GAN providing the ND module (and, by default, the detector).
        detector: The detector to wrap; default ``aprilgan`` (encoded once for both). Fit it first.
        batch_size: Images per forward pass while encoding.
    """

    def __init__(
        self, data: MVTecClass, aprilgan: AprilGAN, detector: Detector | None = None, batch_size: int = 8
    ) -> None:
        self.data = data
        self.nd = NormalityDetector(aprilgan)
        self.detector = detector or aprilgan
        self.anomaly_types = [s.anomaly_type for s in data.test]
        base_maps, parts = [], []
        for start in range(0, len(data.test), batch_size):
            images = [s.image() for s in data.test[start : start + batch_size]]
            base, features = predict_with_features(self.detector, self.nd, images)
            base_maps.append(to_eval_grid(base.maps, self.nd.eval_size))
            parts.append(features)
        self.base_maps = torch.cat(base_maps)
        self.features = NDFeatures.concat(parts)

    def try_normality(self, phrases: str | Sequence[str], group: str) -> pd.DataFrame:
        """AUROC before and after adding ``phrases`` as normality, with ``group``'s images relabelled normal.

        Args:
            phrases: Your description(s) of the defect that is now acceptable.
            group: The Table 1 group those images belong to (decides the relabelling).

        Returns:
            One row: ``group, phrases, auroc_before, auroc_after, delta`` (AUROC in percent).
        """
        groups = anomaly_groups(self.data.name)
        if group not in groups:
            raise ValueError(
                f"group: {group!r} is not a group of {self.data.name!r}; choose from {list(groups)}"
            )
        self.last_suppression = self.suppression(phrases)
        after = final_map(self.base_maps, [self.last_suppression]).amax(dim=(1, 2)).numpy()
        before = self.base_maps.amax(dim=(1, 2)).numpy()
        labels, keep = relabel(self.anomaly_types, groups[group])
        name = f"{self.data.name}/{group}"
        auroc_before = 100 * image_auroc(labels[keep], before[keep], name)
        auroc_after = 100 * image_auroc(labels[keep], after[keep], name)
        text = phrases if isinstance(phrases, str) else " | ".join(phrases)
        return pd.DataFrame(
            [
                {
                    "group": group,
                    "phrases": text,
                    "auroc_before": round(auroc_before, 1),
                    "auroc_after": round(auroc_after, 1),
                    "delta": round(auroc_after - auroc_before, 1),
                }
            ]
        )

    def suppression(self, phrases: str | Sequence[str]) -> torch.Tensor:
        """``A_sup`` ``[N, 256, 256]`` of every test image for ``phrases`` (Eq. 3, then Eq. 4 with f_add)."""
        normality = self.nd.normality(phrases)
        return self.nd.suppression_map(self.features, normality.f_add, self.detector.geometry)

    def show(self, group: str, n_images: int = 3) -> plt.Figure:
        """Image, ``A_sup``, map before and after for the first ``n_images`` of ``group`` (after
        :meth:`try_normality`)."""
        types = set(anomaly_groups(self.data.name)[group])
        index = [i for i, t in enumerate(self.anomaly_types) if t in types][:n_images]
        fig, axes = plt.subplots(len(index), 4, figsize=(9, 2.3 * len(index)), squeeze=False)
        for row, i in enumerate(index):
            before = self.base_maps[i].numpy()
            after = (self.base_maps[i] * (1 - self.last_suppression[i])).numpy()
            picture = self.data.test[i].image()
            image = crop_image(picture, self.detector.geometry.region(*picture.size), before.shape[0])
            panels = [
                (image, {}),
                (self.last_suppression[i].numpy(), {"cmap": "magma", "vmin": 0, "vmax": 1}),
                (before, {"cmap": "jet", "vmin": before.min(), "vmax": before.max()}),
                (after, {"cmap": "jet", "vmin": before.min(), "vmax": before.max()}),
            ]
            for ax, (panel, kwargs) in zip(axes[row], panels, strict=True):
                ax.imshow(panel, **kwargs)
                ax.set_xticks([])
                ax.set_yticks([])
            axes[row][0].set_ylabel(self.anomaly_types[i], fontsize=9)
        for ax, title in zip(axes[0], ["image", "A_sup", "A (before)", "A ⊙ (1 − A_sup)"], strict=True):
            ax.set_title(title, fontsize=9)
        fig.tight_layout()
        return fig


def book_profile() -> str:
    """The profile whose models the book's pages use: ``$NAND_BOOK_PROFILE`` while ``make book`` builds them,
    else ``toy`` (the default book, e.g. in Colab)."""
    return os.environ.get(BOOK_PROFILE_ENV) or "toy"


def profile_playground(
    class_name: str,
    profile: str | None = None,
    data_root: str | Path | None = None,
    device: str = "cpu",
    cache: FeatureCache | None = None,
) -> Playground:
    """A playground with a profile's ND CLIP, adapters and data: the models its sweep units ran with.

    The APRIL-GAN is built from the same run parameters as the sweep's units
    (:func:`nandlib.sweep.unit_parameters`), so the playground's AUROCs for a group's shipped phrases are the
    tables' numbers. A ``trained_here`` profile's weights are trained on first use (the toy world: about
    6 min on two CPU cores), then cached.

    Args:
        class_name: MVTec AD class.
        profile: Profile name or YAML path; ``None``: :func:`book_profile`.
        data_root: A dataset in MVTec AD's layout; ``None``: the profile's own (a generated profile's
            images of ``class_name`` are generated into a temporary folder, the same as its sweep's).
        device: Torch device.
        cache: Feature cache for the APRIL-GAN (``None``: no cache).

    Raises:
        ValueError: Unknown profile, or one that needs a dataset root (``paper``) and got none.
    """
    from nandlib.run import UnitConfig, build_aprilgan
    from nandlib.sweep import Unit, unit_parameters

    chosen = resolve_weights(load_profile(profile or book_profile(), data_root=data_root))
    if "root" in chosen.data:
        data_root = chosen.data["root"]
    else:
        spec = chosen.data["synthetic"]
        data_root = generate_dataset(
            Path(tempfile.mkdtemp()) / chosen.name, [class_name], spec["seed"], spec["scale"], spec["size"]
        )
    scratch = Path(tempfile.gettempdir())
    parameters = unit_parameters(chosen, Unit(class_name, "aprilgan"), Path(data_root), scratch)
    config = UnitConfig(**{**parameters, "device": device})
    return Playground(read_class(data_root, class_name), build_aprilgan(config, cache=cache))
