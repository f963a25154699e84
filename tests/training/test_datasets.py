"""Evaluation-set loaders on small fixtures in the published layouts, and the test-split rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from training.data import DataError, finding_labels, load_labelled_images, load_preferences, load_qa
from training.eval.datasets import detect_format, load_probes, load_vqa


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), 100).save(path)


def test_vqa_rad_layout(tmp_path: Path) -> None:
    records = [
        {
            "qid": 1,
            "image_name": "synpic100.jpg",
            "question": "Is there a fracture?",
            "answer": "No",
            "answer_type": "CLOSED",
            "question_type": "PRES",
            "phrase_type": "freeform",
        },
        {
            "qid": 2,
            "image_name": "synpic101.jpg",
            "question": "What organ is this?",
            "answer": "brain",
            "answer_type": "OPEN",
            "question_type": "ORGAN",
            "phrase_type": "para",
        },
    ]
    (tmp_path / "VQA_RAD Dataset Public.json").write_text(json.dumps(records))
    for name in ("synpic100.jpg", "synpic101.jpg"):
        _png(tmp_path / "VQA_RAD Image Folder" / name)
    path = tmp_path / "VQA_RAD Dataset Public.json"
    assert detect_format(path) == "vqa_rad"
    items = load_vqa(path)
    assert [(i.question_type, i.answer, i.template) for i in items] == [
        ("closed", "No", "PRES"),
        ("open", "brain", "ORGAN"),
    ]
    assert items[0].image is not None and items[0].image.name == "synpic100.jpg"


def test_slake_keeps_english_only(tmp_path: Path) -> None:
    records = [
        {
            "img_id": 1,
            "img_name": "xmlab1/source.jpg",
            "question": "Which organ is abnormal?",
            "answer": "Lung",
            "q_lang": "en",
            "answer_type": "OPEN",
            "content_type": "Organ",
            "qid": 10,
            "location": "Chest",
            "modality": "X-Ray",
        },
        {
            "img_id": 1,
            "img_name": "xmlab1/source.jpg",
            "question": "哪个器官异常？",
            "answer": "肺",
            "q_lang": "zh",
            "answer_type": "OPEN",
            "content_type": "Organ",
            "qid": 11,
        },
        {
            "img_id": 1,
            "img_name": "xmlab1/source.jpg",
            "question": "Is the lung healthy?",
            "answer": "No",
            "q_lang": "en",
            "answer_type": "CLOSED",
            "content_type": "Abnormality",
            "qid": 12,
        },
    ]
    (tmp_path / "test.json").write_text(json.dumps(records, ensure_ascii=False))
    _png(tmp_path / "imgs" / "xmlab1" / "source.jpg")
    assert detect_format(tmp_path / "test.json") == "slake"
    items = load_vqa(tmp_path / "test.json")
    assert [i.id for i in items] == ["10", "12"]
    assert [i.question_type for i in items] == ["open", "closed"]


def test_pathvqa_style_jsonl(tmp_path: Path) -> None:
    lines = [
        {"image": "test_0001", "question": "Is this tissue necrotic?", "answer": "yes"},
        {"image": "test_0002", "question": "What is present?", "answer": "granuloma"},
    ]
    (tmp_path / "test.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    _png(tmp_path / "images" / "test" / "test_0001.png")
    _png(tmp_path / "images" / "test" / "test_0002.png")
    assert detect_format(tmp_path / "test.jsonl") == "pathvqa"
    items = load_vqa(tmp_path / "test.jsonl")
    assert [i.question_type for i in items] == ["closed", "open"]


def test_missing_image_is_named(tmp_path: Path) -> None:
    (tmp_path / "d.json").write_text(
        json.dumps([{"image_name": "x.jpg", "question": "q", "answer": "a", "answer_type": "OPEN"}])
    )
    with pytest.raises(DataError, match=r"x\.jpg"):
        load_vqa(tmp_path / "d.json")


def test_unrecognised_format(tmp_path: Path) -> None:
    (tmp_path / "d.json").write_text(json.dumps([{"foo": 1}]))
    with pytest.raises(DataError, match="unrecognised"):
        detect_format(tmp_path / "d.json")
    with pytest.raises(DataError):
        detect_format(tmp_path)  # a folder without test/


def test_phantoms_eval_reads_test_split_only(tiny_data: Path) -> None:
    test_ids = {
        json.loads(line)["id"] for line in (tiny_data / "test" / "vqa.jsonl").read_text().splitlines()
    }
    train_ids = {e.id for e in load_qa(tiny_data, "train")}
    items = load_vqa(tiny_data)
    assert {i.id for i in items} == test_ids and not test_ids & train_ids
    probes = load_probes(tiny_data)
    pairs: dict[str, set[str]] = {}
    for pair_id, kind, example in probes:
        pairs.setdefault(pair_id, set()).add(kind)
        assert example.image is not None and example.image.is_file()
    assert all(kinds == {"true", "adversarial"} for kinds in pairs.values())


def test_stage0_labels_from_captions(tiny_data: Path) -> None:
    assert finding_labels([{"id": "lung_nodule", "attributes": {"laterality": "left", "size_mm": 12}}]) == (
        "lung_nodule",
        "lung_nodule:laterality=left",
    )
    items = load_labelled_images(tiny_data, "train")
    assert items and all(i.image.is_file() for i in items)


def test_preferences_reject_identical_answers(tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text(
        json.dumps({"image": "a.png", "question": "q", "chosen": "yes", "rejected": "yes"})
    )
    with pytest.raises(DataError, match="same"):
        load_preferences(tmp_path / "p.jsonl")


def test_balance_templates_gives_each_template_the_same_count() -> None:
    from collections import Counter

    from training.data import QAExample, balance_templates

    examples = [QAExample(None, f"e{i}", "yes", "closed", "existence") for i in range(40)]
    examples += [QAExample(None, f"l{i}", "left", "closed", "laterality") for i in range(3)]
    out = balance_templates(examples, 10, seed=0)
    assert Counter(e.template for e in out) == {"existence": 10, "laterality": 10}
    # the big template is sampled without repetition, the small one repeated whole
    assert len({e.question for e in out if e.template == "existence"}) == 10
    assert Counter(e.question for e in out if e.template == "laterality") in (
        Counter({"l0": 4, "l1": 3, "l2": 3}),
        Counter({"l0": 3, "l1": 4, "l2": 3}),
        Counter({"l0": 3, "l1": 3, "l2": 4}),
    )
    assert balance_templates(examples, 10, seed=0) == out
    assert balance_templates(examples, 10, seed=1) != out


def test_reasoned_answer_only_for_yes_no_with_evidence() -> None:
    from training.data import QAExample, qa_from_record, reasoned

    record = {
        "question": "Is the lung nodule on the patient's left?",
        "answer": "no",
        "pair_id": "p",
        "category": "attribute",
        "evidence": "on the patient's right",
        "image": "images/x.png",
    }
    example = qa_from_record(record, Path("/data"))
    assert example.evidence == "on the patient's right" and example.template == "attribute"
    assert reasoned(example).answer == "It is on the patient's right, so no."
    assert reasoned(example).question == example.question
    plain = QAExample(image=None, question="Is there a pneumothorax?", answer="yes")
    assert reasoned(plain) is plain
    choice = QAExample(image=None, question="Which side?", answer="left", evidence="on the patient's left")
    assert reasoned(choice) is choice


def test_absent_finding_negatives_ask_about_images_without_the_finding(tiny_data: Path) -> None:
    import json

    from data_prep.phantoms.phrases import NAMES
    from training.data import ABSENT_TEMPLATE, absent_finding_negatives

    captions = [json.loads(line) for line in (tiny_data / "train/captions.jsonl").read_text().splitlines()]
    present = {tiny_data / c["image"]: {f["id"] for f in c["findings"]} for c in captions}
    probes = [json.loads(line) for line in (tiny_data / "train/probes.jsonl").read_text().splitlines()]
    asked = [p for p in probes if p["category"] in ("attribute", "position")]
    negatives = absent_finding_negatives(tiny_data, "train", seed=0)
    assert asked and len(negatives) == len(asked)  # the fixture has images without each finding
    by_question = {p["question"]: p["finding"] for p in asked}
    for example in negatives:
        finding = by_question[example.question]
        assert finding not in present[example.image]
        assert example.answer == f"There is no {NAMES[finding]}, so no."
        assert example.template == ABSENT_TEMPLATE and example.question_type == "closed"
    assert absent_finding_negatives(tiny_data, "train", seed=0) == negatives
    assert absent_finding_negatives(tiny_data, "train", seed=1) != negatives
