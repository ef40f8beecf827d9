"""ConSPO inside TRL: ``ConSPOConfig`` (a ``GRPOConfig``) and ``ConSPOTrainer`` (a ``GRPOTrainer``).

ConSPO couples every rollout of a group (Eq. 13), but TRL shuffles the rows of a generation batch and splits
them across devices and accumulation micro-steps, so a group is almost never whole inside one loss call.
The default ``conspo_mode="decomposed"`` therefore works in two places:

1. ``_generate_and_score_completions`` (after TRL has generated and rewarded the batch): on the whole
   *gathered* generation batch, where group membership is still known (group id = global row //
   ``num_generations``, before the shuffle), score every rollout with a no-grad forward and compute the
   detached ConSPO credit (``objective.credit``, margin from ``global_step / max_steps``). Each process keeps
   the credit of its own rows and tags each row with its index.
2. ``_compute_loss``: on any shuffled micro-batch, the per-row loss ``objective.loss`` with the credit of
   those rows and the *global* counts as normalizer. Summed over the micro-steps of a generation batch and
   over processes, its gradient is the coupled ConSPO gradient.

Exact when the credit is computed at the parameters being differentiated: ``num_iterations == 1`` and
``steps_per_generation == gradient_accumulation_steps`` (TRL's default). Otherwise later optimizer steps
reuse stale credit and the trainer warns.

``conspo_mode="coupled"`` instead evaluates the coupled objective on each micro-batch. It is exact only when
every micro-batch holds whole groups, so it requires ``per_device_train_batch_size % num_generations == 0``
and shuffles whole groups instead of rows.

What this trainer leaves out on purpose: TRL's ``loss_type`` / ``importance_sampling_level`` / clipping
(ConSPO has no importance ratio), the KL term (``beta`` must be 0), the entropy bonus and mask, the
off-policy mask and the vLLM importance-sampling correction. The TRL internals it overrides are checked at
construction (:func:`check_trl_internals`), so a TRL upgrade that changes them fails loudly.

Why one file of about 500 lines: the ``GRPOTrainer`` overrides and the check of the TRL internals they rely
on are reviewed together at every TRL upgrade. The recipe translation (a ``conspo train`` config as a
``ConSPOConfig``) is its own module, :mod:`conspo.integrations.trl_recipe`, re-exported here.
"""

from __future__ import annotations

import inspect
import json
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import trl
from packaging.version import Version
from trl import GRPOConfig, GRPOTrainer
from trl.trainer import grpo_trainer as _grpo_module

from conspo.integrations.trl_recipe import (
    CONSPO_OPTIONS,
    TRAIN_CONFIG_MAPPING,
    TRAIN_CONFIG_NOT_MAPPED,
    TRAIN_CONFIG_REFUSED,
    conspo_config_options,
    peft_config_from_train_config,
)
from conspo.objectives import ConSPO, RolloutBatch, get_objective, hyperparameter_field
from conspo.objectives.conspo import MarginKind

if TYPE_CHECKING:
    from conspo.trainer.config import TrainConfig

__all__ = [
    "CONSPO_OPTIONS",
    "TESTED_TRL_VERSIONS",
    "TRAIN_CONFIG_MAPPING",
    "TRAIN_CONFIG_NOT_MAPPED",
    "TRAIN_CONFIG_REFUSED",
    "TRL_INTERNALS",
    "ConSPOConfig",
    "ConSPOTrainer",
    "check_trl_internals",
    "conspo_config_from_train_config",
    "peft_config_from_train_config",
]

TESTED_TRL_VERSIONS = (">=1.16", "<1.17")
"""The TRL versions this integration is tested with (the ``trl`` extra pins the same range)."""

