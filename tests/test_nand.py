"""NAND: the ND module's suppression map, Eq. 6, composition, encode-once sharing and the group evaluation."""

import numpy as np
import pytest
import torch
from PIL import Image

from nandlib.backbones import load_clip
from nandlib.detectors.aprilgan import AprilGAN, zero_shot_maps
from nandlib.detectors.base import Detector, MapGeometry, Prediction
from nandlib.evaluation import EncodedImages
from nandlib.geometry import crop_to_region, to_eval_grid
from nandlib.nand import NANDDetector, NDFeatures, NormalityDetector, add_normality, final_map
from nandlib.prompts import TablePromptGenerator, normality_prompts

E = torch.eye(3)  # e0 = f_nor, e1 and e2 = two normalities


@pytest.fixture(scope="module")
def aprilgan():
    return AprilGAN(load_clip("nand-tiny-p14", image_size=518, seed=0), "bottle", seed=0)


@pytest.fixture(scope="module")
def image():
    y, x = np.mgrid[0:300, 0:600]
    return Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8))


def _hand_built_features(batch=2, second_region=False):
    """4 x 4 patch grid: top-left 2 x 2 patches e1, optionally bottom-right 2 x 2 e2, the rest e0 (f_nor)."""
    grid = E[0].repeat(4, 4, 1)
    grid[:2, :2] = E[1]
    if second_region:
        grid[2:, 2:] = E[2]
    tokens = grid.reshape(1, 16, 3).repeat(batch, 1, 1)
    return NDFeatures(
        patch_tokens=(tokens, tokens.clone()), grid=(4, 4), map_size=(16, 16),
        image_sizes=((16, 16),) * batch, f_nor=E[0],
    )


def test_suppression_map_is_high_where_patches_match_f_add_only(aprilgan):
    nd = NormalityDetector(aprilgan, eval_size=16)
    a_sup = nd.suppression_map(_hand_built_features(), E[1])
    assert a_sup.shape == (2, 16, 16)
    assert a_sup[:, :6, :6].min() > 0.99  # upsampled from the top-left 2 x 2 patches (align_corners=True)
    assert a_sup[:, 10:, :].max() < 0.01 and a_sup[:, :, 10:].max() < 0.01
    summed = NormalityDetector(aprilgan, eval_size=16, layer_combine="sum").suppression_map(
        _hand_built_features(), E[1]
    )
    assert torch.allclose(summed, 2 * a_sup) and summed.max() > 1.9  # "sum" would make 1 - A_sup < 0


def test_final_map_suppresses_only_the_added_normality_and_lowers_the_score_only_there(aprilgan):
    nd = NormalityDetector(aprilgan, eval_size=16)
    a_sup = nd.suppression_map(_hand_built_features(), E[1])
    base = torch.full((2, 16, 16), 0.5)
    base[0, 2, 2] = 2.0  # image 0: its anomaly lies in the added-normality region
    base[1, 13, 13] = 2.0  # image 1: elsewhere
    final = final_map(base, [a_sup])
    assert final[:, :6, :6].max() < 0.01
    assert torch.equal(final[:, 10:, :], base[:, 10:, :]) and torch.equal(final[:, :, 10:], base[:, :, 10:])
    scores = final.amax(dim=(1, 2))
    assert scores[0] == pytest.approx(0.5, abs=1e-3) and scores[1] == 2.0
    with pytest.raises(ValueError, match="suppressions"):
        final_map(base, [a_sup[:, :8]])


def test_two_normalities_compose_as_one_after_the_other(aprilgan):
    nd = NormalityDetector(aprilgan, eval_size=16)
    features = _hand_built_features(second_region=True)
    s1, s2 = nd.suppression_map(features, E[1]), nd.suppression_map(features, E[2])
    base = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(0))
    both = final_map(base, [s1, s2])
    assert torch.allclose(both, final_map(final_map(base, [s1]), [s2]))
    assert both[:, :6, :6].max() < 0.01 and both[:, -6:, -6:].max() < 0.01
    assert torch.allclose(both[:, 10:, :6], base[:, 10:, :6])


def test_add_normality_chains_and_encodes_each_image_once(aprilgan, image, monkeypatch):
    backbone = aprilgan.backbone
    calls = []
    original = backbone.encode_image_layers
    monkeypatch.setattr(backbone, "encode_image_layers", lambda *a: calls.append(1) or original(*a))
    chained = add_normality(add_normality(aprilgan, group="broken"), phrases="bottle with dirt on the bottom")
    assert isinstance(chained, NANDDetector) and len(chained.normalities) == 2
    assert chained.detector is aprilgan and chained.geometry == aprilgan.geometry
    assert [n.label for n in chained.normalities] == ["broken", "bottle with dirt on the bottom"]
    calls.clear()
    got = chained.predict([image])
    assert len(calls) == 1
    nd = chained.nd
    shared = aprilgan.features([image])
    features = nd.features_from(shared)
    base = to_eval_grid(aprilgan.predict_from_features(shared).maps)
    suppressions = [nd.suppression_map(features, n.f_add) for n in chained.normalities]
    expected = base * (1 - suppressions[0]) * (1 - suppressions[1])
    assert got.maps.shape == (1, 256, 256)
    assert torch.allclose(got.maps, expected, atol=1e-5)
    assert torch.allclose(got.scores, expected.amax(dim=(1, 2)), atol=1e-5)
    other = NormalityDetector(AprilGAN(backbone, "bottle", seed=1))
    other.aprilgan.text_features = aprilgan.text_features  # same backbone and class: skip re-encoding
    calls.clear()
    add_normality(aprilgan, group="broken", nd=other).predict([image])
    assert len(calls) == 2  # a different ND module needs its own pass


