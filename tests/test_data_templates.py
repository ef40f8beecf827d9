"""Prompt templates: plain text without a chat template, through it with one, think variant, user files."""

from __future__ import annotations

import pytest

from conspo.data import PromptTemplate, get_template, list_templates, register_template, render_prompt
from conspo.testbed import build_char_tokenizer

INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."


class ChatTokenizer:
    """The one method render_prompt uses, shaped like a Hugging Face chat tokenizer's."""

    chat_template = "fake"

    def __init__(self, suffix: str = "<|assistant|>\n"):
        self.suffix = suffix
        self.calls: list[dict] = []

    def apply_chat_template(self, messages, *, add_generation_prompt, tokenize):
        self.calls.append(
            {"messages": messages, "add_generation_prompt": add_generation_prompt, "tokenize": tokenize}
        )
        return "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages) + self.suffix


class PlainTokenizer:
    chat_template = None


def test_default_is_plain_text_without_chat_template():
    text = "Find $x$ if $x^2 = {4}$."  # braces in the problem survive (no str.format)
    assert render_prompt(text) == f"{text} {INSTRUCTION}"
    assert render_prompt(text, PlainTokenizer()) == f"{text} {INSTRUCTION}"


def test_chat_template_is_applied_with_generation_prompt():
    tok = ChatTokenizer()
    prompt = render_prompt("1+1?", tok)
    assert prompt == f"<|user|>\n1+1? {INSTRUCTION}\n<|assistant|>\n"
    assert tok.calls == [
        {
            "messages": [{"role": "user", "content": f"1+1? {INSTRUCTION}"}],
            "add_generation_prompt": True,
            "tokenize": False,
        }
    ]


def test_think_variant_opens_the_think_block_once():
    assert render_prompt("p", ChatTokenizer(), "think").endswith("<|assistant|>\n<think>\n")
    already = render_prompt("p", ChatTokenizer(suffix="<|assistant|>\n<think>\n"), "think")
    assert already.count("<think>") == 1
    assert render_prompt("p", None, "think") == f"p {INSTRUCTION}\n<think>\n"


def test_testbed_template_with_the_real_char_tokenizer():
    assert render_prompt("37+85", build_char_tokenizer(), "testbed") == "<s>37+85\n"
    assert render_prompt("37+85", None, "testbed") == "37+85"


def test_user_template_from_file(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("Problem: {problem}\nAnswer in \\boxed{}.\n")
    assert render_prompt("2+2", None, path) == "Problem: 2+2\nAnswer in \\boxed{}."
    assert render_prompt("2+2", None, str(path)) == "Problem: 2+2\nAnswer in \\boxed{}."
    assert get_template(path).name == "mine"
    (tmp_path / "bad.txt").write_text("no placeholder")
    with pytest.raises(ValueError, match=r"bad\.txt has no \{problem\} placeholder"):
        render_prompt("x", None, tmp_path / "bad.txt")


def test_names_are_listed_and_registry_refuses_duplicates():
    assert {"default", "think", "testbed"} <= set(list_templates())
    with pytest.raises(ValueError, match="unknown prompt template 'nope'.*default"):
        render_prompt("x", None, "nope")
    with pytest.raises(ValueError, match="already registered"):
        register_template(PromptTemplate("default", "{problem}"))
    with pytest.raises(ValueError, match="no \\{problem\\} placeholder"):
        PromptTemplate("broken", "no placeholder")
    custom = register_template(
        PromptTemplate("test-short", "Q: {problem}", "a test template"), overwrite=True
    )
    assert list_templates()["test-short"] == "a test template"
    assert render_prompt("1", None, custom) == "Q: 1"
