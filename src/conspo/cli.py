"""The ``conspo`` command: ``train``, ``eval``, ``compare``, ``testbed``.

Each subcommand lives in its own module that exposes ``add_arguments(parser)`` and ``run(args) -> int``;
the module is imported only when its subcommand runs, so ``conspo eval --help`` never imports the trainer.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("conspo.trainer.cli", "train a causal LM with ConSPO or a baseline objective"),
    "eval": ("conspo.eval.cli", "evaluate checkpoints on math benchmarks (avg@k, pass@k, maj@k)"),
    "compare": ("conspo.compare.cli", "compare objectives side by side on the CPU testbed"),
    "testbed": ("conspo.testbed.cli", "build the built-in CPU testbed (tasks and tiny warm-started policy)"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="conspo", description=__doc__.splitlines()[0])
    from conspo import __version__

    parser.add_argument("--version", action="version", version=f"conspo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen subcommand's module is imported (keeps --help and start-up fast).
    chosen = next((a for a in argv if a in SUBCOMMANDS), None)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("conspo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
