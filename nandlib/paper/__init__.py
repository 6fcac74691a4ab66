"""The NAND paper's tables, shipped as package data (book: ``results.md``, "The paper's numbers").

Facts transcribed from Yi, Jung, Yoon (AIPR 2024); AUROCs are in percent as printed:

- ``table1_groups.csv``: Table 1, ``class, group, anomaly_type`` (14 classes, 56 groups, paper's order).
- ``table2_aprilgan_nand.csv``: Table 2, APRIL-GAN before/after NAND per class (``AVERAGE``) and group.
- ``table3_methods.csv``: Table 3, mean AUROC before/after NAND per wrapped detector.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

PAPER_TABLES = ("table1_groups", "table2_aprilgan_nand", "table3_methods")


def read_paper_table(name: str) -> pd.DataFrame:
    """Read one of the paper's tables shipped with nandlib.

    Args:
        name: One of :data:`PAPER_TABLES`.

    Returns:
        The table as printed in the paper (AUROCs in percent).
    """
    if name not in PAPER_TABLES:
        raise ValueError(f"unknown paper table {name!r}; expected one of {PAPER_TABLES}")
    with resources.files(__package__).joinpath(f"{name}.csv").open("r", encoding="utf-8") as handle:
        return pd.read_csv(handle)
