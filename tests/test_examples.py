"""The example route (issue 20): each detector's memory takes examples, the protocol's draws, bad input."""

import copy
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.exceptions import NotFittedError

from nandlib.a2n import a2n_rows, a2n_split, shift_auroc
from nandlib.backbones import load_clip
from nandlib.data import read_class
from nandlib.detectors.aprilgan import AprilGAN, few_shot_maps
from nandlib.detectors.base import Detector, MapGeometry
from nandlib.detectors.examples import check_examples, continued_coreset, patch_fractions
from nandlib.detectors.patchcore import PatchCore
from nandlib.detectors.winclip import WinCLIP
from nandlib.evaluation import ClassEvaluation, LazyImages
from nandlib.examples import ExampleProtocol, draw_examples, example_inputs, visual_normality
from nandlib.nand import NANDDetector, NormalityDetector


def _pixels(seed: int, size: int = 4) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


class _HandBuilt:
    """PatchCore's patch features replaced by hand-built ones: each pixel of a 4 × 4 image is a patch
    whose feature is its RGB value / 255 (grid 4 × 4)."""

    def __call__(self, images):
        stacked = np.stack([np.asarray(image, dtype=np.float32) / 255 for image in images])
        return torch.from_numpy(stacked).reshape(len(images), 16, 3), (4, 4)


@pytest.fixture(scope="module")
def hand_built_patchcore():
    detector = PatchCore("resnet18", resize=4, crop=4, target_dim=3, pretrain_dim=3, sigma=0.0)
    detector.embed_images = _HandBuilt()
    train = [_pixels(seed) for seed in range(3)]
    return detector.fit_features(detector.embed_images(train)[0].flatten(0, 1))


def test_patchcore_example_scores_zero_and_no_other_score_rises(hand_built_patchcore):
    example, others = _pixels(100), [_pixels(seed) for seed in range(101, 110)]
    before = hand_built_patchcore.predict(others)
    extended = copy.copy(hand_built_patchcore).add_normal_examples([example])
    identical = Image.fromarray(np.asarray(example).copy())
    assert extended.predict([example]).scores.tolist() == [0.0]
    assert extended.predict([identical]).scores.tolist() == [0.0]
    after = extended.predict(others)
    assert (after.scores <= before.scores).all() and (after.maps <= before.maps).all()
    assert (after.scores < before.scores).any()  # some patch of another image is nearer to the example
    assert len(extended.memory_bank_) == len(hand_built_patchcore.memory_bank_) + 16
    assert hand_built_patchcore.predict([example]).scores.item() > 0  # the original is untouched


def test_patchcore_masks_add_only_the_defect_patches(hand_built_patchcore):
    mask = np.zeros((4, 4), dtype=bool)
    mask[1, 2] = mask[3, 0] = mask[3, 1] = True
    extended = copy.copy(hand_built_patchcore).add_normal_examples([_pixels(100)], [mask])
    added = extended.memory_bank_[len(hand_built_patchcore.memory_bank_) :]
    expected = torch.from_numpy(np.asarray(_pixels(100), dtype=np.float32)[mask] / 255)
    assert torch.equal(added, expected)


def test_patchcore_coreset_option_adds_the_greedy_share(hand_built_patchcore):
    extended = copy.copy(hand_built_patchcore).add_normal_examples([_pixels(100)], coreset=True)
    assert len(extended.memory_bank_) == len(hand_built_patchcore.memory_bank_) + int(16 * 0.1)


def test_continued_coreset_picks_the_farthest_from_the_bank_first():
    bank = torch.tensor([[0.0]])
    new = torch.tensor([[1.0], [2.0], [10.0]])
    assert continued_coreset(bank, new, 2 / 3, None).tolist() == [2, 1]


def test_patch_fractions_follow_the_crop():
    mask = np.zeros((8, 8), dtype=bool)
    mask[:, :4] = True  # left half
    whole = patch_fractions([mask], MapGeometry(resize=8), (2, 2))
    assert whole.tolist() == [[1.0, 0.0, 1.0, 0.0]]
    cropped = patch_fractions([mask], MapGeometry(resize=8, crop=4), (2, 2))  # centre 4 × 4
    assert cropped.tolist() == [[1.0, 0.0, 1.0, 0.0]]
    mask[:, :] = False
    mask[0, 0] = True  # outside the centre crop
    assert patch_fractions([mask], MapGeometry(resize=8, crop=4), (2, 2)).sum() == 0


