"""CLIP backbone: APRIL-GAN's layer taps, Eq. 3 text features, 518-px grid and position-embedding resize."""

import logging
import warnings
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F

from nandlib.backbones import PromptTruncatedWarning, default_layers, load_clip, tokenize
from nandlib.toy.tokenizer import WordTokenizer


@pytest.fixture(scope="module")
def tiny():
    return load_clip("nand-tiny-p14", seed=0)  # 224 px: 16 x 16 grid, 4 blocks


def test_random_init_518_model_has_37_by_37_grid_and_exact_gelu():
    backbone = load_clip("nand-tiny-p14", image_size=518)
    assert backbone.grid_size == (37, 37)
    assert backbone.model.visual.positional_embedding.shape == (37 * 37 + 1, 64)
    activations = {type(m) for m in backbone.model.modules()}
    assert torch.nn.GELU in activations and open_clip.transformer.QuickGELU not in activations


def test_checkpoint_resize_keeps_cls_position_and_resizes_grid_bicubic_antialiased(tiny, tmp_path):
    path = tmp_path / "tiny224.pt"
    torch.save(tiny.model.state_dict(), path)
    resized = load_clip("nand-tiny-p14", checkpoint=path, image_size=518)
    old = tiny.model.visual.positional_embedding.detach()
    new = resized.model.visual.positional_embedding.detach()
    assert torch.equal(new[0], old[0])
    grid = old[1:].reshape(1, 16, 16, -1).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(37, 37), mode="bicubic", antialias=True, align_corners=False)
    assert torch.allclose(new[1:], expected.permute(0, 2, 3, 1).reshape(37 * 37, -1), atol=1e-6)


def test_encode_image_layers_match_open_clip_intermediates_and_embedding(tiny):
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    embedding, tokens = tiny.encode_image_layers(images, (1, 2, 3, 4))
    with torch.no_grad():
        reference = tiny.model.visual.forward_intermediates(
            images, indices=[0, 1, 2, 3], output_fmt="NLC", output_extra_tokens=True
        )
        expected_embedding = tiny.model.encode_image(images)
    for ours, cls, patches in zip(
        tokens, reference["image_intermediates_prefix"], reference["image_intermediates"], strict=True
    ):
        assert ours.shape == (2, 1 + 16 * 16, 64)
        assert torch.allclose(ours, torch.cat([cls, patches], dim=1), atol=1e-5)
    assert torch.allclose(embedding, expected_embedding, atol=1e-5)


