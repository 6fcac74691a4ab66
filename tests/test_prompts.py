"""Prompts as data: APRIL-GAN's ensemble verbatim, the phrase table, and the optional LLM generator."""

import io
import json
import urllib.error

import pytest

from nandlib.data.classes import anomaly_groups, grouped_classes
from nandlib.prompts import (
    LLMPromptGenerator,
    PromptGenerator,
    TablePromptGenerator,
    aprilgan_prompts,
    normality_prompts,
    templates,
)
from nandlib.prompts import generators as generators_module


def test_aprilgan_prompts_are_state_major_with_raw_class_name():
    normal, abnormal = aprilgan_prompts("metal_nut")
    assert (len(normal), len(abnormal), len(templates())) == (245, 175, 35)
    assert normal[0] == "a bad photo of a metal_nut."
    assert normal[1] == "a low resolution photo of the metal_nut."
    assert normal[35] == "a bad photo of a flawless metal_nut."
    assert normal[-1] == "this is one metal_nut without damage in the scene."
    assert abnormal[0] == "a bad photo of a damaged metal_nut."
    assert abnormal[34] == "this is one damaged metal_nut in the scene."
    assert abnormal[-1] == "this is one metal_nut with damage in the scene."
    assert templates()[29:31] == ("a photo of a small {}.", "there is a {} in the scene.")


def test_normality_prompts_put_each_phrase_in_every_template():
    prompts = normality_prompts("carpet", ["carpet with a loose thread", "{} with metal"])
    assert len(prompts) == 70
    assert prompts[0] == "a bad photo of a carpet with a loose thread."
    assert prompts[35] == "a bad photo of a carpet with metal."
    assert prompts[-1] == "this is one carpet with metal in the scene."


@pytest.mark.parametrize(
    ("class_name", "phrases", "parameter"),
    [("carpet", [], "phrases"), ("carpet", ["ok", " "], "phrases"), ("carpet", "a phrase", "phrases"),
     ("", ["carpet with a cut"], "class_name")],
)
def test_normality_prompts_reject_empty_input(class_name, phrases, parameter):
    with pytest.raises(ValueError, match=parameter):
        normality_prompts(class_name, phrases)


def test_phrase_table_covers_exactly_the_papers_groups_with_three_to_five_phrases():
    table = TablePromptGenerator()
    assert set(table.table) == set(grouped_classes())
    total = 0
    for class_name in grouped_classes():
        assert table.groups(class_name) == list(anomaly_groups(class_name))
        for group in table.groups(class_name):
            phrases = table.phrases(class_name, group)
            assert 3 <= len(phrases) <= 5 and len(set(phrases)) == len(phrases)
            total += 1
    assert total == 56


def test_table_generator_names_unknown_group_and_class():
    table = TablePromptGenerator()
    assert isinstance(table, PromptGenerator)
    assert "carpet with a loose thread" in table.phrases("carpet", "thread")
    with pytest.raises(ValueError, match="'glue'.*'carpet'"):
        table.phrases("carpet", "glue")
    with pytest.raises(ValueError, match="toothbrush"):
        table.phrases("toothbrush", "defective")


def test_table_generator_reads_a_custom_file_and_rejects_a_malformed_one(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text("widget:\n  dent:\n    - widget with a dent\n    - dented widget\n")
    assert TablePromptGenerator(good).phrases("widget", "dent") == ["widget with a dent", "dented widget"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("widget:\n  dent: []\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        TablePromptGenerator(bad)


class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *args):
        return False


def test_llm_generator_posts_a_chat_request_and_parses_phrases(monkeypatch):
    seen = {}
    expected = ["carpet with a loose thread", "thread lying on the carpet", "carpet with a stray fibre"]

    def fake_urlopen(request, timeout):
        seen["url"], seen["body"], seen["auth"] = request.full_url, json.loads(request.data), request.headers
        content = f"1. {expected[0]}\n- \"{expected[1]}\"\n\n* {expected[2]}\n2) carpet with one more"
        return _Response(json.dumps({"choices": [{"message": {"content": content}}]}).encode())

    monkeypatch.setenv("NAND_LLM_BASE_URL", "http://llm.local/v1/")
    monkeypatch.setenv("NAND_LLM_API_KEY", "secret")
    monkeypatch.setenv("NAND_LLM_MODEL", "some-model")
    monkeypatch.setattr(generators_module.urllib.request, "urlopen", fake_urlopen)
    generator = LLMPromptGenerator(n_phrases=3)
    assert isinstance(generator, PromptGenerator)
    phrases = generator.phrases("carpet", "thread")
    assert phrases == expected
    assert seen["url"] == "http://llm.local/v1/chat/completions"
    assert seen["body"]["model"] == "some-model" and "carpet" in seen["body"]["messages"][0]["content"]
    assert seen["auth"]["Authorization"] == "Bearer secret"
    assert normality_prompts("carpet", phrases)[0] == "a bad photo of a carpet with a loose thread."


def test_llm_generator_needs_configuration_and_reports_unreachable_server(monkeypatch):
    for name in ("NAND_LLM_BASE_URL", "NAND_LLM_API_KEY", "NAND_LLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="NAND_LLM_BASE_URL"):
        LLMPromptGenerator(model="m")
    with pytest.raises(ValueError, match="NAND_LLM_MODEL"):
        LLMPromptGenerator(base_url="http://llm.local/v1")

    def refuse(request, timeout):
        raise urllib.error.URLError("connection refused")

    monkeypatch.setattr(generators_module.urllib.request, "urlopen", refuse)
    with pytest.raises(RuntimeError, match="http://llm.local/v1/chat/completions"):
        LLMPromptGenerator(base_url="http://llm.local/v1", model="m").phrases("carpet", "thread")
