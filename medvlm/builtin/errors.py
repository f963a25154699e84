"""The one error type of the built-in model."""

from __future__ import annotations


class BuiltinError(RuntimeError):
    """Preparing or assembling the built-in model failed; the message names the step."""
