"""The promotion gate: a new adapter replaces the current one only if it does not regress.

``medvlm train promote`` evaluates the baseline (current) and the candidate adapter on the same
base model and the same held-out split with the evaluation harness (``training.eval.runner``:
``evaluate_vqa`` for closed accuracy and open recall, ``evaluate_probe`` for ProbMed paired
accuracy; no metric is re-implemented here), and promotes the candidate only if no metric falls by
more than the tolerance. A metric that neither model could be scored on (NaN for both, e.g. a split
without open questions) is reported as not measured and does not block; one the baseline had and
the candidate lost (NaN) counts as a regression.

The registry is a small JSON file, written atomically (temporary file in the same folder, then
rename), holding the promoted adapter (absolute path, ``medvlm.adapters.adapter_version``, metrics,
time) and, nested, the entry it replaced, so ``--rollback`` restores the previous adapter. The first
promotion records the baseline as the previous entry. Nothing here reads the environment or keeps
state; errors are :class:`PromoteError` with one sentence.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from data_prep.atomic import write_atomic

ADAPTER_DIR: Final = "adapter"
REGISTRY_FORMAT: Final = 1
METRICS: Final[tuple[tuple[str, str], ...]] = (
    ("vqa", "closed_accuracy"),
    ("vqa", "open_recall"),
    ("probe", "paired_accuracy"),
)
"""(harness task, metric) pairs the gate compares, in report order."""
EPSILON: Final = 1e-9
"""Float slack so a fall of exactly the tolerance is not a regression."""

Metrics = dict[str, float]
Evaluator = Callable[[Path], Metrics]


class PromoteError(ValueError):
    """A path, the registry or an evaluation is unusable; the message is one sentence."""


@dataclass(frozen=True)
class MetricDelta:
    """One metric of the comparison.

    Attributes:
        name: metric name (``closed_accuracy``).
        baseline: the baseline's value (NaN when not measured).
        candidate: the candidate's value (NaN when not measured).
        delta: candidate minus baseline (NaN when either is NaN).
        regressed: the candidate fell by more than the tolerance, or lost a measured metric.
        measured: False when neither model could be scored on it.
    """

    name: str
    baseline: float
    candidate: float
    delta: float
    regressed: bool
    measured: bool


@dataclass(frozen=True)
class Decision:
    """The gate's verdict.

    Attributes:
        promoted: True when no metric regressed.
        reason: one sentence saying why.
        tolerance: the largest allowed fall of a metric.
        deltas: per-metric comparison, in :data:`METRICS` order.
    """

    promoted: bool
    reason: str
    tolerance: float
    deltas: tuple[MetricDelta, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe mapping (NaN as None)."""
        return {
            "promoted": self.promoted,
            "reason": self.reason,
            "tolerance": self.tolerance,
            "metrics": {
                d.name: {
                    "baseline": _finite(d.baseline),
                    "candidate": _finite(d.candidate),
                    "delta": _finite(d.delta),
                    "regressed": d.regressed,
                    "measured": d.measured,
                }
                for d in self.deltas
            },
        }


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)


def resolve_adapter(path: Path) -> Path:
    """The LoRA adapter folder of an adapter folder or of a checkpoint holding ``adapter/``.

    Args:
        path: a PEFT adapter folder (``adapter_config.json``) or a checkpoint folder (DPO or stage-2
            ``final/``) with ``adapter/``.

    Returns:
        The absolute adapter folder.

    Raises:
        PromoteError: when the path does not exist or holds no adapter.
    """
    path = path.expanduser()
    if not path.exists():
        raise PromoteError(f"{path} does not exist")
    for folder in (path, path / ADAPTER_DIR):
        if (folder / "adapter_config.json").is_file():
            return folder.resolve()
    raise PromoteError(
        f"{path} is neither a LoRA adapter folder (adapter_config.json) nor a checkpoint with {ADAPTER_DIR}/"
    )


def version_of(adapter: Path) -> str:
    """``medvlm.adapters.adapter_version`` of an adapter folder, as a :class:`PromoteError` when unusable.

    Args:
        adapter: the adapter folder.

    Returns:
        ``<folder name>@<12 hex of its weights>``.

    Raises:
        PromoteError: when the folder has no adapter weights.
    """
    from medvlm.adapters import adapter_version
    from medvlm.errors import AdapterError

    try:
        return adapter_version(adapter)
    except AdapterError as e:
        raise PromoteError(str(e)) from e


