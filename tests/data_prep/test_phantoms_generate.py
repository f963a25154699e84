"""Dataset generation: determinism, patient splits, answer balance, files and CLI."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from data_prep.phantoms.generate import PhantomError, generate, iter_samples


def _blind_accuracy(records: list[tuple[str, str]]) -> tuple[float, dict[str, float]]:
    by_template: dict[str, Counter[str]] = defaultdict(Counter)
    for template, answer in records:
        by_template[template][answer] += 1
    best = sum(c.most_common(1)[0][1] for c in by_template.values())
    per = {t: c.most_common(1)[0][1] / sum(c.values()) for t, c in by_template.items()}
    return best / len(records), per


@pytest.mark.parametrize("kinds", [("cxr",), ("ct",), ("slide",)])
def test_closed_questions_cannot_be_answered_blind(kinds: tuple[str, ...]) -> None:
    closed = [
        (qa.template, qa.answer, qa.finding)
        for s in iter_samples({"cxr": 1500, "ct": 800, "slide": 500}[kinds[0]], seed=11, kinds=kinds, size=16)
        if s.split == "test"
        for qa in s.qas
        if qa.question_type == "closed"
    ]
    overall, per = _blind_accuracy([(t, a) for t, a, _ in closed])
    assert len(closed) > 120
    assert overall <= 0.55, per
    # also when the blind model conditions on the finding named in the question
    overall_f, per_f = _blind_accuracy([(f"{t}:{f}", a) for t, a, f in closed])
    assert overall_f <= 0.55, per_f
    templates: dict[str, set[str]] = {
        "cxr": {"existence", "normal", "laterality", "zone", "severity", "lobe", "mc_finding"},
        "ct": {"existence", "normal", "laterality", "zone", "severity"},
        "slide": {"existence", "normal", "mc_finding"},
    }
    assert templates[kinds[0]] <= set(per)


def test_splits_are_by_patient_and_cover_all_studies() -> None:
    samples = list(iter_samples(200, seed=5, size=16))
    split_of: dict[str, set[str]] = defaultdict(set)
    for s in samples:
        split_of[s.spec.patient_id].add(s.split)
    assert all(len(v) == 1 for v in split_of.values())
    assert {s.split for s in samples} == {"train", "val", "test"}
    assert len(split_of) < len(samples)  # some patients have more than one study
    counts = Counter(len(s.spec.findings) for s in samples)
    assert set(counts) == {0, 1, 2, 3}


def test_labels_follow_the_catalogue_and_negatives_are_absent() -> None:
    for s in iter_samples(60, seed=2, size=32):
        assert s.render is not None
        drawn = set(s.render.masks) - {"lung_left", "lung_right", "heart"}
        assert drawn == {f.id for f in s.spec.findings}
        assert (s.render.ctr > 0.5) == (s.spec.get("cardiomegaly") is not None)
        for qa in s.qas:
            if qa.template == "existence":
                assert (qa.answer == "yes") == (s.spec.get(qa.finding) is not None)


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", 24, seed=3, size=32, dicom=False)
    b = generate(tmp_path / "b", 24, seed=3, size=32, dicom=False)
    c = generate(tmp_path / "c", 24, seed=4, size=32, dicom=False)
    assert a == b
    for rel in ["manifest.json", "train/vqa.jsonl", "train/probes.jsonl", "images/cxr-000005.png"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert (tmp_path / "a/train/vqa.jsonl").read_bytes() != (tmp_path / "c/train/vqa.jsonl").read_bytes()
    assert c != a


def test_layout_schemas_and_manifest(tmp_path: Path) -> None:
    m = generate(tmp_path, 30, seed=1, size=32, dicom=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["generator_version"] == m.generator_version
    assert sum(len(v) for v in manifest["splits"].values()) == 30
    for split in ("train", "val", "test"):
        for name in ("captions", "vqa", "probes"):
            assert (tmp_path / split / f"{name}.jsonl").exists()
    vqa = [json.loads(line) for line in (tmp_path / "train/vqa.jsonl").read_text().splitlines()]
    rec = vqa[0]
    assert {"id", "image", "conversations", "question_type", "template", "answer"} <= set(rec)
    assert rec["conversations"][0]["from"] == "human" and rec["conversations"][0]["value"].startswith(
        "<image>\n"
    )
    assert rec["conversations"][1] == {"from": "gpt", "value": rec["answer"]}
    assert (tmp_path / rec["image"]).exists()
    probes = [json.loads(line) for line in (tmp_path / "train/probes.jsonl").read_text().splitlines()]
    pairs: dict[str, list[dict[str, str]]] = defaultdict(list)
    for p in probes:
        assert {"pair_id", "image", "question", "answer", "kind", "category"} <= set(p)
        pairs[p["pair_id"]].append(p)
    for members in pairs.values():
        assert sorted((p["kind"], p["answer"]) for p in members) == [("adversarial", "no"), ("true", "yes")]
    cats = {p["category"] for p in probes}
    assert {"existence", "attribute", "position"} <= cats
    for members in pairs.values():  # attribute and position pairs say what the image shows
        true = next(p for p in members if p["kind"] == "true")
        if true["category"] in ("attribute", "position"):
            assert {p["evidence"] for p in members} == {members[0]["evidence"]}
            said = true["evidence"].removeprefix("on the patient's ").removeprefix("in the ")
            assert said.removesuffix(" zone") in true["question"]
        else:
            assert all("evidence" not in p for p in members)
    total = sum(manifest["finding_counts"][s].get("normal", 0) for s in manifest["finding_counts"])
    normal = 0
    for path in tmp_path.glob("*/captions.jsonl"):
        normal += sum(1 for line in path.read_text().splitlines() if not json.loads(line)["findings"])
    assert total == normal


def test_png_matches_in_memory_pixels(tmp_path: Path) -> None:
    from PIL import Image

    generate(tmp_path, 3, seed=9, size=32, dicom=False)
    sample = next(iter_samples(3, seed=9, size=32))
    png = np.asarray(Image.open(tmp_path / "images" / f"{sample.spec.study_id}.png"), dtype=np.float32) / 255
    assert np.abs(png - sample.pixels).max() <= 0.5 / 255 + 1e-6


def test_bad_arguments_raise() -> None:
    with pytest.raises(PhantomError, match="unsupported"):
        next(iter_samples(2, seed=0, kinds=("mri",)))
    with pytest.raises(PhantomError, match="size"):
        next(iter_samples(2, seed=0, size=4))


def test_cli_writes_a_dataset_and_rejects_bad_kinds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["phantoms", "--out", str(tmp_path), "--n", "4", "--seed", "2", "--size", "32", "--no-dicom"])
        == 0
    )
    assert (tmp_path / "manifest.json").exists()
    assert "wrote 4 studies" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["phantoms", "--out", str(tmp_path), "--kinds", "mri"])
    assert info.value.code == 2


def test_parallel_rendering_gives_identical_output(tmp_path: Path) -> None:
    generate(tmp_path / "serial", 10, seed=8, kinds=("cxr", "ct", "slide"), size=32, dicom=False, workers=1)
    generate(tmp_path / "parallel", 10, seed=8, kinds=("cxr", "ct", "slide"), size=32, dicom=False, workers=2)
    files = sorted(
        p.relative_to(tmp_path / "serial") for p in (tmp_path / "serial").rglob("*") if p.is_file()
    )
    assert len(files) > 20
    for rel in files:
        assert (tmp_path / "serial" / rel).read_bytes() == (tmp_path / "parallel" / rel).read_bytes(), rel


@pytest.mark.parametrize("seed", range(6))
def test_small_datasets_have_every_split(seed: int) -> None:
    assert {s.split for s in iter_samples(20, seed=seed, size=16)} == {"train", "val", "test"}


def test_closed_answers_are_canonical_and_reports_are_written(tmp_path: Path) -> None:
    generate(tmp_path, 30, seed=2, kinds=("cxr", "ct", "slide"), size=32, dicom=False)
    allowed = {"yes", "no", "A", "B", "C", "D", "left", "right", "small", "large", "upper", "middle", "lower"}
    allowed |= {f"{s} {p} lobe" for s in ("left", "right") for p in ("upper", "middle", "lower")}
    kinds_with_reports: set[str] = set()
    for split in ("train", "val", "test"):
        for line in (tmp_path / split / "vqa.jsonl").read_text().splitlines():
            rec = json.loads(line)
            if rec["question_type"] == "closed":
                assert rec["answer"] in allowed, rec
        for line in (tmp_path / split / "report_errors.jsonl").read_text().splitlines():
            rec = json.loads(line)
            kinds_with_reports.add(rec["modality"])
            assert rec["conversations"][1]["value"] == ("yes" if rec["has_error"] else "no")
    assert kinds_with_reports == {"cxr", "ct"}
