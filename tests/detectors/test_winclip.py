"""WinCLIP: anomalib's unit-test numbers, brute-force checks and golden values of a seeded tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.exceptions import NotFittedError
from torch import nn

from nandlib.backbones import load_clip
from nandlib.detectors.winclip import WinCLIP
from nandlib.detectors.winclip.prompts import prompt_ensemble
from nandlib.detectors.winclip.scoring import (
    class_probabilities,
    few_shot_map,
    harmonic_aggregation,
    make_window_masks,
    visual_association_score,
    zero_shot_scores,
)
from nandlib.detectors.winclip.windows import encode_images

# anomalib tests/unit/models/image/winclip/test_utils.py: 3x3 grid, four 2x2 windows.
MASKS_3X3_K2 = [[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]]


@pytest.fixture(scope="module")
def backbone():
    return load_clip("nand-tiny-p16", seed=0)


def _image(seed: int, size: tuple[int, int] = (96, 80)) -> Image.Image:
    """A fixed generated RGB image: smooth ramps plus seeded noise."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0 : size[1], 0 : size[0]]
    ramps = np.stack([xs * 255 / size[0], ys * 255 / size[1], (xs + ys) * 127 / sum(size)], axis=-1)
    pixels = np.clip(ramps + rng.normal(0, 30, ramps.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


# ---------------------------------------------------------------- scoring (anomalib's own examples)


def test_make_window_masks_matches_anomalib_example():
    assert make_window_masks((3, 3), 2).tolist() == MASKS_3X3_K2


def test_make_window_masks_counts_on_vit_b16_plus_grid():
    assert make_window_masks((15, 15), 2).shape == (4, 196)
    assert make_window_masks((15, 15), 3).shape == (9, 169)
    assert make_window_masks((15, 15), 3)[:, 13].tolist() == [15, 16, 17, 30, 31, 32, 45, 46, 47]


def test_make_window_masks_rejects_window_larger_than_grid():
    with pytest.raises(ValueError, match="exceeds the patch grid"):
        make_window_masks((2, 4), 3)


def test_harmonic_aggregation_matches_anomalib_example():
    out = harmonic_aggregation(torch.tensor([[1.0, 0.75, 0.5, 0.25]]), (3, 3), torch.tensor(MASKS_3X3_K2))
    expected = torch.tensor([[[1.0, 0.8571, 0.75], [0.6667, 0.48, 0.375], [0.5, 0.3333, 0.25]]])
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("kernel", [2, 3])
def test_harmonic_aggregation_matches_per_cell_loop(kernel):
    masks = make_window_masks((6, 5), kernel)
    scores = torch.rand(2, masks.shape[1], generator=torch.Generator().manual_seed(kernel)) + 0.05
    expected = torch.empty(2, 30)
    for cell in range(30):
        covering = (masks == cell).any(dim=0)
        expected[:, cell] = covering.sum() / (1 / scores[:, covering]).sum(dim=1)
    torch.testing.assert_close(harmonic_aggregation(scores, (6, 5), masks), expected.reshape(2, 6, 5))


def test_class_probabilities_matches_anomalib_example():
    images = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    text = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    expected = torch.tensor([[0.3302, 0.6698], [0.5727, 0.4273]])
    probabilities = class_probabilities(images, text, temperature=1.0)
    torch.testing.assert_close(probabilities, expected, atol=1e-4, rtol=0)


def test_visual_association_score_matches_anomalib_example():
    queries = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    references = torch.tensor([[[0.0, 1.0, 0.0], [1.0, 1.0, 0.0]]])
    expected = torch.tensor([[0.1464, 0.0]])
    torch.testing.assert_close(visual_association_score(queries, references), expected, atol=1e-4, rtol=0)


def test_visual_association_score_matches_brute_force():
    generator = torch.Generator().manual_seed(1)
    queries, references = torch.randn(2, 5, 4, generator=generator), torch.randn(3, 6, 4, generator=generator)
    expected = torch.empty(2, 5)
    pooled = references.reshape(-1, 4)
    for b in range(2):
        for n in range(5):
            similarities = [torch.cosine_similarity(queries[b, n], ref, dim=0) for ref in pooled]
            expected[b, n] = min((1 - similarity) / 2 for similarity in similarities)
    torch.testing.assert_close(visual_association_score(queries, references), expected)


# ---------------------------------------------------------------- prompts


def test_prompt_ensemble_counts_order_and_raw_class_name():
    normal, anomalous = prompt_ensemble("metal_nut")
    assert (len(normal), len(anomalous)) == (147, 84)
    assert normal[0] == "a cropped photo of the metal_nut."
    assert normal[21] == "a cropped photo of the flawless metal_nut."  # state-major: state 2, template 1
    assert anomalous[-1] == "a photo of a metal_nut with damage for anomaly detection."
    assert normal[7] == normal[8] == "a jpeg corrupted photo of the metal_nut."  # anomalib's duplicate, kept


# ---------------------------------------------------------------- embeddings


def _tokens_by_hand(visual: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Tokens entering the tower: conv1 patches after the class token, plus all positional embeddings."""
    patches = visual.conv1(pixels).flatten(2).transpose(1, 2)
    class_token = visual.class_embedding.expand(len(pixels), 1, -1)
    return torch.cat([class_token, patches], dim=1) + visual.positional_embedding


def _window_by_hand(visual: nn.Module, pixels: torch.Tensor, cells: list[int]) -> torch.Tensor:
    """One window through the visual tower written out: selected tokens, blocks, ln_post, proj."""
    x = visual.ln_pre(_tokens_by_hand(visual, pixels)[:, [0] + [cell + 1 for cell in cells]])
    for block in visual.transformer.resblocks:
        assert block.attn.batch_first  # open_clip >= 2.26.1: blocks take [N, L, C]
        x = block(x)
    return visual.ln_post(x[:, 0]) @ visual.proj


@torch.no_grad()
def test_window_embeddings_differ_and_equal_single_window_computation(backbone):
    visual = backbone.model.visual
    pixels = backbone.preprocess([_image(0), _image(1)])
    masks = [make_window_masks((15, 15), 2), make_window_masks((15, 15), 3)]
    embeddings = encode_images(visual, pixels, masks, window_batch_size=50)
    assert [w.shape for w in embeddings.windows] == [(2, 196, 32), (2, 169, 32)]
    for windows in embeddings.windows:
        distances = torch.cdist(windows[1], windows[1])
        assert distances[~torch.eye(len(distances), dtype=torch.bool)].min() > 1e-4
    for scale, mask in enumerate(masks):
        for window in (0, 37, mask.shape[1] - 1):
            expected = _window_by_hand(visual, pixels[1:], mask[:, window].tolist())
            got = embeddings.windows[scale][1, window]
            torch.testing.assert_close(got, expected[0], atol=1e-5, rtol=1e-4)


class _SequenceFirst(nn.Module):
    """The residual stack as open_clip <= 2.24 exposes it: [L, N, C] in, no ``batch_first`` attribute."""

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        self.inner = transformer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.transpose(0, 1)).transpose(0, 1)


@torch.no_grad()
def test_window_embeddings_same_for_sequence_first_transformer(backbone):
    visual = backbone.model.visual
    pixels = backbone.preprocess([_image(0)])
    masks = [make_window_masks((15, 15), 2)]
    reference = encode_images(visual, pixels, masks, window_batch_size=4096).windows[0]
    batch_first = visual.transformer
    visual.transformer = _SequenceFirst(batch_first)  # pytest's monkeypatch cannot restore nn.Module children
    try:
        sequence_first = encode_images(visual, pixels, masks, window_batch_size=64).windows[0]
    finally:
        visual.transformer = batch_first
    torch.testing.assert_close(sequence_first, reference)


@torch.no_grad()
def test_full_image_embedding_and_patch_tokens(backbone):
    visual = backbone.model.visual
    pixels = backbone.preprocess([_image(2)])
    embeddings = encode_images(visual, pixels, [], window_batch_size=8)
    torch.testing.assert_close(embeddings.image, backbone.model.encode_image(pixels))
    x = visual.transformer(visual.ln_pre(_tokens_by_hand(visual, pixels)))
    torch.testing.assert_close(embeddings.patches, visual.ln_post(x)[:, 1:])
    assert embeddings.patches.shape == (1, 225, 64)
    assert visual.output_tokens is False  # restored for other detectors sharing the backbone
    assert not visual.patch_dropout._forward_pre_hooks


def test_text_embeddings_are_means_of_raw_sentence_embeddings(backbone):
    normal, anomalous = prompt_ensemble("bottle")
    text = WinCLIP(backbone, "bottle").text_embeddings
    torch.testing.assert_close(text[0], backbone.encode_text(normal).mean(dim=0))
    torch.testing.assert_close(text[1], backbone.encode_text(anomalous).mean(dim=0))
    assert not torch.allclose(text.norm(dim=-1), torch.ones(2))


# ---------------------------------------------------------------- detector


def test_zero_shot_map_is_harmonic_mean_of_image_and_scale_maps(backbone):
    detector = WinCLIP(backbone, "bottle").fit([])
    embeddings = detector._embed([_image(3)])
    text = detector.text_embeddings
    scores, grid_map = zero_shot_scores(embeddings, text, detector.masks, (15, 15), 0.07)
    image_score = torch.softmax(torch.cosine_similarity(embeddings.image, text, dim=-1) / 0.07, dim=0)[1]
    torch.testing.assert_close(scores[0], image_score)
    per_scale = [
        harmonic_aggregation(class_probabilities(w, text, 0.07)[..., 1], (15, 15), m)
        for w, m in zip(embeddings.windows, detector.masks, strict=True)
    ]
    expected = 3 / (1 / image_score + 1 / per_scale[0] + 1 / per_scale[1])
    torch.testing.assert_close(grid_map, expected)
    prediction = detector.predict([_image(3)])
    assert prediction.maps.shape == (1, 240, 240) and prediction.maps.dtype == torch.float32
    torch.testing.assert_close(prediction.scores, scores.float())
    upsampled = F.interpolate(grid_map[:, None], size=240, mode="bilinear", align_corners=False)
    torch.testing.assert_close(prediction.maps, upsampled[:, 0])
    assert prediction.maps[0, 0, 0] == pytest.approx(grid_map[0, 0, 0].item(), abs=1e-6)  # corners clamp


def test_few_shot_map_is_zero_for_a_reference_image(backbone):
    images = [_image(10), _image(11), _image(12)]
    detector = WinCLIP(backbone, "bottle", k_shot=1, seed=0).fit(images)
    (reference,) = detector.reference_indices_
    embeddings = detector._embed([images[reference]])
    few = few_shot_map(embeddings, detector.references_, detector.masks, detector.grid)
    assert few.abs().max() < 1e-5
    zero_scores, zero_map = zero_shot_scores(
        embeddings, detector.text_embeddings, detector.masks, detector.grid, detector.temperature
    )
    prediction = detector.predict([images[reference]])
    torch.testing.assert_close(prediction.scores, zero_scores / 2, atol=1e-5, rtol=0)
    assert prediction.maps.max() <= zero_map.max() / 2 + 1e-5


def test_fit_chooses_references_by_seed_and_reads_only_them(backbone):
    class Recording(list):
        read: list[int] = []

        def __getitem__(self, index):
            self.read.append(index)
            return super().__getitem__(index)

    images = Recording(_image(20 + i, size=(32, 32)) for i in range(8))
    detector = WinCLIP(backbone, "bottle", k_shot=2, seed=5).fit(images)
    expected = tuple(sorted(np.random.default_rng(5).choice(8, size=2, replace=False).tolist()))
    assert detector.reference_indices_ == expected
    assert sorted(Recording.read) == list(expected)
    assert WinCLIP(backbone, "bottle", k_shot=2, seed=5).fit(images).reference_indices_ == expected


def test_fit_errors_and_zero_shot_ignores_images(backbone):
    with pytest.raises(ValueError, match="k_shot=5 exceeds the 2 images"):
        WinCLIP(backbone, "bottle", k_shot=5).fit([_image(0), _image(1)])
    with pytest.raises(ValueError, match="got none"):
        WinCLIP(backbone, "bottle", k_shot=1).fit([])
    with pytest.raises(NotFittedError, match="call fit"):
        WinCLIP(backbone, "bottle", k_shot=1).predict([_image(0)])
    assert WinCLIP(backbone, "bottle").fit([]).reference_indices_ == ()
    with pytest.raises(ValueError, match="scales"):
        WinCLIP(backbone, "bottle", scales=(2, 16))
    with pytest.raises(ValueError, match="class_name"):
        WinCLIP(backbone, " ")


def test_batching_does_not_change_results_and_reruns_are_identical(backbone):
    train, test = [_image(30), _image(31), _image(32)], [_image(40), _image(41)]
    first = WinCLIP(backbone, "bottle", k_shot=2, seed=1, batch_size=1, window_batch_size=100).fit(train)
    second = WinCLIP(backbone, "bottle", k_shot=2, seed=1, batch_size=2).fit(train)
    a, b = first.predict(test), second.predict(test)
    torch.testing.assert_close(a.maps, b.maps, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.scores, b.scores, atol=1e-6, rtol=0)
    assert torch.equal(first.predict(test).maps, a.maps)


@pytest.mark.parametrize(
    ("k_shot", "golden"),
    [
        (0, (0.6185, 0.5899, 0.6836, 0.6680)),
        (1, (0.3546, 0.3065, 0.3634, 0.3457)),
    ],
)
def test_golden_values_of_seeded_tiny_model(backbone, k_shot, golden):
    detector = WinCLIP(backbone, "bottle", k_shot=k_shot, seed=0).fit([_image(50), _image(51)])
    prediction = detector.predict([_image(60)])
    maps = prediction.maps[0]
    got = (prediction.scores[0].item(), maps.mean().item(), maps.max().item(), maps[100, 37].item())
    assert got == pytest.approx(golden, abs=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("k_shot", [0, 1])
def test_cuda_matches_cpu(k_shot):
    train, test = [_image(50), _image(51)], [_image(60), _image(61)]
    results = []
    for device in ("cpu", "cuda"):
        backbone = load_clip("nand-tiny-p16", seed=0, device=device)
        results.append(WinCLIP(backbone, "bottle", k_shot=k_shot).fit(train).predict(test))
    cpu, cuda = results
    assert cuda.maps.device.type == "cpu" and cuda.maps.dtype == torch.float32
    torch.testing.assert_close(cuda.maps, cpu.maps, atol=2e-3, rtol=0)  # cuDNN may convolve in TF32
    torch.testing.assert_close(cuda.scores, cpu.scores, atol=2e-3, rtol=0)