def harness_evaluator(
    model: str, data: Path, *, limit: int | None = None, num_threads: int = 1, batch_size: int = 16
) -> Evaluator:
    """An evaluator running the harness on ``data`` with ``model`` plus a given adapter.

    Args:
        model: ``builtin`` or a model folder (the base both adapters are applied to).
        data: a phantoms folder (its test split) or a dataset file, as for ``medvlm eval``.
        limit: evaluate only the first N questions (VQA) and N pairs (probe).
        num_threads: CPU threads.
        batch_size: questions per generate call.

    Returns:
        ``adapter folder → {metric: value}`` for the metrics in :data:`METRICS`.

    Raises:
        PromoteError: (from the evaluator) when the model, adapter or data cannot be used.
    """

    def evaluate(adapter: Path) -> Metrics:
        from medvlm.builtin import BuiltinError
        from medvlm.errors import MedVLMError
        from training.data import DataError
        from training.eval import runner

        try:
            answerer = runner.load_answerer(
                model, str(adapter), num_threads=num_threads, batch_size=batch_size
            )
            results = {
                "vqa": runner.evaluate_vqa(answerer, data, limit=limit),
                "probe": runner.evaluate_probe(answerer, data, limit=limit),
            }
        except (DataError, BuiltinError, MedVLMError) as e:
            raise PromoteError(f"evaluating {adapter.name}: {e}") from e
        return {name: float(results[task][name]) for task, name in METRICS}

    return evaluate


def compare(baseline: Mapping[str, float], candidate: Mapping[str, float], tolerance: float) -> Decision:
    """Compare two sets of metrics: the candidate passes when no metric falls by more than ``tolerance``.

    Args:
        baseline: metric → value of the current adapter.
        candidate: metric → value of the new adapter.
        tolerance: the largest allowed fall (absolute, e.g. 0.01 = one point of accuracy).

    Returns:
        The decision with per-metric deltas and one sentence.

    Raises:
        PromoteError: for a negative or non-finite tolerance.
    """
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise PromoteError("the tolerance must be a non-negative number")
    deltas = []
    for _, name in METRICS:
        before = float(baseline.get(name, math.nan))
        after = float(candidate.get(name, math.nan))
        measured = not (math.isnan(before) and math.isnan(after))
        delta = after - before
        lost = math.isnan(after) and not math.isnan(before)
        regressed = lost or (not math.isnan(delta) and delta < -tolerance - EPSILON)
        deltas.append(MetricDelta(name, before, after, delta, regressed, measured))
    bad = [d for d in deltas if d.regressed]
    if bad:
        worst = bad[0]
        if math.isnan(worst.candidate):
            why = f"{worst.name} could not be measured on the candidate (baseline {worst.baseline:.3f})"
        else:
            why = (
                f"{worst.name} fell by {-worst.delta:.3f} ({worst.baseline:.3f} to {worst.candidate:.3f}), "
                f"more than the tolerance {tolerance:g}"
            )
        more = f" (and {len(bad) - 1} other metric(s))" if len(bad) > 1 else ""
        return Decision(False, f"refused: {why}{more}", tolerance, tuple(deltas))
    shown = ", ".join(
        f"{d.name} {d.delta:+.3f}" if d.measured and not math.isnan(d.delta) else f"{d.name} not measured"
        for d in deltas
    )
    return Decision(
        True, f"promoted: no metric fell by more than {tolerance:g} ({shown})", tolerance, tuple(deltas)
    )


# -- the registry --------------------------------------------------------------------------------


def read_registry(path: Path) -> dict[str, Any] | None:
    """The registry, or None when the file does not exist.

    Args:
        path: the registry JSON.

    Returns:
        ``{"format": 1, "current": entry}``, or None.

    Raises:
        PromoteError: when the file is unreadable or not a registry.
    """
    path = path.expanduser()
    if not path.exists():
        return None
    try:
        registry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PromoteError(f"the registry {path} cannot be read ({type(e).__name__})") from e
    if not (
        isinstance(registry, dict)
        and registry.get("format") == REGISTRY_FORMAT
        and isinstance(registry.get("current"), dict)
    ):
        raise PromoteError(f"{path} is not a medvlm adapter registry (format {REGISTRY_FORMAT})")
    return registry


def write_registry(path: Path, registry: Mapping[str, Any]) -> None:
    """Write the registry atomically: a temporary file in the same folder, fsync, then rename.

    Args:
        path: the registry JSON.
        registry: its content.

    Raises:
        PromoteError: when the folder cannot be written.
    """
    text = json.dumps(registry, indent=2, sort_keys=True) + "\n"
    try:
        write_atomic(path, text.encode("utf-8"))
    except OSError as e:
        raise PromoteError(f"the registry {path} cannot be written ({type(e).__name__})") from e


def _stamp(moment: datetime | None) -> str:
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _entry(adapter: Path, version: str, metrics: Mapping[str, float], at: str | None) -> dict[str, Any]:
    return {
        "adapter": str(adapter),
        "version": version,
        "metrics": {k: _finite(v) for k, v in metrics.items()},
        "promoted_at": at,
        "previous": None,
    }


def check_baseline(registry: Mapping[str, Any] | None, baseline_version: str) -> None:
    """Refuse a baseline that is not the registry's current adapter (comparing against the wrong one).

    Args:
        registry: the registry, or None (no registry yet: anything goes).
        baseline_version: the baseline's adapter version.

    Raises:
        PromoteError: when the versions differ.
    """
    if registry is None:
        return
    current = str(registry["current"].get("version"))
    if current != baseline_version:
        raise PromoteError(
            f"the baseline ({baseline_version}) is not the registry's current adapter ({current}); "
            "pass that one as --baseline"
        )


