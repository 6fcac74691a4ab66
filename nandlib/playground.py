"""The prompt-edit loop: type a description of a defect, see its suppression map and the AUROC change.

:class:`Playground` encodes a class's test images once (:class:`nandlib.evaluation.ClassEvaluation`);
every new phrase list then costs one text encoding and the cheap suppression maps, so the loop stays
interactive. Give the ND module's APRIL-GAN a :class:`nandlib.cache.FeatureCache` and rebuilding the
playground, e.g. in a fresh kernel, reads the image features from disk. Book: ``try_your_normality.ipynb``.
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
from nandlib.companion import BOOK_PROFILE_ENV, prepare_class_data, resolve_weights
from nandlib.config import parse_unit_config
from nandlib.data import read_class
from nandlib.data.mvtec import MVTecClass
from nandlib.detectors.base import Detector
from nandlib.evaluation import ClassEvaluation
from nandlib.geometry import crop_image
from nandlib.nand import Normality, NormalityDetector
from nandlib.profiles import load_profile
from nandlib.run import build_nd


class Playground:
    """A class's test set with everything but the text precomputed.

    Args:
        data: The class (its test split is used).
        nd: The ND module (its APRIL-GAN is, by default, also the detector).
        detector: The detector to wrap; default ``nd.aprilgan`` (encoded once for both). Fit it first.
        batch_size: Images per forward pass while encoding.
    """

    def __init__(
        self, data: MVTecClass, nd: NormalityDetector, detector: Detector | None = None, batch_size: int = 8
    ) -> None:
        self.data = data
        self.nd = nd
        self.detector = detector or nd.aprilgan
        self.evaluation = ClassEvaluation(self.detector, nd, data, batch_size=batch_size)
        self.anomaly_types = self.evaluation.anomaly_types

    @property
    def base_maps(self) -> torch.Tensor:
        """``[N, 256, 256]`` the detector's maps before NAND."""
        return self.evaluation.encoded.base_maps

    def try_normality(self, phrases: str | Sequence[str], group: str) -> pd.DataFrame:
        """AUROC before and after adding ``phrases`` as normality, with ``group``'s images relabelled normal.

        Args:
            phrases: Your description(s) of the defect that is now acceptable.
            group: The Table 1 group those images belong to (decides the relabelling).

        Returns:
            One row: ``group, phrases, auroc_before, auroc_after, delta`` (AUROC in percent).
        """
        frame, self.last_suppression = self._try(self.nd.normality(phrases=phrases), group)
        return frame

    def try_group(self, group: str) -> pd.DataFrame:
        """As :meth:`try_normality` with the phrases shipped for ``group`` (the sweep's numbers)."""
        self._check_group(group)
        return self._try(self.nd.normality(group=group), group)[0]

    def try_every_group(self) -> pd.DataFrame:
        """:meth:`try_group` for every group of the class, one row each."""
        return pd.concat([self.try_group(group) for group in self.evaluation.groups], ignore_index=True)

    def _check_group(self, group: str) -> None:
        if group not in self.evaluation.groups:
            raise ValueError(
                f"group: {group!r} is not a group of {self.data.name!r}; "
                f"choose from {list(self.evaluation.groups)}"
            )

    def _try(self, normality: Normality, group: str) -> tuple[pd.DataFrame, torch.Tensor]:
        self._check_group(group)
        results = self.evaluation.results({group: normality}, pixels=False)
        row = results.frame.iloc[0]
        before, after = round(100 * row["auroc_before"], 1), round(100 * row["auroc_after"], 1)
        text = " | ".join(normality.phrases)
        return pd.DataFrame(
            [
                {
                    "group": group,
                    "phrases": text,
                    "auroc_before": before,
                    "auroc_after": after,
                    "delta": round(100 * row["auroc_after"] - 100 * row["auroc_before"], 1),
                }
            ]
        ), results.suppressions[group]

    def suppression(self, phrases: str | Sequence[str]) -> torch.Tensor:
        """``A_sup`` ``[N, 256, 256]`` of every test image for ``phrases`` (Eq. 3, then Eq. 4 with f_add)."""
        return self.evaluation.encoded.suppression(self.nd.normality(phrases=phrases))

    def show(self, group: str, n_images: int = 3) -> plt.Figure:
        """Image, ``A_sup``, map before and after for the first ``n_images`` of ``group`` (after
        :meth:`try_normality`)."""
        types = set(self.evaluation.groups[group])
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


