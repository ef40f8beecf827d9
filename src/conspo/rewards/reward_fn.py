"""The reward function the trainer and evaluator call: verdicts plus optional shaping.

``build_reward_fn(RewardConfig(...))`` returns a :class:`RewardFunction`:
``reward_fn(prompts, completions, answers) -> list[float]`` and ``reward_fn.score(...) -> list[Verdict]``.
ConSPO's default is the binary reward (1 correct / 0 otherwise); the format reward and DAPO's soft
overlong penalty are off unless configured. Labels come from ``Verdict.correct``, never from the
shaped reward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from conspo.rewards.equivalence import DEFAULT_REL_TOL
from conspo.rewards.extraction import FALLBACKS, THINK_MODES, extract_boxed, judged_text
from conspo.rewards.verdict import Verdict
from conspo.rewards.verifier import MathVerifier

__all__ = ["RewardConfig", "RewardFunction", "build_reward_fn", "overlong_penalty", "is_well_formatted"]


@dataclass
class RewardConfig:
    """How responses are verified and how the reward is shaped (defaults: binary reward, no shaping)."""

    timeout: float = field(
        default=5.0,
        metadata={"help": "Hard wall-clock seconds per check in a worker process (INFERRED default)."},
    )
    num_workers: int | None = field(
        default=None, metadata={"help": "Verifier worker processes; None = min(4, CPU cores)."}
    )
    rel_tol: float = field(
        default=DEFAULT_REL_TOL,
        metadata={
            "help": "Relative tolerance when a decimal is compared (together with half a unit in its last written "
            "place); integers, fractions and other exact forms compare exactly (INFERRED; docs/rewards.md)."
        },
    )
    think: str = field(
        default="auto",
        metadata={
            "help": "'<think>' handling: 'auto' judges what follows '</think>' when present, else everything; "
            "'after' requires '</think>' (no answer without it); 'ignore' judges the whole response."
        },
    )
    fallback: str = field(
        default="last_number",
        metadata={
            "help": "When no boxed / 'final answer is' / '####' answer exists: 'last_number' or 'none'."
        },
    )
    format_reward: float = field(
        default=0.0,
        metadata={
            "help": "Added to the reward of a well-formatted response (a closed <think> block if one was opened, "
            "then a boxed answer). 0 = off (ConSPO default)."
        },
    )
    overlong_max_len: int | None = field(
        default=None,
        metadata={
            "help": "DAPO soft overlong punishment: L_max in tokens (None = off). Needs completion_lengths."
        },
    )
    overlong_buffer_len: int = field(
        default=4096,
        metadata={
            "help": "DAPO L_cache: the penalty ramps from 0 to -factor over the last this-many tokens."
        },
    )
    overlong_penalty_factor: float = field(
        default=1.0, metadata={"help": "DAPO overlong penalty scale (the -1 at L_max)."}
    )
    custom_verifier: str | None = field(
        default=None,
        metadata={
            "help": "'package.module:function' scoring (completion, answer) -> float | bool | Verdict, run in the "
            "workers under the same timeout instead of the built-in math check. Must be importable by path."
        },
    )
    memory_limit_mb: int | None = field(
        default=4096, metadata={"help": "Address-space limit per worker (Linux); None = off."}
    )

    def __post_init__(self) -> None:
        from conspo.config import check_finite

        check_finite(self, "RewardConfig")  # NaN / inf: a NaN timeout would switch the hard timeout off
        if not self.timeout or self.timeout <= 0:
            raise ValueError(f"RewardConfig.timeout must be > 0 seconds, got {self.timeout!r}")
        if self.num_workers is not None and (not isinstance(self.num_workers, int) or self.num_workers < 1):
            raise ValueError(
                f"RewardConfig.num_workers must be a positive int or None, got {self.num_workers!r}"
            )
        if not 0 <= self.rel_tol < 1:
            raise ValueError(f"RewardConfig.rel_tol must be in [0, 1), got {self.rel_tol!r}")
        if self.think not in THINK_MODES:
            raise ValueError(f"RewardConfig.think={self.think!r}; expected one of {THINK_MODES}")
        if self.fallback not in FALLBACKS:
            raise ValueError(f"RewardConfig.fallback={self.fallback!r}; expected one of {FALLBACKS}")
        if self.format_reward < 0:
            raise ValueError(f"RewardConfig.format_reward must be >= 0 (0 = off), got {self.format_reward!r}")
        if self.overlong_max_len is not None and not 0 < self.overlong_buffer_len <= self.overlong_max_len:
            raise ValueError(
                "RewardConfig: need overlong_max_len > 0 and 0 < overlong_buffer_len <= overlong_max_len, got "
                f"overlong_max_len={self.overlong_max_len!r}, overlong_buffer_len={self.overlong_buffer_len!r}"
            )


def overlong_penalty(length: int, max_len: int, buffer_len: int, factor: float = 1.0) -> float:
    """DAPO's soft overlong punishment (DAPO, Eq. 13) for a response of ``length`` tokens.

    0 up to ``max_len - buffer_len``; then linear down to ``-factor`` at ``max_len``; ``-factor`` beyond.
    """
    start = max_len - buffer_len
    if length <= start:
        return 0.0
    if length <= max_len:
        return factor * (start - length) / buffer_len
    return -factor


def is_well_formatted(completion: object, think: str = "auto") -> bool:
    """A boxed answer in the judged text, and a ``<think>`` block closed when one was opened."""
    if not isinstance(completion, str):
        return False
    if "<think>" in completion and "</think>" not in completion:
        return False
    judged = judged_text(completion, think)  # type: ignore[arg-type]
    return bool(judged) and bool(extract_boxed(judged))


def _completion_text(completion: object) -> object:
    # TRL conversational format: a list of {"role", "content"} messages; the last one is the response.
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return completion[-1].get("content")
    return completion


class RewardFunction:
    """``reward_fn(prompts, completions, answers, *, completion_lengths=None) -> list[float]``.

    Owns a :class:`MathVerifier` started on first use; close it with :meth:`close` or a ``with`` block
    (an ``atexit`` hook also does). ``answers`` may come as a keyword ``answer=`` / ``solution=`` (TRL
    passes dataset columns as keywords); ``completion_ids=`` gives lengths for the overlong penalty.
    """

    __name__ = "conspo_math_reward"  # TRL logs a reward function under its __name__

    def __init__(self, config: RewardConfig | None = None) -> None:
        self.config = config or RewardConfig()
        self._verifier: MathVerifier | None = None

    @property
    def verifier(self) -> MathVerifier:
        """The underlying verifier (started lazily)."""
        if self._verifier is None:
            c = self.config
            self._verifier = MathVerifier(
                c.num_workers,
                c.timeout,
                rel_tol=c.rel_tol,
                think=c.think,
                fallback=c.fallback,
                custom_verifier=c.custom_verifier,
                memory_limit_mb=c.memory_limit_mb,
            )
        return self._verifier

    def score(
        self,
        prompts: Sequence[Any] | None,
        completions: Sequence[Any],
        answers: Sequence[Any] | None = None,
        *,
        completion_lengths: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> list[Verdict]:
        """Verdicts with the shaped reward in ``reward`` (``correct`` is the unshaped label)."""
        answers = _answers(answers, kwargs, len(completions))
        if completion_lengths is None and kwargs.get("completion_ids") is not None:
            completion_lengths = [len(ids) for ids in kwargs["completion_ids"]]
        c = self.config
        if c.overlong_max_len is not None and (
            completion_lengths is None or len(completion_lengths) != len(completions)
        ):
            raise ValueError(
                "RewardFunction: overlong_max_len is set, so pass completion_lengths (token counts), one per completion"
            )
        texts = [_completion_text(item) for item in completions]
        verdicts = self.verifier.verify_batch(texts, answers)
        if c.format_reward == 0 and c.overlong_max_len is None:
            return verdicts
        shaped = []
        for i, verdict in enumerate(verdicts):
            reward = verdict.reward
            if c.format_reward and is_well_formatted(texts[i], c.think):
                reward += c.format_reward
            if c.overlong_max_len is not None:
                reward += overlong_penalty(
                    int(completion_lengths[i]),
                    c.overlong_max_len,
                    c.overlong_buffer_len,
                    c.overlong_penalty_factor,  # type: ignore[index]
                )
            shaped.append(verdict.with_reward(reward))
        return shaped

    def __call__(
        self,
        prompts: Sequence[Any] | None,
        completions: Sequence[Any],
        answers: Sequence[Any] | None = None,
        *,
        completion_lengths: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> list[float]:
        return [
            v.reward
            for v in self.score(
                prompts, completions, answers, completion_lengths=completion_lengths, **kwargs
            )
        ]

    def close(self) -> None:
        """Stop the verifier's workers."""
        if self._verifier is not None:
            self._verifier.close()

    def __enter__(self) -> RewardFunction:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _answers(answers: Sequence[Any] | None, kwargs: dict[str, Any], n: int) -> Sequence[Any]:
    if answers is None:
        for key in ("answer", "answers", "solution", "ground_truth"):
            if kwargs.get(key) is not None:
                answers = kwargs[key]
                break
    if answers is None:
        raise ValueError(
            "RewardFunction: no gold answers; pass answers=... (or a dataset column answer= / solution=)"
        )
    if len(answers) != n:
        raise ValueError(f"RewardFunction: {n} completions but {len(answers)} answers")
    return answers


def build_reward_fn(config: RewardConfig | None = None) -> RewardFunction:
    """The reward function for ``config`` (default: binary math reward, no shaping)."""
    return RewardFunction(config)
