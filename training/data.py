"""Training examples read from a folder written by ``medvlm phantoms`` (LLaVA JSONL) or similar files.

Folder layout (see docs/PHANTOMS.md): ``DIR/images/<id>.png`` and ``DIR/<split>/{captions,vqa,
probes}.jsonl``. Image paths in records are relative to ``DIR``. Only the split asked for is read,
so evaluation never sees training records.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """A dataset file is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class LabelledImage:
    """An image with its finding labels (stage 0).

    Attributes:
        image: absolute image path.
        labels: finding ids and categorical attributes as ``"<finding>:<attribute>=<value>"``.
        modality: the study's modality as the phantoms write it (``cxr``), empty when unknown.
    """

    image: Path
    labels: tuple[str, ...]
    modality: str = ""

    def has_finding(self, finding: str) -> bool:
        """Whether the finding id is among the labels."""
        return finding in self.labels


@dataclass(frozen=True)
class QAExample:
    """One single-turn image question and its reference answer.

    Attributes:
        image: absolute image path, or None for a text-only record.
        question: the question without the ``<image>`` placeholder.
        answer: the reference answer.
        question_type: ``"closed"`` or ``"open"``.
        template: the question template or category (``existence``, ``laterality``, ...).
        id: the record id.
        options: answer options for closed questions, when known.
        evidence: for a yes/no question about a stated attribute, what the image shows, completing
            "It is ..." (``"on the patient's left"``); empty otherwise.
    """

    image: Path | None
    question: str
    answer: str
    question_type: str = "open"
    template: str = ""
    id: str = ""
    options: tuple[str, ...] = ()
    evidence: str = ""


@dataclass(frozen=True)
class PreferencePair:
    """A DPO preference: the corrected answer is preferred over the model's answer.

    Attributes:
        image: absolute image path.
        question: the question.
        chosen: the clinician-corrected (preferred) answer.
        rejected: the answer the model gave.
    """

    image: Path
    question: str
    chosen: str
    rejected: str


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSON-lines file.

    Args:
        path: the file.

    Returns:
        One mapping per non-empty line.

    Raises:
        DataError: unreadable file or a line that is not a JSON object.
    """
    out: list[dict[str, Any]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(f"reading {path}: {e}") from e
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            raise DataError(f"{path.name} line {number}: not JSON ({e})") from e
        if not isinstance(record, dict):
            raise DataError(f"{path.name} line {number}: not a JSON object")
        out.append(record)
    return out


def split_file(data_dir: Path, split: str, name: str) -> Path:
    """``data_dir/split/name.jsonl``, checked to exist.

    Raises:
        DataError: bad split or missing file.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
    path = data_dir / split / f"{name}.jsonl"
    if not path.is_file():
        raise DataError(
            f"missing {split}/{name}.jsonl in {data_dir} (is it a folder written by medvlm phantoms?)"
        )
    return path


def finding_labels(findings: Iterable[dict[str, Any]]) -> tuple[str, ...]:
    """Stage-0 label strings of a study's findings: ids plus categorical attributes.

    Args:
        findings: ``[{"id": ..., "attributes": {...}}, ...]`` as in captions.jsonl.

    Returns:
        Sorted labels, e.g. ``("lung_nodule", "lung_nodule:laterality=left", "lung_nodule:zone=upper")``;
        integer attributes (sizes) are left out.
    """
    labels: set[str] = set()
    for finding in findings:
        fid = str(finding["id"])
        labels.add(fid)
        for key, value in (finding.get("attributes") or {}).items():
            if isinstance(value, str):
                labels.add(f"{fid}:{key}={value}")
    return tuple(sorted(labels))


def load_labelled_images(data_dir: Path, split: str) -> list[LabelledImage]:
    """Images of one split with their finding labels, from ``captions.jsonl``.

    Raises:
        DataError: missing file or a record without ``image``/``findings``.
    """
    path = split_file(data_dir, split, "captions")
    out = []
    for number, record in enumerate(read_jsonl(path), 1):
        if "image" not in record or "findings" not in record:
            raise DataError(f"{path.name} record {number}: needs 'image' and 'findings'")
        out.append(
            LabelledImage(
                data_dir / str(record["image"]),
                finding_labels(record["findings"]),
                str(record.get("modality", "")),
            )
        )
    return out


