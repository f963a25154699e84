"""Subcommands ``ask`` and ``serve-api``: wiring data_prep, knowledge_graph and medvlm."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """Add the model subcommands to the top-level subparsers."""
    del sub