TRL_INTERNALS: dict[str, tuple[str, ...]] = {
    "_generate_and_score_completions": ("self", "inputs"),
    "_calculate_rewards": ("self", "inputs", "prompts", "completions", "completion_ids_list"),
    "_compute_loss": ("self", "model", "inputs"),
    "_prepare_inputs": ("self", "generation_batch"),
    "_get_per_token_logps_and_entropies": (
        "self",
        "model",
        "input_ids",
        "attention_mask",
        "logits_to_keep",
        "batch_size",
        "compute_entropy",
        "compute_aux_loss",
    ),
    "compute_loss": ("self", "model", "inputs", "return_outputs", "num_items_in_batch"),
}
"""GRPOTrainer methods this trainer overrides (exact parameters) or calls (leading parameters)."""
_OVERRIDDEN = frozenset(
    {"_generate_and_score_completions", "_calculate_rewards", "_compute_loss", "_prepare_inputs"}
)

# Keys of the dict `_generate_and_score_completions` returns that the loss reads.
_REQUIRED_OUTPUT_KEYS = (
    "prompt_ids",
    "prompt_mask",
    "completion_ids",
    "completion_mask",
    "num_items_in_batch",
)
# Optional multimodal keys forwarded to the scoring forward, as `_compute_loss` does.
_FORWARD_KEYS = (
    "pixel_values",
    "image_grid_thw",
    "num_images",
    "pixel_attention_mask",
    "spatial_shapes",
    "num_tiles",
    "image_sizes",
    "token_type_ids",
    "mm_token_type_ids",
    "image_position_ids",
)
_MODES = ("decomposed", "coupled")


def check_trl_internals() -> None:
    """Raise ``RuntimeError`` if a GRPOTrainer internal this trainer overrides is gone or changed signature.

    Also checks the module-level helpers the batching logic depends on (``shuffle_sequence_dict``,
    ``split_tensor_dict``, ``disable_gradient_checkpointing``) and that ``_prepare_inputs`` still shuffles
    before it splits. Warns when the installed TRL is outside :data:`TESTED_TRL_VERSIONS`.
    """
    problems = []
    for name, expected in TRL_INTERNALS.items():
        method = getattr(GRPOTrainer, name, None)
        if method is None:
            problems.append(f"GRPOTrainer.{name} is gone")
            continue
        signature = inspect.signature(method)
        params = tuple(signature.parameters)
        extra = [signature.parameters[p] for p in params[len(expected) :]]
        if params[: len(expected)] != expected:
            problems.append(f"GRPOTrainer.{name}{params} no longer starts with {expected}")
        elif name in _OVERRIDDEN and extra:
            problems.append(f"GRPOTrainer.{name}{params} now takes more than the overridden {expected}")
        elif any(p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in extra):
            problems.append(f"GRPOTrainer.{name}{params} has new required parameters after {expected}")
    for helper in ("shuffle_sequence_dict", "split_tensor_dict", "disable_gradient_checkpointing"):
        if not callable(getattr(_grpo_module, helper, None)):
            problems.append(f"trl.trainer.grpo_trainer.{helper} is gone")
    if not problems:
        source = inspect.getsource(GRPOTrainer._prepare_inputs)
        if not (0 <= source.find("shuffle_sequence_dict(") < source.find("split_tensor_dict(")):
            problems.append("GRPOTrainer._prepare_inputs no longer shuffles rows before splitting them")
    if problems:
        raise RuntimeError(
            f"conspo.integrations.trl was written against trl {','.join(TESTED_TRL_VERSIONS)}; the installed "
            f"trl {trl.__version__} changed internals it overrides: " + "; ".join(problems)
        )
    version = Version(trl.__version__)
    if not (Version("1.16") <= version < Version("1.17")):
        warnings.warn(
            f"conspo.integrations.trl is tested with trl {','.join(TESTED_TRL_VERSIONS)}, found {version}",
            stacklevel=2,
        )


