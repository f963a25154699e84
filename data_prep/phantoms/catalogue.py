"""The findings catalogue: typed, validated view of ``catalogue.yaml``.

The catalogue names every finding a synthetic study can carry, the kinds of study it appears on
(``cxr``, ``ct``, ``slide``) and the attributes it takes with their allowed values. Its ids are
shared with ``knowledge_graph``, so they are checked strictly on load.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("cxr", "ct", "slide")


class CatalogueError(ValueError):
    """The catalogue file is malformed or a finding does not match it."""


@dataclass(frozen=True)
class AttributeSpec:
    """One attribute of a finding.

    Attributes:
        name: attribute name, e.g. ``laterality``.
        values: allowed categorical values; empty for an integer range.
        int_range: inclusive ``(min, max)`` for integer attributes, else None.
    """

    name: str
    values: tuple[str, ...] = ()
    int_range: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if bool(self.values) == (self.int_range is not None):
            raise CatalogueError(f"attribute {self.name}: give exactly one of values or int_range")
        if self.int_range is not None and self.int_range[0] > self.int_range[1]:
            raise CatalogueError(f"attribute {self.name}: empty int_range {self.int_range}")

    def allows(self, value: object) -> bool:
        """Return whether ``value`` is allowed for this attribute."""
        if self.int_range is not None:
            lo, hi = self.int_range
            return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi
        return value in self.values


@dataclass(frozen=True)
class FindingSpec:
    """One catalogue entry.

    Attributes:
        id: stable identifier shared with the knowledge graph, e.g. ``pleural_effusion``.
        name: human-readable name used in text.
        kinds: study kinds the finding appears on.
        description: one-line description.
        attributes: attribute specs by name.
    """

    id: str
    name: str
    kinds: tuple[str, ...]
    description: str
    attributes: dict[str, AttributeSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.id or not self.id.replace("_", "").isalnum() or self.id != self.id.lower():
            raise CatalogueError(f"finding id {self.id!r} must be lower_snake_case")
        unknown = set(self.kinds) - set(KINDS)
        if not self.kinds or unknown:
            raise CatalogueError(
                f"finding {self.id}: kinds {self.kinds} must be a non-empty subset of {KINDS}"
            )


@dataclass(frozen=True)
class Catalogue:
    """All findings, by id, with the catalogue version."""

    version: int
    findings: dict[str, FindingSpec]

    def for_kind(self, kind: str) -> list[FindingSpec]:
        """Return the findings that appear on ``kind``, in catalogue order.

        Args:
            kind: one of ``KINDS``.

        Returns:
            The matching findings.

        Raises:
            CatalogueError: if ``kind`` is unknown.
        """
        if kind not in KINDS:
            raise CatalogueError(f"unknown kind {kind!r}; expected one of {KINDS}")
        return [f for f in self.findings.values() if kind in f.kinds]

    def validate(self, finding_id: str, attributes: dict[str, Any], kind: str) -> None:
        """Check one labelled finding against the catalogue.

        Args:
            finding_id: catalogue id.
            attributes: attribute values by name; must cover every attribute of the finding.
            kind: study kind it was labelled on.

        Raises:
            CatalogueError: on an unknown id, a wrong kind, or a missing/unknown/disallowed attribute.
        """
        spec = self.findings.get(finding_id)
        if spec is None:
            raise CatalogueError(f"unknown finding id {finding_id!r}")
        if kind not in spec.kinds:
            raise CatalogueError(f"finding {finding_id} does not appear on {kind}")
        if set(attributes) != set(spec.attributes):
            raise CatalogueError(
                f"finding {finding_id}: attributes {sorted(attributes)} != {sorted(spec.attributes)}"
            )
        for name, value in attributes.items():
            if not spec.attributes[name].allows(value):
                raise CatalogueError(f"finding {finding_id}: {name}={value!r} is not allowed")


def _parse_attribute(finding_id: str, name: str, raw: Any) -> AttributeSpec:
    if isinstance(raw, list):
        return AttributeSpec(name=name, values=tuple(str(v) for v in raw))
    if isinstance(raw, dict) and "int_range" in raw:
        lo, hi = raw["int_range"]
        return AttributeSpec(name=name, int_range=(int(lo), int(hi)))
    raise CatalogueError(f"finding {finding_id}: attribute {name} must be a list or {{int_range: [lo, hi]}}")


def parse_catalogue(data: Any) -> Catalogue:
    """Build a :class:`Catalogue` from parsed YAML.

    Args:
        data: the mapping loaded from a catalogue file.

    Returns:
        The validated catalogue.

    Raises:
        CatalogueError: on any structural problem or duplicate id.
    """
    if not isinstance(data, dict) or not isinstance(data.get("findings"), list):
        raise CatalogueError("catalogue must be a mapping with a 'findings' list")
    findings: dict[str, FindingSpec] = {}
    for entry in data["findings"]:
        try:
            fid = str(entry["id"])
            attrs = {
                str(k): _parse_attribute(fid, str(k), v) for k, v in (entry.get("attributes") or {}).items()
            }
            spec = FindingSpec(
                id=fid,
                name=str(entry["name"]),
                kinds=tuple(str(k) for k in entry["kinds"]),
                description=str(entry["description"]),
                attributes=attrs,
            )
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, CatalogueError):
                raise
            raise CatalogueError(f"catalogue entry {entry!r}: {e}") from e
        if spec.id in findings:
            raise CatalogueError(f"duplicate finding id {spec.id}")
        findings[spec.id] = spec
    return Catalogue(version=int(data.get("version", 1)), findings=findings)


def load_catalogue(path: Path | None = None) -> Catalogue:
    """Load the findings catalogue.

    Args:
        path: a catalogue YAML file; the packaged ``catalogue.yaml`` when None.

    Returns:
        The validated catalogue.

    Raises:
        CatalogueError: if the file cannot be read or is malformed.
    """
    try:
        if path is None:
            text = resources.files("data_prep.phantoms").joinpath("catalogue.yaml").read_text("utf-8")
        else:
            text = Path(path).read_text("utf-8")
        data = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as e:
        raise CatalogueError(f"reading catalogue {path or 'catalogue.yaml'}: {e}") from e
    return parse_catalogue(data)
