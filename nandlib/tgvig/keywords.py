"""Keyword-to-prompt generator (TGVIG §4.1.1, Eq. 1): WordNet words → candidate prompts → the best prompt.

From an object name ``W^o``, WordNet gives ``T`` words ``W_t`` (:func:`word_set`); each makes a candidate
prompt ``S_t = "a {W^o} with {W_t}"``. Prompts whose normalised CLIP text feature lies within
``threshold`` (L2) of the images' feature are removed as outliers (the paper's rule, printed as
``S^p = {S_j | d(S_j, I^o) > 0.5}``), and the remaining prompt closest in cosine to the images is the best
prompt ``P`` (Eq. 1). Book: ``generated_normals.md``, "Keyword-to-prompt generator".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from PIL import Image

from nandlib.tgvig.wordnet import load_wordnet

RELATIONS = ("synonyms", "hypernyms", "hyponyms", "meronyms")
TEMPLATE = "a {object} with {word}"


def check_name(name: str, what: str = "object") -> str:
    """``name`` stripped, with spaces for underscores.

    Raises:
        ValueError: Empty name, naming ``what``.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what}: an object name is needed, got {name!r}")
    return name.strip().replace("_", " ")


def word_set(name: str, relations: Sequence[str] = RELATIONS) -> list[str]:
    """WordNet words related to the noun ``name``: ``{W_1, ..., W_T}`` of §4.1.1, sorted, without ``name``.

    Args:
        name: Object name (``"hazelnut"``, ``"metal nut"``).
        relations: Which of :data:`RELATIONS` to take, over every noun sense of ``name``: the senses'
            lemmas (synonyms), their direct hypernyms and hyponyms, and their part, member and substance
            meronyms (the paper names WordNet only; this choice is ours).

    Raises:
        ValueError: Empty name, unknown relation, or a name WordNet does not know.
        LookupError: WordNet is not installed (how to get it).
    """
    name = check_name(name)
    unknown = set(relations) - set(RELATIONS)
    if unknown:
        raise ValueError(f"relations: unknown {sorted(unknown)}; choose from {RELATIONS}")
    synsets = load_wordnet().synsets(name.replace(" ", "_"), pos="n")
    if not synsets:
        raise ValueError(f"object: {name!r} is not a noun in WordNet; give another object name")
    related = {
        "synonyms": lambda s: [s],
        "hypernyms": lambda s: s.hypernyms(),
        "hyponyms": lambda s: s.hyponyms(),
        "meronyms": lambda s: s.part_meronyms() + s.member_meronyms() + s.substance_meronyms(),
    }
    words = {
        lemma.replace("_", " ")
        for synset in synsets
        for relation in relations
        for other in related[relation](synset)
        for lemma in other.lemma_names()
    }
    words.discard(name)
    return sorted(words)


def candidate_prompts(name: str, words: Sequence[str], template: str = TEMPLATE) -> list[str]:
    """``S_t = "a {W^o} with {W_t}"`` for every word (§4.1.1)."""
    name = check_name(name)
    return [template.format(object=name, word=word) for word in words]


def image_feature(features: torch.Tensor) -> torch.Tensor:
    """``f(I^o)`` of several images: the normalised mean of their normalised CLIP features (our reading).

    Raises:
        ValueError: No images.
    """
    if features.ndim != 2 or len(features) == 0:
        raise ValueError("images: at least one image is needed")
    return F.normalize(F.normalize(features.float(), dim=-1).mean(0), dim=0)


def outlier_mask(
    image: torch.Tensor, texts: torch.Tensor, threshold: float = 0.5, keep: Literal["far", "near"] = "far"
) -> torch.Tensor:
    """Distance-based outlier removal of §4.1.1: which prompts form ``S^p``.

    Args:
        image: ``f(I^o)``, ``[D]`` (normalised here).
        texts: ``G(S_j)``, ``[T, D]`` (normalised here).
        threshold: The paper's 0.5 on ``d = ||f(I^o) - G(S_j)||_2``.
        keep: ``"far"`` keeps ``d > threshold`` as printed in the paper; ``"near"`` keeps
            ``d <= threshold`` (the other reading of "outlier").

    Returns:
        Boolean ``[T]``, ``True`` for prompts kept in ``S^p``.
    """
    if keep not in ("far", "near"):
        raise ValueError(f"keep: must be 'far' or 'near', got {keep!r}")
    distance = torch.linalg.vector_norm(
        F.normalize(texts.float(), dim=-1) - F.normalize(image, dim=0), dim=-1
    )
    return distance > threshold if keep == "far" else distance <= threshold


def best_prompt_index(
    image: torch.Tensor, texts: torch.Tensor, threshold: float = 0.5, keep: Literal["far", "near"] = "far"
) -> tuple[int, torch.Tensor]:
    """Eq. 1: ``P = argmax_{S_j in S^p} cos(f(I^o), G(S_j))``.

    Returns:
        The index of ``P`` among all candidates and every candidate's cosine similarity ``[T]``.

    Raises:
        ValueError: Every candidate is an outlier (``S^p`` is empty).
    """
    keep_mask = outlier_mask(image, texts, threshold, keep)
    if not bool(keep_mask.any()):
        raise ValueError(f"threshold: every candidate prompt is an outlier at {threshold} (keep={keep!r})")
    cosine = F.normalize(texts.float(), dim=-1) @ F.normalize(image, dim=0)
    return int(torch.where(keep_mask, cosine, -torch.inf).argmax()), cosine


@dataclass(frozen=True)
class PromptChoice:
    """The keyword-to-prompt generator's result.

    Attributes:
        prompt: The best prompt ``P``.
        candidates: Every candidate ``S_t``.
        cosine: Each candidate's cosine similarity to ``f(I^o)``.
        kept: Whether each candidate is in ``S^p``.
    """

    prompt: str
    candidates: tuple[str, ...]
    cosine: tuple[float, ...]
    kept: tuple[bool, ...]