class _CroppingDetector(Detector):
    """A PatchCore-like stand-in: fixed maps over the central crop (resize 256, crop 224)."""

    name = "cropping"
    geometry = MapGeometry(resize=256, crop=224)
    class_name = "bottle"

    def __init__(self):
        self.fitted_on = None

    def fit(self, images):
        self.fitted_on = len(images)
        return self

    def predict(self, images):
        ramp = torch.linspace(0, 1, 224)
        maps = (ramp[None, :] + ramp[:, None]).repeat(len(images), 1, 1)
        return Prediction(maps=maps, scores=torch.zeros(len(images)))


def test_nand_cuts_the_detectors_crop_out_of_the_suppression_map(aprilgan, image):
    nd = NormalityDetector(aprilgan)
    detector = _CroppingDetector()
    nand = add_normality(detector, group="broken", nd=nd)
    assert nand.fit([image, image]) is nand and detector.fitted_on == 2
    got = nand.predict([image]).maps
    features = nd.features([image])
    text = torch.stack([features.f_nor, nd.normality(group="broken").f_add], dim=1)
    full = zero_shot_maps(features.patch_tokens, features.grid, text, (518, 518), combine="mean")
    cropped = crop_to_region(full, MapGeometry(256, 224).region(600, 300), 256)
    base = to_eval_grid(detector.predict([image]).maps)
    assert torch.allclose(got, base * (1 - cropped), atol=1e-5)
    assert not torch.allclose(got, base * (1 - crop_to_region(full, (0, 0, 1, 1), 256)), atol=1e-3)


def test_images_encoded_once_score_each_group_as_one_nand_detector_per_group(aprilgan, image, monkeypatch):
    nd = NormalityDetector(aprilgan)
    encoded = EncodedImages(aprilgan, nd, [image, image], batch_size=1)
    assert len(encoded.parts) == 2 and encoded.base_maps.shape == (2, 256, 256)
    calls = []
    monkeypatch.setattr(aprilgan, "features", lambda *a: calls.append(1))
    for group in ("broken", "contamination"):
        scores = encoded.predict([nd.normality(group=group)]).scores
        monkeypatch.undo()
        single = add_normality(aprilgan, group=group, nd=nd).predict([image])
        monkeypatch.setattr(aprilgan, "features", lambda *a: calls.append(1))
        assert torch.allclose(scores, single.scores.repeat(2), atol=1e-5)
    assert calls == []  # scoring a normality encodes no image again
    custom = nd.normality(phrases=["bottle with a chipped rim", "bottle with a cracked neck"])
    expected = final_map(encoded.base_maps, [nd.suppression_map(encoded.features, custom.f_add)])
    assert torch.allclose(encoded.predict([custom]).maps, expected)
    assert not torch.allclose(expected, encoded.predict([nd.normality(group="broken")]).maps)
    with pytest.raises(ValueError, match="images"):
        EncodedImages(aprilgan, nd, [])


def test_normalities_resolve_from_groups_phrases_or_lists(aprilgan):
    nd = NormalityDetector(aprilgan)
    shipped = tuple(TablePromptGenerator().phrases("bottle", "broken"))
    assert nd.phrases(group="broken") == ("broken", shipped)
    assert nd.phrases(phrases="bottle with a crack") == ("bottle with a crack", ("bottle with a crack",))
    assert nd.phrases(phrases="crack") == ("crack", ("crack",))  # a one-word phrase is a phrase, not a group
    assert nd.phrases(phrases=["a", "b"]) == ("a; b", ("a", "b"))
    f_add = nd.normality_feature(["bottle with a crack"])
    assert f_add.shape == (32,) and f_add.norm().item() == pytest.approx(1, abs=1e-5)
    assert nd.normality_feature(["bottle with a crack"]) is f_add  # cached


def test_bad_input_is_rejected_with_named_parameters(aprilgan):
    with pytest.raises(ValueError, match="'glue'.*'bottle'"):
        add_normality(aprilgan, group="glue")
    with pytest.raises(ValueError, match="phrases"):
        add_normality(aprilgan, phrases=[])
    with pytest.raises(ValueError, match="phrases"):
        add_normality(aprilgan, phrases=" ")
    with pytest.raises(ValueError, match="phrases"):
        add_normality(aprilgan, phrases=["bottle with a crack", ""])
    with pytest.raises(ValueError, match="either group= or phrases="):
        add_normality(aprilgan, group="broken", phrases="a crack")
    with pytest.raises(ValueError, match="nd"):
        add_normality(_CroppingDetector(), group="broken")
    carpet = NormalityDetector(AprilGAN(aprilgan.backbone, "carpet"))
    with pytest.raises(ValueError, match="carpet"):
        add_normality(_CroppingDetector(), group="thread", nd=carpet)
    with pytest.raises(ValueError, match="layer_combine"):
        NormalityDetector(aprilgan, layer_combine="max")


def test_f_add_of_a_phrase_list_is_eq3_over_all_prompts_and_encodes_each_phrase_once(aprilgan, monkeypatch):
    nd = NormalityDetector(aprilgan)
    backbone = aprilgan.backbone
    first, second = ["bottle with a crack", "a chipped {}"], ["a chipped {}", "a scratched bottle"]
    expected = backbone.text_feature(normality_prompts("bottle", second))
    encoded: list[int] = []
    original = type(backbone).encode_text
    monkeypatch.setattr(
        type(backbone), "encode_text", lambda self, p: encoded.append(len(p)) or original(self, p)
    )
    nd.normality_feature(first)
    assert torch.allclose(nd.normality_feature(second), expected, atol=1e-6)
    assert encoded == [70, 35]  # the second list re-used "a chipped {}"
