"""ConSPOTrainer (TRL) on CPU: its gradient equals conspo's own coupled ConSPO gradient on the same rollouts."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

pytest.importorskip("trl")

from datasets import Dataset  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from conspo.integrations.trl import ConSPOConfig, ConSPOTrainer  # noqa: E402
from conspo.objectives import RolloutBatch, get_objective  # noqa: E402
from conspo.testbed import TinyModelConfig, build_char_tokenizer, build_tiny_model  # noqa: E402

GROUP = 4
PROMPTS = ["2+3=", "7-4=", "1+1=", "9-2="]


def toy_reward(completions, **kwargs):
    """Deterministic, mixed within groups: 1 when the completion's character codes sum to an even number."""
    return [float(sum(map(ord, text)) % 2 == 0) for text in completions]


def make_config(tmp_path, **overrides) -> ConSPOConfig:
    options = dict(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        per_device_train_batch_size=GROUP,
        gradient_accumulation_steps=2,
        num_generations=GROUP,
        max_completion_length=6,
        max_steps=2,
        learning_rate=1e-2,
        max_grad_norm=1e9,  # no clipping: the captured gradient is the loss's own
        seed=0,
        beta=0.0,
    )
    options.update(overrides)
    return ConSPOConfig(**options)


class CaptureTrainer(ConSPOTrainer):
    """Records each generation batch (global rows, before TRL's shuffle) and the rewards the toy reward gave."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.generations = []

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        keep = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")
        self.generations.append(
            {
                **{key: output[key].clone() for key in keep},
                "step": self.state.global_step,
                "max_steps": self.state.max_steps,
            }
        )
        return output


class GradientCapture(TrainerCallback):
    """Before each optimizer step: the accumulated gradient and a copy of the parameters it was taken at."""

    def __init__(self):
        self.steps = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.steps.append(
            {
                "grads": {
                    n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None
                },
                "params": {n: p.detach().clone() for n, p in model.state_dict().items()},
            }
        )


def reference_gradient(model_template, params, generation, tokenizer, margin_progress):
    """conspo's coupled ConSPO gradient (`get_objective("conspo")(batch)`) on the captured rollouts."""
    model = build_tiny_model(tokenizer, TINY, seed=1)
    model.load_state_dict(params)
    model.train()
    prompt_ids, completion_ids = generation["prompt_ids"], generation["completion_ids"]
    completion_mask = generation["completion_mask"]
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention_mask = torch.cat([generation["prompt_mask"], completion_mask], dim=1)
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    # Position t predicts token t+1: the completion tokens are predicted by the positions just before them.
    start = prompt_ids.size(1)
    completion_logits = logits[:, start - 1 : -1]
    token_logps = (
        torch.log_softmax(completion_logits, dim=-1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    )
    texts = tokenizer.batch_decode(
        completion_ids.masked_fill(completion_mask == 0, tokenizer.pad_token_id), skip_special_tokens=True
    )
    rewards = torch.tensor(toy_reward(texts))
    batch = RolloutBatch(
        token_logps=token_logps,
        mask=completion_mask.bool(),
        group_ids=torch.arange(len(rewards)) // GROUP,
        rewards=rewards,
    )
    loss = get_objective("conspo")(batch, progress=margin_progress).loss
    loss.backward()
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}, batch


TINY = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=64)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["decomposed", "coupled"])
def test_trainer_gradient_equals_coupled_conspo_gradient(tmp_path, mode):
    torch.manual_seed(0)
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer, TINY, seed=0)
    dataset = Dataset.from_dict({"prompt": PROMPTS * 2})
    capture = GradientCapture()
    trainer = CaptureTrainer(
        model=model,
        reward_funcs=toy_reward,
        args=make_config(tmp_path, conspo_mode=mode),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[capture],
    )
    trainer.train()

    assert (
        len(trainer.generations) == 2 and len(capture.steps) == 2
    )  # one generation batch per optimizer step
    checked_valid_groups = 0
    for generation, step in zip(trainer.generations, capture.steps):
        assert generation["completion_ids"].size(0) == 2 * GROUP  # two groups, split over two micro-steps
        progress = generation["step"] / generation["max_steps"]
        expected, batch = reference_gradient(model, step["params"], generation, tokenizer, progress)
        labels = batch.labels.view(-1, GROUP)
        checked_valid_groups += int(((labels == 1).any(1) & (labels == 0).any(1)).sum())
        assert expected.keys() == step["grads"].keys()
        for name, grad in expected.items():
            torch.testing.assert_close(step["grads"][name], grad, rtol=1e-4, atol=1e-7, msg=name)
    # The comparison is only meaningful if some group had both a positive and a negative.
    assert checked_valid_groups > 0
    # The margin followed the schedule: 0 at step 0, M once progress 1/2 passed the warm-up alpha = 0.3.
    margins = [log["conspo/margin"] for log in trainer.state.log_history if "conspo/margin" in log]
    assert margins == pytest.approx([0.0, 0.01])
    # Evaluation goes through the same credit path (TRL's prediction_step calls compute_loss).
    assert math.isfinite(trainer.evaluate(dataset)["eval_loss"])


def test_decomposed_mode_warns_when_credit_goes_stale(tmp_path):
    with pytest.warns(UserWarning, match="stale credit"):
        make_config(tmp_path, num_iterations=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_config(tmp_path)  # the default (one iteration, one generation per optimizer step) is exact
        make_config(tmp_path, num_iterations=2, conspo_mode="coupled")  # coupled recomputes the credit
    assert not [w for w in caught if "stale credit" in str(w.message)]
