"""The toy CLIP's word tokenizer, its vocabulary file and its loading through load_clip."""

from __future__ import annotations

import pytest
import torch

from nandlib.backbones import CONFIG_DIR, load_clip
from nandlib.toy.tokenizer import WordTokenizer, vocabulary_of, words
from nandlib.toy.world import vocabulary_texts


def test_words_keep_compounds_and_punctuation() -> None:
    assert words("A close-up photo of the metal_nut.") == [
        "a",
        "close-up",
        "photo",
        "of",
        "the",
        "metal_nut",
        ".",
    ]


def test_ids_follow_clip_convention() -> None:
    tokenizer = WordTokenizer(["a", "carpet", "hole"], context_length=6)
    ids = tokenizer(["a carpet", "a carpet hole a carpet"])
    # start = 4, end = 5 (largest id: open_clip pools the text at the argmax), padding 0, cut keeps the end
    assert ids.tolist() == [[4, 1, 2, 5, 0, 0], [4, 1, 2, 3, 1, 5]]
    assert tokenizer.vocab_size == 6


def test_unknown_word_is_named() -> None:
    tokenizer = WordTokenizer(["a", "carpet"], context_length=8)
    with pytest.raises(ValueError, match="unknown word 'zebra'"):
        tokenizer(["a carpet", "a zebra"])


def test_shipped_vocabulary_covers_every_prompt_table() -> None:
    shipped = (CONFIG_DIR / "nand-toy.vocab.txt").read_text().split()
    assert vocabulary_of(vocabulary_texts()) == shipped


@pytest.mark.parametrize("model", ["nand-toy", "nand-toy-p4", "nand-toy-w192"])
def test_load_clip_uses_the_word_tokenizer_and_rejects_unknown_words(model) -> None:
    backbone = load_clip(model)  # the variants share nand-toy's vocabulary
    assert isinstance(backbone.tokenizer, WordTokenizer)
    assert backbone.tokenizer.vocabulary == load_clip("nand-toy").tokenizer.vocabulary
    assert backbone.tokenizer.vocab_size == backbone.model.vocab_size
    assert backbone.encode_text(["a photo of a carpet with a hole."]).shape == (1, 128)
    with pytest.raises(ValueError, match="'unicorn'"):
        backbone.text_feature(["a photo of a unicorn carpet."])


def test_unknown_model_config_is_refused() -> None:
    with pytest.raises(ValueError, match="nand-toy-missing"):
        load_clip("nand-toy-missing")


def test_checkpoint_round_trip(tmp_path) -> None:
    from nandlib.toy.clip_training import save_clip

    backbone = load_clip("nand-toy", seed=3)
    path = save_clip(backbone, tmp_path / "clip.pt")
    again = load_clip("nand-toy", checkpoint=path)
    prompt = ["a photo of a flawless carpet."]
    assert torch.equal(backbone.encode_text(prompt), again.encode_text(prompt))
    assert again.weights.startswith(f"checkpoint:{path}")
