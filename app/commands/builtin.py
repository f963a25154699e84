"""Subcommands ``builtin``: prepare the built-in model on this machine."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """Add the builtin-model subcommands to the top-level subparsers."""
    del sub
