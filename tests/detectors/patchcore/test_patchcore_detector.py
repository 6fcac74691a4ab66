"""PatchCore detector on a random WideResNet50 at a small geometry (resize 64, crop 56: 7×7 patches)."""

import pytest
import torch
from sklearn.exceptions import NotFittedError

from nandlib.detectors.base import MapGeometry
from nandlib.detectors.patchcore import PatchCore
from nandlib.detectors.patchcore.coreset import approximate_greedy_coreset

SMALL = {"resize": 64, "crop": 56, "batch_size": 2}


def test_training_images_score_zero_and_others_positive(random_wrn50, make_images):
    train = make_images(3, seed=0)
    detector = PatchCore(backbone=random_wrn50, coreset_ratio=1.0, **SMALL).fit(train)
    assert detector.memory_bank_.shape == (3 * 49, 1024)
    assert detector.geometry == MapGeometry(resize=64, crop=56)
    seen = detector.predict(train)
    assert seen.maps.shape == (3, 56, 56) and seen.scores.shape == (3,)
    assert seen.scores.dtype == torch.float32 and seen.maps.dtype == torch.float32
    assert (seen.scores < 1e-3).all() and (seen.maps.abs() < 1e-3).all()
    unseen = detector.predict(make_images(2, seed=1))
    assert (unseen.scores > 0).all()


def test_coreset_fit_is_deterministic_and_batch_independent(random_wrn50, make_images):
    train, test = make_images(4, seed=2), make_images(2, seed=3)
    features = PatchCore(backbone=random_wrn50, **SMALL).embed(train)
    first = PatchCore(backbone=random_wrn50, **SMALL).fit_features(features)
    assert len(first.memory_bank_) == int(4 * 49 * 0.1)
    assert torch.equal(first.memory_bank_, features[first.coreset_indices_])
    assert torch.equal(first.coreset_indices_, approximate_greedy_coreset(features, 0.1))
    again = PatchCore(backbone=random_wrn50, resize=64, crop=56, batch_size=8).fit(train)
    torch.testing.assert_close(again.memory_bank_, first.memory_bank_)
    one, other = first.predict(test), again.predict(test)
    torch.testing.assert_close(one.scores, other.scores)
    torch.testing.assert_close(one.maps, other.maps)
    assert torch.equal(one.maps, first.predict(test).maps)


def test_image_score_is_max_patch_score_and_reweighting_lowers_it(random_wrn50, make_images):
    train, test = make_images(4, seed=4), make_images(2, seed=5)
    plain = PatchCore(backbone=random_wrn50, coreset_ratio=0.5, **SMALL).fit(train)
    prediction = plain.predict(test)
    squared = ((plain.embed(test)[:, None, :] - plain.memory_bank_[None]) ** 2).sum(-1)
    patch_scores = squared.min(1).values.view(2, 49)
    torch.testing.assert_close(prediction.scores, patch_scores.max(1).values)
    reweighted = PatchCore(backbone=random_wrn50, coreset_ratio=0.5, score="reweighted", **SMALL)
    weighted = reweighted.fit(train).predict(test)
    assert (weighted.scores > 0).all() and (weighted.scores < prediction.scores.sqrt()).all()
    assert torch.equal(weighted.maps, prediction.maps)


def test_save_and_load_round_trip(random_wrn50, make_images, tmp_path):
    train, test = make_images(2, seed=6), make_images(2, seed=7)
    fitted = PatchCore(backbone=random_wrn50, coreset_ratio=0.5, **SMALL).fit(train)
    fitted.save(tmp_path / "bank.safetensors")
    loaded = PatchCore(backbone=random_wrn50, coreset_ratio=0.5, **SMALL).load(tmp_path / "bank.safetensors")
    assert torch.equal(loaded.memory_bank_, fitted.memory_bank_)
    assert torch.equal(loaded.predict(test).scores, fitted.predict(test).scores)
    other = PatchCore(backbone=random_wrn50, resize=72, crop=56)
    with pytest.raises(ValueError, match="resize"):
        other.load(tmp_path / "bank.safetensors")
    with pytest.raises(FileNotFoundError, match="missing"):
        other.load(tmp_path / "missing.safetensors")


def test_bad_input(random_wrn50, make_images, tmp_path):
    detector = PatchCore(backbone=random_wrn50, **SMALL)
    with pytest.raises(ValueError, match="images"):
        detector.fit([])
    with pytest.raises(NotFittedError, match="fit"):
        detector.predict(make_images(1, seed=0))
    with pytest.raises(NotFittedError, match="fit"):
        detector.save(tmp_path / "bank.safetensors")
    with pytest.raises(ValueError, match="coreset_ratio"):
        PatchCore(backbone=random_wrn50, coreset_ratio=1.0 / 196, **SMALL).fit(make_images(1, seed=0))
    with pytest.raises(FileNotFoundError, match="weights"):
        PatchCore(backbone="resnet18", weights=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="weights"):
        PatchCore(backbone=random_wrn50, weights="imagenet")
    for bad in ({"patch_size": 2}, {"crop": 300}, {"score": "mean"}, {"coreset_ratio": 0}, {"batch_size": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            PatchCore(backbone=random_wrn50, **bad)


def test_settings_carry_layers_and_sizes_to_the_detector_and_its_provenance():
    from nandlib.detectors.patchcore.detector import PatchCoreSettings
    from nandlib.detectors.registry import BuildContext

    settings = PatchCoreSettings(backbone="resnet18", layers=["layer1", "layer2"], resize=64, crop=64)
    context = BuildContext(
        class_name="carpet", seed=0, device="cpu", precision="fp32", batch_size=2, cache=None,
        nd_aprilgan=None,
    )  # fmt: skip
    detector = PatchCore.from_settings(settings, context)
    assert (detector.layers, detector.resize, detector.crop) == (("layer1", "layer2"), 64, 64)
    assert detector.provenance()["weights"] == "resnet18 (random-init seed 0), layer1+layer2, 64 → 64 px"
    with pytest.raises(ValueError, match="layers"):
        PatchCoreSettings(layers=["layer3", "layer2"])


def test_toy_profile_fits_64_px_images_and_the_paper_profile_keeps_the_official_settings():
    from nandlib.profiles import load_profile

    toy = load_profile("toy").detectors["patchcore"].settings
    assert (toy.backbone, toy.layers, toy.resize, toy.crop) == ("resnet18", ["layer2", "layer3"], 64, 64)
    paper = load_profile("paper", data_root="/mvtec").detectors["patchcore"].settings
    assert (paper.backbone, paper.layers, paper.resize, paper.crop) == (
        "wide_resnet50_2",
        ["layer2", "layer3"],
        256,
        224,
    )