def test_aprilgan_few_shot_map_is_the_cosine_distance_to_the_nearest_memory_token():
    memory = [torch.tensor([[1.0, 0.0], [0.0, 1.0]])]
    tokens = [torch.tensor([[[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [1.0, 1.0]]])]
    maps = few_shot_maps(tokens, memory, (2, 2), (2, 2))
    expected = torch.tensor([[0.0, 0.0], [1.0, 1 - 2**-0.5]])
    assert torch.allclose(maps[0], expected, atol=1e-6)


def _ramp(seed: int, size=(48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0 : size[1], 0 : size[0]]
    ramps = np.stack([xs * 255 / size[0], ys * 255 / size[1], (xs + ys) * 127 / sum(size)], axis=-1)
    return Image.fromarray(np.clip(ramps + rng.normal(0, 40, ramps.shape), 0, 255).astype(np.uint8))


def test_aprilgan_example_adds_nothing_to_its_own_map_and_never_lowers_others():
    detector = AprilGAN(load_clip("nand-tiny-p14", image_size=56, seed=0), "bottle", seed=0)
    example, others = _ramp(1), [_ramp(seed) for seed in range(2, 5)]
    zero_example, zero_others = detector.predict([example]), detector.predict(others)
    extended = copy.copy(detector).add_normal_examples([example])
    assert torch.allclose(extended.predict([example]).maps, zero_example.maps, atol=1e-5)
    assert (extended.predict(others).maps >= zero_others.maps - 1e-6).all()  # + few-shot distance >= 0
    assert detector.example_memory_ is None  # the original keeps no memory


def test_winclip_examples_never_raise_the_few_shot_part():
    backbone = load_clip("nand-tiny-p16", seed=0)
    detector = WinCLIP(backbone, "bottle", k_shot=1, seed=0).fit([_ramp(10)])
    example, others = _ramp(1, (96, 80)), [_ramp(seed, (96, 80)) for seed in range(2, 4)]
    before = detector.predict([example, *others])
    after = copy.copy(detector).add_normal_examples([example]).predict([example, *others])
    assert (after.maps <= before.maps + 1e-6).all()
    assert (after.maps[0] < before.maps[0]).any()
    patches = detector.references_.patches.reshape(-1, detector.references_.patches.shape[-1])
    assert len(patches) == backbone.grid_size[0] * backbone.grid_size[1]  # the original memory unchanged


def test_detector_without_memory_declares_no_example_route():
    class Plain(Detector):
        def predict(self, images):
            raise AssertionError

    assert not Plain.accepts_examples
    with pytest.raises(NotImplementedError, match="no example route"):
        Plain().add_normal_examples([_pixels(0)])


# ------------------------------------------------------------------------------------ bad input


def test_masks_that_do_not_match_their_images_are_named():
    images = [_pixels(0), _pixels(1)]
    with pytest.raises(ValueError, match="2 masks for"):
        check_examples(images[:1], [np.ones((4, 4), bool)] * 2)
    with pytest.raises(ValueError, match=r"masks\[1\]: shape \(5, 4\)"):
        check_examples(images, [np.ones((4, 4), bool), np.ones((5, 4), bool)])
    with pytest.raises(ValueError, match=r"masks\[0\]: no defect pixel"):
        check_examples(images[:1], [np.zeros((4, 4), bool)])


def test_draw_rejects_k_larger_than_the_group():
    types = ["good", "cut", "cut", "hole"]
    with pytest.raises(ValueError, match="k: 3 examples asked of carpet/cut, which has only 2"):
        draw_examples(types, ["cut"], 3, seed=0, name="carpet/cut")


def test_examples_of_another_class_or_size_are_named(synth_root, tmp_path):
    carpet, bottle = read_class(synth_root, "carpet"), read_class(synth_root, "bottle")
    with pytest.raises(ValueError, match=f"example {bottle.test[-1].path} is of class 'bottle'"):
        example_inputs([bottle.test[-1]], carpet, masks=False)
    small = tmp_path / "small.png"
    Image.new("RGB", (32, 32)).save(small)
    other = dataclasses.replace(carpet.test[-1], path=small)
    with pytest.raises(ValueError, match=f"example {small} is 32x32; 'carpet' images are 64x64"):
        example_inputs([other], carpet, masks=False)


# ------------------------------------------------------------------------------------ protocol (a)


def test_draws_are_seeded_and_nested():
    types = ["good"] * 3 + ["cut"] * 6 + ["hole"] * 2
    first = draw_examples(types, ["cut"], 5, seed=7)
    assert first.tolist() == draw_examples(types, ["cut"], 5, seed=7).tolist()
    assert set(first) <= set(range(3, 9)) and len(set(first)) == 5
    assert first.tolist() != draw_examples(types, ["cut"], 5, seed=8).tolist()


@pytest.fixture(scope="module")
def protocol(synth_root):
    data = read_class(synth_root, "carpet")
    aprilgan = AprilGAN(load_clip("nand-tiny-p14", image_size=56, seed=0), "carpet", seed=0, batch_size=8)
    nd = NormalityDetector(aprilgan)
    detector = PatchCore("resnet18", resize=64, crop=64, target_dim=64, pretrain_dim=64, batch_size=8)
    detector.fit(LazyImages(data.train))
    evaluation = ClassEvaluation(detector, nd, data, batch_size=8)
    return ExampleProtocol(evaluation, ks=(1, 2), draws=2, seed=0)


def test_no_evaluated_image_is_an_example_in_any_route(protocol):
    group = next(iter(protocol.evaluation.groups))
    for draw in range(protocol.draws):
        drawn, keep, routes = protocol.route_maps(group, draw)
        assert not set(drawn) & set(keep) and len(drawn) + len(keep) == len(protocol.types)
        assert {len(maps) for maps, _ in routes.values()} == {len(keep)}


def test_protocol_rows_share_images_and_name_their_examples(protocol):
    group = next(iter(protocol.evaluation.groups))
    frame = protocol.results([group])
    assert set(frame["route"]) == {"text", "examples", "text+examples", "visual-nd"}
    assert len(frame) == protocol.draws * (1 + 3 * len(protocol.ks))
    per_draw = frame.groupby("draw")
    assert (per_draw["n_normal"].nunique() == 1).all() and (per_draw["auroc_before"].nunique() == 1).all()
    drawn = protocol.draw(group, 0)
    one = frame[(frame["draw"] == 0) & (frame["k"] == 1)]["examples"].iloc[0]
    assert one == f"{protocol.types[drawn[0]]}/{protocol.data.test[drawn[0]].path.name}"
    with_sup = frame[frame["route"] != "examples"]["sup_specificity"]
    assert frame[frame["route"] == "examples"]["sup_specificity"].isna().all() and with_sup.notna().any()


def test_visual_normality_is_the_mask_weighted_token_mean(protocol):
    nd = protocol.evaluation.nd
    sample = next(s for s in protocol.data.test if s.anomaly_type != "good")
    image, mask = sample.image(), sample.mask()
    normality = visual_normality(nd, [image], [mask])
    features = nd.features([image])
    weights = patch_fractions([mask], MapGeometry(resize=56), features.grid)[0]
    by_hand = sum((t[0] * weights[:, None]).sum(0) for t in features.patch_tokens)
    assert torch.allclose(normality.f_add, by_hand / by_hand.norm(), atol=1e-6)
    with pytest.raises(ValueError, match="weight"):
        visual_normality(nd, [image], [mask], weight=2)


# ------------------------------------------------------------------------------------ A2N (Saito et al.)


def test_a2n_split_moves_the_first_half_by_file_name(mvtec_sample):
    data = read_class(mvtec_sample, "bottle")
    split = a2n_split(data, ["broken_small", "broken_large"])
    for folder in ("broken_small", "broken_large"):
        names = sorted(p.name for p in (mvtec_sample / "bottle" / "test" / folder).glob("*.png"))
        moved = [s.path.name for s in split.moved if s.anomaly_type == folder]
        assert moved == names[: len(names) // 2]  # 22 -> 000..010, 20 -> 000..009
        kept = [s.path.name for s in split.test if s.anomaly_type == folder]
        assert kept == names[len(names) // 2 :]
    assert len(split.test) == len(data.test) - 11 - 10
    assert split.relabelled.sum() == 11 + 10
    assert not {s.path for s in split.moved} & {s.path for s in split.test}
    odd = a2n_split(data, ["contamination"])
    assert [s.path.name for s in odd.moved] == [f"{i:03d}.png" for i in range(10)]  # 21 // 2


def test_shift_auroc_matches_a_hand_count():
    before, after = [0.9, 0.5, 0.3], [0.5, 0.2, 0.1]
    # pairs (before > after): 0.9 beats 3; 0.5 ties 0.5 (1/2) and beats 2; 0.3 beats 2 -> 7.5 of 9
    assert shift_auroc(before, after) == pytest.approx(7.5 / 9)
    assert shift_auroc([1.0, 2.0], [0.0, 0.5]) == 1.0
    with pytest.raises(ValueError, match="equal, non-empty"):
        shift_auroc([1.0], [1.0, 2.0])


def test_retrain_with_the_whole_bank_equals_the_example_route_of_the_moved_half(synth_root):
    data = read_class(synth_root, "carpet")
    split = a2n_split(data, ["cut", "hole"])

    def patchcore():
        return PatchCore("resnet18", resize=64, crop=64, pretrain_dim=32, target_dim=32, coreset_ratio=1.0)

    before = patchcore().fit(LazyImages(data.train))
    retrain = patchcore().fit(LazyImages([*data.train, *split.moved]))
    moved = [s.image() for s in split.moved]
    examples = copy.copy(before).add_normal_examples(moved)
    frame = a2n_rows(data, "cut", before, {"retrain": retrain, "examples": examples})
    assert frame["route"].tolist() == ["retrain", "examples"]
    assert frame["auroc_after"].iloc[0] == pytest.approx(frame["auroc_after"].iloc[1], abs=1e-12)
    assert frame["s_auroc"].iloc[0] == pytest.approx(frame["s_auroc"].iloc[1], abs=1e-12)
    assert frame["s_auroc"].iloc[0] > 0.5 and (frame["n_moved"] == len(moved)).all()


def test_aprilgan_masks_keep_only_the_touched_cells_per_layer():
    detector = AprilGAN(load_clip("nand-tiny-p14", image_size=56, seed=0), "bottle", seed=0)
    image = _ramp(1)
    mask = np.zeros((image.height, image.width), dtype=bool)
    mask[:10, :10] = True
    extended = copy.copy(detector).add_normal_examples([image], [mask])
    touched = int((patch_fractions([mask], detector.geometry, detector.backbone.grid_size) > 0).sum())
    assert 0 < touched < detector.backbone.grid_size[0] * detector.backbone.grid_size[1]
    assert [len(m) for m in extended.example_memory_] == [touched] * len(detector.adapters.layers)


def test_example_route_needs_a_fitted_memory_and_a_detector_that_accepts_examples(protocol):
    with pytest.raises(NotFittedError, match="no memory bank"):
        PatchCore("resnet18", resize=64, crop=64).add_normal_examples([_pixels(0, 64)])
    evaluation = copy.copy(protocol.evaluation)
    evaluation.encoded = copy.copy(evaluation.encoded)
    evaluation.encoded.detector = NANDDetector(protocol.evaluation.detector, evaluation.nd, [])
    with pytest.raises(ValueError, match="does not accept examples"):
        ExampleProtocol(evaluation)


def test_added_routes_given_the_built_in_input_reproduce_the_built_in_routes(protocol):
    group = next(iter(protocol.evaluation.groups))
    shipped = protocol.evaluation.normalities()[group].phrases
    given = []
    custom = ExampleProtocol(
        protocol.evaluation, ks=(1, 2), draws=1, seed=0, routes=("text", "examples"),
        phrase_routes={"same-text": lambda g, examples: given.append(len(examples)) or shipped},
        example_routes={"same-examples": lambda g, examples: examples},
    )  # fmt: skip
    frame = custom.results([group]).set_index(["route", "k"])["auroc_after"]
    assert sorted(frame.index) == sorted(
        [("text", 0), *((r, k) for r in ("examples", "same-text", "same-examples") for k in (1, 2))]
    )
    assert frame[("same-text", 1)] == frame[("same-text", 2)] == frame[("text", 0)]
    assert given == [1, 2] and custom.phrases_used[(group, 0, "same-text", 2)] == tuple(shipped)
    maps = custom.route_maps(group, 0)[2]
    assert torch.equal(maps[("same-examples", 2)][0], maps[("examples", 2)][0])
    assert not torch.equal(maps[("examples", 2)][0], maps[("examples", 1)][0])


def test_bad_added_routes_are_errors(protocol):
    evaluation = protocol.evaluation
    with pytest.raises(ValueError, match="unknown"):
        ExampleProtocol(evaluation, routes=("text", "retrain"))
    with pytest.raises(ValueError, match="used twice"):
        ExampleProtocol(evaluation, phrase_routes={"text": lambda g, e: ["x"]})
    with pytest.raises(ValueError, match="use_masks"):
        ExampleProtocol(evaluation, use_masks=True, example_routes={"gen": lambda g, e: e})
