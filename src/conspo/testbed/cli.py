"""``conspo testbed``: build the warm-started testbed policy, inspect it, list the tasks.

conspo testbed warmup [--task add] [--seed 0] [--steps N] [--out DIR] [--cache-dir DIR] [--force]
conspo testbed info [POLICY_DIR] [--task ...]
conspo testbed tasks
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

from conspo.testbed.tasks import TASKS, make_task

__all__ = ["add_arguments", "run"]


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    from conspo.testbed.config import WarmStartConfig

    defaults = WarmStartConfig()
    g = p.add_argument_group("warm-start configuration (each one changes the cache key)")
    g.add_argument(
        "--task", default=defaults.task, choices=sorted(TASKS), help="testbed task (default: %(default)s)"
    )
    g.add_argument("--difficulty", type=int, default=None, help="task difficulty (default: the task's own)")
    g.add_argument("--seed", type=int, default=defaults.seed, help="seed (default: %(default)s)")
    g.add_argument("--steps", type=int, default=None, help="SFT steps (default: the task's own, 300 for add)")
    g.add_argument(
        "--slip-rate",
        type=float,
        default=defaults.slip_rate,
        help="share of teacher completions with a typical slip (default: %(default)s)",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="cache root (default: $CONSPO_CACHE/testbed or ~/.cache/conspo/testbed)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="testbed_command", metavar="ACTION")
    warm = sub.add_parser("warmup", help="train (or reuse the cached) warm-started testbed policy")
    _add_config_flags(warm)
    warm.add_argument("--out", default=None, help="also copy the policy folder here")
    warm.add_argument("--force", action="store_true", help="rebuild even if a cached copy exists")
    info = sub.add_parser("info", help="show a testbed policy's configuration and measured accuracy")
    info.add_argument(
        "policy_dir", nargs="?", default=None, help="policy folder (default: the cached default)"
    )
    _add_config_flags(info)
    sub.add_parser("tasks", help="list the synthetic tasks with an example problem and completion")


def _config(args: argparse.Namespace):
    from conspo.testbed.config import WarmStartConfig

    return WarmStartConfig(
        task=args.task, difficulty=args.difficulty, seed=args.seed, steps=args.steps, slip_rate=args.slip_rate
    )


def _summary(info: dict) -> str:
    ev = info["eval"]
    cfg = info["config"]
    return (
        f"task {cfg['task']} (difficulty {cfg['difficulty'] or 'default'}), seed {cfg['seed']}, "
        f"{info['parameters'] / 1e6:.2f}M parameters, trained in {info['train_seconds']:.0f}s\n"
        f"held-out accuracy at temperature 1: {ev['accuracy']:.3f} (pass@{ev['samples']} {ev['pass_at_k']:.3f}, "
        f"mixed groups {ev['mixed_groups']:.3f}; {ev['n']} samples, judged by {ev['verifier']})"
    )


def run(args: argparse.Namespace) -> int:
    command = getattr(args, "testbed_command", None)
    if command == "tasks":
        for name, description in TASKS.items():
            task = make_task(name)
            problem = task.train_problems(1)[0]
            print(
                f"{name:8s} {description}\n         e.g. {problem.problem} -> {task.teacher_completion(problem.problem)}"
            )
        return 0
    if command not in ("warmup", "info"):
        print("conspo testbed: choose an action: warmup, info, tasks (see --help)", file=sys.stderr)
        return 2
    from conspo.testbed.warmstart import default_cache_dir, ensure_testbed_policy, read_testbed_info

    try:
        config = _config(args)
    except ValueError as exc:
        print(f"conspo testbed: {exc}", file=sys.stderr)
        return 2
    root = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()
    if command == "info":
        path = Path(args.policy_dir) if args.policy_dir else root / config.cache_key
        if not path.exists():
            print(
                f"no testbed policy at {path} (build it with `conspo testbed warmup`)\nconfig: {json.dumps(dataclasses.asdict(config))}"
            )
            return 1
        try:
            info = read_testbed_info(path)
        except ValueError as exc:
            print(f"conspo testbed: {exc}", file=sys.stderr)
            return 1
        print(f"{path}\n{_summary(info)}")
        return 0
    target = root / config.cache_key
    if args.force and target.exists():
        shutil.rmtree(target)
    path = ensure_testbed_policy(root, config=config, log=lambda msg: print(msg, flush=True))
    print(f"{path}\n{_summary(read_testbed_info(path))}")
    if args.out:
        out = Path(args.out)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(path, out)
        print(f"copied to {out}")
    return 0
