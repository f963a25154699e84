"""PEFT LoRA adapters on a loaded model: load, switch, merge, unload, each with a version.

An adapter's version is ``<folder name>@<12 hex of the SHA-256 of its weight files>``; the active
one travels with every answer (``ModelInfo.adapter_version``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from medvlm.errors import AdapterError
from medvlm.loading import LoadedModel, weights_hash

logger = logging.getLogger(__name__)

ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def adapter_version(adapter_dir: Path) -> str:
    """The version of an adapter folder: its name and a short hash of its weights.

    Raises:
        AdapterError: when the folder has no ``adapter_config.json`` or no adapter weights.
    """
    if not (adapter_dir / "adapter_config.json").is_file():
        raise AdapterError(
            f"adapter folder {adapter_dir} has no adapter_config.json, so it is not a PEFT adapter"
        )
    files = [adapter_dir / name for name in ADAPTER_WEIGHTS if (adapter_dir / name).is_file()]
    if not files:
        raise AdapterError(
            f"adapter folder {adapter_dir} has no adapter weights ({' or '.join(ADAPTER_WEIGHTS)})"
        )
    return f"{adapter_dir.name}@{weights_hash(files)}"


@dataclass
class AdapterSet:
    """Adapter operations on one ``LoadedModel``; edits ``loaded.model``, ``loaded.adapters`` and
    ``loaded.active_adapter`` in place, so backends report the active version with every answer.

    Attributes:
        loaded: the model the adapters belong to.
    """

    loaded: LoadedModel

    @property
    def versions(self) -> dict[str, str]:
        """Adapter name -> version, for every adapter attached."""
        return self.loaded.adapters

    @property
    def active(self) -> str | None:
        """Name of the active adapter, None when the base model answers."""
        return self.loaded.active_adapter

    def load(self, adapter_dir: Path, name: str | None = None, activate: bool = True) -> str:
        """Load a LoRA adapter from a local folder.

        Args:
            adapter_dir: PEFT adapter folder (``adapter_config.json`` + weights).
            name: name to refer to it by; the folder name when None.
            activate: make it the active adapter.

        Returns:
            The adapter's version string.

        Raises:
            AdapterError: when the folder is incomplete, the name is taken, or PEFT cannot apply it
                to this model (e.g. target modules missing).
        """
        from peft import PeftModel

        adapter_dir = adapter_dir.expanduser()
        version = adapter_version(adapter_dir)
        name = name or adapter_dir.name
        if name in self.versions:
            raise AdapterError(f"an adapter named {name!r} is already loaded; unload it or pick another name")
        model = self.loaded.model
        try:
            if isinstance(model, PeftModel):
                model.load_adapter(str(adapter_dir), adapter_name=name, is_trainable=False)
            else:
                model = PeftModel.from_pretrained(
                    model, str(adapter_dir), adapter_name=name, is_trainable=False
                )
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
            raise AdapterError(
                f"loading adapter {adapter_dir.name} onto {self.loaded.model_version}: {e}"
            ) from e
        model.eval()
        self.loaded.model = model
        self.versions[name] = version
        logger.info("loaded adapter %s", version)
        if activate:
            self.switch(name)
        elif self.active is None:
            self._disable()
        return version

    def switch(self, name: str | None) -> None:
        """Make ``name`` the active adapter; None answers with the base model (adapters kept).

        Raises:
            AdapterError: when no adapter of that name is loaded.
        """
        if name is None:
            self._disable()
            return
        if name not in self.versions:
            raise AdapterError(
                f"no adapter named {name!r} is loaded (loaded: {', '.join(self.versions) or 'none'})"
            )
        model = self.loaded.model
        model.base_model.enable_adapter_layers()
        model.set_adapter(name)
        self.loaded.active_adapter = name

    def merge(self) -> str:
        """Merge the active adapter into the base weights and drop the PEFT wrapper.

        Merged weights answer faster (no extra LoRA matmuls). The model's version becomes
        ``<base version>+<adapter version>`` and no adapter is reported afterwards.

        Returns:
            The new model version.

        Raises:
            AdapterError: when no adapter is active.
        """
        name = self.active
        if name is None:
            raise AdapterError("there is no active adapter to merge")
        model = self.loaded.model
        for other in [n for n in self.versions if n != name]:
            model.delete_adapter(other)
        merged = model.merge_and_unload()
        merged.eval()
        self.loaded.model = merged
        self.loaded.model_version = f"{self.loaded.model_version}+{self.versions[name]}"
        self.versions.clear()
        self.loaded.active_adapter = None
        return self.loaded.model_version

    def unload(self, name: str | None = None) -> None:
        """Remove one adapter (``name``) or all of them (None), restoring the base model.

        Raises:
            AdapterError: when no adapter of that name is loaded.
        """
        model = self.loaded.model
        if name is not None and name not in self.versions:
            raise AdapterError(f"no adapter named {name!r} is loaded")
        if name is None or len(self.versions) == 1:
            if self.versions:
                self.loaded.model = model.unload()
                self.loaded.model.eval()
            self.versions.clear()
            self.loaded.active_adapter = None
        else:
            if self.active == name:
                self._disable()
            model.delete_adapter(name)
            del self.versions[name]

    def _disable(self) -> None:
        if self.versions:
            self.loaded.model.base_model.disable_adapter_layers()
        self.loaded.active_adapter = None
