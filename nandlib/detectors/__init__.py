"""Anomaly detectors sharing :class:`~nandlib.detectors.base.Detector`."""

from nandlib.detectors.base import Detector, MapGeometry, Prediction

__all__ = ["Detector", "MapGeometry", "Prediction"]