def _first_turn(record: dict[str, Any]) -> tuple[str, str] | None:
    turns = record.get("conversations")
    if not isinstance(turns, list) or len(turns) < 2:
        return None
    human, gpt = turns[0], turns[1]
    question = str(human.get("value", "")).replace("<image>", "").strip()
    return question, str(gpt.get("value", "")).strip()


def qa_from_record(record: dict[str, Any], root: Path) -> QAExample:
    """One :class:`QAExample` from a LLaVA-JSONL record (``conversations``) or a flat one.

    Args:
        record: a mapping with ``question``/``answer`` or ``conversations`` and optionally ``image``,
            ``question_type``, ``template``, ``id``, ``options``.
        root: folder that relative image paths are relative to.

    Returns:
        The example.

    Raises:
        DataError: no question or answer.
    """
    question, answer = record.get("question"), record.get("answer")
    if question is None or answer is None:
        turn = _first_turn(record)
        if turn is None:
            raise DataError(f"record {record.get('id', '?')}: no question/answer or conversations")
        question, answer = turn
    image = record.get("image")
    return QAExample(
        image=(root / str(image)) if image else None,
        question=str(question).replace("<image>", "").strip(),
        answer=str(answer).strip(),
        question_type=str(record.get("question_type", "closed" if "pair_id" in record else "open")),
        template=str(record.get("template", record.get("category", ""))),
        id=str(record.get("id", "")),
        options=tuple(str(o) for o in record.get("options", ()) or ()),
        evidence=str(record.get("evidence", "") or ""),
    )


def reasoned(example: QAExample) -> QAExample:
    """The example with a reasoned answer when it has evidence: "It is on the patient's right, so no."

    Why: a yes/no question about a stated attribute ("Is the effusion on the patient's left?") asks
    the model to check the statement against the image, which no adapter learned here from bare
    yes/no targets (docs/RESULTS.md), while reading the attribute off ("Which side?") was learned.
    The reasoned answer makes the check a read-off followed by a comparison of two words in the
    text; its verdict word ("yes"/"no") is what evaluation scores. Examples without evidence, or
    whose answer is not yes/no, are returned unchanged.
    """
    answer = example.answer.strip().lower()
    if not example.evidence or answer not in ("yes", "no"):
        return example
    return replace(example, answer=f"It is {example.evidence}, so {answer}.")


ABSENT_TEMPLATE = "absent_attribute"


def absent_finding_negatives(data_dir: Path, split: str, *, seed: int) -> list[QAExample]:
    """Attribute and position probe questions asked about an image where the finding is absent.

    Why: every side, size, zone or lobe question in the data presupposes that the finding is there,
    so a model never learns to reject the presupposition: shown a blank image, a model trained to
    answer "It is on the patient's right, so no." guesses a side and stays consistent, which wins
    half the side pairs without looking. Each probe record of category ``attribute`` or
    ``position`` gives one more example: the same question, about another image of the same split
    and modality that does not have the finding, answered ``"There is no <finding>, so no."``.

    Args:
        data_dir: a phantoms folder.
        split: the split to read (``train`` when training).
        seed: which images are picked.

    Returns:
        Examples with template ``absent_attribute`` (empty when the split has no such probes or no
        image without the finding).

    Raises:
        DataError: the split's captions or probes file is missing or malformed (a caption record
            without ``image``/``findings`` included).
    """
    import random

    from data_prep.phantoms.phrases import NAMES

    rng = random.Random(seed)
    by_modality: dict[str, list[LabelledImage]] = {}
    for item in load_labelled_images(data_dir, split):
        by_modality.setdefault(item.modality, []).append(item)
    out: list[QAExample] = []
    for record in read_jsonl(split_file(data_dir, split, "probes")):
        finding, question = str(record.get("finding", "")), str(record.get("question", "")).strip()
        if record.get("category") not in ("attribute", "position") or finding not in NAMES or not question:
            continue
        candidates = by_modality.get(str(record.get("modality", "")), [])
        for _ in range(20 if candidates else 0):  # findings are sparse: a few draws find an image without it
            item = rng.choice(candidates)
            if not item.has_finding(finding):
                out.append(
                    QAExample(
                        image=item.image,
                        question=question,
                        answer=f"There is no {NAMES[finding]}, so no.",
                        question_type="closed",
                        template=ABSENT_TEMPLATE,
                        id=f"{record.get('pair_id', '')}-{record.get('kind', '')}-absent",
                    )
                )
                break
    return out


