"""A run is data: the typed configuration of one unit and of a profile of units, parsed once from YAML.

:class:`UnitConfig` is everything one unit (a class run with one detector, every Table 1 group added in
turn) needs; it is the only input of :func:`nandlib.run.run_unit`, of ``nand run`` and of the run notebook
(one papermill parameter, ``config``). A :class:`Profile` (``nandlib/profiles/*.yaml``) names a dataset, the
classes, the ND module and the detectors of a sweep, and makes each unit's config with :meth:`Profile.unit`.
Detector settings are typed by the detector itself (its ``Settings``), found through
:mod:`nandlib.detectors.registry` by ``kind``. Every default is defined once, here or in a detector's
``Settings``. Misspelt keys and wrong types are refused before any work, naming the file and the key
(:class:`ConfigError`). Book: ``reproducing.md``, "Profiles and unit configs".
"""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from nandlib.data.classes import anomaly_groups, check_class
from nandlib.outputs import OutputLayout

_ENV_VAR = re.compile(r"^\$\{(\w+)\}$")
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")


def _known_device(device: str) -> str:
    if not _DEVICE.match(device):
        raise ValueError(f"expected cpu, cuda, cuda:N or mps, got {device!r}")
    return device


def _visible_device(device: str) -> str:
    """Refuse a GPU that torch cannot see on this machine."""
    if device == "cpu":
        return device
    import torch

    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError("'mps': torch sees no Apple GPU (torch.backends.mps.is_available() is False)")
    if device.startswith("cuda"):
        index, count = int(device.partition(":")[2] or 0), torch.cuda.device_count()
        if not torch.cuda.is_available():
            raise ValueError(
                f"{device!r}: torch sees no CUDA GPU (torch.cuda.is_available() is False); use cpu"
            )
        if index >= count:
            raise ValueError(f"{device!r}: torch sees {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    return device


Precision = Literal["fp32", "fp16", "bf16"]
Device = Annotated[str, AfterValidator(_known_device)]


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the file (or source) and the key."""


class Settings(BaseModel):
    """Base of every config section: unknown keys are refused, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ClipSpec(Settings):
    """A CLIP backbone (:func:`nandlib.backbones.load_clip`): open_clip name, input size, weight source.

    Attributes:
        model: open_clip model name or a registered config (``ViT-L-14-336``, ``nand-toy``).
        image_size: Square input side; ``None``: the config's.
        pretrained: open_clip pretrained tag (``openai``); downloads once.
        checkpoint: Local weights file instead of a tag (or a ``toy:`` reference, see
            :func:`nandlib.toy.train.resolve_toy_weights`). Neither: random init, seeded.
    """

    model: str
    image_size: PositiveInt | None = None
    pretrained: str | None = None
    checkpoint: str | None = None

    @model_validator(mode="after")
    def _one_weight_source(self) -> ClipSpec:
        if self.pretrained and self.checkpoint:
            raise ValueError("give either pretrained or checkpoint, not both")
        return self


class NDConfig(Settings):
    """The ND module: APRIL-GAN's CLIP and linear layers (paper: ViT-L-14-336 at 518, VisA-trained layers).

    Attributes:
        clip: The CLIP backbone, shared with the APRIL-GAN detector.
        adapters: APRIL-GAN linear-layer checkpoint (authors' format); ``None``: random layers (seeded).
        layer_combine: ``mean`` over layers (default, ``A_sup ∈ [0, 1]``) or ``sum`` (APRIL-GAN's Eq. 4),
            see :class:`nandlib.nand.NormalityDetector`.
    """

    clip: ClipSpec = ClipSpec(model="ViT-L-14-336", image_size=518)
    adapters: str | None = None
    layer_combine: Literal["mean", "sum"] = "mean"


class DetectorConfig(BaseModel):
    """Which detector a unit wraps: its registry ``kind``, its result name and its own typed settings.

    Any key besides ``kind`` and ``name`` is a setting of that detector, validated by the detector's
    ``Settings`` (e.g. WinCLIP's ``clip`` and ``shots``).

    Attributes:
        kind: Registry key (:func:`nandlib.detectors.registry.detector_class`).
        name: Name in results and tables; ``None``: the detector's default (``winclip-5``).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: str
    name: str | None = None
    _settings: BaseModel = PrivateAttr()

    @model_validator(mode="after")
    def _typed_settings(self) -> DetectorConfig:
        from nandlib.detectors.registry import detector_class

        settings_type = detector_class(self.kind).Settings
        try:
            self._settings = settings_type.model_validate(self.model_extra or {})
        except ValidationError as error:
            raise ValueError(f"settings of kind {self.kind!r}: {_describe(error)}") from None
        return self

    @property
    def settings(self) -> BaseModel:
        """The detector's validated settings."""
        return self._settings

    @property
    def detector_class(self) -> type:
        """The registered detector class of :attr:`kind`."""
        from nandlib.detectors.registry import detector_class

        return detector_class(self.kind)

    @property
    def label(self) -> str:
        """The detector's name in results: ``name``, or the detector's default for these settings."""
        return self.name or self.detector_class.default_name(self.settings)

    @model_serializer(mode="plain")
    def _flat(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.label, **self.settings.model_dump()}


class ProfileInfo(Settings):
    """What a unit's numbers are, printed in its provenance box."""

    name: str = "custom"
    description: str = ""


class UnitConfig(Settings):
    """Everything one unit needs (book: ``reproducing.md``).

    Attributes:
        class_name: MVTec AD class.
        data_root: Dataset root in MVTec AD's layout.
        output_dir: Output folder (:class:`nandlib.outputs.OutputLayout`).
        nd: The ND module (and APRIL-GAN's) CLIP and linear layers.
        detector: The detector NAND wraps.
        profile: Profile name and description (provenance).
        seed: Seed of random initialisation and of few-shot reference choice.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; refused where the unit runs when torch cannot
            see that device (:meth:`check_device`).
        precision: ``fp32``, or ``fp16``/``bf16`` autocast of the CLIP models (CUDA only).
        batch_size: Test images per forward pass.
        cache_dir: Feature cache folder (:func:`nandlib.cache.cache_from_setting`): ``None`` for the default,
            ``"off"`` to encode every image anew.
        phrases: Group → phrases overriding the shipped phrase table (students' edits); every key must be
            a Table 1 group of the class.
    """

    class_name: str
    data_root: str
    output_dir: str
    nd: NDConfig = NDConfig()
    detector: DetectorConfig = Field(default_factory=lambda: DetectorConfig(kind="aprilgan"))
    profile: ProfileInfo = ProfileInfo()
    seed: int = 0
    device: Device = "cpu"
    precision: Precision = "fp32"
    batch_size: PositiveInt = 8
    cache_dir: str | None = None
    phrases: dict[str, list[str]] | None = None

    @field_validator("class_name")
    @classmethod
    def _known_class(cls, class_name: str) -> str:
        return check_class(class_name)

    @model_validator(mode="after")
    def _phrases_name_groups(self) -> UnitConfig:
        groups = anomaly_groups(self.class_name)
        for group, phrases in (self.phrases or {}).items():
            if group not in groups:
                raise ValueError(
                    f"phrases: {group!r} is not a group of {self.class_name!r}; its groups are {list(groups)}"
                )
            if not phrases or not all(p.strip() for p in phrases):
                raise ValueError(f"phrases: group {group!r} needs one or more non-empty phrases")
        return self

    def check_device(self, source: str = "unit config") -> UnitConfig:
        """Refuse a device torch cannot see *here*: called where the unit runs (``nand run``, a sweep's
        worker), not when a config is made, since a sweep's head node may have no GPU of its own.

        Raises:
            ConfigError: Naming ``device`` and what torch sees.
        """
        try:
            _visible_device(self.device)
        except ValueError as error:
            raise ConfigError(f"{source}: device: {error}") from None
        return self

    @property
    def label(self) -> str:
        """The detector's name in results (``aprilgan``, ``winclip-5``, ``patchcore``)."""
        return self.detector.label

    @property
    def outputs(self) -> OutputLayout:
        """The unit's output folder layout."""
        return OutputLayout(Path(self.output_dir))

    def to_json(self) -> str:
        """The config as JSON, which :func:`load_unit_config` reads back (the run notebook's parameter)."""
        return json.dumps(self.model_dump(mode="json"))


class SyntheticData(Settings):
    """A dataset generated in MVTec AD's layout (:func:`nandlib.data.generate_dataset`)."""

    seed: int = 0
    scale: Literal["small", "paper"] = "small"
    size: PositiveInt = 128


class DataSpec(Settings):
    """A profile's dataset: a folder on disk (``root``) or one generated once (``synthetic``)."""

    root: str | None = None
    synthetic: SyntheticData | None = None


class Profile(Settings):
    """A sweep's units as data (``nandlib/profiles/*.yaml``): dataset, classes, ND module and detectors.

    Attributes:
        name: Profile name.
        description: What its numbers are (whitespace folded), printed in every provenance box.
        data: Its dataset.
        classes: MVTec AD classes to run.
        seed, device, precision, batch_size: As in :class:`UnitConfig`.
        nd: The ND module.
        detectors: Detector name → its config (``kind`` and settings); the name is the results' name.
    """

    name: str
    description: str = ""
    data: DataSpec = DataSpec()
    classes: list[str]
    seed: int = 0
    device: Device = "cpu"
    precision: Precision = "fp32"
    batch_size: PositiveInt = 8
    nd: NDConfig = NDConfig()
    detectors: dict[str, DetectorConfig]

    @field_validator("description")
    @classmethod
    def _fold(cls, description: str) -> str:
        return " ".join(description.split())

    @field_validator("classes")
    @classmethod
    def _known_classes(cls, classes: list[str]) -> list[str]:
        return [check_class(name) for name in classes]

    @field_validator("detectors", mode="before")
    @classmethod
    def _named_by_key(cls, detectors: Any) -> Any:
        if not isinstance(detectors, dict):
            return detectors
        return {
            key: {"name": key, **value} if isinstance(value, dict) else value
            for key, value in detectors.items()
        }

    def unit(
        self,
        class_name: str,
        detector: str,
        data_root: str | Path,
        output_dir: str | Path,
        *,
        cache_dir: str | None = None,
        phrases: dict[str, list[str]] | None = None,
    ) -> UnitConfig:
        """The config of one unit of this profile (absolute paths).

        Raises:
            ConfigError: ``detector`` is not one of the profile's, or the unit's config is invalid.
        """
        if detector not in self.detectors:
            raise ConfigError(
                f"detectors: {detector!r} is not in profile {self.name!r}: {list(self.detectors)}"
            )
        return parse_unit_config(
            {
                "class_name": class_name,
                "data_root": str(Path(data_root).resolve()),
                "output_dir": str(Path(output_dir).resolve()),
                "nd": self.nd.model_dump(),
                "detector": self.detectors[detector].model_dump(),
                "profile": {"name": self.name, "description": self.description},
                "seed": self.seed,
                "device": self.device,
                "precision": self.precision,
                "batch_size": self.batch_size,
                "cache_dir": cache_dir,
                "phrases": phrases,
            },
            source=f"profile {self.name!r}",
        )


def _describe(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or '(top level)'}: "
        f"{item['msg'].removeprefix('Value error, ')}"
        for item in error.errors()
    )


