"""Reading a sweep's outputs back: results frames, provenance boxes and the Fig. 5 figure.

Every table and figure of the book is drawn under :func:`provenance_box`, which states the weights,
dataset, profile, commit, date and machine the numbers come from. Book: ``results.md``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from nandlib.config import UnitConfig
from nandlib.diagnostics import DIAGNOSTIC_COLUMNS
from nandlib.outputs import OutputLayout
from nandlib.paths import portable
from nandlib.protocol import RESULT_COLUMNS

if TYPE_CHECKING:
    from IPython.display import Markdown


def load_results(output_dir: str | Path) -> pd.DataFrame:
    """Concatenate every finished unit's results frame under ``output_dir/results``.

    Raises:
        FileNotFoundError: No finished unit there.
    """
    files = OutputLayout(Path(output_dir)).result_files()
    if not files:
        raise FileNotFoundError(f"no results under {Path(output_dir) / 'results'}: run `nand sweep` first")
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)[list(RESULT_COLUMNS)]


def load_diagnostics(output_dir: str | Path) -> pd.DataFrame:
    """Every unit's diagnostics (:mod:`nandlib.diagnostics`) under ``output_dir/diagnostics``.

    Units run before diagnostics existed have none: the frame is then empty (with its columns).
    """
    files = OutputLayout(Path(output_dir)).diagnostics_files()
    frames = [pd.read_csv(f) for f in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(DIAGNOSTIC_COLUMNS))


def load_provenance(output_dir: str | Path) -> list[dict[str, Any]]:
    """The provenance record of every finished unit."""
    return [json.loads(f.read_text()) for f in OutputLayout(Path(output_dir)).provenance_files()]


def _summarise(records: Sequence[dict[str, Any]]) -> dict[str, str]:
    def distinct(values) -> str:
        return "; ".join(sorted({str(v) for v in values}))

    weights = {key for r in records for key in r["weights"]}
    return {
        "profile": distinct(f"{r['profile']} — {r['description']}" for r in records),
        "dataset": distinct(r["dataset"] for r in records),
        **{
            f"weights ({k})": distinct(r["weights"][k] for r in records if k in r["weights"])
            for k in sorted(weights)
        },
        "code": distinct(f"nandlib {r['nandlib']}, commit {r['commit']}" for r in records),
        "date": " – ".join(sorted({min(r["date"] for r in records), max(r["date"] for r in records)})),
        "machine": distinct(r["machine"] for r in records),
    }


def _escaped(text: str) -> str:
    """``text`` as literal Markdown: ``<user data>`` is not an HTML tag."""
    return text.replace("<", "\\<")


def provenance_box(source: UnitConfig | str | Path | Sequence[dict[str, Any]]) -> Markdown:
    """A MyST admonition stating where the numbers below come from.

    Paths inside the user data folder are written ``<user data>/…`` (:func:`nandlib.paths.portable`).

    Args:
        source: A unit's config (reads its provenance file), a sweep's output folder (all units), or
            provenance records.
    """
    from IPython.display import Markdown

    if isinstance(source, UnitConfig):
        records = [json.loads(source.outputs.provenance(source.label, source.class_name).read_text())]
    elif isinstance(source, str | Path):
        records = load_provenance(source)
    else:
        records = list(source)
    if not records:
        raise ValueError("provenance_box: no provenance records")
    summary = _summarise(records).items()
    lines = "\n".join(f"- **{key}**: {_escaped(portable(value))}" for key, value in summary)
    return Markdown(f"```{{admonition}} Provenance\n:class: note\n{lines}\n```")


def unit_examples(output_dir: str | Path, detector: str, class_name: str) -> dict[str, np.ndarray]:
    """The Fig. 5 examples a unit saved: ``groups, types, images, masks, before, after``."""
    with np.load(OutputLayout(Path(output_dir)).examples(detector, class_name)) as data:
        return {key: data[key] for key in data.files}


def plot_examples(examples: dict[str, np.ndarray], title: str = "", axes_width: float = 2.2) -> plt.Figure:
    """Fig. 5 layout: one row per example — image, ground truth, map before, map after NAND.

    Before and after share one colour scale per row, so a suppressed region visibly darkens.
    """
    rows = len(examples["groups"])
    fig, axes = plt.subplots(
        max(rows, 1), 4, figsize=(4 * axes_width, max(rows, 1) * axes_width), squeeze=False
    )
    for ax, name in zip(
        axes[0], ["image", "ground truth", "A (before)", "A ⊙ (1 − A_sup) (after)"], strict=True
    ):
        ax.set_title(name, fontsize=9)
    for row in range(rows):
        low = float(min(examples["before"][row].min(), examples["after"][row].min()))
        high = float(max(examples["before"][row].max(), examples["after"][row].max()))
        panels = [
            examples["images"][row],
            examples["masks"][row],
            examples["before"][row],
            examples["after"][row],
        ]
        for col, (ax, panel) in enumerate(zip(axes[row], panels, strict=True)):
            kwargs = {"cmap": "jet", "vmin": low, "vmax": high} if col >= 2 else {"cmap": "gray"}
            ax.imshow(panel.astype(np.float32) if col >= 2 else panel, **kwargs)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row][0].set_ylabel(f"{examples['groups'][row]}\n({examples['types'][row]})", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def unit_figure(config: UnitConfig) -> plt.Figure:
    """Fig. 5 panels of one unit (first test image of each group, that group added as normality)."""
    examples = unit_examples(config.output_dir, config.label, config.class_name)
    return plot_examples(examples, title=f"{config.label} on {config.class_name}")


def delta_heatmap(results: pd.DataFrame, value: str = "auroc") -> plt.Figure:
    """Heatmap of the mean AUROC change (points) per class and detector."""
    import seaborn as sns

    delta = results.assign(delta=100 * (results[f"{value}_after"] - results[f"{value}_before"]))
    table = delta.pivot_table(index="class", columns="detector", values="delta", aggfunc="mean")
    fig, ax = plt.subplots(figsize=(1.4 * table.shape[1] + 2.5, 0.4 * table.shape[0] + 1.5))
    limit = float(np.nanmax(np.abs(table.to_numpy()))) if table.size else 1.0
    sns.heatmap(
        table,
        annot=True,
        fmt="+.1f",
        cmap="RdBu",
        center=0,
        vmin=-limit,
        vmax=limit,
        ax=ax,
        cbar_kws={"label": f"mean Δ {value.replace('auroc', 'AUROC')} (points)"},
    )
    ax.set_xlabel("")
    ax.set_ylabel("")
    fig.tight_layout()
    return fig
