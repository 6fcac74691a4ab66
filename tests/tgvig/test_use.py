"""TGVIG in NAND's routes: phrases ranked against examples or class images, examples + generated variants."""

from __future__ import annotations

import contextlib

import pytest
import torch
from PIL import Image

from nandlib.tgvig.generator import TOY_CONFIG, build_vqmodel
from nandlib.tgvig.integrator import IntegratorSettings
from nandlib.tgvig.keywords import KeywordPromptGenerator
from nandlib.tgvig.use import GeneratedExampleRoute, add_generated_examples, keyword_phrase_route
from nandlib.tgvig.wordnet import DEBIAN_DIR

needs_wordnet = pytest.mark.skipif(
    not (DEBIAN_DIR / "data.noun").is_file(), reason="WordNet: apt-get install wordnet-base"
)
SMALL = {**TOY_CONFIG, "block_out_channels": [16, 32, 32], "norm_num_groups": 8, "sample_size": 32}
FEW = IntegratorSettings(images_per_round=3, rounds=1, n_augmented=2)


class HandBuiltClip:
    """A CLIP whose image feature is the image's first pixel (RGB) and whose text feature is set by the
    word: "... with paint" → x, "... with stain" → y, any other prompt → z."""

    tokenizer = staticmethod(lambda prompts: torch.zeros(len(prompts), 4, dtype=torch.long))
    model = type("Model", (), {"encode_image": staticmethod(lambda batch: batch)})()
    autocast = staticmethod(contextlib.nullcontext)

    @staticmethod
    def preprocess(images):
        pixels = [im.convert("RGB").getpixel((0, 0)) for im in images]
        return torch.tensor(pixels, dtype=torch.float32)

    @staticmethod
    def unit_text_embeddings(prompts):
        axis = [0 if p.endswith(" with paint") else 1 if p.endswith(" with stain") else 2 for p in prompts]
        return torch.eye(3)[axis]


def solid(rgb: tuple[int, int, int], size: int = 32) -> Image.Image:
    return Image.new("RGB", (size, size), rgb)


@needs_wordnet
def test_phrases_follow_the_examples_or_the_fixed_class_images() -> None:
    """Examples near "paint" (cos 0.78, kept: d 0.66 > 0.5) rank it first; class images near "stain" do."""
    examples, class_images = [solid((255, 204, 0))], [solid((204, 255, 0))]
    by_examples = keyword_phrase_route(HandBuiltClip(), "carpet", top_k=2)
    by_class = keyword_phrase_route(HandBuiltClip(), "carpet", class_images, top_k=2)
    assert by_examples("color", examples) == ["carpet with paint", "carpet with stain"]
    assert by_class("color", examples) == ["carpet with stain", "carpet with paint"]
    assert by_class("color", [solid((255, 0, 0))]) == by_class("color", examples)


@needs_wordnet
def test_candidates_keep_a_keyword_wordnet_does_not_know_and_check_relations() -> None:
    generator = KeywordPromptGenerator(HandBuiltClip(), images=None)
    assert generator.candidates("screw", "scratch_head") == ["a screw with scratch head"]
    assert "a carpet with paint" in generator.candidates("carpet", "color")
    with pytest.raises(ValueError, match="relations"):
        KeywordPromptGenerator(HandBuiltClip(), images=None, relations=("antonyms",))


class Recorder:
    """A detector with an example route that records what it was given."""

    name, accepts_examples = "recorder", True

    def add_normal_examples(self, images, masks=None, **options):
        self.images, self.masks, self.options = list(images), masks, options
        return self


@needs_wordnet
def test_originals_and_generated_variants_join_the_example_route() -> None:
    originals = [solid((200, 30, 30)), solid((30, 200, 30))]
    vqmodel = build_vqmodel(SMALL, seed=0).eval()
    detector = Recorder()
    made = add_generated_examples(
        detector, originals, "screw", HandBuiltClip(), vqmodel, FEW, progress=False, coreset=True
    )
    assert detector.images[:2] == originals and detector.images[2:] == made.images
    assert len(made.images) == FEW.images_per_round and made.images[0].size == (32, 32)
    assert detector.options == {"coreset": True} and detector.masks is None
    refusing = Recorder()
    refusing.accepts_examples = False
    with pytest.raises(ValueError, match="does not accept examples"):
        add_generated_examples(refusing, originals, "screw", HandBuiltClip(), vqmodel, FEW)


@needs_wordnet
def test_generated_route_returns_examples_then_variants_and_records_them() -> None:
    route = GeneratedExampleRoute(HandBuiltClip(), build_vqmodel(SMALL, seed=0).eval(), "screw", FEW)
    example = solid((90, 90, 200))
    images = route("scratch_head", [example])
    assert images[0] is example and len(images) == 1 + FEW.images_per_round
    (record,) = route.records
    assert record["group"] == "scratch_head" and record["k"] == 1 and record["generated"] == 3
    assert record["prompt"].startswith("a screw with ")
