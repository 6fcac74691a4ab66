"""The toy world: auxiliary classes, captions, and the data every toy model is trained on.

Book: ``reproducing.md``, "Toy world". The evaluation classes are MVTec AD's, painted by
:mod:`nandlib.data.synthetic`; the *auxiliary* classes below exist only to train APRIL-GAN's linear layers
(as VisA does for the paper's MVTec numbers). Each evaluation object has an auxiliary look-alike in
geometry (round: coin, button; elongated: bolt, tablet; …) and every auxiliary defect is one of the shared
painted styles of :mod:`nandlib.data.defects`, so what is learnt on one transfers to the other.

Every image has a caption: one of APRIL-GAN's 35 templates around a *state* — a normal state ("flawless
carpet"), a generic defect state ("damaged carpet") or the defect's own phrase ("carpet with a hole").
The pairs in :data:`UNCAPTIONED` never get their own phrase (only generic ones), to test whether NAND can add
a normality for a (class, defect) pair the model never read about.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from nandlib.data.classes import ANOMALY_TYPES, COMBINED, GOOD, MVTEC_CLASSES, anomaly_groups
from nandlib.data.layout import image_path, mask_path, staged_dataset
from nandlib.data.synthetic import SceneTables, render_defective, render_sample, smooth_noise
from nandlib.prompts import TablePromptGenerator, templates
from nandlib.prompts.sentences import _aprilgan_table

DEFAULT_SIZE = 64

# Auxiliary class -> its painted defect types (styles of nandlib.data.defects, shared with MVTec AD's names).
AUX_TYPES: dict[str, tuple[str, ...]] = {
    "fabric": ("hole", "cut", "thread", "color", "metal_contamination", "poke"),
    "mesh": ("thread", "bent", "glue", "broken", "metal_contamination", "crack"),
    "suede": ("poke", "glue", "color", "fold", "cut", "scratch"),
    "terrazzo": ("oil", "gray_stroke", "rough", "crack", "glue_strip", "hole"),
    "plank": ("scratch", "liquid", "color", "hole", "fold", "oil"),
    "coin": ("scratch", "color", "bent", "contamination", "broken_small", "hole"),
    "button": ("crack", "hole", "color", "print", "cut"),
    "bolt": ("scratch", "thread_side", "manipulated_front", "crack", "color"),
    "tablet": ("crack", "color", "contamination", "faulty_imprint", "scratch", "poke"),
    "chip": ("bent_lead", "cut_lead", "damaged_case", "misplaced", "scratch"),
    "plug": ("cable_swap", "missing_wire", "poke_insulation", "cut_outer_insulation", "bent_wire"),
    "strap": ("broken_teeth", "fabric_interior", "fabric_border", "split_teeth", "rough"),
}
AUX_CLASSES: tuple[str, ...] = tuple(AUX_TYPES)
AUX_TEXTURES = ("fabric", "mesh", "suede", "terrazzo", "plank")

# Defect type -> phrases ("{}" is the class name), used in captions of every class and as the auxiliary
# normalities of the optional adapter loss. Worded like nandlib/prompts/phrases.yaml.
TYPE_PHRASES: dict[str, tuple[str, ...]] = {
    "hole": ("{} with a hole", "{} with a small hole"),
    "cut": ("{} with a cut", "cut {}"),
    "thread": ("{} with a loose thread", "thread lying on the {}"),
    "color": ("{} with a color stain", "discolored {}"),
    "metal_contamination": ("{} with metal contamination", "{} with a metal shaving"),
    "poke": ("{} with a poke mark", "poked {}"),
    "bent": ("bent {}", "{} with a deformed edge"),
    "glue": ("{} with glue", "{} with a drop of glue"),
    "broken": ("broken {}", "{} with a broken wire"),
    "crack": ("cracked {}", "{} with a crack"),
    "fold": ("folded {}", "{} with a fold"),
    "scratch": ("scratched {}", "{} with a scratch"),
    "oil": ("{} with an oil stain", "{} with oil on it"),
    "gray_stroke": ("{} with a gray stroke", "{} with a gray line"),
    "rough": ("rough {}", "{} with a rough patch"),
    "glue_strip": ("{} with a glue strip", "{} with a strip of glue"),
    "liquid": ("{} with a liquid stain", "{} with spilled liquid"),
    "contamination": ("contaminated {}", "{} with a foreign particle"),
    "broken_small": ("broken {}", "{} with a chipped edge"),
    "print": ("{} with a print", "{} with ink marks"),
    "faulty_imprint": ("{} with a faulty imprint", "{} with a smeared print"),
    "thread_side": ("{} with a damaged thread", "{} with a deformed thread"),
    "manipulated_front": ("{} with a deformed tip", "{} with a damaged front"),
    "bent_lead": ("{} with a bent lead", "{} with a bent leg"),
    "cut_lead": ("{} with a cut lead", "{} with a short lead"),
    "damaged_case": ("{} with a damaged case", "{} with a chipped case"),
    "misplaced": ("misplaced {}", "{} out of place"),
    "cable_swap": ("{} with swapped inner cables",),
    "missing_wire": ("{} with a missing wire",),
    "poke_insulation": ("{} with a poked hole in the insulation",),
    "cut_outer_insulation": ("{} with cut insulation",),
    "bent_wire": ("{} with a bent wire",),
    "broken_teeth": ("{} with broken teeth",),
    "fabric_interior": ("{} with damaged fabric",),
    "fabric_border": ("{} with frayed fabric at the border",),
    "split_teeth": ("{} with split teeth",),
}

# (evaluation class, defect type) pairs never captioned with their own phrase (generic captions only).
UNCAPTIONED: frozenset[tuple[str, str]] = frozenset(
    {
        ("carpet", "metal_contamination"),
        ("leather", "fold"),
        ("tile", "oil"),
        ("wood", "liquid"),
        ("grid", "glue"),
        ("bottle", "contamination"),
        ("capsule", "squeeze"),
        ("hazelnut", "print"),
    }
)


def class_types(class_name: str) -> tuple[str, ...]:
    """Defect types of an auxiliary or MVTec AD class.

    Raises:
        ValueError: Unknown class (message lists both kinds).
    """
    if class_name in AUX_TYPES:
        return AUX_TYPES[class_name]
    if class_name in ANOMALY_TYPES:
        return ANOMALY_TYPES[class_name]
    raise ValueError(f"class_name: {class_name!r} is neither an auxiliary class {AUX_CLASSES} nor MVTec AD's")


@cache
def _table_phrases() -> TablePromptGenerator:
    return TablePromptGenerator()


def defect_phrases(class_name: str, anomaly_type: str) -> tuple[str, ...]:
    """Phrases naming ``anomaly_type`` on ``class_name`` ("{}" filled): the type's own, else the group's.

    Raises:
        ValueError: A type with no phrase anywhere (``combined``, or an unknown type).
    """
    if anomaly_type in TYPE_PHRASES:
        return tuple(p.replace("{}", class_name) for p in TYPE_PHRASES[anomaly_type])
    for group, types in anomaly_groups(class_name).items() if class_name in ANOMALY_TYPES else ():
        if anomaly_type in types:
            return tuple(_table_phrases().phrases(class_name, group))
    raise ValueError(f"anomaly_type: no phrase for {anomaly_type!r} of {class_name!r}")


@dataclass(frozen=True)
class CaptionStates:
    """The states a caption may put around a template, and what they say.

    Attributes:
        normal: Normal states (APRIL-GAN's, class filled in).
        generic: Generic defect states ("damaged carpet").
    """

    normal: tuple[str, ...]
    generic: tuple[str, ...]


def caption_states(class_name: str) -> CaptionStates:
    """APRIL-GAN's normal and abnormal states with ``class_name`` filled in."""
    table = _aprilgan_table()
    return CaptionStates(
        normal=tuple(s.replace("{}", class_name) for s in table["normal_states"]),
        generic=tuple(s.replace("{}", class_name) for s in table["abnormal_states"]),
    )


def caption_key(class_name: str, anomaly_type: str, specific: bool) -> tuple[str, str]:
    """What a caption asserts: ``(class, "good" | "defect" | type)``."""
    if anomaly_type == GOOD:
        return class_name, GOOD
    return class_name, anomaly_type if specific else "defect"


def describes(image_keys: Sequence[tuple[str, str]], caption_keys: Sequence[tuple[str, str]]) -> np.ndarray:
    """Boolean ``[N_images, N_captions]``: caption ``j`` is true of image ``i``.

    An image ``(class, type)`` is described by captions of its class that say ``good`` (type ``good``), its
    own type, or ``defect`` (any type but ``good``).
    """
    out = np.zeros((len(image_keys), len(caption_keys)), dtype=bool)
    for i, (cls, kind) in enumerate(image_keys):
        for j, (c_cls, c_kind) in enumerate(caption_keys):
            out[i, j] = cls == c_cls and (c_kind == kind or (c_kind == "defect" and kind != GOOD))
    return out


def own_states(image_keys: Sequence[tuple[str, str]], state_keys: Sequence[tuple[str, str]]) -> np.ndarray:
    """Boolean ``[N_images, N_states]``: the state caption of each image's own defect.

    A defect's own type where it has a caption (:func:`state_captions`); the generic "damaged <class>" for
    a type without one (:data:`UNCAPTIONED`, ``combined``); "flawless <class>" for a good image.
    """
    named = np.array([[state == key for state in state_keys] for key in image_keys], dtype=bool)
    return np.where(named.any(axis=1, keepdims=True), named, describes(image_keys, state_keys))


def sample_caption(
    class_name: str, anomaly_type: str, rng: np.random.Generator
) -> tuple[str, tuple[str, str]]:
    """One caption of an image and its key (:func:`caption_key`).

    Good images get a normal state; defect images their own phrase half of the time (never for
    :data:`UNCAPTIONED` pairs or ``combined``), else a generic defect state.
    """
    states = caption_states(class_name)
    if anomaly_type == GOOD:
        pool, specific = states.normal, False
    else:
        own = anomaly_type != COMBINED and (class_name, anomaly_type) not in UNCAPTIONED
        specific = own and rng.random() < 0.5
        pool = defect_phrases(class_name, anomaly_type) if specific else states.generic
    return _caption(pool, rng), caption_key(class_name, anomaly_type, specific)


def _caption(states: Sequence[str], rng: np.random.Generator) -> str:
    """One of APRIL-GAN's templates around one of ``states``, both drawn from ``rng`` (template first)."""
    template = templates()[rng.integers(len(templates()))]
    return template.replace("{}", states[rng.integers(len(states))])


def state_captions(class_name: str, rng: np.random.Generator) -> list[tuple[str, tuple[str, str]]]:
    """One caption per state of ``class_name`` and its key: good, generic defect, each captioned type.

    The states a patch of the class can be in (:func:`nandlib.toy.clip_training.dense_loss` contrasts
    them); types in :data:`UNCAPTIONED` and ``combined`` have no caption of their own.
    """
    states = caption_states(class_name)
    pools = [(states.normal, (class_name, GOOD)), (states.generic, (class_name, "defect"))]
    pools += [
        (defect_phrases(class_name, kind), (class_name, kind))
        for kind in class_types(class_name)
        if kind != COMBINED and (class_name, kind) not in UNCAPTIONED
    ]
    return [(_caption(pool, rng), key) for pool, key in pools]


# ---- auxiliary scenes -------------------------------------------------------------------------------------


def _aux_texture(
    name: str, x: np.ndarray, y: np.ndarray, rng: np.random.Generator
) -> tuple[tuple, np.ndarray]:
    phase = rng.uniform(0, 2 * np.pi, 2)
    size = x.shape[0]
    if name == "fabric":  # woven, like carpet
        weave = np.sin(2 * np.pi * 9 * x + phase[0]) * np.sin(2 * np.pi * 9 * y + phase[1])
        return (0.3, 0.4, 0.6), 0.85 + 0.15 * weave
    if name == "mesh":  # lines, like grid
        lines = ((x * 6 + phase[0] / 6) % 1 < 0.25) | ((y * 6 + phase[1] / 6) % 1 < 0.25)
        return (0.45, 0.45, 0.4), np.where(lines, 1.8, 1.0)
    if name == "suede":  # smooth blotches, like leather
        return (0.35, 0.42, 0.25), 1 + 0.15 * smooth_noise(rng, size, 6)
    if name == "terrazzo":  # speckled blocks, like tile
        return (0.55, 0.5, 0.45), 1 + 0.2 * np.sign(smooth_noise(rng, size, 16))
    if name == "plank":  # grain, like wood
        grain = np.sin(2 * np.pi * (5 * y + 0.5 * np.sin(2 * np.pi * x + phase[0])))
        return (0.6, 0.42, 0.3), 0.88 + 0.12 * grain
    raise ValueError(f"no auxiliary texture {name!r}")


def _aux_object(name: str, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[float, list]:
    r = np.hypot(x - 0.5, y - 0.5)
    if name == "coin":  # round, like bottle / metal_nut / hazelnut
        return 0.1, [(r < 0.36, (0.75, 0.6, 0.25)), ((r > 0.27) & (r < 0.3), (0.55, 0.42, 0.15))]
    if name == "button":  # round with holes
        holes = np.zeros_like(r, dtype=bool)
        for dx, dy in ((-0.07, -0.07), (0.07, -0.07), (-0.07, 0.07), (0.07, 0.07)):
            holes |= np.hypot(x - 0.5 - dx, y - 0.5 - dy) < 0.035
        return 0.8, [(r < 0.3, (0.3, 0.5, 0.7)), (holes, None)]
    if name in ("bolt", "tablet"):  # elongated, like screw / capsule / pill
        angle = rng.uniform(0, np.pi) if name == "bolt" else rng.uniform(-0.2, 0.2)
        u = (x - 0.5) * np.cos(angle) + (y - 0.5) * np.sin(angle)
        v = (y - 0.5) * np.cos(angle) - (x - 0.5) * np.sin(angle)
        if name == "bolt":
            return 0.85, [
                ((np.abs(u) < 0.28) & (np.abs(v) < 0.06), (0.5, 0.45, 0.4)),
                (np.hypot(u + 0.28, v) < 0.1, (0.4, 0.35, 0.3)),
            ]
        return 0.3, [((u / 0.38) ** 2 + (v / 0.16) ** 2 <= 1, (0.95, 0.8, 0.8))]
    if name == "chip":  # body and legs, like transistor
        legs = np.zeros_like(r, dtype=bool)
        for cx in (0.35, 0.45, 0.55, 0.65):
            legs |= (np.abs(x - cx) < 0.015) & (np.abs(y - 0.68) < 0.12)
        return 0.7, [
            ((np.abs(x - 0.5) < 0.22) & (np.abs(y - 0.42) < 0.14), (0.2, 0.25, 0.2)),
            (legs, (0.7, 0.6, 0.3)),
        ]
    if name == "plug":  # cores in a ring, like cable
        cores = [
            (np.hypot(x - 0.5 - 0.15 * np.cos(a), y - 0.5 - 0.15 * np.sin(a)) < 0.11, rgb)
            for a, rgb in zip((0.0, np.pi), ((0.8, 0.2, 0.2), (0.2, 0.2, 0.2)), strict=True)
        ]
        return 0.75, [(r < 0.35, (0.85, 0.85, 0.8)), *cores]
    if name == "strap":  # band with stripes, like zipper
        band = np.abs(x - 0.5) < 0.3
        stripes = band & (np.abs(x - 0.5) < 0.08) & ((y * 10) % 1 < 0.5)
        return 0.2, [(band, (0.25, 0.3, 0.5)), (stripes, (0.7, 0.7, 0.5))]
    raise ValueError(f"no auxiliary object {name!r}")


AUX_SCENES = SceneTables(AUX_TEXTURES, _aux_texture, _aux_object)


def render_aux(
    class_name: str, anomaly_type: str, rng: np.random.Generator, size: int
) -> tuple[Image.Image, np.ndarray]:
    """Render an auxiliary image and its defect mask, as :func:`render_sample` does for MVTec AD's classes."""
    image, mask = render_defective(class_name, anomaly_type, rng, size, AUX_SCENES, AUX_TYPES[class_name])
    return Image.fromarray(np.round(image * 255).astype(np.uint8), "RGB"), mask


def render(
    class_name: str, anomaly_type: str, rng: np.random.Generator, size: int
) -> tuple[Image.Image, np.ndarray]:
    """Render an image of an auxiliary or an MVTec AD class (RGB) and its defect mask."""
    if class_name in AUX_TYPES:
        return render_aux(class_name, anomaly_type, rng, size)
    image, mask = render_sample(class_name, anomaly_type, rng, size)
    return image.convert("RGB"), mask


def _rng(seed: int, purpose: str, class_name: str, anomaly_type: str, index: int) -> np.random.Generator:
    key = zlib.crc32(f"toy/{purpose}/{class_name}/{anomaly_type}".encode())
    return np.random.default_rng(np.random.SeedSequence([seed, key, index]))


@dataclass(frozen=True)
class ImageSet:
    """Images of the CLIP training set.

    Attributes:
        images: ``uint8 [N, S, S, 3]``.
        keys: ``(class, anomaly_type)`` of each image.
        masks: Boolean defect masks ``[N, S, S]`` (empty for good images).
    """

    images: np.ndarray
    keys: tuple[tuple[str, str], ...]
    masks: np.ndarray


def clip_images(
    seed: int = 0, per_class: int = 96, size: int = DEFAULT_SIZE, classes: Sequence[str] | None = None
) -> ImageSet:
    """Images CLIP is trained on: every class (auxiliary and evaluation), half good, half spread over types.

    They come in pairs: image ``2k`` is good and image ``2k + 1`` is the very same scene with a defect
    (same seed), so the only thing that tells their captions apart is the defect. Evaluation classes are
    drawn from seeds of their own (``toy/clip/...``), so no test image of the evaluation set is among
    them; ``toothbrush`` (not in the paper's Table 1) is left out by default.

    Args:
        seed: Base seed.
        per_class: Images per class.
        size: Image side.
        classes: Classes to include (default: all auxiliary and Table 1's 14 MVTec AD classes).
    """
    chosen = (
        list(classes)
        if classes is not None
        else [*AUX_CLASSES, *(c for c in MVTEC_CLASSES if c != "toothbrush")]
    )
    images, keys, masks = [], [], []
    for class_name in chosen:
        types = class_types(class_name)
        for index in range(per_class):
            kind = GOOD if index % 2 == 0 else types[(index // 2) % len(types)]
            # images 2k and 2k + 1 share their scene's seed: a good image and the same scene with a defect
            image, mask = render(class_name, kind, _rng(seed, "clip", class_name, "scene", index // 2), size)
            images.append(np.asarray(image))
            keys.append((class_name, kind))
            masks.append(mask)
    return ImageSet(images=np.stack(images), keys=tuple(keys), masks=np.stack(masks))


def write_aux_dataset(
    out: str | Path,
    seed: int = 0,
    size: int = DEFAULT_SIZE,
    n_good: int = 24,
    n_per_type: int = 8,
    classes: Sequence[str] = AUX_CLASSES,
) -> Path:
    """Write the auxiliary classes in MVTec AD's layout (``test/`` holds good and defect images with masks).

    This is the dataset ``nand train-adapters`` trains on, like VisA for the paper's MVTec AD numbers.
    """
    note = f"toy-world auxiliary classes, seed {seed}, size {size}"
    with staged_dataset(out, note) as root:
        for class_name in classes:
            jobs = [("train", GOOD, n_good), ("test", GOOD, n_good)]
            jobs += [("test", t, n_per_type) for t in AUX_TYPES[class_name]]
            for split, kind, count in jobs:
                for index in range(count):
                    image, mask = render_aux(
                        class_name, kind, _rng(seed, f"aux-{split}", class_name, kind, index), size
                    )
                    path = image_path(root, class_name, split, kind, index)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    image.save(path)
                    if kind != GOOD:
                        target = mask_path(path)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        Image.fromarray(mask.astype(np.uint8) * 255, "L").save(target)
        (root / "README.txt").write_text(f"SYNTHETIC DATA - {note} (nandlib toy world).\n", encoding="utf-8")
    return Path(out)


def vocabulary_texts() -> list[str]:
    """Every text the toy CLIP reads: prompt tables (APRIL-GAN, WinCLIP, phrases), captions, class names."""
    from nandlib.detectors.winclip.prompts import prompt_ensemble

    table = _aprilgan_table()
    texts = [*table["templates"], *table["normal_states"], *table["abnormal_states"]]
    texts += [p for phrases in TYPE_PHRASES.values() for p in phrases]
    generator = _table_phrases()
    for class_name in (*MVTEC_CLASSES, *AUX_CLASSES):
        texts.append(class_name)
        texts.append(class_name.replace("_", " "))
        if class_name in generator.table:
            texts += [p for g in generator.groups(class_name) for p in generator.phrases(class_name, g)]
    normal, anomalous = prompt_ensemble("carpet")
    texts += [*normal, *anomalous]
    return texts
