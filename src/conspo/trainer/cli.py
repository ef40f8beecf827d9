"""``conspo train``: RLVR training from a YAML config and ``key=value`` overrides.

conspo train                                     # the built-in demo (testbed, ConSPO, ~2-3 min on CPU)
conspo train --config run.yaml batch.group_size=8 objective.name=grpo
conspo train --config run.yaml --dry-run         # validate and print the plan; loads no weights
conspo train run_name=my-run --resume            # continue a killed run from its newest checkpoint
conspo train run_name=my-run --overwrite         # start that run again (deletes what it wrote)
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
        "--overwrite",
        action="store_true",
        help="start a new run in a run folder that holds one, deleting what that run wrote (checkpoints, "
        "final/, best/, metrics, run card); without it such a folder is refused",
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


def _resume_arg(args: argparse.Namespace) -> bool | str:
    """``--resume run_name=X``: argparse took the override for RUN_DIR; it is an override (resume run X)."""
    import os

    resume = args.resume
    if isinstance(resume, str) and "=" in resume and not os.path.exists(resume):
        args.overrides = [*args.overrides, resume]
        return True
    return resume


def _resume_command(args: argparse.Namespace, run_dir: object) -> str:
    """The command line that continues this run: the same config and overrides, ``--resume RUN_DIR``."""
    import shlex

    words = ["conspo", "train"]
    if args.config:
        words += ["--config", str(args.config)]
    words += list(args.overrides) + ["--resume", str(run_dir)]
    return " ".join(shlex.quote(w) for w in words)


def run(args: argparse.Namespace) -> int:
    resume = _resume_arg(args)
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

        try:  # reads and validates the data too (and the model's context length)
            plan = build_plan(cfg, _num_processes())
        except ConfigError as e:
            print(f"conspo train: {e}", file=sys.stderr)
            return 2
        print(dump_yaml(cfg))
        print(format_plan(plan))
        return 0

    from transformers.utils import logging as hf_logging

    from conspo.trainer.loop import Trainer, TrainResult
    from conspo.trainer.run_folder import RunFinished, RunFolderError

    # transformers draws a bar per checkpoint save/load; the trainer's own progress line says enough.
    hf_logging.disable_progress_bar()
    try:
        trainer = Trainer(cfg, resume=resume, overwrite=args.overwrite)
    except RunFinished as done:
        print(f"conspo train: {done}")
        _print_summary(TrainResult.from_run_card(done.run_dir, done.summary))
        return 0
    except RunFolderError as e:
        print(f"conspo train: {e}", file=sys.stderr)
        return 2
    except ConfigError as e:  # bad data (read before any model loads), a prompt longer than the context
        print(f"conspo train: {e}", file=sys.stderr)
        return 2
    try:
        result = trainer.run()
    except RunFolderError as e:  # another run took the folder between the checks and the lock
        print(f"conspo train: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if trainer.dist.is_main:
            _print_aborted(args, trainer)
        return 130
    except Exception as e:
        from conspo.trainer.checkpoint import is_disk_full

        if not is_disk_full(e):
            raise
        if trainer.dist.is_main:
            _print_aborted(args, trainer, f"the disk is full ({e})")
        return 1
    if not trainer.dist.is_main:
        return 0 if result.stopped_by is None else 128 + _signal_number(result.stopped_by)
    if result.stopped_by is not None:
        kept = result.checkpoint.name if result.checkpoint is not None else "no checkpoint"
        print(
            f"conspo train: stopped by {result.stopped_by} after step {result.steps_done} of {cfg.steps}; "
            f"kept {kept} in {result.run_dir} (weights, optimizer, data position) and metrics.jsonl up to "
            f"that step. Continue with:\n  {_resume_command(args, result.run_dir)}",
            file=sys.stderr,
        )
        return 128 + _signal_number(result.stopped_by)
    _print_summary(result)
    return 0


def _signal_number(name: str) -> int:
    import signal

    try:
        return int(signal.Signals[name])
    except KeyError:
        return int(signal.SIGINT)


def _print_aborted(args: argparse.Namespace, trainer, why: str = "aborted") -> None:
    from conspo.trainer.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(trainer.run_dir)
    if ckpt is None:
        kept = "no checkpoint was written, so a --resume has nothing to continue from"
        print(f"conspo train: {why} after {trainer.step_index} steps; {kept}", file=sys.stderr)
        return
    print(
        f"conspo train: {why} after {trainer.step_index} steps; the newest checkpoint is {ckpt.name}. "
        f"Continue from it with:\n  {_resume_command(args, trainer.run_dir)}",
        file=sys.stderr,
    )


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
