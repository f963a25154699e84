"""data_prep: DICOM, series, slides, de-identification, synthetic studies and datasets.

The public entry points are imported lazily so that ``import data_prep`` (done by the CLI's
registrars) stays cheap: ``load_views`` (any input → :class:`ImageView` list), ``ingest_path``,
``deidentify_dataset`` and the types in :mod:`data_prep.types`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DeidResult",
    "ImageView",
    "IngestLimits",
    "IngestReport",
    "WindowInfo",
    "deidentify_dataset",
    "ingest_path",
    "load_views",
]

_LAZY = {
    "load_views": "data_prep.views",
    "ingest_path": "data_prep.ingest",
    "deidentify_dataset": "data_prep.deid",
    "DeidResult": "data_prep.deid",
    "ImageView": "data_prep.types",
    "IngestLimits": "data_prep.types",
    "IngestReport": "data_prep.types",
    "WindowInfo": "data_prep.types",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'data_prep' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
