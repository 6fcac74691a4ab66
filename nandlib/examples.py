"""Examples vs text: adding a normality from k example images beside NAND's text (issue 20, protocol a).

Book: ``examples_vs_text.md``. For a class and a Table 1 group ``g``, ``max(ks)`` of ``g``'s test images
are drawn (seeded, :func:`draw_examples`); they are removed from evaluation for **every** route of that
draw, so all routes are scored on the same images; a route with ``k`` examples uses the first ``k`` drawn.
Routes (column ``route``):

- ``text``: NAND (Eq. 5, Eq. 6) with the group's phrases (``k = 0``);
- ``examples``: the example route, :meth:`~nandlib.detectors.base.Detector.add_normal_examples`;
- ``text+examples``: NAND applied to the example-extended detector, ``A_ex ⊙ (1 − A_sup)``: the product
  of both effects on the map;
- ``visual-nd``: our addition: NAND whose ``f_add`` is the examples' mask-weighted mean of projected patch
  tokens (:func:`visual_normality`), optionally mixed with the text feature.

Callers add routes of their own, each at every ``k``: *phrase routes* (NAND with phrases chosen from the
examples, e.g. TGVIG's keyword-to-prompt generator, :func:`nandlib.tgvig.use.keyword_phrase_route`) and
*example routes* (the example route with images made from the examples, e.g. TGVIG's generated variants,
:class:`nandlib.tgvig.use.GeneratedExampleRoute`). Book: ``generated_normals.md``, "In NAND's routes".

``auroc_before`` is the detector as fitted on the same images; the diagnostics are those of
:mod:`nandlib.diagnostics` (``sup_specificity`` only where the route has a suppression map).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from nandlib.data.mvtec import MVTecClass, Sample
from nandlib.detectors.base import Detector, MapGeometry
from nandlib.detectors.examples import check_examples, patch_fractions
from nandlib.diagnostics import DIAGNOSTIC_COLUMNS, defect_pixels, group_diagnostics
from nandlib.evaluation import ClassEvaluation
from nandlib.geometry import to_eval_grid
from nandlib.nand import Normality, NormalityDetector, final_map
from nandlib.protocol import image_auroc, relabel

ROUTES = ("text", "examples", "text+examples", "visual-nd")
EXAMPLE_COLUMNS = (
    "class", "group", "detector", "route", "k", "draw", "auroc_before", "auroc_after", "n_normal",
    "n_anomalous", *DIAGNOSTIC_COLUMNS[3:], "examples",
)  # fmt: skip
PhraseRoute = Callable[[str, Sequence[Image.Image]], Sequence[str]]
"""``(group, example images) -> phrases`` of a phrase route."""
ExampleRoute = Callable[[str, Sequence[Image.Image]], Sequence[Image.Image]]
"""``(group, example images) -> images`` an example route gives ``add_normal_examples``."""


def draw_examples(
    anomaly_types: Sequence[str], added_types: Sequence[str], k: int, seed: int, name: str = "group"
) -> np.ndarray:
    """Indices of ``k`` test images of the added types, in the order drawn (seeded permutation).

    Raises:
        ValueError: ``k < 1`` or ``k`` larger than the group's test images (naming both).
    """
    candidates = np.flatnonzero(np.isin(np.asarray(anomaly_types, dtype=object), list(added_types)))
    if k < 1:
        raise ValueError(f"k: need at least one example, got {k}")
    if k > len(candidates):
        raise ValueError(f"k: {k} examples asked of {name}, which has only {len(candidates)} test images")
    return np.random.default_rng(seed).permutation(candidates)[:k]


def example_inputs(
    samples: Sequence[Sample], data: MVTecClass, *, masks: bool
) -> tuple[list[Image.Image], list[np.ndarray] | None]:
    """Images (and defect masks) of example samples, checked against the class they are added to.

    Raises:
        ValueError: An example of another class, or of another size than the class's test images,
            naming its file.
    """
    size = data.test[0].image().size
    images = []
    for sample in samples:
        if sample.class_name != data.name:
            raise ValueError(f"example {sample.path} is of class {sample.class_name!r}, not {data.name!r}")
        image = sample.image()
        if image.size != size:
            raise ValueError(
                f"example {sample.path} is {image.width}x{image.height}; {data.name!r} images are "
                f"{size[0]}x{size[1]}"
            )
        images.append(image)
    return images, [sample.mask() for sample in samples] if masks else None


@torch.no_grad()
def visual_normality(
    nd: NormalityDetector,
    images: Sequence[Image.Image],
    masks: Sequence[np.ndarray],
    *,
    text: Normality | None = None,
    weight: float = 1.0,
) -> Normality:
    """Visual ND (our addition): ``f_add`` from example images instead of, or mixed with, text.

    ``f_visual`` is the mean over the ND module's layers and patches of its projected unit patch tokens,
    each patch weighted by its cell's defect fraction (:func:`~nandlib.detectors.examples.patch_fractions`),
    L2-normalised; with ``text``, ``f_add = normalize(weight · f_visual + (1 − weight) · f_text)``.

    Raises:
        ValueError: ``weight`` outside [0, 1], or masks that do not match the images.
    """
    if not 0 <= weight <= 1:
        raise ValueError(f"weight: must be in [0, 1], got {weight}")
    checked = check_examples(images, masks)
    if checked is None:
        raise ValueError("masks: visual ND needs the examples' defect masks")
    features = nd.features(images)
    whole = MapGeometry(resize=nd.aprilgan.backbone.image_size)
    weights = patch_fractions(checked, whole, features.grid).to(features.patch_tokens[0])  # [K, N]
    total = sum((tokens * weights[..., None]).sum(dim=(0, 1)) for tokens in features.patch_tokens)
    f_visual = F.normalize(total, dim=0)
    label = f"visual ({len(images)} examples)"
    if text is None or weight == 1:
        return Normality(label=label, phrases=(), f_add=f_visual)
    mixed = F.normalize(weight * f_visual + (1 - weight) * text.f_add.to(f_visual), dim=0)
    return Normality(label=f"{label} + {text.label}", phrases=text.phrases, f_add=mixed)


def detector_maps(detector: Detector, images: Sequence[Image.Image], size: int, batch: int) -> torch.Tensor:
    """``[N, size, size]`` maps of a detector on the evaluation grid, ``batch`` images per call."""
    parts = [detector.predict(images[i : i + batch]).maps for i in range(0, len(images), batch)]
    return to_eval_grid(torch.cat(parts), size)


class ExampleProtocol:
    """Protocol (a) for one class: every route after each group's examples, on the same images.

    Args:
        evaluation: The class's test split encoded once with the fitted detector and the ND module.
        ks: Numbers of examples (the issue's 1 and 5).
        draws: Seeded draws per group (draw ``d`` uses seed ``seed + d``).
        seed: Seed of the first draw.
        use_masks: Add only the examples' defect patches (the named option; off by default).
        example_options: Keyword options of the detector's ``add_normal_examples`` (e.g. PatchCore's
            ``coreset``).
        visual_weight: Weight of ``f_visual`` against the text feature in ``visual-nd`` (1: visual only).
        batch_size: Images per forward pass.
        routes: Which of :data:`ROUTES` to compute (default all).
        phrase_routes: Route name → :data:`PhraseRoute`: NAND (Eq. 5, Eq. 6) on the fitted detector with
            the phrases it returns for the group and the ``k`` examples; they are kept in
            :attr:`phrases_used` by ``(group, draw, route, k)``.
        example_routes: Route name → :data:`ExampleRoute`: the example route with the images it returns
            for the group and the ``k`` examples (no masks: not with ``use_masks``).

    Raises:
        ValueError: The detector does not accept examples, ``ks`` is empty, an unknown route, a route
            name used twice, or example routes with ``use_masks``.
    """

    def __init__(
        self,
        evaluation: ClassEvaluation,
        *,
        ks: Sequence[int] = (1, 5),
        draws: int = 3,
        seed: int = 0,
        use_masks: bool = False,
        example_options: Mapping[str, Any] | None = None,
        visual_weight: float = 1.0,
        batch_size: int = 8,
        routes: Sequence[str] = ROUTES,
        phrase_routes: Mapping[str, PhraseRoute] | None = None,
        example_routes: Mapping[str, ExampleRoute] | None = None,
    ) -> None:
        if not evaluation.detector.accepts_examples:
            raise ValueError(f"detector: {evaluation.detector.name!r} does not accept examples")
        if not ks:
            raise ValueError("ks: need at least one number of examples")
        self.phrase_routes, self.example_routes = dict(phrase_routes or {}), dict(example_routes or {})
        unknown = sorted(set(routes) - set(ROUTES))
        names = [*routes, "before", *self.phrase_routes, *self.example_routes]
        if unknown or len(set(names)) != len(names):
            raise ValueError(f"routes: unknown {unknown} or a name used twice in {names}; built in: {ROUTES}")
        if use_masks and self.example_routes:
            raise ValueError("example_routes: their images have no defect masks; use_masks must be off")
        self.routes = tuple(routes)
        self.phrases_used: dict[tuple[str, int, str, int], tuple[str, ...]] = {}
        self.evaluation = evaluation
        self.ks, self.draws, self.seed = tuple(sorted(ks)), draws, seed
        self.use_masks, self.example_options = use_masks, dict(example_options or {})
        self.visual_weight, self.batch_size = visual_weight, batch_size
        self.types = np.asarray(evaluation.anomaly_types, dtype=object)
        self._text = evaluation.normalities()
        self._suppression = {g: evaluation.encoded.suppression(n) for g, n in self._text.items()}

    @property
    def data(self) -> MVTecClass:
        """The class evaluated."""
        return self.evaluation.data

    def draw(self, group: str, draw: int) -> np.ndarray:
        """Indices of the ``max(ks)`` examples of ``group`` in draw ``draw`` (seed ``seed + draw``)."""
        name = f"{self.data.name}/{group}"
        return draw_examples(self.types, self.evaluation.groups[group], self.ks[-1], self.seed + draw, name)

    def route_maps(self, group: str, draw: int) -> tuple[np.ndarray, np.ndarray, dict]:
        """Maps of every route on the evaluated images of one draw.

        Returns:
            ``(drawn, keep, routes)``: drawn example indices, the evaluated test indices (all but the
            drawn), and ``(route, k)`` → ``(maps [n, S, S], A_sup [n, S, S] or None)``; ``("before", 0)``
            is the detector as fitted.
        """
        drawn = self.draw(group, draw)
        keep = np.setdiff1d(np.arange(len(self.types)), drawn)
        base = self.evaluation.encoded.base_maps[keep]
        text = self._suppression[group][keep]
        routes = {("before", 0): (base, None)}
        if "text" in self.routes:
            routes[("text", 0)] = (final_map(base, [text]), text)
        kept_images = [self.data.test[i].image() for i in keep]
        for k in self.ks:
            samples = [self.data.test[i] for i in drawn[:k]]
            images, masks = example_inputs(samples, self.data, masks=True)
            if {"examples", "text+examples"} & set(self.routes):
                extended = self._extended_maps(images, masks if self.use_masks else None, kept_images)
                routes[("examples", k)] = (extended, None)
                routes[("text+examples", k)] = (final_map(extended, [text]), text)
            if "visual-nd" in self.routes:
                visual = visual_normality(
                    self.evaluation.nd, images, masks, text=self._text[group], weight=self.visual_weight
                )
                visual_sup = self.evaluation.encoded.suppression(visual)[keep]
                routes[("visual-nd", k)] = (final_map(base, [visual_sup]), visual_sup)
            for name, choose in self.phrase_routes.items():
                phrases = tuple(choose(group, images))
                self.phrases_used[(group, draw, name, k)] = phrases
                sup = self.evaluation.encoded.suppression(self.evaluation.nd.normality(phrases=phrases))[keep]
                routes[(name, k)] = (final_map(base, [sup]), sup)
            for name, extend in self.example_routes.items():
                extended = self._extended_maps(list(extend(group, images)), None, kept_images)
                routes[(name, k)] = (extended, None)
        routes = {key: v for key, v in routes.items() if key[0] not in ROUTES or key[0] in self.routes}
        return drawn, keep, routes

    def _extended_maps(self, images: list[Image.Image], masks, kept: list[Image.Image]) -> torch.Tensor:
        """Maps of the evaluated images by a copy of the detector that took ``images`` as examples."""
        detector = copy.copy(self.evaluation.detector)
        detector.add_normal_examples(images, masks, **self.example_options)
        return detector_maps(detector, kept, self.evaluation.nd.eval_size, self.batch_size)

    def results(self, groups: Sequence[str] | None = None) -> pd.DataFrame:
        """Tidy rows (:data:`EXAMPLE_COLUMNS`) per group (default: those with test images), draw and route."""
        if groups is None:
            present = set(self.types.tolist())
            groups = [g for g, members in self.evaluation.groups.items() if present & set(members)]
        rows = []
        for group in groups:
            for draw in range(self.draws):
                drawn, keep, routes = self.route_maps(group, draw)
                rows.extend(self._rows(group, draw, drawn, keep, routes))
        return pd.DataFrame(rows, columns=list(EXAMPLE_COLUMNS))

    def _rows(self, group: str, draw: int, drawn: np.ndarray, keep: np.ndarray, routes: dict) -> list[dict]:
        types = self.types[keep].tolist()
        members = self.evaluation.groups[group]
        labels, _ = relabel(types, members)
        masks = self.evaluation.masks[keep]
        pixel_types = defect_pixels(masks.numpy(), types)
        before = routes[("before", 0)][0].amax(dim=(1, 2)).numpy()
        label = self.evaluation.label
        name = f"{self.data.name}/{group}"
        test = self.data.test
        rows = []
        for (route, k), (maps, suppression) in routes.items():
            if route == "before":
                continue
            after = maps.amax(dim=(1, 2)).numpy()
            sup = None if suppression is None else {group: suppression[masks].numpy()}
            diagnostics = group_diagnostics(
                self.data.name, label, types, before, {group: after},
                pixel_types=pixel_types if sup else None, defect_suppression=sup,
            ).iloc[0]  # fmt: skip
            rows.append(
                {
                    "class": self.data.name,
                    "group": group,
                    "detector": label,
                    "route": route,
                    "k": k,
                    "draw": draw,
                    "auroc_before": image_auroc(labels, before, name),
                    "auroc_after": image_auroc(labels, after, name),
                    "n_normal": int((labels == 0).sum()),
                    "n_anomalous": int((labels == 1).sum()),
                    **{c: diagnostics[c] for c in DIAGNOSTIC_COLUMNS[3:]},
                    "examples": " ".join(f"{test[i].anomaly_type}/{test[i].path.name}" for i in drawn[:k]),
                }  # fmt: skip
            )
        return rows