def record_promotion(
    path: Path,
    *,
    candidate: Path,
    candidate_version: str,
    candidate_metrics: Mapping[str, float],
    baseline: Path,
    baseline_version: str,
    baseline_metrics: Mapping[str, float],
    now: datetime | None = None,
) -> dict[str, Any]:
    """Make the candidate the registry's current adapter, keeping the replaced entry as ``previous``.

    Args:
        path: the registry JSON (created when missing; the baseline becomes the previous entry).
        candidate: the promoted adapter folder.
        candidate_version: its version.
        candidate_metrics: its metrics.
        baseline: the replaced adapter folder (used when the registry is new).
        baseline_version: its version.
        baseline_metrics: its metrics (used when the registry is new).
        now: the promotion time (UTC now when None).

    Returns:
        The new current entry.

    Raises:
        PromoteError: when the registry cannot be read or written, or the baseline is not its current adapter.
    """
    registry = read_registry(path)
    check_baseline(registry, baseline_version)
    previous = registry["current"] if registry else _entry(baseline, baseline_version, baseline_metrics, None)
    current = _entry(candidate, candidate_version, candidate_metrics, _stamp(now))
    current["previous"] = previous
    write_registry(path, {"format": REGISTRY_FORMAT, "current": current})
    return current


def rollback(path: Path, *, now: datetime | None = None) -> dict[str, Any]:
    """Make the previous entry current again, after checking its adapter is unchanged on disk.

    Args:
        path: the registry JSON.
        now: the rollback time (UTC now when None).

    Returns:
        The restored entry (its own ``previous`` kept, so rollbacks can go further back).

    Raises:
        PromoteError: when there is no registry or no previous entry, or the previous adapter is
            missing or its weights changed since it was recorded.
    """
    registry = read_registry(path)
    if registry is None:
        raise PromoteError(f"there is no registry at {path.expanduser()}")
    current = registry["current"]
    previous = current.get("previous")
    if not isinstance(previous, dict):
        raise PromoteError(f"the registry {path} has no previous adapter to roll back to")
    adapter = Path(str(previous.get("adapter")))
    if not adapter.exists():
        raise PromoteError(f"the previous adapter {adapter} no longer exists; nothing was rolled back")
    version = version_of(adapter)
    if version != previous.get("version"):
        raise PromoteError(
            f"the previous adapter {adapter} has changed since it was recorded "
            f"(was {previous.get('version')}, now {version}); nothing was rolled back"
        )
    restored = {
        **previous,
        "restored_at": _stamp(now),
        "rolled_back_from": {"adapter": current.get("adapter"), "version": current.get("version")},
    }
    write_registry(path, {"format": REGISTRY_FORMAT, "current": restored})
    return restored


@dataclass(frozen=True)
class GateResult:
    """What :func:`run_gate` did.

    Attributes:
        decision: the comparison.
        baseline_version: the baseline adapter's version.
        candidate_version: the candidate adapter's version.
        registry_entry: the new current registry entry when promoted with a registry, else None.
    """

    decision: Decision
    baseline_version: str
    candidate_version: str
    registry_entry: dict[str, Any] | None


def run_gate(
    baseline: Path,
    candidate: Path,
    evaluate: Evaluator,
    *,
    tolerance: float = 0.01,
    registry: Path | None = None,
    now: datetime | None = None,
) -> GateResult:
    """Evaluate both adapters, decide, and record a promotion in the registry.

    Args:
        baseline: the current adapter (folder or checkpoint with ``adapter/``).
        candidate: the new adapter (folder or checkpoint with ``adapter/``).
        evaluate: adapter folder → metrics (:func:`harness_evaluator`).
        tolerance: the largest allowed fall of any metric.
        registry: the registry JSON to update on promotion (None: decide only).
        now: the promotion time (UTC now when None).

    Returns:
        The decision, both versions and the new registry entry.

    Raises:
        PromoteError: for a bad path, a baseline that is not the registry's current adapter, an
            evaluation that fails, or a registry that cannot be written.
    """
    base_dir, cand_dir = resolve_adapter(baseline), resolve_adapter(candidate)
    base_version, cand_version = version_of(base_dir), version_of(cand_dir)
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise PromoteError("the tolerance must be a non-negative number")
    if registry is not None:
        check_baseline(read_registry(registry), base_version)  # before spending time on evaluation
    base_metrics = evaluate(base_dir)
    cand_metrics = evaluate(cand_dir)
    decision = compare(base_metrics, cand_metrics, tolerance)
    entry = None
    if decision.promoted and registry is not None:
        entry = record_promotion(
            registry,
            candidate=cand_dir,
            candidate_version=cand_version,
            candidate_metrics=cand_metrics,
            baseline=base_dir,
            baseline_version=base_version,
            baseline_metrics=base_metrics,
            now=now,
        )
    return GateResult(decision, base_version, cand_version, entry)
