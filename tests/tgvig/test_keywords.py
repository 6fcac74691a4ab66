"""Keyword-to-prompt generator (Eq. 1): the outlier rule and the argmax on hand-built embeddings; WordNet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nandlib.tgvig.keywords import best_prompt_index, candidate_prompts, image_feature, outlier_mask, word_set
from nandlib.tgvig.wordnet import DEBIAN_DIR, LEXNAMES, lexnames_text, prepare_wordnet

# .ci/run installs Debian's wordnet-base, so these run in CI; elsewhere they need it (or nltk's download).
needs_wordnet = pytest.mark.skipif(
    not (DEBIAN_DIR / "data.noun").is_file(), reason="WordNet: apt-get install wordnet-base"
)


def unit(*values: float) -> torch.Tensor:
    vector = torch.tensor(values, dtype=torch.float32)
    return vector / vector.norm()


def test_outlier_rule_and_argmax_pick_the_known_prompt() -> None:
    image = unit(1, 0, 0)
    texts = torch.stack([
        unit(1, 0.1, 0),   # cos 0.995, d 0.10: nearest, an "outlier" under the printed rule d > 0.5
        unit(1, 0.8, 0),   # cos 0.781, d 0.66: kept, the best of S^p
        unit(1, 1.5, 0),   # cos 0.555, d 0.94: kept
        unit(0, 1, 0),     # cos 0,     d 1.41: kept
    ])  # fmt: skip
    assert outlier_mask(image, texts).tolist() == [False, True, True, True]
    index, cosine = best_prompt_index(image, texts)
    assert index == 1
    assert cosine[0] == pytest.approx(0.995, abs=1e-3)
    # the other reading keeps the near ones: then the nearest wins
    assert outlier_mask(image, texts, keep="near").tolist() == [True, False, False, False]
    assert best_prompt_index(image, texts, keep="near")[0] == 0


def test_every_prompt_an_outlier_is_an_error() -> None:
    with pytest.raises(ValueError, match="threshold"):
        best_prompt_index(unit(1, 0), torch.stack([unit(1, 0.01)]))


def test_image_feature_is_the_normalised_mean_and_needs_images() -> None:
    features = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    assert torch.allclose(image_feature(features), unit(1, 1))
    with pytest.raises(ValueError, match="images"):
        image_feature(torch.empty(0, 2))


def test_candidate_prompts_follow_the_paper_template_and_refuse_empty_names() -> None:
    assert candidate_prompts("metal_nut", ["bolt"]) == ["a metal nut with bolt"]
    with pytest.raises(ValueError, match="object"):
        candidate_prompts("  ", ["bolt"])


def test_lexnames_has_the_man_page_table() -> None:
    lines = lexnames_text().splitlines()
    assert len(lines) == len(LEXNAMES) == 45
    assert (
        lines[0] == "00\tadj.all\t3" and lines[6] == "06\tnoun.artifact\t1" and lines[44] == "44\tadj.ppl\t3"
    )


def test_missing_wordnet_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base"):
        prepare_wordnet(tmp_path / "nowhere", tmp_path / "nltk")


@needs_wordnet
def test_hazelnut_expands_to_the_papers_cobnut() -> None:
    words = word_set("hazelnut")
    assert "cobnut" in words and "filbert" in words and "hazelnut" not in words
    assert "cobnut" not in word_set("hazelnut", relations=("hypernyms",))


@needs_wordnet
def test_unknown_word_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not a noun in WordNet"):
        word_set("qwzzxlnut")
    with pytest.raises(ValueError, match="relations"):
        word_set("hazelnut", relations=("antonyms",))


@needs_wordnet
def test_choose_prompt_scores_the_encodable_candidates_by_eq1() -> None:
    """The toy CLIP (random weights) reads only its own words: screw's candidates it knows are kept."""
    from nandlib.backbones import load_clip
    from nandlib.data.synthetic import render_sample
    from nandlib.tgvig.keywords import choose_prompt, clip_image_features

    clip = load_clip("nand-toy", image_size=64)
    images = [render_sample("screw", "good", np.random.default_rng(i), 64)[0] for i in range(2)]
    choice = choose_prompt(clip, "screw", images)
    assert "a screw with bolt" in choice.candidates and "a screw with Allen screw" not in choice.candidates
    image = image_feature(clip_image_features(clip, images))
    texts = clip.unit_text_embeddings(list(choice.candidates)).cpu()
    assert choice.prompt == choice.candidates[best_prompt_index(image, texts)[0]]
    with pytest.raises(ValueError, match="knows none"):
        choose_prompt(clip, "hazelnut", images)


@needs_wordnet
def test_keyword_prompt_generator_gives_nand_the_best_words_of_a_group() -> None:
    from nandlib.backbones import load_clip
    from nandlib.data.synthetic import render_sample
    from nandlib.tgvig.keywords import KeywordPromptGenerator, encodable, score_prompts

    clip = load_clip("nand-toy", image_size=64)
    images = [render_sample("screw", "good", np.random.default_rng(i), 64)[0] for i in range(2)]
    generator = KeywordPromptGenerator(clip, lambda class_name, group: images, top_k=2)
    phrases = generator.phrases("screw", "scratch")
    words = ["scratch", *word_set("scratch")]
    choice = score_prompts(clip, encodable(clip, candidate_prompts("screw", words)), images)
    kept = zip(choice.cosine, choice.candidates, choice.kept, strict=True)
    best = sorted(((c, p) for c, p, k in kept if k), reverse=True)[:2]
    assert phrases == [prompt.removeprefix("a ") for _, prompt in best]
    assert all(phrase.startswith("screw with ") for phrase in phrases)