@dataclass
class ConSPOConfig(GRPOConfig):
    """A ``GRPOConfig`` with the ConSPO objective's options (defaults: the paper's tau=10, M=0.01, alpha=0.3).

    TRL's own loss options (``loss_type``, ``importance_sampling_level``, ``epsilon``, ``delta``) are not used:
    the loss is the registered conspo objective. Options that would silently change that loss are rejected.
    """

    objective: str = field(
        default="conspo",
        metadata={"help": "Registered conspo objective to train with (`conspo.objectives.get_objective`)."},
    )
    # ConSPO's own options: default and help from `dataclasses.fields(ConSPO)` (see CONSPO_OPTIONS).
    tau: float = hyperparameter_field(ConSPO, "tau")
    margin: MarginKind = hyperparameter_field(ConSPO, "margin")
    margin_max: float = hyperparameter_field(ConSPO, "margin_max")
    margin_warmup: float = hyperparameter_field(ConSPO, "margin_warmup")
    objective_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Further keyword arguments for the objective (e.g. the Table 6 score / credit ablations), "
            "as a dict or a JSON string; see docs/objectives.md. With a spec string as `objective` "
            "('conspo:credit=linear'), tau / margin / margin_max / margin_warmup are not applied."
        },
    )
    conspo_mode: str = field(
        default="decomposed",
        metadata={
            "help": "'decomposed': credit on the whole gathered generation batch, per-row loss on any "
            "micro-batch (works with any batching). 'coupled': the coupled objective per micro-batch; needs "
            "whole groups per micro-batch (per_device_train_batch_size % num_generations == 0)."
        },
    )
    label_threshold: float = field(
        default=0.5,
        metadata={
            "help": "A rollout is a positive when its (weighted) reward is > this, a negative otherwise; "
            "rows every reward function scored None are invalid (INFERRED default)."
        },
    )
    disable_dropout: bool = field(
        default=True,
        metadata={"help": "Disable dropout so that the no-grad scores equal the training forward's scores."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.conspo_mode not in _MODES:
            raise ValueError(f"conspo_mode={self.conspo_mode!r}: expected one of {_MODES}")
        if self.label_threshold != self.label_threshold:  # NaN
            raise ValueError("label_threshold must be a number, got NaN")
        if self.use_liger_kernel:
            raise ValueError(
                "use_liger_kernel=True: ConSPOTrainer computes its own loss from TRL's fused LM-head log-probs; "
                "set use_liger_kernel=False"
            )
        if self.beta != 0.0:
            raise ValueError(
                f"beta={self.beta}: ConSPO has no KL term (the paper's Eq. 13 has none) and ConSPOTrainer does "
                "not apply TRL's; set beta=0.0"
            )
        if self.top_entropy_quantile != 1.0:
            raise ValueError(
                "top_entropy_quantile < 1 (entropy mask) is not applied by ConSPOTrainer; set it to 1.0"
            )
        if self.off_policy_mask_threshold is not None:
            raise ValueError("off_policy_mask_threshold is not applied by ConSPOTrainer; leave it None")
        if self.entropy_coef != 0.0 or self.use_adaptive_entropy:
            raise ValueError("the entropy bonus is not applied by ConSPOTrainer; set entropy_coef=0.0")
        if self.conspo_mode == "coupled" and self.per_device_train_batch_size % self.num_generations != 0:
            raise ValueError(
                f"conspo_mode='coupled' needs whole groups in every micro-batch: per_device_train_batch_size "
                f"({self.per_device_train_batch_size}) must be a multiple of num_generations "
                f"({self.num_generations}); use conspo_mode='decomposed' otherwise"
            )
        if isinstance(self.objective_kwargs, str):  # from a command line
            try:
                self.objective_kwargs = json.loads(self.objective_kwargs)
            except json.JSONDecodeError as error:
                raise ValueError(f"objective_kwargs is not valid JSON: {self.objective_kwargs!r}") from error
        # Build the objective once here so that a bad name or option fails before a model loads.
        objective = self.build_objective()
        if objective.needs_ref_logps:
            raise ValueError(
                f"objective {objective.name!r} has kl_coef > 0, which needs reference log-probs that "
                "ConSPOTrainer does not compute; set kl_coef=0 (ConSPO has no KL term)"
            )
        stale = self.num_iterations != 1 or self.steps_per_generation != self.gradient_accumulation_steps
        if self.conspo_mode == "decomposed" and stale:
            warnings.warn(
                f"ConSPO is exact when num_iterations == 1 and steps_per_generation == "
                f"gradient_accumulation_steps; got num_iterations={self.num_iterations}, "
                f"steps_per_generation={self.steps_per_generation}, gradient_accumulation_steps="
                f"{self.gradient_accumulation_steps}. Later optimizer steps on one generation batch reuse the "
                "credit computed before the first one (stale credit); conspo_mode='coupled' recomputes it.",
                stacklevel=2,
            )

    def build_objective(self):
        """The conspo objective these options describe."""
        kwargs = dict(self.objective_kwargs or {})
        if self.objective == "conspo":
            kwargs = {name: getattr(self, name) for name in CONSPO_OPTIONS} | kwargs
        return get_objective(self.objective, **kwargs)


class ConSPOTrainer(GRPOTrainer):
    """A ``GRPOTrainer`` whose loss is a conspo objective (ConSPO by default), computed group-aware.

    Takes the same arguments as ``GRPOTrainer``; ``args`` must be a :class:`ConSPOConfig`.
    """

    def __init__(self, model, reward_funcs=None, args: ConSPOConfig | None = None, *pargs, **kwargs) -> None:
        check_trl_internals()
        if args is None:
            args = ConSPOConfig(output_dir="conspo-trl")
        if not isinstance(args, ConSPOConfig):
            raise TypeError(f"ConSPOTrainer needs a ConSPOConfig, got {type(args).__name__}")
        super().__init__(model, reward_funcs, args, *pargs, **kwargs)
        self.objective = args.build_objective()
        self._conspo_rewards_per_func: torch.Tensor | None = None
        # mode -> (credit of this process's rows, global normalizer), set once per generation batch
        self._conspo_credit: dict[str, tuple[Any, Any]] = {}

    # ---------------------------------------------------------------- generation batch: group-aware credit

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._conspo_rewards_per_func = rewards_per_func  # gathered over processes: (B_global, n_funcs)
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        missing = [key for key in _REQUIRED_OUTPUT_KEYS if key not in output]
        if missing or self._conspo_rewards_per_func is None:
            raise RuntimeError(
                f"GRPOTrainer._generate_and_score_completions changed (missing {missing or 'the rewards'}); "
                f"ConSPOTrainer is tested with trl {','.join(TESTED_TRL_VERSIONS)}"
            )
        mode = "train" if self.model.training else "eval"
        device = output["completion_ids"].device
        rewards_per_func, self._conspo_rewards_per_func = self._conspo_rewards_per_func, None
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        num_local = output["completion_ids"].size(0)
        num_global = rewards_per_func.size(0)
        if num_global % num_generations != 0:
            raise RuntimeError(
                f"generation batch of {num_global} rows is not made of groups of {num_generations}"
            )

        # Group ids: TRL's RepeatSampler puts the G rollouts of a prompt on consecutive global rows.
        group_ids = torch.arange(num_global, device=device) // num_generations
        rewards = (rewards_per_func * self.reward_weights.to(device).unsqueeze(0)).nansum(dim=1)
        labels = (rewards > self.args.label_threshold).long()
        labels[torch.isnan(rewards_per_func).all(dim=1)] = -1  # unscorable: every reward function said None

        mask = self._loss_mask(output)
        token_logps = self._score_forward(output)  # (B_local, T), no grad, current parameters
        # Rows differ in length across processes: pad to a common T before gathering.
        token_logps_g = self.accelerator.gather(self.accelerator.pad_across_processes(token_logps, dim=1))
        mask_g = self.accelerator.gather(self.accelerator.pad_across_processes(mask, dim=1))
        labels[mask_g.sum(dim=1) == 0] = -1  # no loss token (e.g. masked truncated completion): no score

        batch = RolloutBatch(
            token_logps=token_logps_g.float(),
            mask=mask_g,
            group_ids=group_ids,
            rewards=torch.nan_to_num(rewards, nan=0.0),
            labels=labels,
            old_token_logps=token_logps_g.float() if self.objective.needs_old_logps else None,
        )
        credit = self.objective.credit(batch, progress=self._progress())
        start = self.accelerator.process_index * num_local
        local = torch.arange(start, start + num_local, device=device)
        self._conspo_credit[mode] = (credit.select(local), credit.normalizer)
        self._log_credit_metrics(mode, credit)

        # Per-row keys travel through TRL's shuffle and split with the rest of the batch.
        output["conspo_row"] = torch.arange(num_local, device=device)
        output["conspo_group_ids"] = group_ids[local]
        output["conspo_rewards"] = batch.rewards[local]
        output["conspo_labels"] = labels[local]
        if self.objective.needs_old_logps:
            output["conspo_old_token_logps"] = token_logps.float()
        return output

    @staticmethod
    def _loss_mask(inputs) -> torch.Tensor:
        mask = inputs["completion_mask"]
        return mask if "tool_mask" not in inputs else mask * inputs["tool_mask"]

    def _progress(self) -> float:
        """Normalized training progress lambda_t = global_step / max_steps (INFERRED definition)."""
        max_steps = self.state.max_steps or 0
        return min(max(self.state.global_step / max_steps, 0.0), 1.0) if max_steps > 0 else 0.0

    def _score_forward(self, output) -> torch.Tensor:
        """Per-token log-probs of the completions under the current parameters, without gradient."""
        if output.get("old_per_token_logps") is not None:
            return output["old_per_token_logps"]  # TRL already ran this forward (same parameters)
        input_ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        attention_mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        mode = "train" if self.model.training else "eval"
        batch_size = (
            self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size
        )
        disable_checkpointing = _grpo_module.disable_gradient_checkpointing
        with torch.no_grad(), disable_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            token_logps, _, _ = self._get_per_token_logps_and_entropies(
                self.model,
                input_ids,
                attention_mask,
                output["completion_ids"].size(1),
                batch_size=batch_size,
                **{key: output.get(key) for key in _FORWARD_KEYS},
            )
        return token_logps

    def _log_credit_metrics(self, mode: str, credit) -> None:
        # Objective metrics are already namespaced ("conspo/margin", "groups/valid_frac", ...).
        for name, value in credit.metrics.items():
            self._metrics[mode][name].append(float(value))

    # ---------------------------------------------------------------- batching (coupled mode keeps groups)

    def _prepare_inputs(self, generation_batch):
        if self.args.conspo_mode == "decomposed" or not self.model.training:
            return super()._prepare_inputs(generation_batch)
        # Coupled mode: same buffering as GRPOTrainer._prepare_inputs, but shuffle whole groups so each
        # micro-batch (a multiple of num_generations rows) holds complete groups.
        generate_every = self.args.steps_per_generation * self.num_iterations
        if self._step % generate_every == 0 or self._buffered_inputs is None:
            batch = self._generate_and_score_completions(generation_batch)
            batch = _shuffle_groups(batch, self.num_generations)
            self._buffered_inputs = _grpo_module.split_tensor_dict(batch, self.args.steps_per_generation)
        return self._buffered_inputs[self._step % self.args.steps_per_generation]

    # ---------------------------------------------------------------- loss on one micro-batch

    def _compute_loss(self, model, inputs):
        mode = "train" if self.model.training else "eval"
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        mask = self._loss_mask(inputs)
        token_logps, entropies, aux_loss = self._get_per_token_logps_and_entropies(
            model,
            input_ids,
            attention_mask,
            inputs["completion_ids"].size(1),
            compute_entropy=True,
            compute_aux_loss=self.aux_loss_enabled,
            **{key: inputs.get(key) for key in _FORWARD_KEYS},
        )
        batch = RolloutBatch(
            token_logps=token_logps.float(),
            mask=mask,
            group_ids=inputs["conspo_group_ids"],
            rewards=inputs["conspo_rewards"],
            labels=inputs["conspo_labels"],
            old_token_logps=inputs.get("conspo_old_token_logps"),
        )
        credit, normalizer = self._conspo_credit[mode]
        if self.args.conspo_mode == "decomposed":
            out = self.objective.loss(batch, credit.select(inputs["conspo_row"]), normalizer=normalizer)
            loss = out.loss
        else:
            # Whole groups: the coupled objective at the current parameters (fresh credit, exact even when
            # a generation batch is reused), rescaled from this micro-batch's count to the global one.
            out = self.objective(batch, progress=self._progress())
            key = getattr(self.objective, "normalize_by", "groups")
            local = self.objective.credit(batch.detach(), progress=self._progress()).normalizer[key]
            loss = out.loss * local.clamp(min=1) / normalizer[key].clamp(min=1)
        loss = loss * self._loss_scale(mode)

        if self.aux_loss_enabled:
            accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1.0
            loss = loss + self.router_aux_loss_coef * aux_loss / accumulation
            self._metrics[mode]["aux_loss"].append(
                self.accelerator.gather_for_metrics(aux_loss).mean().item()
            )
        totals = self.accelerator.reduce(
            torch.stack([(entropies.detach() * mask).sum(), mask.sum().float()]), reduction="sum"
        )
        self._metrics[mode]["entropy"].append((totals[0] / totals[1].clamp(min=1.0)).item())
        self._metrics[mode]["loss/objective"].append(self.accelerator.gather(loss.detach()).sum().item())
        return loss

    def _loss_scale(self, mode: str) -> float:
        """Turn a loss normalized by global counts into what this process must backpropagate.

        DDP averages gradients over processes, hence x num_processes. A generation batch spans
        ``steps_per_generation`` micro-steps and an optimizer step ``gradient_accumulation_steps`` of them;
        the ratio rescales when they differ (TRL's own `dapo` normalization does the same).
        """
        scale = float(self.accelerator.num_processes)
        if mode == "train":
            scale *= self.args.steps_per_generation / self.current_gradient_accumulation_steps
        return scale


def _shuffle_groups(batch: dict[str, Any], group_size: int) -> dict[str, Any]:
    """Shuffle the rows of a generation batch by whole groups of ``group_size`` consecutive rows."""
    num_rows = len(batch["completion_ids"])
    order = torch.randperm(num_rows // group_size)
    permutation = (order[:, None] * group_size + torch.arange(group_size)[None, :]).reshape(-1)

    def permute(value):
        if value is None or (isinstance(value, torch.Tensor) and value.ndim == 0):
            return value
        if isinstance(value, torch.Tensor):
            return value[permutation.to(value.device)]
        return [value[i] for i in permutation.tolist()]

    return {key: permute(value) for key, value in batch.items()}


# ------------------------------------------------------------------------------------------------------------
# A `conspo train` config (TrainConfig, e.g. a recipe) as a ConSPOConfig: the tables and the translation live
# in conspo.integrations.trl_recipe (re-exported here, the import path examples and users know).


def conspo_config_from_train_config(
    cfg: TrainConfig, num_processes: int = 1, **overrides: Any
) -> ConSPOConfig:
    """The :class:`ConSPOConfig` that trains what ``cfg`` (a ``conspo train`` config or recipe) describes.

    ``num_processes``: the launch's process count (accelerate's ``WORLD_SIZE``); ``overrides``: ConSPOConfig
    keyword arguments applied last. What maps where, what is refused (``ValueError`` naming every value this
    path cannot reproduce) and why: :func:`conspo.integrations.trl_recipe.conspo_config_options`.
    """
    return ConSPOConfig(**conspo_config_options(cfg, num_processes, **overrides))