def expand_environment(value: Any) -> Any:
    """Replace ``${VAR}`` string values by the environment's (unset or empty → ``None``)."""
    if isinstance(value, dict):
        return {key: expand_environment(item) for key, item in value.items()}
    if isinstance(value, list):
        return [expand_environment(item) for item in value]
    if isinstance(value, str) and (match := _ENV_VAR.match(value)):
        return os.environ.get(match.group(1)) or None
    return value


def _validated(model: type[BaseModel], data: Any, source: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{source}: {_describe(error)}") from None


def parse_profile(data: Any, source: str = "profile") -> Profile:
    """Validate a profile mapping (``${VAR}`` expanded first).

    Raises:
        ConfigError: Naming ``source`` and every offending key.
    """
    return _validated(Profile, expand_environment(data), source)


def parse_unit_config(data: Any, source: str = "unit config") -> UnitConfig:
    """Validate a unit config mapping.

    Raises:
        ConfigError: Naming ``source`` and every offending key.
    """
    return _validated(UnitConfig, data, source)


def read_yaml(path: Path) -> Any:
    """A YAML (or JSON) file's content.

    Raises:
        ConfigError: Missing file or invalid YAML, naming the file.
    """
    if not path.is_file():
        raise ConfigError(f"no config file at {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None


def load_unit_config(config: str | Path | dict[str, Any]) -> UnitConfig:
    """A unit config from a mapping, YAML/JSON text, or the path of a YAML/JSON file.

    Raises:
        ConfigError: Invalid config, naming its source and the key.
    """
    if isinstance(config, dict):
        return parse_unit_config(config)
    text = str(config)
    if (
        "\n" not in text
        and not text.lstrip().startswith("{")
        and Path(text).suffix in (".yaml", ".yml", ".json")
    ):
        return parse_unit_config(read_yaml(Path(text)), source=text)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"config: not valid YAML or JSON: {error}") from None
    return parse_unit_config(data, source="config")


def undeclared_parameters(injected: str, declared: set[str]) -> list[str]:
    """Names a papermill-injected cell assigns that the notebook's ``parameters`` cell does not declare.

    papermill only warns about such names and runs on; the run notebook calls this on the source of the
    cell before its check (``In[-2]``: papermill's ``injected-parameters`` cell, or the ``parameters``
    cell itself when nothing was injected) and refuses them.

    Args:
        injected: Source of the cell papermill injected.
        declared: The parameters the notebook declares.
    """
    assigned = {
        target.id
        for node in ast.walk(ast.parse(injected))
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    return sorted(assigned - declared)
