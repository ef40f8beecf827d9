"""ConSPOTrainer across 2 processes (torchrun, CPU, gloo): a group split between processes gets the coupled gradient.

With per_device_train_batch_size=3, steps_per_generation=2 and G=4, each process holds 6 rows of a
12-row generation batch, so the middle group lives on both processes; TRL shuffles each process's rows and
splits them over two micro-steps. The gradient DDP produces must still equal conspo's coupled gradient on
all 12 rollouts, which needs the gather, the process slice and the x num_processes scaling to be right.
Run as a script, this file is the per-process worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

GROUP = 4
PROMPTS = ["2+3=", "7-4=", "1+1="]


def toy_reward(completions, **kwargs):
    return [float(sum(map(ord, text)) % 2 == 0) for text in completions]


def worker(out_dir: Path) -> None:
    from datasets import Dataset
    from transformers import TrainerCallback

    from conspo.integrations.trl import ConSPOConfig, ConSPOTrainer
    from conspo.testbed import TinyModelConfig, build_char_tokenizer, build_tiny_model

    tiny = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=64)
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer, tiny, seed=0)
    generations = []

    class Capture(ConSPOTrainer):
        def _generate_and_score_completions(self, inputs):
            output = super()._generate_and_score_completions(inputs)
            generations.append(
                {
                    k: output[k].tolist()
                    for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")
                }
            )
            return output

    class Grads(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            if state.global_step == 0:
                torch.save(
                    {
                        "grads": {
                            n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
                        },
                        "params": {
                            n.removeprefix("module."): p.detach().clone()
                            for n, p in model.state_dict().items()
                        },
                    },
                    out_dir / f"step0-rank{os.environ['RANK']}.pt",
                )

    config = ConSPOConfig(
        output_dir=str(out_dir / "run"),
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        per_device_train_batch_size=3,
        gradient_accumulation_steps=2,
        num_generations=GROUP,
        max_completion_length=6,
        max_steps=1,
        learning_rate=1e-2,
        max_grad_norm=1e9,
        seed=0,
        ddp_backend="gloo",
    )
    trainer = Capture(
        model=model,
        reward_funcs=toy_reward,
        args=config,
        train_dataset=Dataset.from_dict({"prompt": PROMPTS * 4}),
        processing_class=tokenizer,
        callbacks=[Grads()],
    )
    trainer.train()
    (out_dir / f"generation-rank{os.environ['RANK']}.json").write_text(json.dumps(generations[0]))


def reference_gradient(out_dir: Path):
    from conspo.objectives import RolloutBatch, get_objective
    from conspo.testbed import TinyModelConfig, build_char_tokenizer, build_tiny_model

    tiny = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=64)
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer, tiny, seed=1)
    model.load_state_dict(torch.load(out_dir / "step0-rank0.pt")["params"])
    gens = [json.loads((out_dir / f"generation-rank{r}.json").read_text()) for r in range(2)]
    # Global rows are rank 0's rows then rank 1's (TRL's process slice); pad each part to common widths.
    prompt_width = max(len(g["prompt_ids"][0]) for g in gens)
    completion_width = max(len(g["completion_ids"][0]) for g in gens)

    def cat(key, width, left):
        rows = []
        for g in gens:
            for row in g[key]:
                pad = [tokenizer.pad_token_id if "ids" in key else 0] * (width - len(row))
                rows.append(pad + row if left else row + pad)
        return torch.tensor(rows)

    prompt_ids, prompt_mask = cat("prompt_ids", prompt_width, True), cat("prompt_mask", prompt_width, True)
    completion_ids = cat("completion_ids", completion_width, False)
    completion_mask = cat("completion_mask", completion_width, False)
    logits = model(
        input_ids=torch.cat([prompt_ids, completion_ids], 1),
        attention_mask=torch.cat([prompt_mask, completion_mask], 1),
    ).logits.float()
    completion_logits = logits[:, prompt_width - 1 : -1]
    token_logps = (
        torch.log_softmax(completion_logits, -1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    )
    texts = tokenizer.batch_decode(
        completion_ids.masked_fill(completion_mask == 0, tokenizer.pad_token_id), skip_special_tokens=True
    )
    rewards = torch.tensor(toy_reward(texts))
    batch = RolloutBatch(token_logps, completion_mask.bool(), torch.arange(len(rewards)) // GROUP, rewards)
    get_objective("conspo")(batch, progress=0.0).loss.backward()
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}, batch


@pytest.mark.slow
def test_two_processes_give_the_coupled_gradient(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [str(torchrun), "--nproc_per_node=2", "--master_port=29517", __file__, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    expected, batch = reference_gradient(tmp_path)
    labels = batch.labels.view(-1, GROUP)
    assert bool(((labels == 1).any(1) & (labels == 0).any(1)).any()), (
        "no valid group: the check would be empty"
    )
    for rank in range(2):
        grads = torch.load(tmp_path / f"step0-rank{rank}.pt")["grads"]
        grads = {n.removeprefix("module."): g for n, g in grads.items()}
        assert grads.keys() == expected.keys()
        for name, grad in expected.items():
            torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-7, msg=f"rank {rank}: {name}")


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