class _SequenceFirst(torch.nn.Module):
    """A batch-first block seen through a sequence-first ([L, B, W]) interface."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        return self.block(x.transpose(0, 1)).transpose(0, 1)


def test_encode_image_layers_handle_sequence_first_transformers(tmp_path):
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    backbone = load_clip("nand-tiny-p14", seed=3)
    expected = backbone.encode_image_layers(images, (2, 4))
    transformer = backbone.model.visual.transformer
    transformer.resblocks = torch.nn.ModuleList(_SequenceFirst(b) for b in transformer.resblocks)
    transformer.batch_first = False
    got = backbone.encode_image_layers(images, (2, 4))
    assert torch.allclose(got[0], expected[0], atol=1e-6)
    for a, b in zip(got[1], expected[1], strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_encode_image_layers_keep_requested_order_and_reject_bad_layers(tiny):
    images = torch.zeros(1, 3, 224, 224)
    _, forward = tiny.encode_image_layers(images, (1, 3))
    _, backward = tiny.encode_image_layers(images, (3, 1))
    assert torch.equal(forward[0], backward[1]) and not torch.equal(forward[0], forward[1])
    for bad in [(0, 1), (5,), ()]:
        with pytest.raises(ValueError, match="layers"):
            tiny.encode_image_layers(images, bad)


def test_default_layers_scale_with_depth(tiny):
    assert default_layers(24) == (6, 12, 18, 24)
    assert default_layers(12) == (3, 6, 9, 12)
    assert tiny.default_layers() == (1, 2, 3, 4)
    with pytest.raises(ValueError, match="n_blocks"):
        default_layers(3)


def test_text_feature_is_normalised_mean_of_normalised_embeddings(tiny):
    prompts = ["a photo of a bottle.", "a photo of a broken bottle.", "a bottle with a crack."]
    raw = tiny.encode_text(prompts)
    mean = (raw / raw.norm(dim=-1, keepdim=True)).mean(dim=0)
    expected = mean / mean.norm()
    assert torch.allclose(tiny.text_feature(prompts, batch_size=2), expected, atol=1e-6)
    assert not torch.allclose(expected, raw.mean(dim=0) / raw.mean(dim=0).norm(), atol=1e-4)
    with pytest.raises(ValueError, match="prompts"):
        tiny.text_feature([])


def test_text_encoding_stops_at_the_longest_prompt_and_equals_full_context(tiny, monkeypatch):
    prompts = [
        "a photo of a bottle.",
        "a flawless bottle photographed on a white table in daylight, top view.",
    ]
    tokens = tiny.tokenizer(prompts)
    full = tiny.model.encode_text(tokens)
    lengths = []
    forward = tiny.model.transformer.forward
    monkeypatch.setattr(
        tiny.model.transformer, "forward", lambda x, **kw: lengths.append(x.shape[1]) or forward(x, **kw)
    )
    truncated = tiny.encode_text(prompts)
    assert lengths == [int(tokens.argmax(dim=-1).max()) + 1] and lengths[0] < tokens.shape[1]
    assert torch.allclose(truncated, full, atol=1e-5)
    assert not torch.allclose(truncated[0], truncated[1], atol=1e-3)


def test_text_encoding_falls_back_for_towers_without_causal_eot_pooling(tiny, monkeypatch):
    prompts = ["a photo of a bottle."]
    monkeypatch.setattr(tiny.model, "text_pool_type", "last")  # pools the last position: no truncation
    called = []
    original = tiny.model.encode_text
    monkeypatch.setattr(
        tiny.model, "encode_text", lambda tokens: called.append(tokens.shape) or original(tokens)
    )
    tiny.encode_text(prompts)
    assert called == [(1, tiny.model.context_length)]


def test_half_precision_is_refused_off_cuda():
    with pytest.raises(ValueError, match="precision"):
        load_clip("nand-tiny-p14", precision="fp16")
    with pytest.raises(ValueError, match="precision"):
        load_clip("nand-tiny-p14", precision="fp8")


def test_loading_silences_only_open_clip_messages(caplog, monkeypatch):
    """open_clip's "no pretrained weights" notice is dropped; other records logged meanwhile are kept."""
    real = open_clip.create_model

    def create_and_report(*args, **kwargs):
        logging.warning("still heard")  # a root-level record from outside open_clip
        return real(*args, **kwargs)

    def from_open_clip(records):
        return [r for r in records if r.pathname.startswith(str(Path(open_clip.__file__).parent))]

    with caplog.at_level(logging.INFO):
        real("nand-tiny-p14")
    notices = {record.getMessage() for record in from_open_clip(caplog.records)}
    assert notices  # open_clip does speak when building a model without weights
    caplog.clear()
    monkeypatch.setattr(open_clip, "create_model", create_and_report)
    with caplog.at_level(logging.INFO):
        load_clip("nand-tiny-p14")
        logging.info("after loading")
    messages = [record.getMessage() for record in caplog.records]
    assert "still heard" in messages and "after loading" in messages
    assert not notices & {record.getMessage() for record in from_open_clip(caplog.records)}


def _no_warning(call):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return call()


def test_prompt_longer_than_the_context_warns_naming_it_and_the_dropped_tokens(tiny):
    fits = "a photo of a flawless bottle."
    long = "a photo of a bottle " * 20  # 100 words: 102 tokens with start and end, CLIP's BPE holds 77
    with pytest.warns(PromptTruncatedWarning) as caught:
        tiny.encode_text([fits, long])
    assert [str(w.message) for w in caught] == [
        f"prompt {long!r} has 102 tokens but the text context holds 77: its last 25 tokens are dropped and "
        "have no effect"
    ]
    exactly = "a photo of a bottle " * 15  # 75 words + start + end: fills the context, nothing is cut
    tokens = _no_warning(lambda: tokenize(tiny.tokenizer, [fits, exactly]))
    assert torch.equal(tokens, tiny.tokenizer([fits, exactly]))  # the tokens are the tokenizer's


def test_toy_word_tokenizer_prompt_cut_warns():
    tokenizer = WordTokenizer(["a", "carpet", "hole"], context_length=6)
    prompts = ["a carpet", "a carpet hole a carpet"]
    with pytest.warns(PromptTruncatedWarning, match=r"'a carpet hole a carpet' has 7 tokens .* its last 1 "):
        tokens = tokenize(tokenizer, prompts)
    assert torch.equal(tokens, tokenizer(prompts))
    _no_warning(lambda: tokenize(tokenizer, ["a carpet hole a"]))  # 6 tokens: fits exactly
