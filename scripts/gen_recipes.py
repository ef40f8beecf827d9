"""Write ``recipes/<setting>/<objective>.yaml``: the paper's training settings for ``conspo train --config``.

python scripts/gen_recipes.py            # (re)write the recipes
python scripts/gen_recipes.py --check    # exit 1 if a committed recipe differs from what this script writes

One script writes every recipe so that every objective of a setting shares the setting exactly: only the
``objective`` section (and DAPO's own dynamic sampling and overlong reward shaping) differs. Each value the paper states quotes it in a
comment (section of arXiv 2605.12969 v3); each value it leaves out says ``INFERRED:`` and why
(shared/reference/conspo-paper.md sections 6.5 and 14.6; DisCO's public scripts for G, batch and no KL).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"

DEEPSCALER_ROWS = 40_315  # DeepScaleR-Preview-Dataset size
DAPO17K_ROWS = (
    17_398  # open-r1's deduplicated English DAPO-Math-17k (the copy conspo.data names dapo_math_17k)
)
PROMPTS = 128


@dataclass(frozen=True)
class Setting:
    folder: str
    title: str
    model: str
    model_note: str
    train: str
    train_note: str
    rows: int
    epochs: int
    epochs_note: str
    max_new_tokens: int
    length_note: str
    template: str
    template_note: str
    objectives: tuple[str, ...]
    launch: str  # accelerate config under recipes/accelerate/


def _r1_distill_deepscaler(
    folder: str,
    title: str,
    model: str,
    model_note: str,
    objectives: tuple[str, ...],
    *,
    train_note: str = '"DeepScaleR-Preview-Dataset" (§5.1)',
    epochs: int = 4,
    epochs_note: str = '"4 epochs" for all methods (§5.1)',
) -> Setting:
    """The larger R1-Distill models on DeepScaleR: 8K responses, the 'think' template, ZeRO-3 launch."""
    return Setting(
        folder,
        title,
        model,
        model_note,
        "deepscaler",
        train_note,
        DEEPSCALER_ROWS,
        epochs,
        epochs_note,
        8192,
        '"8K" max response length for the R1-Distill models (§5.1)',
        "think",
        "paper App. E template; INFERRED: 'think' for R1-distilled models",
        objectives,
        "zero3.yaml",
    )


SETTINGS = (
    Setting(
        "r1-qwen-1.5b-deepscaler",
        "DeepSeek-R1-Distill-Qwen-1.5B on DeepScaleR-Preview (paper Table 1)",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
        "paper §5.1 / Table 1",
        "deepscaler",
        '"DeepScaleR-Preview-Dataset" (§5.1), ~40.3k problems',
        DEEPSCALER_ROWS,
        4,
        '"4 epochs" for all methods (§5.1)',
        8192,
        '"8K" max response length for the R1-Distill models (§5.1)',
        "think",
        "paper App. E: step by step, answer in \\boxed{} (exact wording not given); INFERRED: 'think' opens "
        "the response with <think> as R1-distilled models expect",
        ("conspo", "grpo", "dapo", "dr_grpo", "disco", "gmpo", "cispo", "sapo"),
        "ddp.yaml",
    ),
    Setting(
        "r1-qwen-1.5b-dapo17k",
        "DeepSeek-R1-Distill-Qwen-1.5B on DAPO-Math-17k (paper Table 4)",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
        "paper Table 4",
        "dapo_math_17k",
        '"DAPO-Math-17k" (Table 4, robustness to the training set); the deduplicated English copy',
        DAPO17K_ROWS,
        4,
        '"4 epochs" for all methods (§5.1)',
        8192,
        '"8K" max response length for the R1-Distill models (§5.1)',
        "think",
        "paper App. E template; INFERRED: 'think' for R1-distilled models",
        ("conspo", "grpo", "dapo", "dr_grpo", "disco"),
        "ddp.yaml",
    ),
    Setting(
        "qwen3-4b-base-deepscaler",
        "Qwen3-4B-Base on DeepScaleR-Preview (paper Table 3)",
        "Qwen/Qwen3-4B-Base",
        "paper Table 3",
        "deepscaler",
        '"DeepScaleR-Preview-Dataset" (§5.1)',
        DEEPSCALER_ROWS,
        2,
        '"2 epochs" for Qwen3-4B-Base, "faster convergence" (App. C.2)',
        4096,
        '"4K" for Qwen3-4B-Base, training and evaluation (App. C.2)',
        "default",
        "paper App. E: step by step, answer in \\boxed{}",
        ("conspo", "grpo", "dapo", "dr_grpo", "disco"),
        "ddp.yaml",
    ),
    Setting(
        "llama3.2-3b-instruct-deepscaler",
        "Llama-3.2-3B-Instruct on DeepScaleR-Preview (paper Table 5)",
        "meta-llama/Llama-3.2-3B-Instruct",
        "paper Table 5",
        "deepscaler",
        '"DeepScaleR-Preview-Dataset" (§5.1)',
        DEEPSCALER_ROWS,
        4,
        '"4 epochs" for all methods (§5.1); INFERRED: the 2-epoch exception is stated for Qwen3-4B-Base only',
        4096,
        '"4K" for Llama-3.2-3B-Instruct (App. C.2)',
        "default",
        "paper App. E: step by step, answer in \\boxed{}",
        ("conspo", "grpo", "dapo"),
        "ddp.yaml",
    ),
    _r1_distill_deepscaler(
        "r1-qwen-7b-deepscaler",
        "DeepSeek-R1-Distill-Qwen-7B on DeepScaleR-Preview (paper Table 2)",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        "paper Table 2; trained on four nodes (§5.1), GPU count not stated",
        ("conspo", "grpo", "dapo", "dr_grpo", "disco"),
    ),
    _r1_distill_deepscaler(
        "r1-llama-8b-deepscaler",
        "DeepSeek-R1-Distill-Llama-8B on DeepScaleR-Preview (paper Table 2)",
        "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
        "paper Table 2; trained on four nodes (§5.1), GPU count not stated",
        ("conspo", "grpo", "dapo", "dr_grpo", "disco"),
    ),
    _r1_distill_deepscaler(
        "r1-qwen-32b-deepscaler",
        "DeepSeek-R1-Distill-Qwen-32B on DeepScaleR-Preview (paper App. D, Table 9)",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
        "paper App. D: GRPO vs ConSPO only",
        ("conspo", "grpo"),
        train_note='"same data and hyperparameters as the main runs" (App. D)',
        epochs=2,
        epochs_note='"2 epochs" for the 32B run (App. D)',
    ),
)

# Objective sections: (params as YAML lines with comments, extra batch overrides, one-line description).
OBJECTIVES: dict[str, tuple[list[str], dict[str, str], str]] = {
    "conspo": (
        [
            'tau: 10.0  # contrastive temperature, "tau = 10" (§5.1)',
            "margin: cosine  # the scheduled margin m_t = (M/2)(1 - cos(pi min(lambda/alpha, 1))) (§4.3)",
            'margin_max: 0.01  # target margin, "M = 0.01" (§5.1)',
            'margin_warmup: 0.3  # warm-up ratio, "alpha = 30%" (§5.1)',
        ],
        {},
        "ConSPO (Eq. 13): InfoNCE over length-normalized log-prob scores with a cosine margin curriculum",
    ),
    "grpo": (
        ["clip_eps: 0.2  # INFERRED: the paper does not give epsilon; 0.2 is GRPO's and PPO's usual value"],
        {},
        "GRPO (Eq. 2-3) as the paper defines it: clipped token ratios, sequence mean, std-normalized advantage",
    ),
    "dapo": (
        [
            "eps_low: 0.2  # INFERRED: DAPO's own clip-lower value (the ConSPO paper does not list it)",
            "eps_high: 0.28  # INFERRED: DAPO's clip-higher value",
        ],
        {
            "dynamic_sampling": 'true  # "dynamic sampling" is part of the DAPO baseline (§5.1)',
            "max_sampling_tries": "3  # INFERRED: cap on extra generate rounds per step",
        },
        "DAPO: clip-higher, token-level loss, dynamic sampling, soft overlong punishment",
    ),
    "dr_grpo": (
        [
            "clip_eps: 0.2  # INFERRED: Dr. GRPO keeps PPO's 0.2",
            "max_length: {max_new_tokens}  # INFERRED: Dr. GRPO's constant normalizer = the generation budget",
        ],
        {},
        "Dr. GRPO: no std in the advantage, constant token normalizer",
    ),
    "disco": (
        [
            "score_kind: logprob  # INFERRED: DisCO's default log-L score",
            "negatives: lse  # INFERRED: DisCO's DRO log-sum-exp over negatives",
            "tau: 10.0  # INFERRED: DisCO's temperature for log-L",
            "delta: 1.0e-4  # INFERRED: DisCO's KL trust-region radius",
            "beta: 1000.0  # INFERRED: DisCO's squared-hinge weight",
        ],
        {},
        "DisCO: discriminative objective with a KL trust region (its own defaults)",
    ),
    "gmpo": (
        [
            "eps_low: 0.4  # INFERRED: GMPO's log-space clip range",
            "eps_high: 0.4  # INFERRED: GMPO's log-space clip range",
        ],
        {},
        "GMPO: geometric mean of token ratios, clipped in log space",
    ),
    "cispo": (
        [
            "eps_high: 4.0  # INFERRED: IS weight capped at 5, as ScaleRL",
            "eps_low: null  # INFERRED: no lower bound, as MiniMax-M1",
        ],
        {},
        "CISPO: clip the importance weight, not the update",
    ),
    "sapo": (
        [
            "tau_pos: 1.0  # INFERRED: SAPO's gate temperature for positive advantages",
            "tau_neg: 1.05  # INFERRED: SAPO's gate temperature for negative advantages",
        ],
        {},
        "SAPO: a smooth, temperature-controlled gate instead of a hard clip",
    ),
}


def _dapo_overlong(setting: Setting) -> list[str]:
    """DAPO's soft overlong punishment (DAPO Eq. 13) as reward.overlong_* lines for this setting's length."""
    budget = setting.max_new_tokens
    cache = budget // 2
    cache_note = (
        "INFERRED: half the budget, as verl's 8K DAPO script (recipe/dapo/test_dapo_7b_math.sh: "
        "max_response_length 8192, overlong_buffer len 4096; DAPO's own 4096 of 20480)"
    )
    return [
        f"overlong_max_len: {budget}  # DAPO's soft overlong punishment (DAPO Eq. 13), part of the DAPO baseline "
        "(§5.1): L_max; DAPO uses 20480 = 16384 + a 4096 cache. INFERRED: L_max = this setting's response "
        "budget (rollout.max_new_tokens), as verl's DAPO recipe (max_resp_len = max_response_length)",
        f"overlong_buffer_len: {cache}  # L_cache, the penalty ramps from 0 at L_max - L_cache to -1 at L_max; "
        + cache_note,
        "overlong_penalty_factor: 1.0  # DAPO's -1 at L_max (verl's DAPO recipe: penalty_factor 1.0)",
    ]


# Reward lines an objective adds to the shared `reward` section (DAPO's overlong reward shaping).
REWARD_EXTRA = {"dapo": _dapo_overlong}


# Table 6: each ablation changes one thing of full ConSPO (1.5B, DeepScaleR).
ABLATIONS: dict[str, tuple[str, str, str]] = {
    "conspo-linear-credit": (
        'credit: linear  # "InfoNCE objective -> linear positive-negative score difference" (Table 6, 42.7)',
        "INFERRED: linear = mean s+ - mean s- per group, without the sqrt(p(1-p)) factor (not stated)",
        "InfoNCE replaced by the linear score difference",
    ),
    "conspo-clipped-ratio-score": (
        'score: clipped_ratio  # "length-normalized log-prob scores -> clipped IS-ratio scores" (Table 6, 43.4)',
        "clip_eps: 0.2  # INFERRED: epsilon of the Eq. 6 scores (not stated)",
        "log-prob scores replaced by the clipped IS-ratio scores of Eq. 6",
    ),
    "conspo-no-margin": (
        'margin: none  # "no margin" (Table 6, 44.1)',
        "",
        "no margin",
    ),
    "conspo-fixed-margin": (
        'margin: fixed  # "fixed margin (no schedule)" (Table 6, 43.9)',
        "INFERRED: the fixed value is M = margin_max = 0.01 from the start (not stated)",
        "a fixed margin instead of the schedule",
    ),
}


def _launch(setting: Setting, rel: str, objective: str) -> list[str]:
    check = f"# check:  conspo train --config {rel} --dry-run"
    if setting.launch == "ddp.yaml":
        return [
            check,
            f"# run:    accelerate launch --config_file recipes/accelerate/ddp.yaml -m conspo.cli train --config {rel}",
            f"#         (one GPU: conspo train --config {rel}; see docs/guide.md, 'Distributed runs')",
        ]
    lines = [
        check,
        "# run:    conspo train replicates the model on every process (no FSDP/ZeRO sharding) and this model needs",
        "#         > 80 GB for fp32 weights + AdamW alone: train this file through TRL (ConSPOTrainer), sharded:",
        f"#         accelerate launch --config_file recipes/accelerate/{setting.launch} --num_processes N \\",
        f"#             examples/train_trl.py --config {rel}",
    ]
    if objective == "dapo":
        lines.append(
            "#         (TRL has no dynamic sampling or reward shaping: add batch.dynamic_sampling=false"
            " reward.overlong_max_len=null)"
        )
    lines.append("#         see docs/guide.md, 'Distributed runs' (verl: docs/integrations.md).")
    return lines


def render(
    setting: Setting,
    objective: str,
    params: list[str],
    batch_extra: dict[str, str],
    about: str,
    rel: str,
    run_name: str,
    ablation_note: str = "",
) -> str:
    steps = round(setting.rows * setting.epochs / PROMPTS)
    lines = [
        f"# {setting.title}: {about}.",
        "# Written by scripts/gen_recipes.py (edit the script, then run it; a test checks they agree).",
        "# Quoted values cite arXiv 2605.12969 v3; 'INFERRED:' marks values the paper does not state.",
        *_launch(setting, rel, objective),
        "",
        f"steps: {steps}  # INFERRED from {setting.epochs_note}: {setting.epochs} x {setting.rows:,} problems / "
        f"{PROMPTS} prompts per step",
        "seed: 0",
        "output_dir: runs",
        f"run_name: {run_name}",
        "",
        "model:",
        f"  name_or_path: {setting.model}  # {setting.model_note}",
        "  dtype: auto  # INFERRED: fp32 master weights, bf16 autocast for the forward passes (optim.bf16)",
        "  gradient_checkpointing: true  # INFERRED: needed to fit long responses in memory",
        "",
        "data:",
        f"  train: {setting.train}  # {setting.train_note}",
        "  eval: aime24  # INFERRED: the trainer tracks one held-out set; run `conspo eval --preset paper` on the",
        "  #              checkpoints for all seven benchmarks (recipes/eval/paper.yaml)",
        f"  template: {setting.template}  # {setting.template_note}",
        "  shuffle: true  # INFERRED",
        "",
        "rollout:",
        '  temperature: 1.0  # "rollout sampling temperature 1.0" (§5.1)',
        "  top_p: 1.0  # INFERRED: pure temperature sampling",
        f"  max_new_tokens: {setting.max_new_tokens}  # {setting.length_note}",
        "  batch_size: 64  # INFERRED: sequences per generate call, for memory",
        "",
        "reward:",
        "  num_workers: 8  # INFERRED: verifier processes",
        "  timeout: 5.0  # INFERRED: seconds per verification",
        *(f"  {line}" for line in REWARD_EXTRA.get(objective, lambda _: [])(setting)),
        "",
        "objective:",
        f"  name: {objective}",
        "  params:",
        *(f"    {p.format(max_new_tokens=setting.max_new_tokens)}" for p in params),
    ]
    if ablation_note:
        lines.append(f"    # {ablation_note}")
    lines += [
        "",
        "optim:",
        '  lr: 2.0e-6  # "learning rate 2 x 10^-6" (§5.1)',
        "  betas: [0.9, 0.999]  # INFERRED: AdamW defaults",
        "  weight_decay: 0.0  # INFERRED",
        "  schedule: constant  # INFERRED: verl's default constant learning rate",
        "  warmup_steps: 0  # INFERRED",
        "  max_grad_norm: 1.0  # INFERRED: verl's default gradient clip",
        "  bf16: true  # INFERRED",
        "",
        "batch:",
        f"  prompts_per_step: {PROMPTS}  # INFERRED: DisCO's train_batch_size=128 (not stated in the paper)",
        "  group_size: 8  # INFERRED: DisCO's rollout.n=8 (not stated in the paper)",
        "  mini_batches: 4  # INFERRED: DisCO's mini-batch of 32 prompts = 4 optimizer steps per rollout batch",
        "  micro_batch_size: 2  # INFERRED: rows per forward/backward, for memory (any value dividing the mini-batch)",
        "  update_mode: decomposed",
        '  filter_groups: true  # drop all-correct and all-wrong groups, "for all methods" (§5.1)',
    ]
    extra = {"dynamic_sampling": 'false  # the paper only "discards" invalid groups (§5.1)'} | batch_extra
    lines += [f"  {k}: {v}" for k, v in extra.items()]
    lines += [
        "",
        "eval:",
        '  every: 100  # "evaluated every 100 steps", best checkpoint reported (§5.1)',
        "  samples: 32  # avg@32 on AIME/HMMT/AMC (§5.1)",
        "  max_problems: null",
        '  temperature: 0.6  # "temperature 0.6" (§5.1)',
        '  top_p: 0.95  # "top-p 0.95" (§5.1)',
        '  max_new_tokens: null  # "same max length as training" (§5.1)',
        "  at_start: true",
        "",
        "checkpoint:",
        "  every: 100  # INFERRED: the paper picks the best 100-step checkpoint; keep_last: null keeps all (disk!)",
        "  keep_last: 2",
        "  save_best: true",
        "  save_final: true",
        "",
        "logging:",
        "  tensorboard: true",
        "  wandb: false",
        "",
    ]
    return "\n".join(lines)


def all_recipes() -> dict[Path, str]:
    out: dict[Path, str] = {}
    for setting in SETTINGS:
        for name in setting.objectives:
            params, batch_extra, about = OBJECTIVES[name]
            rel = f"recipes/{setting.folder}/{name}.yaml"
            out[ROOT / rel] = render(
                setting, name, params, batch_extra, about, rel, f"{setting.folder}-{name}"
            )
    main = SETTINGS[0]
    base = OBJECTIVES["conspo"][0]
    for name, (change, note, about) in ABLATIONS.items():
        key = change.split(":")[0]
        params = [p for p in base if not p.startswith(f"{key}:")] + [change]
        if note.startswith("clip_eps"):
            params.append(note)
            note = ""
        rel = f"recipes/{main.folder}-ablations/{name}.yaml"
        out[ROOT / rel] = render(
            main, "conspo", params, {}, f"Table 6 ablation, {about}", rel, f"{main.folder}-{name}", note
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    recipes = all_recipes()
    stale = [p for p, text in recipes.items() if not p.is_file() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"out of date: {p.relative_to(ROOT)}", file=sys.stderr)
        return 1 if stale else 0
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(recipes[p])
    print(f"{len(recipes)} recipes ({len(stale)} written)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
