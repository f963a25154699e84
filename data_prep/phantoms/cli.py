"""Subcommands owned by ``data_prep.phantoms``."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add this package's subcommands to the top-level subparsers."""
    del sub  # filled in by the package's subcommands


def _unused(args: argparse.Namespace) -> int:  # pragma: no cover
    return 0
