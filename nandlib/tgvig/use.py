"""TGVIG in NAND's routes (issue 21): the keyword-to-prompt generator as NAND's phrase source, and the
example route fed with TGVIG's generated variants of the examples.

- **Phrases** (:func:`keyword_phrase_route`): a group's phrases are the best candidates of Eq. 1
  (:class:`~nandlib.tgvig.keywords.KeywordPromptGenerator`), ranked against the ``k`` examples of the new
  normality, or against fixed images such as the class's good training images.
- **Generated examples** (:func:`add_generated_examples`, :class:`GeneratedExampleRoute`): TGVIG (§4,
  :func:`~nandlib.tgvig.pipeline.generate_normals`, object name = class name) generates variants of the
  ``k`` examples; originals and variants join the detector's memory through
  :meth:`~nandlib.detectors.base.Detector.add_normal_examples`.

Both plug into :class:`nandlib.examples.ExampleProtocol` (``phrase_routes``, ``example_routes``).
Book: ``generated_normals.md``, "In NAND's routes".
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any

from PIL import Image

from nandlib.examples import PhraseRoute
from nandlib.tgvig.integrator import IntegratorSettings
from nandlib.tgvig.keywords import KeywordPromptGenerator
from nandlib.tgvig.pipeline import GeneratedNormals, generate_normals


def keyword_phrase_route(
    clip, class_name: str, images: Sequence[Image.Image] | None = None, top_k: int = 3, **options: Any
) -> PhraseRoute:
    """NAND's phrases from the keyword-to-prompt generator (Eq. 1), as a phrase route.

    Args:
        clip: :class:`nandlib.backbones.ClipBackbone` scoring Eq. 1 (NAND's own CLIP, so that the phrases
            are ranked in the space ``f_add`` lives in).
        class_name: Object name ``W^o`` of the prompts ``"a {class} with {word}"``.
        images: ``None``: rank against the route's examples of the new normality; else against these
            images (e.g. the class's good training images), whatever the examples.
        top_k: Phrases per group.
        **options: ``relations``, ``threshold``, ``keep`` of
            :class:`~nandlib.tgvig.keywords.KeywordPromptGenerator`.

    Returns:
        ``(group, examples) -> phrases`` (with fixed ``images``, computed once per group).
    """
    if images is None:

        def phrases(group: str, examples: Sequence[Image.Image]) -> list[str]:
            by_examples = KeywordPromptGenerator(clip, lambda _class, _group: examples, top_k, **options)
            return by_examples.phrases(class_name, group)

        return phrases
    fixed = list(images)
    generator = KeywordPromptGenerator(clip, lambda _class, _group: fixed, top_k, **options)
    per_group = functools.cache(lambda group: generator.phrases(class_name, group))
    return lambda group, _examples: per_group(group)


def add_generated_examples(
    detector,
    images: Sequence[Image.Image],
    class_name: str,
    clip,
    vqmodel,
    settings: IntegratorSettings | None = None,
    seed: int = 0,
    progress: bool = True,
    **options: Any,
) -> GeneratedNormals:
    """The example route with TGVIG's variants: ``detector`` takes ``images`` and the images generated
    from them (in place; ``copy.copy`` a fitted detector first to keep it).

    Args:
        detector: A fitted detector that :attr:`~nandlib.detectors.base.Detector.accepts_examples`.
        images: The examples of the new normality (one size, a multiple of the VQGAN's downsampling).
        class_name: The object name ``W^o`` TGVIG's prompts use.
        clip, vqmodel, settings, seed, progress: As :func:`~nandlib.tgvig.pipeline.generate_normals`.
        **options: Options of the detector's ``add_normal_examples`` (e.g. PatchCore's ``coreset``);
            no defect masks: the generated images have none.

    Returns:
        What TGVIG generated (``.images`` joined the memory with ``images``).

    Raises:
        ValueError: A detector without an example route, or the checks of ``generate_normals``.
    """
    if not detector.accepts_examples:
        raise ValueError(f"detector: {detector.name!r} does not accept examples")
    made = generate_normals(images, class_name, clip, vqmodel, settings, seed=seed, progress=progress)
    detector.add_normal_examples([*images, *made.images], **options)
    return made


class GeneratedExampleRoute:
    """An example route of :class:`~nandlib.examples.ExampleProtocol`: the examples and TGVIG's variants.

    Args:
        clip, vqmodel, settings, seed: As :func:`~nandlib.tgvig.pipeline.generate_normals`.
        class_name: The object name ``W^o``.

    Attributes:
        records: One dict per call: ``group``, ``k``, ``prompt``, ``generated`` (count), ``best_round``
            and ``seconds`` of generation.
    """

    def __init__(
        self, clip, vqmodel, class_name: str, settings: IntegratorSettings | None = None, seed: int = 0
    ) -> None:
        self.clip, self.vqmodel, self.class_name = clip, vqmodel, class_name
        self.settings, self.seed = settings, seed
        self.records: list[dict] = []

    def __call__(self, group: str, images: Sequence[Image.Image]) -> list[Image.Image]:
        """The examples followed by the images TGVIG generated from them."""
        start = time.perf_counter()
        made = generate_normals(
            images, self.class_name, self.clip, self.vqmodel, self.settings, seed=self.seed, progress=False
        )
        self.records.append({
            "group": group, "k": len(images), "prompt": made.prompt, "generated": len(made.images),
            "best_round": made.integration.best_round, "seconds": round(time.perf_counter() - start, 2),
        })  # fmt: skip
        return [*images, *made.images]
