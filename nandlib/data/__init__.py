"""MVTec AD data: classes and the paper's anomaly groups, a lazy reader, the downloader, synthetic data.

Book: ``protocol.md`` ("Anomaly groups", "Data") and ``reproducing.md`` ("Getting MVTec AD",
"Synthetic data").
"""

from nandlib.data.classes import (
    ANOMALY_TYPES,
    MVTEC_CLASSES,
    MVTEC_COUNTS,
    anomaly_groups,
    grouped_classes,
)
from nandlib.data.download import DEFAULT_URL, MVTEC_SHA256, DownloadError, download_mvtec
from nandlib.data.layout import is_complete
from nandlib.data.mvtec import LayoutCheck, MVTecClass, Sample, check_layout, read_class
from nandlib.data.synthetic import generate_dataset

__all__ = [
    "ANOMALY_TYPES",
    "DEFAULT_URL",
    "MVTEC_CLASSES",
    "MVTEC_COUNTS",
    "MVTEC_SHA256",
    "DownloadError",
    "LayoutCheck",
    "MVTecClass",
    "Sample",
    "anomaly_groups",
    "check_layout",
    "download_mvtec",
    "generate_dataset",
    "grouped_classes",
    "is_complete",
    "read_class",
]
