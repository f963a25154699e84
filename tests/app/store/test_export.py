"""Approved corrections → preference pairs: format, selection, image ids, audit event, failures, CLI."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from app.store import (
    AuditKey,
    ExportError,
    InteractionCreate,
    NotFoundError,
    SchemaVersionError,
    Store,
    ValidationError,
    case_image_path,
    image_content_id,
    make_engine,
)
from app.store.models import SCHEMA_VERSION, AuditEvent
from tests.app.store.conftest import People, row_counts
from training.data import load_preferences


def _png(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), shade).save(buffer, format="PNG")
    return buffer.getvalue()


def _save_case_image(cases: Path, shade: int) -> str:
    data = _png(shade)
    sha = image_content_id(data)
    cases.mkdir(parents=True, exist_ok=True)
    case_image_path(cases, sha).write_bytes(data)
    return sha


@dataclass(frozen=True)
class Filled:
    """Four interactions: approved, approved, rejected, pending corrections (ids 1-4)."""

    store: Store
    cases: Path
    shas: tuple[str, ...]


def _ask(
    store: Store, people: People, study: str, i: int, sha: str | None, answer: str = "No effusion."
) -> int:
    data = InteractionCreate(
        study_pseudonym=study,
        question=f"Is there a pleural effusion ({i})?",
        answer=answer,
        model_version="m@1",
        image_sha256=sha,
    )
    return store.record_interaction(actor=people.clinician, data=data).id


def _correct(store: Store, people: People, interaction_id: int, text_: str, decision: str | None) -> int:
    correction = store.propose_correction(
        interaction_id=interaction_id, author=people.clinician, corrected_answer=text_
    )
    if decision is not None:
        store.review_correction(correction_id=correction.id, reviewer=people.reviewer, decision=decision)  # type: ignore[arg-type]
    return correction.id


@pytest.fixture
def filled(store: Store, people: People, study: str, tmp_path: Path) -> Filled:
    cases = tmp_path / "cases"
    shas = tuple(_save_case_image(cases, shade) for shade in (10, 20, 30, 40))
    for i, (sha, decision) in enumerate(zip(shas, ("approved", "approved", "rejected", None), strict=True)):
        interaction = _ask(store, people, study, i, sha)
        _correct(store, people, interaction, f"Small left pleural effusion ({i}).", decision)
    return Filled(store, cases, shas)


def _export_events(engine: Engine) -> list[AuditEvent]:
    with Session(engine) as session:
        return list(session.execute(select(AuditEvent).where(AuditEvent.action == "export")).scalars())


def test_export_writes_load_preferences_format_and_audits(
    engine: Engine, filled: Filled, tmp_path: Path
) -> None:
    out = tmp_path / "out" / "prefs.jsonl"
    result = filled.store.export_preferences(out, images=filled.cases)
    assert result.count == 2 and result.correction_ids == (1, 2)
    assert result.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    pairs = load_preferences(out)
    assert [p.chosen for p in pairs] == [
        "Small left pleural effusion (0).",
        "Small left pleural effusion (1).",
    ]
    assert {p.rejected for p in pairs} == {"No effusion."}
    assert pairs[0].question == "Is there a pleural effusion (0)?"
    assert pairs[0].image == (filled.cases / f"{filled.shas[0]}.png").resolve()
    assert pairs[0].image.is_absolute() and pairs[0].image.is_file()
    assert sorted(json.loads(out.read_text().splitlines()[0])) == ["chosen", "image", "question", "rejected"]
    (event,) = _export_events(engine)
    payload = json.loads(event.payload)
    assert event.seq == result.seq and event.actor == "system" and event.object_kind == "preferences"
    assert payload["count"] == 2 and payload["sha256"] == result.sha256
    assert payload["correction_ids"] == ["1", "2"]
    assert "effusion" not in event.payload  # ids, counts and digests only
    assert filled.store.verify().ok and filled.store.check_records().ok
    assert not list(out.parent.glob(".*tmp"))  # the temporary file was renamed


def test_export_takes_only_new_approvals_then_all_and_since(
    people: People, study: str, filled: Filled, tmp_path: Path
) -> None:
    store = filled.store
    first = store.export_preferences(tmp_path / "a.jsonl", images=filled.cases)
    assert first.correction_ids == (1, 2)
    again = store.export_preferences(tmp_path / "b.jsonl", images=filled.cases)
    assert again.count == 0 and again.already_exported == 2 and (tmp_path / "b.jsonl").read_text() == ""
    store.review_correction(correction_id=4, reviewer=people.reviewer, decision="approved")
    head = store.verify().head_seq
    new = store.export_preferences(tmp_path / "c.jsonl", images=filled.cases)
    assert new.correction_ids == (4,) and new.already_exported == 2
    everything = store.export_preferences(tmp_path / "d.jsonl", images=filled.cases, include_exported=True)
    assert everything.correction_ids == (1, 2, 4)
    since = store.export_preferences(
        tmp_path / "e.jsonl", images=filled.cases, since=head - 1, include_exported=True
    )
    assert since.correction_ids == (4,)
    assert store.export_preferences(tmp_path / "f.jsonl", images=filled.cases, since=head).count == 0
    assert store.verify().ok


def test_unchanged_and_imageless_corrections_are_left_out(
    people: People, study: str, filled: Filled, tmp_path: Path
) -> None:
    store = filled.store
    same = _ask(store, people, study, 10, filled.shas[0], answer="Normal study.")
    _correct(store, people, same, "  Normal study. ", "approved")  # 5: identical after strip
    blind = _ask(store, people, study, 11, None)
    _correct(store, people, blind, "Effusion.", "approved")  # 6: no image id
    result = store.export_preferences(tmp_path / "p.jsonl", images=filled.cases)
    assert result.correction_ids == (1, 2)
    assert result.skipped_unchanged == (5,) and result.skipped_no_image == (6,)
    assert len(load_preferences(tmp_path / "p.jsonl")) == 2


@pytest.mark.parametrize("damage", ["missing", "altered"])
def test_a_bad_image_names_the_interaction_and_writes_nothing(
    engine: Engine, filled: Filled, tmp_path: Path, damage: str
) -> None:
    path = case_image_path(filled.cases, filled.shas[1])
    if damage == "missing":
        path.unlink()
        error: type[Exception] = NotFoundError
        match = (
            f"the image of interaction 2 \\({filled.shas[1]}.png\\) is missing from .*; nothing was exported"
        )
    else:
        path.write_bytes(_png(99))
        error, match = ExportError, "the image file of interaction 2 .* does not match its content id"
    out = tmp_path / "prefs.jsonl"
    before = row_counts(engine)
    with pytest.raises(error, match=match) as info:
        filled.store.export_preferences(out, images=filled.cases)
    assert "\n" not in str(info.value) and "effusion" not in str(info.value)
    assert not out.exists() and not list(tmp_path.glob(".*tmp"))
    assert row_counts(engine) == before and _export_events(engine) == []


def test_an_unwritable_out_leaves_no_event(engine: Engine, filled: Filled, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    before = row_counts(engine)
    with pytest.raises(ExportError, match=r"cannot write .*; nothing was exported"):
        filled.store.export_preferences(blocker / "prefs.jsonl", images=filled.cases)
    assert row_counts(engine) == before


def test_negative_since_is_refused(filled: Filled, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="since must be an audit seq"):
        filled.store.export_preferences(tmp_path / "p.jsonl", images=filled.cases, since=-1)


def test_image_id_is_validated_stored_and_audited(
    engine: Engine, store: Store, people: People, study: str
) -> None:
    with pytest.raises(ValidationError, match="image id is not a SHA-256"):
        InteractionCreate(
            study_pseudonym=study, question="q", answer="a", model_version="m", image_sha256="/x.png"
        )
    sha = image_content_id(b"pixels")
    record = store.record_interaction(
        actor=people.clinician,
        data=InteractionCreate(
            study_pseudonym=study, question="q", answer="a", model_version="m", image_sha256=sha
        ),
    )
    assert record.image_sha256 == sha and store.get_interaction(record.id).image_sha256 == sha
    assert store.check_records().ok
    with engine.begin() as conn:
        conn.execute(text("UPDATE interactions SET image_sha256 = :s"), {"s": image_content_id(b"other")})
    result = store.check_records()
    assert not result.ok and result.first_bad == f"interaction {record.id}"


def test_an_older_schema_is_refused(engine: Engine, key: AuditKey) -> None:
    assert SCHEMA_VERSION == 4
    with engine.begin() as conn:
        conn.execute(text("UPDATE medvlm_schema SET version = 3"))
    with pytest.raises(
        SchemaVersionError, match=r"older medvlm \(schema 3, this one reads 4\); run `medvlm db migrate`"
    ):
        Store.open(engine, key)


def test_abstained_answers_export_the_models_own_text(
    engine: Engine, people: People, study: str, filled: Filled, tmp_path: Path
) -> None:
    """An abstention message is what was shown, not the model's answer: "rejected" is the raw text."""
    from medvlm.schema import Answer, ModelInfo

    store = filled.store
    shown = "Not confident enough to answer yes or no (confidence 0.55 below 0.60); please review the images."
    answer = Answer(
        text=shown,
        model=ModelInfo("m@1", None, "fake", False),
        grounded=True,
        confidence=0.55,
        abstained=True,
        refused=False,
        safety=[],
        latency_ms=5.0,
        views=["PA chest radiograph"],
        raw_text="No pleural effusion; call 555-123-4567 if unsure.",
    )
    data = InteractionCreate.from_answer(
        answer, study_pseudonym=study, question="Is there a pleural effusion?", image_sha256=filled.shas[0]
    )
    assert data.answer == shown and data.model_answer == answer.raw_text
    record = store.record_interaction(actor=people.clinician, data=data)
    assert record.answer == shown
    assert record.model_answer == "No pleural effusion; call [PHONE] if unsure."  # scrubbed like the answer
    assert record.model_text == record.model_answer and record.redactions == 1
    _correct(store, people, record.id, "Small left pleural effusion.", "approved")  # 5
    # an abstention whose model text was not kept (empty, or a schema 2 row): nothing to reject
    bare = store.record_interaction(
        actor=people.clinician,
        data=InteractionCreate(
            study_pseudonym=study,
            question="q?",
            answer=shown,
            model_version="m@1",
            abstained=True,
            image_sha256=filled.shas[0],
        ),
    )
    assert bare.model_text is None
    _correct(store, people, bare.id, "Effusion.", "approved")  # 6
    result = store.export_preferences(tmp_path / "p.jsonl", images=filled.cases)
    assert result.correction_ids == (1, 2, 5) and result.skipped_no_model_text == (6,)
    pair = load_preferences(tmp_path / "p.jsonl")[-1]
    assert (pair.chosen, pair.rejected) == (
        "Small left pleural effusion.",
        "No pleural effusion; call [PHONE] if unsure.",
    )
    (event,) = _export_events(engine)
    assert json.loads(event.payload)["skipped_no_model_text"] == 1
    # the model's text is audited like the answer: editing it behind medvlm's back is found
    assert store.verify().ok and store.check_records().ok
    with engine.begin() as conn:
        conn.execute(text("UPDATE interactions SET model_answer = 'Yes.' WHERE id = :i"), {"i": record.id})
    assert store.check_records().first_bad == f"interaction {record.id}"


