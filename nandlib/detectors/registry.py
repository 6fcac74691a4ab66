"""The one registry of detectors: ``kind`` → class, and what a detector is built from.

Built-in kinds are listed in :data:`BUILT_IN` (one line each, imported on first use). Other packages add
theirs through the entry-point group ``nandlib.detectors`` (``kind = "module:Class"`` in their
``pyproject.toml``), or in-process with :func:`register`. A detector class follows
:class:`nandlib.detectors.base.Detector`: its ``Settings`` type its configuration and ``from_settings``
builds it from those settings and a :class:`BuildContext`. Book: ``method.md``, "Detectors".
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nandlib.backbones import ClipBackbone
    from nandlib.cache import FeatureCache
    from nandlib.config import ClipSpec
    from nandlib.detectors.aprilgan import AprilGAN
    from nandlib.detectors.base import Detector

ENTRY_POINT_GROUP = "nandlib.detectors"
BUILT_IN = {
    "aprilgan": "nandlib.detectors.aprilgan:AprilGAN",
    "winclip": "nandlib.detectors.winclip:WinCLIP",
    "patchcore": "nandlib.detectors.patchcore:PatchCore",
}
_registered: dict[str, type[Detector]] = {}


def register(kind: str, detector: type[Detector]) -> type[Detector]:
    """Make ``detector`` available as ``kind`` in this process (entry points reach other processes).

    Raises:
        ValueError: ``kind`` is a built-in kind.
    """
    if kind in BUILT_IN:
        raise ValueError(f"kind: {kind!r} is a built-in detector")
    _registered[kind] = detector
    return detector


def _import(target: str) -> type[Detector]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _plugins() -> dict[str, str]:
    return {point.name: point.value for point in entry_points(group=ENTRY_POINT_GROUP)}


def known_kinds() -> list[str]:
    """Every kind that :func:`detector_class` can resolve."""
    return sorted({*BUILT_IN, *_registered, *_plugins()})


def detector_class(kind: str) -> type[Detector]:
    """The detector class registered as ``kind``.

    Raises:
        ValueError: Unknown kind, naming the known ones.
    """
    if kind in _registered:
        return _registered[kind]
    target = BUILT_IN.get(kind) or _plugins().get(kind)
    if target is None:
        raise ValueError(f"unknown detector kind {kind!r}; known kinds: {', '.join(known_kinds())}")
    return _import(target)


@dataclass
class BuildContext:
    """What every detector of a unit is built with, besides its own settings.

    Attributes:
        class_name: The class the unit runs.
        seed: Seed of random initialisation and of reference choice.
        device: Torch device.
        precision: ``fp32``, ``fp16`` or ``bf16`` (CLIP autocast on CUDA).
        batch_size: Images per forward pass.
        cache: Feature cache (``None``: none).
        nd_aprilgan: The ND module's APRIL-GAN (a detector of kind ``aprilgan`` is this very model, so that
            each image is encoded once for both).
    """

    class_name: str
    seed: int
    device: str
    precision: str
    batch_size: int
    cache: FeatureCache | None
    nd_aprilgan: AprilGAN

    def clip(self, spec: ClipSpec) -> ClipBackbone:
        """Load the CLIP backbone ``spec`` names on this context's device, seed and precision."""
        return clip_from_spec(spec, device=self.device, seed=self.seed, precision=self.precision)


def clip_from_spec(spec: ClipSpec, *, device: str, seed: int, precision: str) -> ClipBackbone:
    """:func:`nandlib.backbones.load_clip` of a config's :class:`~nandlib.config.ClipSpec`."""
    from nandlib.backbones import load_clip

    return load_clip(
        spec.model,
        pretrained=spec.pretrained,
        checkpoint=spec.checkpoint,
        image_size=spec.image_size,
        device=device,
        seed=seed,
        precision=precision,
    )
