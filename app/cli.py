"""The ``medvlm`` command line: the composition root.

Each package owns its own subcommands in a ``cli`` module exposing ``register(subparsers)``;
this module only collects them. Registrars must stay cheap to import: heavy imports (torch,
transformers, openslide) happen inside the handlers. ``training.cli`` is reached only from here,
the one place allowed to import ``training`` (see docs/ARCHITECTURE.md).

Exit codes: 0 success, 1 a failed input or check, 2 a usage error. An unexpected exception in a
handler becomes one sentence on stderr and exit code 1; its traceback is logged only under ``-v``.

``main`` is also where offline mode is enforced for every command: ``HF_HUB_OFFLINE``,
``TRANSFORMERS_OFFLINE`` and ``HF_HUB_DISABLE_PROGRESS_BARS`` are set (unless already set) before
any handler runs; the libraries themselves pass ``local_files_only=True``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

REGISTRARS: tuple[str, ...] = (
    "data_prep.cli",
    "data_prep.phantoms.cli",
    "knowledge_graph.cli",
    "app.commands.model",
    "app.commands.builtin",
    "app.commands.db",
    "app.commands.web",
    "app.commands.reportcheck",
    "training.cli",
)
OFFLINE_ENV: tuple[tuple[str, str], ...] = (
    ("HF_HUB_OFFLINE", "1"),
    ("TRANSFORMERS_OFFLINE", "1"),
    ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
)

logger = logging.getLogger(__name__)


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
    for name, value in OFFLINE_ENV:
        os.environ.setdefault(name, value)
    try:
        code: int = func(args)
    except BrokenPipeError:  # the reader of stdout went away (``| head``): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print(f"medvlm: {args.command} interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # last resort: one sentence, never a traceback unless -v
        logger.info("unexpected failure in %s", args.command, exc_info=True)
        print(
            f"medvlm: internal error in {args.command}: {type(e).__name__}; rerun with -v for details",
            file=sys.stderr,
        )
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
