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
    """Records each generation batch (global rows, before TRL's shuffle) and the step it was generated at."""

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


class RecordingReward:
    """A TRL reward function that also records what it returned, one list per generation batch."""

    def __init__(self, fn):
        self.fn = fn
        self.__name__ = fn.__name__
        self.calls = []

    def __call__(self, prompts, completions, **kwargs):
        rewards = self.fn(prompts=prompts, completions=completions, **kwargs)
        self.calls.append(list(rewards))
        return rewards


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


def reference_gradient(model, generation, rewards, margin_progress):
    """conspo's coupled ConSPO gradient (`get_objective("conspo")(batch)`) on the captured rollouts."""
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
    batch = RolloutBatch(
        token_logps=token_logps,
        mask=completion_mask.bool(),
        group_ids=torch.arange(len(rewards)) // GROUP,
        rewards=torch.tensor(rewards),
    )
    loss = get_objective("conspo")(batch, progress=margin_progress).loss
    loss.backward()
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}, batch


def check_gradients(trainer, capture, reward, fresh_model) -> int:
    """Compare every optimizer step's gradient with the coupled one; returns how many groups were valid."""
    assert len(trainer.generations) == len(capture.steps) == len(reward.calls) > 0
    valid_groups = 0
    for generation, step, rewards in zip(trainer.generations, capture.steps, reward.calls):
        assert generation["completion_ids"].size(0) == 2 * GROUP  # two groups, split over two micro-steps
        model = fresh_model()
        model.load_state_dict(step["params"])
        progress = generation["step"] / generation["max_steps"]
        expected, batch = reference_gradient(model, generation, rewards, progress)
        labels = batch.labels.view(-1, GROUP)
        valid_groups += int(((labels == 1).any(1) & (labels == 0).any(1)).sum())
        assert expected.keys() == step["grads"].keys()
        for name, grad in expected.items():
            torch.testing.assert_close(step["grads"][name], grad, rtol=1e-4, atol=1e-7, msg=name)
    return valid_groups


TINY = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=64)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["decomposed", "coupled"])
def test_trainer_gradient_equals_coupled_conspo_gradient(tmp_path, mode):
    torch.manual_seed(0)
    tokenizer = build_char_tokenizer()
    dataset = Dataset.from_dict({"prompt": PROMPTS * 2})
    capture, reward = GradientCapture(), RecordingReward(toy_reward)
    trainer = CaptureTrainer(
        model=build_tiny_model(tokenizer, TINY, seed=0),
        reward_funcs=reward,
        args=make_config(tmp_path, conspo_mode=mode),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[capture],
    )
    trainer.train()

    # The comparison is only meaningful if some group had both a positive and a negative.
    assert check_gradients(trainer, capture, reward, lambda: build_tiny_model(tokenizer, TINY, seed=1)) > 0
    # The margin followed the schedule: 0 at step 0, M once progress 1/2 passed the warm-up alpha = 0.3.
    margins = [log["conspo/margin"] for log in trainer.state.log_history if "conspo/margin" in log]
    assert margins == pytest.approx([0.0, 0.01])
    # Evaluation goes through the same credit path (TRL's prediction_step calls compute_loss).
    assert math.isfinite(trainer.evaluate(dataset)["eval_loss"])


@pytest.mark.slow
def test_coupled_mode_stays_exact_when_a_generation_batch_is_reused(tmp_path):
    """num_iterations=2: the second optimizer step reuses the rollouts at moved parameters; coupled mode
    recomputes the credit there, so each step's gradient is the coupled gradient at that step's parameters."""
    torch.manual_seed(0)
    tokenizer = build_char_tokenizer()
    capture, reward = GradientCapture(), RecordingReward(toy_reward)
    trainer = CaptureTrainer(
        model=build_tiny_model(tokenizer, TINY, seed=0),
        reward_funcs=reward,
        args=make_config(tmp_path, conspo_mode="coupled", num_iterations=2),
        train_dataset=Dataset.from_dict({"prompt": PROMPTS * 2}),
        processing_class=tokenizer,
        callbacks=[capture],
    )
    trainer.train()
    assert len(trainer.generations) == 1 and len(capture.steps) == 2
    generation = trainer.generations[0]
    for step_index, step in enumerate(capture.steps):
        model = build_tiny_model(tokenizer, TINY, seed=1)
        model.load_state_dict(step["params"])
        expected, _ = reference_gradient(
            model, generation, reward.calls[0], step_index / generation["max_steps"]
        )
        for name, grad in expected.items():
            torch.testing.assert_close(
                step["grads"][name], grad, rtol=1e-4, atol=1e-7, msg=f"step {step_index}: {name}"
            )
    assert not torch.equal(
        capture.steps[0]["params"]["lm_head.weight"], capture.steps[1]["params"]["lm_head.weight"]
    )


@pytest.mark.slow
def test_trains_the_warm_started_testbed_policy_with_conspos_verifier(tmp_path, testbed_policy_dir):
    """The testbed's warm-started policy on its own task, rewarded by conspo's process-isolated verifier."""
    from transformers import AutoModelForCausalLM

    from conspo.data.templates import render_prompt
    from conspo.rewards import RewardConfig, build_reward_fn
    from conspo.testbed import make_task
    from conspo.testbed.warmstart import load_testbed_policy

    model, tokenizer = load_testbed_policy(testbed_policy_dir)
    problems = make_task("add").train_problems(4)
    dataset = Dataset.from_dict(
        {
            "prompt": [render_prompt(p.problem, tokenizer, "testbed") for p in problems],
            "answer": [p.answer for p in problems],
        }
    )
    verifier_reward = build_reward_fn(RewardConfig(num_workers=1))

    def math_reward(prompts, completions, answer, **kwargs):
        return verifier_reward(prompts, completions, answer)

    capture, reward = GradientCapture(), RecordingReward(math_reward)
    try:
        trainer = CaptureTrainer(
            model=model,
            reward_funcs=reward,
            args=make_config(tmp_path, max_completion_length=32, learning_rate=1e-3),
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[capture],
        )
        trainer.train()
    finally:
        verifier_reward.close()
    assert any(r == 1.0 for rewards in reward.calls for r in rewards)  # the warm start solves some problems
    # With no group holding both a positive and a negative both gradients would be zero: require one.
    assert (
        check_gradients(
            trainer, capture, reward, lambda: AutoModelForCausalLM.from_pretrained(testbed_policy_dir)
        )
        > 0
    )


def test_decomposed_mode_warns_when_credit_goes_stale(tmp_path):
    with pytest.warns(UserWarning, match="stale credit"):
        make_config(tmp_path, num_iterations=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_config(tmp_path)  # the default (one iteration, one generation per optimizer step) is exact
        make_config(tmp_path, num_iterations=2, conspo_mode="coupled")  # coupled recomputes the credit
    assert not [w for w in caught if "stale credit" in str(w.message)]