def load_qa(data_dir: Path, split: str, names: Sequence[str] = ("vqa",)) -> list[QAExample]:
    """Single-turn examples of one split from the named JSONL files (``vqa``, ``captions``).

    Raises:
        DataError: a file is missing or a record is malformed.
    """
    out: list[QAExample] = []
    for name in names:
        path = split_file(data_dir, split, name)
        out += [qa_from_record(r, data_dir) for r in read_jsonl(path)]
    return out


def load_preferences(path: Path, root: Path | None = None) -> list[PreferencePair]:
    """DPO preference pairs from JSONL: ``image``, ``question``, ``chosen``, ``rejected``.

    Args:
        path: the JSONL file.
        root: folder for relative image paths; the file's folder when None.

    Raises:
        DataError: a record lacks a field or chosen equals rejected.
    """
    base = root or path.parent
    out = []
    for number, record in enumerate(read_jsonl(path), 1):
        try:
            pair = PreferencePair(
                base / str(record["image"]),
                str(record["question"]),
                str(record["chosen"]),
                str(record["rejected"]),
            )
        except KeyError as e:
            raise DataError(f"{path.name} record {number}: missing {e}") from e
        if pair.chosen.strip() == pair.rejected.strip():
            raise DataError(f"{path.name} record {number}: chosen and rejected are the same")
        out.append(pair)
    return out


@dataclass
class PixelCache:
    """Preprocessed pixel tensors per image path, computed once (datasets here are small).

    Attributes:
        image_processor: a Hugging Face image processor (``CLIPImageProcessor``).
    """

    image_processor: Any
    _cache: dict[Path, torch.Tensor] | None = None

    def get(self, paths: Sequence[Path]) -> torch.Tensor:
        """Pixel values ``(B, 3, S, S)`` for the images.

        Raises:
            DataError: an image cannot be read.
        """
        import torch
        from PIL import Image

        if self._cache is None:
            self._cache = {}
        missing = [p for p in dict.fromkeys(paths) if p not in self._cache]
        if missing:
            images = []
            for path in missing:
                try:
                    with Image.open(path) as handle:
                        images.append(handle.convert("RGB"))
                except OSError as e:
                    raise DataError(f"reading image {path.name}: {e}") from e
            pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
            for path, tensor in zip(missing, pixels, strict=True):
                self._cache[path] = tensor
        return torch.stack([self._cache[p] for p in paths])


def balance_templates(examples: Sequence[QAExample], per_template: int, *, seed: int) -> list[QAExample]:
    """Exactly ``per_template`` examples of each template, in a seeded shuffled order.

    A template with more examples contributes a seeded sample without repetition; one with fewer
    contributes all of them, repeated (whole passes, then a seeded sample of the rest).

    Args:
        examples: one data file's examples.
        per_template: examples per template (>= 1).
        seed: sampling seed.

    Returns:
        ``per_template`` times the number of templates examples.

    Raises:
        ValueError: ``per_template`` < 1.
    """
    import random

    if per_template < 1:
        raise ValueError("per_template must be >= 1")
    rng = random.Random(seed)
    groups: dict[str, list[QAExample]] = {}
    for example in examples:
        groups.setdefault(example.template, []).append(example)
    out: list[QAExample] = []
    for template in sorted(groups):
        group = groups[template]
        passes, rest = divmod(per_template, len(group))
        out += group * passes + rng.sample(group, rest)
    rng.shuffle(out)
    return out
