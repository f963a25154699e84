"""The ``medvlm`` command line: the composition root.

Each package owns its own subcommands in a ``cli`` module exposing ``register(subparsers)``;
this module only collects them. Registrars must stay cheap to import: heavy imports (torch,
transformers, openslide) happen inside the handlers. ``training.cli`` is reached only from here,
the one place allowed to import ``training`` (see docs/ARCHITECTURE.md).

Exit codes: 0 success, 1 a failed input or check, 2 a usage error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

REGISTRARS: tuple[str, ...] = (
    "data_prep.cli",
    "data_prep.phantoms.cli",
    "knowledge_graph.cli",
    "app.commands.model",
    "app.commands.builtin",
    "training.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every package's subcommands.

    Returns:
        The parser; each subcommand sets ``func`` (a callable taking the parsed namespace and
        returning an exit code).
    """
    parser = argparse.ArgumentParser(
        prog="medvlm",
        description=(
            "On-premise clinical vision-language assistant (research software, not for clinical use)."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in REGISTRARS:
        module = importlib.import_module(name)
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: arguments without the program name; ``sys.argv[1:]`` when None.

    Returns:
        The process exit code.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    code: int = func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
