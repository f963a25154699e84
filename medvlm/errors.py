"""Exceptions raised by the model layer; each message is one sentence a user can act on."""

from __future__ import annotations


class MedVLMError(Exception):
    """Base class of every error raised by ``medvlm``."""


class ModelLoadError(MedVLMError):
    """A model folder is missing, incomplete, unsupported, or cannot be loaded as asked."""


class AdapterError(MedVLMError):
    """A LoRA adapter cannot be loaded, switched, merged or unloaded."""


class RequestError(MedVLMError):
    """An ``AskRequest`` or an API request is malformed (wrong image type, empty question, ...)."""


class BackendError(MedVLMError):
    """A backend could not produce an answer (server down, timeout, bad response)."""
