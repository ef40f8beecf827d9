"""``conspo train``: RLVR training from a YAML config and ``key=value`` overrides.

conspo train                                     # the built-in demo (testbed, ConSPO, ~2-3 min on CPU)
conspo train --config run.yaml batch.group_size=8 objective.name=grpo
conspo train --config run.yaml --dry-run         # validate and print the plan; loads no weights
conspo train run_name=my-run --resume            # continue a killed run from its newest checkpoint
accelerate launch --multi_gpu --num_processes 2 -m conspo.cli train ...   # data parallel
"""

from __future__ import annotations

import argparse
import sys

from conspo.config import ConfigError, help_text, load_config
from conspo.trainer.config import TrainConfig, reward_config_error

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__
    parser.epilog = "config fields (YAML keys / key=value overrides), with defaults:\n" + help_text(
        TrainConfig
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="override a config field, e.g. batch.group_size=8"
    )
    parser.add_argument("--config", "-c", metavar="FILE.yaml", help="YAML file with config fields")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="RUN_DIR",
        help="continue from the newest checkpoint of RUN_DIR (default: output_dir/run_name, else the newest run)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="validate, print the resolved config and plan, exit"
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config as YAML and exit"
    )


def _num_processes() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def run(args: argparse.Namespace) -> int:
    try:
        try:
            cfg = load_config(TrainConfig, args.config, args.overrides)
        except ConfigError:
            raise
        except ValueError as e:  # a section's own constructor check (conspo.rewards.RewardConfig)
            raise reward_config_error(e) from e
        cfg.validate(_num_processes())
    except ConfigError as e:
        print(f"conspo train: config error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        from conspo.config import dump_yaml

        print(dump_yaml(cfg), end="")
        return 0
    if args.dry_run:
        from conspo.config import dump_yaml
        from conspo.trainer.plan import build_plan, format_plan

        print(dump_yaml(cfg))
        print(format_plan(build_plan(cfg, _num_processes())))
        return 0

    from transformers.utils import logging as hf_logging

    from conspo.trainer.loop import Trainer

    # transformers draws a bar per checkpoint save/load; the trainer's own progress line says enough.
    hf_logging.disable_progress_bar()
    trainer = Trainer(cfg, resume=args.resume)
    result = trainer.run()
    if trainer.dist.is_main:
        _print_summary(result)
    return 0


def _print_summary(result) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if result.eval_before is not None or result.eval_after is not None:
        table = Table(title="held-out accuracy (avg@k)")
        table.add_column("")
        table.add_column("accuracy", justify="right")
        fmt = lambda v: "-" if v is None else f"{v:.3f}"
        table.add_row("before", fmt(result.eval_before))
        table.add_row("after", fmt(result.eval_after))
        if result.best_eval is not None:
            table.add_row(f"best (step {result.best_step})", fmt(result.best_eval))
        console.print(table)
    console.print(f"run folder: {result.run_dir}")
    if result.final_dir is not None:
        console.print(f"final model: {result.final_dir}")
    png = result.run_dir / "curves.png"
    if png.exists():
        console.print(f"curves: {png}")