# -- the command ---------------------------------------------------------------------------------

SITE_KEY = "cli-test-site-key-0123456789"


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("MEDVLM_PSEUDONYM_KEY", SITE_KEY)
    monkeypatch.setenv("MEDVLM_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("MEDVLM_HOME", str(home))
    monkeypatch.delenv("MEDVLM_DATABASE_URL", raising=False)
    return home


def test_cli_export_preferences(
    db_url: str, cli_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main
    from app.commands.db import _audit_key
    from app.store import actor_pseudonym
    from data_prep.pseudonym import PseudonymKey, study_pseudonym

    assert main(["db", "init", "--url", db_url]) == 0
    key = _audit_key(create=False)
    engine = make_engine(db_url)
    try:
        store = Store.open(engine, key)
        site = PseudonymKey(b"another-site-key-for-names-012", "t")
        people = People(**{n: actor_pseudonym(site, n) for n in People.__dataclass_fields__})
        for name in ("clinician", "reviewer"):
            store.register_actor(pseudonym=getattr(people, name), role=name)  # type: ignore[arg-type]
        study = study_pseudonym(site, "1.2.3.4")
        sha = _save_case_image(cli_env / "cases", 50)  # the default images folder
        _correct(store, people, _ask(store, people, study, 0, sha), "Effusion.", "approved")
        other = _ask(store, people, study, 1, image_content_id(b"never saved"))
    finally:
        engine.dispose()
    capsys.readouterr()
    out = tmp_path / "prefs.jsonl"
    assert main(["db", "export-preferences", "--url", db_url, "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["count"] == 1 and report["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert (report["skipped_unchanged"], report["skipped_no_image"], report["skipped_no_model_text"]) == (
        0,
        0,
        0,
    )
    assert load_preferences(out)[0].image == (cli_env / "cases" / f"{sha}.png").resolve()
    assert (
        main(["db", "export-preferences", "--url", db_url, "--out", str(out), "--all", "--since", "0"]) == 0
    )
    text = capsys.readouterr().out
    assert "count: 1" in text and "skipped_no_model_text: 0" in text

    engine = make_engine(db_url)
    try:
        store = Store.open(engine, key)
        _correct(store, people, other, "Effusion.", "approved")
    finally:
        engine.dispose()
    out2 = tmp_path / "second.jsonl"
    code = main(
        ["db", "export-preferences", "--url", db_url, "--out", str(out2), "--images", str(tmp_path), "--all"]
    )
    captured = capsys.readouterr()
    assert code == 1 and not out2.exists() and captured.out == ""
    assert captured.err.startswith("medvlm db export-preferences: the image of interaction 1 ")
    code = main(["db", "export-preferences", "--url", db_url, "--out", str(out2)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith(f"medvlm db export-preferences: the image of interaction {other} ")
    assert err.count("\n") == 1 and SITE_KEY not in err
    assert main(["db", "verify", "--url", db_url]) == 0


def test_concurrent_exports_take_disjoint_corrections(
    db_url: str, key: AuditKey, filled: Filled, tmp_path: Path
) -> None:
    """Two exports at once (own engines): the head lock serialises them, so no correction is written twice."""
    import threading

    barrier = threading.Barrier(2)
    results: list[tuple[int, ...]] = []
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        own = make_engine(db_url)
        try:
            store = Store(own, key)
            barrier.wait(timeout=30)
            results.append(
                store.export_preferences(tmp_path / f"t{n}.jsonl", images=filled.cases).correction_ids
            )
        except BaseException as e:
            errors.append(e)
        finally:
            own.dispose()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert sorted(results) == [(), (1, 2)]
    assert filled.store.verify().ok
