"""Evaluation sets: the synthetic phantoms test split, and the published VQA formats.

Supported inputs for ``--data``:

- a folder written by ``medvlm phantoms``: its **test** split only (``test/vqa.jsonl``,
  ``test/probes.jsonl``, ``test/report_errors.jsonl``); the train split is never read here;
- VQA-RAD (Lau et al., 2018) ``VQA_RAD Dataset Public.json``: a JSON list with ``image_name``,
  ``question``, ``answer``, ``answer_type`` (``CLOSED``/``OPEN``); images in the file's folder or a
  sibling ``VQA_RAD Image Folder``;
- SLAKE (Liu et al., 2021) ``test.json``: a JSON list with ``img_name``, ``question``, ``answer``,
  ``answer_type``, ``q_lang`` (only ``en`` is kept), ``content_type``; images under ``imgs/``;
- PathVQA (He et al., 2020) as JSON/JSONL records with ``image`` (an id or file name), ``question``,
  ``answer``; images under ``images/`` (``<id>.jpg`` / ``.png``); yes/no answers are closed.

The datasets themselves cannot be installed here; the loaders are tested on small fixtures in the
published layouts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.data import DataError, QAExample, qa_from_record, read_jsonl, split_file

EVAL_SPLIT = "test"
SELECTION_SPLIT = "val"  # for choosing between candidates; figures are reported on EVAL_SPLIT


def _read_json_or_jsonl(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"reading {path.name}: {e}") from e
    if isinstance(data, dict):
        for key in ("data", "questions", "annotations"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"{path.name}: expected a list of objects")
    return data


def _closed(answer_type: Any, answer: str) -> str:
    text = str(answer_type or "").strip().upper()
    if text in ("CLOSED", "CLOSE", "YES/NO", "YESNO"):
        return "closed"
    if text == "OPEN":
        return "open"
    return "closed" if answer.strip().lower() in ("yes", "no") else "open"


def _find_image(roots: list[Path], name: str) -> Path | None:
    for root in roots:
        for candidate in (root / name, *(root / f"{name}{ext}" for ext in (".jpg", ".jpeg", ".png"))):
            if candidate.is_file():
                return candidate
    return None


def detect_format(path: Path) -> str:
    """Name the format of ``--data``: ``phantoms``, ``vqa_rad``, ``slake``, ``pathvqa`` or ``jsonl``.

    Raises:
        DataError: unreadable or unrecognised.
    """
    if path.is_dir():
        if (path / EVAL_SPLIT).is_dir():
            return "phantoms"
        raise DataError(f"{path} is a folder without a {EVAL_SPLIT}/ split (not written by medvlm phantoms)")
    records = _read_json_or_jsonl(path)
    if not records:
        raise DataError(f"{path.name}: no records")
    first = records[0]
    if "image_name" in first and "answer_type" in first:
        return "vqa_rad"
    if "img_name" in first and "q_lang" in first:
        return "slake"
    if "conversations" in first or "question_type" in first:
        return "jsonl"
    if "image" in first and "question" in first and "answer" in first:
        return "pathvqa"
    raise DataError(f"{path.name}: unrecognised VQA format (keys {sorted(first)[:8]})")


@dataclass(frozen=True)
class _Layout:
    """Where a published format keeps its fields and images."""

    image_key: str
    template_key: str | None  # record field naming the question template; None: yes/no vs open
    image_dirs: tuple[str, ...]  # folders beside the file that may hold the images
    english_only: bool = False  # SLAKE: keep ``q_lang == "en"``
    nested_image_dirs: bool = False  # PathVQA: also one level of sub-folders of ``images/``


_VQA_RAD = _Layout("image_name", "question_type", ("", "VQA_RAD Image Folder", "images"))
_SLAKE = _Layout("img_name", "content_type", ("imgs", ""), english_only=True)
_PATHVQA = _Layout("image", None, ("images", ""), nested_image_dirs=True)


def _image_roots(path: Path, layout: _Layout) -> list[Path]:
    roots = [path.parent / d if d else path.parent for d in layout.image_dirs]
    images = path.parent / "images"
    if layout.nested_image_dirs and images.is_dir():
        roots += [d for d in images.glob("*") if d.is_dir()]
    return roots


def _load_published(path: Path, layout: _Layout) -> list[QAExample]:
    """Records of a published VQA format as examples (see the module docstring for the layouts).

    Raises:
        DataError: missing fields or images.
    """
    roots = _image_roots(path, layout)
    out = []
    for number, r in enumerate(_read_json_or_jsonl(path), 1):
        if layout.english_only and str(r.get("q_lang", "en")) != "en":
            continue
        try:
            name, question, answer = str(r[layout.image_key]), str(r["question"]), str(r["answer"])
        except KeyError as e:
            raise DataError(f"{path.name} record {number}: missing {e}") from e
        image = _find_image(roots, name)
        if image is None:
            raise DataError(f"{path.name} record {number}: image {name} not found")
        qtype = _closed(r.get("answer_type"), answer)
        if layout.template_key is None:
            template, qid = ("yes/no" if qtype == "closed" else "open"), str(number)
        else:
            template, qid = str(r.get(layout.template_key, "")), str(r.get("qid", number))
        out.append(QAExample(image, question, answer, qtype, template, qid))
    return out


def load_vqa_rad(path: Path) -> list[QAExample]:
    """VQA-RAD public JSON.

    Raises:
        DataError: missing fields or images.
    """
    return _load_published(path, _VQA_RAD)


def load_slake(path: Path) -> list[QAExample]:
    """SLAKE JSON (English questions only).

    Raises:
        DataError: missing fields or images.
    """
    return _load_published(path, _SLAKE)


def load_pathvqa(path: Path) -> list[QAExample]:
    """PathVQA-style JSON/JSONL (``image``, ``question``, ``answer``).

    Raises:
        DataError: missing fields or images.
    """
    return _load_published(path, _PATHVQA)


def load_vqa(path: Path, split: str = EVAL_SPLIT) -> list[QAExample]:
    """Evaluation questions from any supported ``--data`` (phantoms: the ``split`` split, test by
    default; ``val`` for choosing between candidates, never ``train``).

    Raises:
        DataError: unrecognised format or malformed records.
    """
    fmt = detect_format(path)
    if fmt == "phantoms":
        return [qa_from_record(r, path) for r in read_jsonl(split_file(path, held_out_split(split), "vqa"))]
    if fmt == "vqa_rad":
        return load_vqa_rad(path)
    if fmt == "slake":
        return load_slake(path)
    if fmt == "pathvqa":
        return load_pathvqa(path)
    return [qa_from_record(r, path.parent) for r in _read_json_or_jsonl(path)]


def held_out_split(split: str) -> str:
    """``split`` when evaluation may read it (``test``, or ``val`` for model selection).

    Raises:
        DataError: any other split (the train split is never evaluated on).
    """
    if split not in (EVAL_SPLIT, SELECTION_SPLIT):
        raise DataError(f"split {split!r}: evaluation reads only the {EVAL_SPLIT} or {SELECTION_SPLIT} split")
    return split


def load_probes(path: Path, split: str = EVAL_SPLIT) -> list[tuple[str, str, QAExample]]:
    """ProbMed-style probes: ``(pair_id, kind, example)`` with kind ``true`` or ``adversarial``.

    Args:
        path: a phantoms folder (its ``<split>/probes.jsonl``) or a probes JSONL file.
        split: ``test`` (default) or ``val``, for a phantoms folder.

    Raises:
        DataError: a record lacks ``pair_id``, ``question``, ``answer`` or ``image``.
    """
    file = split_file(path, held_out_split(split), "probes") if path.is_dir() else path
    root = path if path.is_dir() else path.parent
    out = []
    for number, r in enumerate(read_jsonl(file), 1):
        try:
            example = QAExample(
                root / str(r["image"]),
                str(r["question"]),
                str(r["answer"]),
                "closed",
                str(r.get("category", "")),
                str(r.get("id", number)),
            )
            out.append((str(r["pair_id"]), str(r.get("kind", "")), example))
        except KeyError as e:
            raise DataError(f"{file.name} record {number}: missing {e}") from e
    return out