def choose_prompt(
    clip,
    name: str,
    images: Sequence[Image.Image],
    relations: Sequence[str] = RELATIONS,
    threshold: float = 0.5,
    keep: Literal["far", "near"] = "far",
) -> PromptChoice:
    """The keyword-to-prompt generator: WordNet words of ``name`` → prompts → Eq. 1 on ``images``.

    Args:
        clip: :class:`nandlib.backbones.ClipBackbone` (``f`` and ``G``).
        name: Object name ``W^o``.
        images: The given normal images ``I^o`` (or, for NAND, examples of the new normality).
        relations, threshold, keep: See :func:`word_set` and :func:`outlier_mask`.

    Raises:
        ValueError: Empty name, unknown word, no images.
    """
    from nandlib.tgvig.images import check_images

    check_images(images)
    return score_prompts(
        clip, encodable(clip, candidate_prompts(name, word_set(name, relations))), images, threshold, keep
    )


def score_prompts(
    clip,
    candidates: Sequence[str],
    images: Sequence[Image.Image],
    threshold: float = 0.5,
    keep: Literal["far", "near"] = "far",
) -> PromptChoice:
    """The outlier rule and Eq. 1 over ``candidates`` for ``images``, with CLIP's ``f`` and ``G``."""
    image = image_feature(clip_image_features(clip, images))
    texts = clip.unit_text_embeddings(list(candidates)).cpu()
    index, cosine = best_prompt_index(image, texts, threshold, keep)
    return PromptChoice(
        candidates[index],
        tuple(candidates),
        tuple(cosine.tolist()),
        tuple(outlier_mask(image, texts, threshold, keep).tolist()),
    )


class KeywordPromptGenerator:
    """NAND's :class:`~nandlib.prompts.generators.PromptGenerator` from the keyword-to-prompt generator.

    A group's candidate words are its keyword (the group name, underscores read as spaces) and the WordNet
    words of it; their prompts ``"a {class} with {word}"`` are ranked by Eq. 1 (outliers removed) against
    images: examples of the new normality when given, else the class's images (``images(class_name,
    group)`` chooses). A phrase is the scored prompt without its article, ``"{class} with {word}"``: NAND's
    templates put it after ``"a photo of a"``, as the shipped phrases (``"carpet with a cut"``).

    Args:
        clip: :class:`nandlib.backbones.ClipBackbone`.
        images: ``(class_name, group) -> images`` the phrases are scored against.
        top_k: Phrases returned per group.
        relations, threshold, keep: See :func:`word_set` and :func:`outlier_mask`.
    """

    def __init__(
        self,
        clip,
        images,
        top_k: int = 3,
        relations: Sequence[str] = RELATIONS,
        threshold: float = 0.5,
        keep: Literal["far", "near"] = "far",
    ) -> None:
        if top_k < 1:
            raise ValueError(f"top_k: must be a positive integer, got {top_k!r}")
        unknown = set(relations) - set(RELATIONS)
        if unknown:
            raise ValueError(f"relations: unknown {sorted(unknown)}; choose from {RELATIONS}")
        self.clip, self.images, self.top_k = clip, images, top_k
        self.relations, self.threshold, self.keep = relations, threshold, keep

    def candidates(self, class_name: str, group: str) -> list[str]:
        """The prompts Eq. 1 ranks for ``group``: ``"a {class} with {word}"`` for the keyword and its
        WordNet words (the keyword alone where WordNet does not know it, e.g. ``"gray stroke"``), those the
        text encoder reads.

        Raises:
            ValueError: Empty names, or a text encoder that reads none of them.
        """
        keyword = check_name(group, "group")
        try:
            words = word_set(keyword, self.relations)
        except ValueError:  # relations are checked in __init__: WordNet does not know the keyword
            words = []
        return encodable(self.clip, candidate_prompts(class_name, [keyword, *words]))

    def phrases(self, class_name: str, group: str) -> list[str]:
        """The ``top_k`` best phrases for ``group`` of ``class_name`` (kept in ``S^p``, by cosine)."""
        from nandlib.tgvig.images import check_images

        prompts = self.candidates(class_name, group)
        images = self.images(class_name, group)
        check_images(images)
        choice = score_prompts(self.clip, prompts, images, self.threshold, self.keep)
        ranked = sorted((i for i, kept in enumerate(choice.kept) if kept), key=lambda i: -choice.cosine[i])
        return [choice.candidates[i].removeprefix("a ") for i in ranked[: self.top_k]]


def encodable(clip, prompts: Sequence[str]) -> list[str]:
    """The prompts ``clip``'s tokenizer can encode (all, for BPE; the toy CLIP knows only its own words).

    Raises:
        ValueError: None of them, naming the tokenizer's complaint about the first.
    """
    from nandlib.backbones import tokenize

    kept, first = [], None
    for prompt in prompts:
        try:
            tokenize(clip.tokenizer, [prompt])
        except ValueError as error:
            first = first or error
            continue
        kept.append(prompt)
    if not kept:
        raise ValueError(
            f"object: the text encoder knows none of the {len(prompts)} candidate prompts ({first})"
        )
    return kept


@torch.no_grad()
def clip_image_features(clip, images: Sequence[Image.Image], batch_size: int = 64) -> torch.Tensor:
    """Normalised CLIP image features ``f(I)`` ``[N, D]`` on the CPU."""
    features = []
    for start in range(0, len(images), batch_size):
        batch = clip.preprocess(images[start : start + batch_size])
        with clip.autocast():
            features.append(clip.model.encode_image(batch).float().cpu())
    return F.normalize(torch.cat(features), dim=-1)
