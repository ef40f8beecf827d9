"""A character-level tokenizer for the testbed, built with ``tokenizers`` and wrapped for ``transformers``.

Every printable ASCII character (plus newline) is one token, so a prompt like ``37+85`` costs five tokens and
the model never has to learn sub-word merges. The wrapped tokenizer has pad/bos/eos/unk tokens, pads on the
left (decoder-only generation), and carries a chat template, so it behaves like a real chat model's tokenizer
after ``save_pretrained`` / ``AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

__all__ = ["CHARACTERS", "SPECIAL_TOKENS", "TESTBED_CHAT_TEMPLATE", "build_char_tokenizer"]

# pad first so that its id is 0; the order is part of the cached policy's identity (see warmstart.py).
SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
CHARACTERS = "\t\n" + "".join(c for c in string.printable if c.isprintable())  # 95 printable + tab, newline

# One user turn, no system prompt: the testbed model has only ever seen this framing. Every token of framing
# is paid for in every rollout, so it is minimal: bos, the problem, a newline, then the completion and eos.
TESTBED_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ message['content'] + '\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% endif %}"
    "{% endfor %}"
)


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """Build the character-level tokenizer (deterministic: same vocabulary and ids every time)."""
    specials = list(SPECIAL_TOKENS.values())
    vocab = {tok: i for i, tok in enumerate(specials + list(CHARACTERS))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    # Every character (newline and space included) is its own pre-token; Fuse joins them back without
    # inserting spaces, so decode(encode(text)) == text.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(specials)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=512,
        **SPECIAL_TOKENS,
    )
    tokenizer.chat_template = TESTBED_CHAT_TEMPLATE
    return tokenizer
