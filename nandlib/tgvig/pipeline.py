"""TGVIG end to end (§4, Fig. 3): best prompt → variance-aware generation → text-guided integration.

:func:`generate_normals` is what ``nand generate images`` and the toy experiment call; its images join a
detector's fit set (``detector.fit([*originals, *generated])``). Book: ``generated_normals.md``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from PIL import Image

from nandlib.tgvig.generator import VarianceAwareGenerator
from nandlib.tgvig.images import check_images, to_pil, to_tensor
from nandlib.tgvig.integrator import Integration, IntegratorSettings, integrate
from nandlib.tgvig.keywords import PromptChoice, check_name, choose_prompt, clip_image_features

NAIVE_TEMPLATE = "a photo of a {object}"


@dataclass
class GeneratedNormals:
    """What :func:`generate_normals` made.

    Attributes:
        images: The kept set ``Î^+``, RGB, at the originals' size.
        prompt: The prompt ``P`` they were scored against.
        choice: The keyword-to-prompt generator's candidates and scores (``None`` for a naive prompt).
        integration: Scores and losses of every round.
    """

    images: list[Image.Image]
    prompt: str
    choice: PromptChoice | None
    integration: Integration


def generate_normals(
    images: Sequence[Image.Image],
    name: str,
    clip,
    vqmodel,
    settings: IntegratorSettings | None = None,
    prompt: Literal["keywords", "naive"] = "keywords",
    seed: int = 0,
    progress: bool = True,
) -> GeneratedNormals:
    """Generate ``M`` normal images from ``images`` of object ``name``.

    Args:
        images: The given normal images ``I^o`` (one or a few), all of one size, a multiple of the
            VQGAN's downsampling factor.
        name: Object name ``W^o`` (``"hazelnut"``; underscores read as spaces).
        clip: :class:`nandlib.backbones.ClipBackbone` (``f`` and ``G``).
        vqmodel: ``diffusers.VQModel``; a copy is trained, ``vqmodel`` is left as it is.
        settings: :class:`IntegratorSettings`.
        prompt: ``"keywords"`` (§4.1.1) or ``"naive"`` (``"a photo of a {object}"``, the paper's "w/o Text").
        seed: Seed of augmentations and draws.
        progress: Progress bar over rounds.

    Raises:
        ValueError: No images, images of different sizes, an empty or unknown object name.
    """
    check_images(images)
    name = check_name(name)
    if prompt == "keywords":
        choice = choose_prompt(clip, name, images)
        text_prompt = choice.prompt
    elif prompt == "naive":
        choice, text_prompt = None, NAIVE_TEMPLATE.format(object=name)
    else:
        raise ValueError(f"prompt: must be 'keywords' or 'naive', got {prompt!r}")
    text = clip.unit_text_embeddings([text_prompt])[0].cpu()
    generator = VarianceAwareGenerator(copy.deepcopy(vqmodel))
    with torch.random.fork_rng(devices=[]):
        result = integrate(
            generator,
            to_tensor(images),
            text,
            lambda batch: clip_image_features(clip, to_pil(batch)),
            settings,
            seed=seed,
            progress=progress,
        )
    return GeneratedNormals(to_pil(result.images), text_prompt, choice, result)