def plot_comparison(yours: pd.DataFrame, shipped: pd.DataFrame) -> plt.Figure:
    """Δ AUROC of your phrases beside each group's shipped phrases (:meth:`Playground.try_normality`,
    :meth:`Playground.try_every_group`): one bar per row, yours highlighted, before → after as labels."""
    rows = pd.concat([yours.assign(who="yours"), shipped.assign(who="shipped")], ignore_index=True)
    labels = [f"{r.group} ({r.who})" for r in rows.itertuples()]
    colours = ["tab:orange" if who == "yours" else "tab:blue" for who in rows["who"]]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    ax.barh(labels, rows["delta"], color=colours)
    for y, r in enumerate(rows.itertuples()):
        ax.annotate(
            f"{r.auroc_before:.1f} → {r.auroc_after:.1f}",
            (r.delta, y),
            xytext=(4 if r.delta >= 0 else -4, 0),
            textcoords="offset points",
            ha="left" if r.delta >= 0 else "right",
            va="center",
            fontsize=8,
        )
    ax.axvline(0, color="black", linewidth=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("Δ image AUROC, after − before NAND (points)")
    ax.margins(x=0.3)
    fig.tight_layout()
    return fig


def phrase_table(tried: pd.DataFrame):
    """Rows of :meth:`Playground.try_normality` or :meth:`Playground.try_every_group` for a page:
    one decimal, the phrases wrapped, short headers (a pandas ``Styler``)."""
    short = tried.rename(columns={"auroc_before": "before", "auroc_after": "after", "delta": "Δ"})
    return (
        short.style.hide(axis="index")
        .format(precision=1)
        .set_properties(subset=["phrases"], **{"white-space": "normal", "text-align": "left"})
        .set_table_styles([{"selector": "td, th", "props": "padding: 0.25em 0.75em;"}])
    )


def book_profile() -> str:
    """The profile whose models the book's pages use: ``$NAND_BOOK_PROFILE`` while ``make book`` builds them,
    else ``toy`` (the default book, e.g. in Colab)."""
    return os.environ.get(BOOK_PROFILE_ENV) or "toy"


def profile_playground(
    class_name: str,
    profile: str | None = None,
    data_root: str | Path | None = None,
    device: str | None = None,
    cache: FeatureCache | None = None,
) -> Playground:
    """A playground with a profile's ND CLIP, adapters and data: the models its sweep units ran with.

    The ND module is built from the profile's unit config (:meth:`nandlib.config.Profile.unit`), as in the
    sweep, so the playground's AUROCs for a group's shipped phrases are the tables' numbers. Weights the
    profile names by reference (``toy:clip``) are the shipped toy world's (seed 0) or trained on first use
    into the user data folder (other seeds; :func:`nandlib.toy.train.toy_weights`).

    Args:
        class_name: MVTec AD class.
        profile: Profile name or YAML path; ``None``: :func:`book_profile`.
        data_root: A dataset in MVTec AD's layout; ``None``: the profile's own (a generated profile's
            images, the same as its sweep's, kept in the user data folder:
            :func:`nandlib.companion.prepare_class_data`).
        device: Torch device; ``None``: the profile's (``cpu`` for ``toy``, ``cuda`` for ``paper``).
        cache: Feature cache (``None``: none).

    Raises:
        ConfigError: Unknown profile, or one that needs a dataset root (``paper``) and got none.
    """
    chosen = resolve_weights(load_profile(profile or book_profile(), data_root=data_root))
    if chosen.data.root:
        root = Path(chosen.data.root)
    else:
        root = prepare_class_data(chosen, class_name)
    unit = chosen.unit(class_name, next(iter(chosen.detectors)), root, tempfile.gettempdir())
    config = parse_unit_config({**unit.model_dump(), "device": device or unit.device})
    return Playground(
        read_class(root, class_name), build_nd(config, cache=cache), batch_size=config.batch_size
    )
