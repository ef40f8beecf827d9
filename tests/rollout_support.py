"""The Rollout contract every generation backend keeps, as one check the backends' tests share."""

from __future__ import annotations


def assert_rollout_contract(rollouts, tokenizer, prompts: list[str], n: int, max_new_tokens: int) -> None:
    """Grouped layout, prompt ids, no padding, EOS kept last, truncation flags and text, both endings seen."""
    eos = tokenizer.eos_token_id
    assert len(rollouts) == len(prompts) * n
    assert [r.prompt_index for r in rollouts] == [i for i in range(len(prompts)) for _ in range(n)]
    for r in rollouts:
        assert r.prompt_ids == tokenizer(prompts[r.prompt_index], add_special_tokens=False)["input_ids"]
        assert tokenizer.pad_token_id not in r.completion_ids
        if r.truncated:
            assert len(r.completion_ids) == max_new_tokens and eos not in r.completion_ids
        else:
            assert r.completion_ids[-1] == eos and eos not in r.completion_ids[:-1]
        assert r.text == tokenizer.decode(r.completion_ids[: len(r.completion_ids) - (not r.truncated)])
    assert {r.truncated for r in rollouts} == {True, False}
