"""APRIL-GAN zero-shot: Eq. 4 against NumPy, checkpoint format, golden values of a seeded tiny model."""

import numpy as np
import pytest
import torch
from PIL import Image

from nandlib.adapters import Adapters
from nandlib.backbones import load_clip
from nandlib.detectors.aprilgan import AprilGAN, text_probability, zero_shot_maps
from nandlib.detectors.base import MapGeometry


def _image(width=320, height=240):
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // (width - 1), y * 255 // (height - 1), ((x // 20 + y // 20) % 2) * 255], -1)
    return Image.fromarray(rgb.astype(np.uint8))


@pytest.fixture(scope="module")
def backbone():
    return load_clip("nand-tiny-p14", image_size=518, seed=0)


@pytest.fixture(scope="module")
def detector(backbone):
    return AprilGAN(backbone, "bottle", seed=0)


@pytest.fixture(scope="module")
def prediction(detector):
    return detector.predict([_image()])


def _bilinear_align_corners(grid, height, width):
    """Bilinear upsampling of ``[..., h, w]`` with align_corners=True, written out in NumPy."""
    h, w = grid.shape[-2:]
    ys, xs = np.arange(height) * (h - 1) / (height - 1), np.arange(width) * (w - 1) / (width - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = grid[..., y0, :][..., x0] * (1 - wx) + grid[..., y0, :][..., x1] * wx
    bottom = grid[..., y1, :][..., x0] * (1 - wx) + grid[..., y1, :][..., x1] * wx
    return top * (1 - wy) + bottom * wy


def test_eq4_matches_numpy_and_upsamples_before_softmax():
    rng = np.random.default_rng(0)
    layers = [rng.normal(size=(2, 12, 5)) for _ in range(3)]
    layers = [t / np.linalg.norm(t, axis=-1, keepdims=True) for t in layers]
    text = rng.normal(size=(5, 2))
    text /= np.linalg.norm(text, axis=0, keepdims=True)
    expected, softmax_first = 0, 0
    for tokens in layers:
        logits = (100 * tokens @ text).transpose(0, 2, 1).reshape(2, 2, 3, 4)
        up = _bilinear_align_corners(logits, 7, 9)
        expected = expected + np.exp(up[:, 1]) / np.exp(up).sum(axis=1)
        probability = np.exp(logits[:, 1]) / np.exp(logits).sum(axis=1)
        softmax_first = softmax_first + _bilinear_align_corners(probability, 7, 9)
    ours = zero_shot_maps([torch.tensor(t, dtype=torch.float32) for t in layers], (3, 4),
                          torch.tensor(text, dtype=torch.float32), (7, 9))
    assert ours.shape == (2, 7, 9)
    assert np.allclose(ours.numpy(), expected, atol=1e-5)
    assert np.abs(expected - softmax_first).max() > 0.05  # the order matters
    mean = zero_shot_maps([torch.tensor(t, dtype=torch.float32) for t in layers], (3, 4),
                          torch.tensor(text, dtype=torch.float32), (7, 9), combine="mean")
    assert torch.allclose(mean * 3, ours, atol=1e-5)
    with pytest.raises(ValueError, match="layer_combine"):
        zero_shot_maps([torch.zeros(1, 12, 5)], (3, 4), torch.zeros(5, 2), (7, 9), combine="max")


def test_golden_values_of_seeded_tiny_model_at_518(prediction):
    maps = prediction.maps[0]
    assert prediction.maps.shape == (1, 518, 518) and prediction.maps.dtype == torch.float32
    score = prediction.scores[0]
    stats = [maps.mean(), maps.std(), maps.min(), maps.max(), maps[100, 200], maps[400, 50], score]
    golden = [1.9392279, 0.7195242, 0.0958867, 3.8225274, 1.2486171, 1.7386281, 0.9730754]
    assert np.allclose([float(s) for s in stats], golden, atol=1e-4)


def test_native_score_is_cls_embedding_against_class_text(detector, backbone, prediction):
    with torch.no_grad():
        embedding = backbone.model.encode_image(backbone.preprocess([_image()]))
    embedding = embedding / embedding.norm(dim=-1, keepdim=True)
    logits = 100 * embedding @ detector.text_features
    assert torch.allclose(prediction.scores, logits.softmax(dim=-1)[:, 1], atol=1e-5)
    assert torch.allclose(text_probability(embedding, detector.text_features), prediction.scores, atol=1e-5)
    assert detector.text_features.shape == (32, 2)
    assert torch.allclose(detector.text_features.norm(dim=0), torch.ones(2), atol=1e-5)


def test_features_follow_the_reference_projection_and_geometry_is_squash(detector, backbone):
    features = detector.features([_image(100, 300)])
    _, tokens = backbone.encode_image_layers(backbone.preprocess([_image(100, 300)]), (1, 2, 3, 4))
    for ours, raw, fc in zip(features.patch_tokens, tokens, detector.adapters.fc, strict=True):
        projected = raw[:, 1:] @ fc.weight.T + fc.bias
        assert torch.allclose(ours, projected / projected.norm(dim=-1, keepdim=True), atol=1e-5)
    assert features.grid == (37, 37) and features.image_sizes == ((100, 300),)
    assert detector.geometry == MapGeometry(resize=518)


def test_batched_forward_equals_one_image_at_a_time(backbone, prediction):
    images = [_image(), _image(200, 200)]
    one_by_one = AprilGAN(backbone, "bottle", seed=0, batch_size=1).predict(images)
    together = AprilGAN(backbone, "bottle", seed=0, batch_size=2).predict(images)
    assert torch.allclose(one_by_one.maps, together.maps, atol=1e-4)
    assert torch.allclose(together.maps[:1], prediction.maps, atol=1e-4)


def test_checkpoint_round_trip_in_the_official_format(backbone, detector, prediction, tmp_path):
    path = tmp_path / "epoch_3.pth"
    detector.adapters.save(path)
    saved = torch.load(path, weights_only=True)
    assert list(saved) == ["trainable_linearlayer"]
    assert sorted(saved["trainable_linearlayer"]) == sorted(
        f"fc.{i}.{kind}" for i in range(4) for kind in ("weight", "bias")
    )
    assert saved["trainable_linearlayer"]["fc.0.weight"].shape == (32, 64)
    reloaded = AprilGAN(backbone, "bottle", adapters=path, seed=123)
    assert torch.equal(reloaded.predict([_image()]).maps, prediction.maps)
    assert reloaded.adapters.weights.startswith(f"checkpoint:{path} sha256:")


def test_wrong_checkpoints_raise_errors_naming_the_path(backbone, tmp_path):
    adapters = Adapters((1, 2, 3, 4), 64, 32)
    state = adapters.state_dict()
    wrong_keys = tmp_path / "keys.pth"
    renamed = {key.replace("fc.", "linear."): value for key, value in state.items()}
    torch.save({"trainable_linearlayer": renamed}, wrong_keys)
    wrong_shapes = tmp_path / "shapes.pth"
    Adapters((1, 2, 3, 4), 64, 16).save(wrong_shapes)
    too_few = tmp_path / "few.pth"
    Adapters((2, 4), 64, 32).save(too_few)
    no_key = tmp_path / "plain.pth"
    torch.save(state, no_key)
    for path in (wrong_keys, wrong_shapes, too_few, no_key):
        with pytest.raises(ValueError, match=str(path)):
            AprilGAN(backbone, "bottle", adapters=path)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        AprilGAN(backbone, "bottle", adapters=tmp_path / "missing.pth")


def test_bad_configuration_is_rejected(backbone):
    with pytest.raises(ValueError, match="adapters"):
        AprilGAN(backbone, "bottle", adapters=Adapters((1, 2), 64, 16))
    with pytest.raises(ValueError, match="class_name"):
        AprilGAN(backbone, "")
    with pytest.raises(ValueError, match="layers"):
        AprilGAN(backbone, "bottle", layers=(2, 9))
