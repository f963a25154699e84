"""medvlm: load local medical VLM checkpoints, adapters, grounded and safe generation, backends.

Cheap to import: torch and transformers are imported by ``load`` and the backends, not here.

    >>> import medvlm
    >>> loaded = medvlm.load("/models/llava-med-v1.5-hf")              # doctest: +SKIP
    >>> assistant = medvlm.Assistant(medvlm.InProcessBackend(loaded))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from medvlm.errors import AdapterError, BackendError, MedVLMError, ModelLoadError, RequestError
from medvlm.loading import SUPPORTED_FAMILIES, LoadedModel, load
from medvlm.schema import (
    Answer,
    AskRequest,
    Generation,
    GenerationSettings,
    ImageContext,
    KnowledgeFact,
    ModelInfo,
    ModelScope,
    SafetyDecision,
    Turn,
)

if TYPE_CHECKING:
    from medvlm.adapters import AdapterSet
    from medvlm.assistant import Assistant
    from medvlm.backends import Backend, InProcessBackend
    from medvlm.http_backend import HTTPBackend
    from medvlm.safety import SafetyGate

_LAZY = {
    "AdapterSet": "medvlm.adapters",
    "Assistant": "medvlm.assistant",
    "Backend": "medvlm.backends",
    "InProcessBackend": "medvlm.backends",
    "HTTPBackend": "medvlm.http_backend",
    "SafetyGate": "medvlm.safety",
}

__all__ = [
    "SUPPORTED_FAMILIES",
    "AdapterError",
    "AdapterSet",
    "Answer",
    "AskRequest",
    "Assistant",
    "Backend",
    "BackendError",
    "Generation",
    "GenerationSettings",
    "HTTPBackend",
    "ImageContext",
    "InProcessBackend",
    "KnowledgeFact",
    "LoadedModel",
    "MedVLMError",
    "ModelInfo",
    "ModelLoadError",
    "ModelScope",
    "RequestError",
    "SafetyDecision",
    "SafetyGate",
    "Turn",
    "load",
]


def __getattr__(name: str) -> Any:
    """Import the torch-dependent parts on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medvlm' has no attribute {name!r}")
