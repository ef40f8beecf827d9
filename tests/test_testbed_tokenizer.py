"""The character tokenizer: exact round trips (spaces included) before and after save/reload, chat template."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from conspo.data import render_prompt
from conspo.testbed import build_char_tokenizer

TEXTS = ["11,9 \\boxed{91}", "  two  spaces\nnew line\tand tab ", "{}[]()<>^_$%&#@!~`'\"|;:?"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    build_char_tokenizer().save_pretrained(path)
    return path


def test_one_token_per_character_and_exact_round_trip():
    tok = build_char_tokenizer()
    for text in TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(text)
        assert tok.decode(ids) == text


def test_round_trip_after_reload_with_auto_tokenizer(saved):
    tok = AutoTokenizer.from_pretrained(saved)
    fresh = build_char_tokenizer()
    for text in TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ids == fresh(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text  # spaces survive the reload
    assert tok.padding_side == "left"
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<pad>", "<s>", "</s>")
    assert len({tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id}) == 4


def test_chat_template_and_left_padding(saved):
    tok = AutoTokenizer.from_pretrained(saved)
    prompt = render_prompt("37+85", tok, "testbed")
    assert prompt == "<s>37+85\n"
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1 and len(ids) == 7
    chat = [{"role": "user", "content": "1+2"}, {"role": "assistant", "content": "\\boxed{3}"}]
    assert tok.apply_chat_template(chat, tokenize=False) == "<s>1+2\n\\boxed{3}</s>"
    batch = tok(["1+1", "12+34"], padding=True, add_special_tokens=False)
    assert batch["input_ids"][0][:2] == [tok.pad_token_id] * 2 and batch["attention_mask"][0][:2] == [0, 0]
    decoded = tok.decode(
        tok("A:\\boxed{7}</s>", add_special_tokens=False)["input_ids"], skip_special_tokens=True
    )
    assert decoded == "A:\\boxed{7}"


def test_unknown_characters_map_to_unk():
    tok = build_char_tokenizer()
    assert tok("é", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]
