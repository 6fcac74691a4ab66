"""The toy CLIP's contrastive training: multi-positive loss, loss decrease, bit-identical reruns."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nandlib.backbones import load_clip
from nandlib.toy.clip_training import TOY_MODEL, ClipTraining, _encode_text, multi_positive_loss, train_clip
from nandlib.toy.world import clip_images


def test_one_positive_per_row_is_clip_infonce() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.3], [0.2, -0.4, 3.0]])
    clip = (F.cross_entropy(logits, torch.arange(3)) + F.cross_entropy(logits.T, torch.arange(3))) / 2
    assert torch.allclose(multi_positive_loss(logits, torch.eye(3, dtype=torch.bool)), clip)


def test_duplicate_captions_count_as_positives() -> None:
    # images 0 and 1 show the same thing; captions 0 and 1 say it twice; caption 2 is something else
    logits = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    positives = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    e = math.e
    row_dup = -math.log(e / (2 * e + 1))  # either duplicate, each half of the target
    row_other = -math.log(e / (e + 2))
    expected = (2 * row_dup + row_other) / 3  # same by symmetry for the caption direction
    assert multi_positive_loss(logits, positives).item() == pytest.approx(expected, rel=1e-6)
    # the optimum differs: we prefer each image equally close to both true captions, InfoNCE separates them
    diagonal, equal = 3 * torch.eye(3), torch.tensor([[3.0, 3.0, 0.0], [3.0, 3.0, 0.0], [0.0, 0.0, 3.0]])
    plain = torch.eye(3, dtype=torch.bool)
    assert multi_positive_loss(equal, positives) < multi_positive_loss(diagonal, positives) - 0.5
    assert multi_positive_loss(equal, plain) > multi_positive_loss(diagonal, plain) + 0.3


def test_rows_without_positive_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        multi_positive_loss(torch.zeros(2, 2), torch.tensor([[True, False], [False, False]]))


def test_training_text_cut_to_the_longest_caption_keeps_features_and_gradients() -> None:
    backbone = load_clip(TOY_MODEL, seed=3)
    model = backbone.model.train()
    texts = ["a photo of a flawless carpet.", "a cropped photo of the carpet with a loose thread."]
    tokens = backbone.tokenizer(texts)
    assert int(tokens.argmax(dim=-1).max()) + 1 < tokens.shape[1]  # there is padding to cut
    direction = torch.randn(2, backbone.embed_dim, generator=torch.Generator().manual_seed(0))
    features, gradients = [], []
    encoders = {"cut": lambda: _encode_text(backbone, texts), "whole": lambda: model.encode_text(tokens)}
    for encode in encoders.values():
        model.zero_grad()
        features.append(F.normalize(encode(), dim=-1))
        (features[-1] * direction).sum().backward()
        gradients.append(model.token_embedding.weight.grad.clone())
    assert torch.allclose(features[0], features[1], atol=1e-5)
    assert torch.allclose(gradients[0], gradients[1], atol=1e-5)
    assert gradients[0].abs().sum() > 0


def _tiny_run():
    data = clip_images(seed=0, per_class=8, classes=["carpet", "fabric", "coin", "bottle"])
    config = ClipTraining(steps=12, batch_size=16, lr=3e-3, warmup=1, seed=5)
    return train_clip(data, config)


def test_short_training_lowers_loss_and_is_bit_identical() -> None:
    torch.set_num_threads(1)
    first, losses = _tiny_run()
    second, again = _tiny_run()
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.2
    assert losses == again
    for (name, a), (_, b) in zip(
        first.model.state_dict().items(), second.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_batches_hold_few_classes_and_whole_pairs() -> None:
    import numpy as np

    from nandlib.toy.clip_training import batch_indices

    keys = [(c, "good" if i % 2 == 0 else "hole") for c in ("a", "b", "c", "d") for i in range(6)]
    index = batch_indices(keys, 8, 2, np.random.default_rng(0))
    assert len(index) == 8 and len({keys[i][0] for i in index}) == 2
    pairs = sorted(index.tolist())
    assert all(pairs[k] % 2 == 0 and pairs[k + 1] == pairs[k] + 1 for k in range(0, 8, 2))
    uniform = batch_indices(keys, 8, None, np.random.default_rng(0))
    assert len(set(uniform.tolist())) == 8


def test_dense_loss_picks_each_patch_its_own_state() -> None:
    from nandlib.toy.clip_training import dense_loss

    # one image, three patches: clean, defective, partly covered (left out); captions: good, hole, cut
    text = torch.eye(3)
    patches = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    cover = torch.tensor([[0.0, 0.5, 0.05]])
    positives = torch.tensor([[[True, False, False]], [[False, True, False]]])
    e = math.e
    right = -math.log(e / (e + 2))  # each kept patch on its own caption
    assert dense_loss(patches, cover, text, positives, min_cover=0.1).item() == pytest.approx(right, rel=1e-6)
    # the partly covered patch (here on "cut") is ignored; swapping the defective patch to "cut" costs
    swapped = patches.clone()
    swapped[0, 1] = torch.tensor([0.0, 0.0, 1.0])
    wrong = -math.log(1 / (e + 2))
    expected = (right + wrong) / 2  # clean and defective patches weigh half each
    loss = dense_loss(swapped, cover, text, positives, min_cover=0.1).item()
    assert loss == pytest.approx(expected, rel=1e-6)


def test_dense_loss_weighs_clean_and_defective_patches_equally() -> None:
    from nandlib.toy.clip_training import dense_loss

    text = torch.eye(2)
    cover = torch.tensor([[0.0, 0.0, 0.0, 1.0]])  # three clean patches, one defective
    positives = torch.tensor([[[True, False]], [[False, True]]])
    bad_defect = torch.tensor([[[1.0, 0.0]] * 4])  # every patch looks clean
    e = math.e
    expected = (-math.log(e / (e + 1)) + -math.log(1 / (e + 1))) / 2
    assert dense_loss(bad_defect, cover, text, positives, min_cover=0.1).item() == pytest.approx(expected)


def test_dense_columns_rank_a_types_patches_above_other_defects() -> None:
    from nandlib.toy.clip_training import dense_loss

    # a hole image and a thread image, one defective patch each; captions: hole, thread. Each patch picks
    # its own caption, but the strong hole patch says "thread" more than the thin thread patch does.
    text = torch.eye(2)
    patches = torch.tensor([[[2.0, 1.8]], [[0.5, 1.0]]])
    cover = torch.ones(2, 1)
    positives = torch.tensor([[[False, False], [False, False]], [[True, False], [False, True]]])

    def ce(logits: list[float], right: int) -> float:
        return -math.log(math.exp(logits[right]) / sum(math.exp(x) for x in logits))

    rows = (ce([2.0, 1.8], 0) + ce([0.5, 1.0], 1)) / 2
    columns = (ce([2.0, 0.5], 0) + ce([1.8, 1.0], 1)) / 2  # per caption, over the two patches
    assert dense_loss(patches, cover, text, positives, 0.1).item() == pytest.approx(rows, rel=1e-6)
    both = dense_loss(patches, cover, text, positives, 0.1, column_weight=0.5).item()
    assert both == pytest.approx(rows + 0.5 * columns, rel=1e-6)


def test_text_contrast_finds_the_other_draw_of_the_same_state() -> None:
    from nandlib.toy.clip_training import text_contrast_loss

    # two draws each of "hole" and "thread"; the draws of a state agree, the states are orthogonal
    keys = [("carpet", "hole"), ("carpet", "thread"), ("carpet", "hole"), ("carpet", "thread")]
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    e = math.e
    apart = -math.log(e / (e + 2))  # the twin among the three others (the caption itself is no candidate)
    assert text_contrast_loss(text, keys).item() == pytest.approx(apart, rel=1e-6)
    # one text for every state (what the image terms alone settle on) costs log 3
    collapsed = torch.tensor([[1.0, 0.0]] * 4)
    assert text_contrast_loss(collapsed, keys).item() == pytest.approx(math.log(3), rel=1e-6)


def test_text_contrast_refuses_a_state_drawn_once() -> None:
    from nandlib.toy.clip_training import text_contrast_loss

    with pytest.raises(ValueError, match="same key"):
        text_contrast_loss(torch.eye(3), [("carpet", "hole"), ("carpet", "hole"), ("carpet", "cut")])
