"""The web app's operations without Gradio: sign-in, upload, ask, correct, review, export, bad input."""

from __future__ import annotations

import dataclasses
import io
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread

from app.store import Store, actor_pseudonym, case_image_path, image_content_id
from app.store.models import ROLES
from app.web.cases import UploadLimits
from app.web.errors import AppError
from app.web.service import WebService
from app.web.session import ROLE_NAMES
from data_prep.pseudonym import PseudonymKey
from tests.app.web.conftest import FACTS, ScriptedBackend
from training.data import load_preferences

PHI_FROM_NAMES = ("SMITH", "JANE", "MRN12345678", "DOE", "JOHN")
QUESTION = "Is there a pleural effusion?"


def _no_phi(text: str, *extra: str) -> None:
    for token in (*PHI_FROM_NAMES, *extra):
        assert token.lower() not in text.lower(), token


def test_sign_in_registers_once_and_keeps_the_role(service: WebService, store: Store) -> None:
    me = service.sign_in("  dr.house ", "clinician")
    assert me.actor.startswith("U-") and me.role == "clinician" and "house" not in me.label
    assert service.sign_in("DR.HOUSE", "clinician") == me  # case and spaces ignored, no second actor
    with pytest.raises(AppError, match="registered as clinician, not reviewer"):
        service.sign_in("dr.house", "reviewer")
    with pytest.raises(AppError, match="Type your login"):
        service.sign_in("   ", "clinician")
    with pytest.raises(AppError, match="Choose a role"):
        service.sign_in("x", "superuser")
    assert store.stats().actors == {"clinician": 1, "reviewer": 0, "admin": 0, "service": 0}


def test_nobody_signs_in_as_a_service(service: WebService, store: Store, site_key: PseudonymKey) -> None:
    """The store's ``service`` role (batch jobs) is not offered, and a service's login is refused."""
    assert "service" not in ROLE_NAMES and set(ROLE_NAMES) < set(ROLES)
    with pytest.raises(AppError, match="Choose a role: clinician, reviewer, admin"):
        service.sign_in("alice", "service")
    job = actor_pseudonym(site_key, "service:medvlm-check-reports")
    store.register_actor(pseudonym=job, role="service")
    for role in ROLE_NAMES:
        with pytest.raises(
            AppError, match=r"^This login belongs to a service, not a person, and cannot sign in\.$"
        ):
            service.sign_in("service:medvlm-check-reports", role)
    assert store.stats().actors == {"clinician": 0, "reviewer": 0, "admin": 0, "service": 1}


def test_open_case_shows_what_the_model_sees_without_the_header(service: WebService, chest: Path) -> None:
    me = service.sign_in("alice", "clinician")
    opened = service.open_case(me, chest)
    seen = opened.model_input
    assert len(seen.images) == 1 and seen.images[0].mode == "RGB"
    assert "CR CHEST" in seen.descriptions[0] and "MONOCHROME1" in seen.descriptions[0]
    assert opened.case.study_pseudonym.startswith("S-")
    header = dcmread(chest)
    shown = " ".join([*seen.descriptions, *opened.case.warnings])
    _no_phi(shown, str(header.PatientName), str(header.PatientID), str(header.StudyInstanceUID))
    assert chest.exists()  # the service reads a private copy; the caller owns the upload


def test_ask_records_the_interaction_and_saves_the_image_the_model_saw(
    service: WebService, backend: ScriptedBackend, store: Store, chest: Path
) -> None:
    me = service.sign_in("alice", "clinician")
    case = service.open_case(me, chest).case
    result = service.ask(me, case, QUESTION)
    answer = result.answer
    assert answer.text == "No pleural effusion is seen [RID34539]." and answer.grounded is True
    assert answer.confidence == pytest.approx(0.9 / 0.95) and not answer.abstained
    assert answer.model.model_version == "fake-vlm@0123456789ab" and result.facts == FACTS
    stored = store.get_interaction(result.interaction_id)
    assert stored.actor == me.actor and stored.study_pseudonym == case.study_pseudonym
    assert stored.evidence == ("RID34539",) and stored.grounded is True
    assert stored.adapter_version == "fake-adapter@ba9876543210"
    # The saved case image is exactly the image the model received, under its content id.
    path = case_image_path(service.cases_dir, result.image_sha256)
    assert stored.image_sha256 == result.image_sha256 == image_content_id(path.read_bytes())
    given = np.asarray(backend.prompts[0].images[0])
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), given)
    assert store.verify().ok and store.check_records().ok


def test_correction_review_and_export_agree_on_the_case_image(
    service: WebService, store: Store, chest: Path, tmp_path: Path
) -> None:
    alice = service.sign_in("alice", "clinician")
    bob = service.sign_in("bob", "reviewer")
    carol = service.sign_in("carol", "reviewer")
    result = service.ask(alice, service.open_case(alice, chest).case, QUESTION)
    with pytest.raises(AppError, match="Type the corrected answer"):
        service.correct(alice, result.interaction_id, "  ")
    correction = service.correct(alice, result.interaction_id, "Small left pleural effusion.")
    assert correction.status == "pending"
    with pytest.raises(AppError, match="A clinician cannot review"):
        service.review_queue(alice)
    with pytest.raises(AppError, match="A clinician cannot review"):
        service.review(alice, correction.id, "approved")
    [(interaction, pending)] = service.review_queue(bob)
    assert pending.id == correction.id and interaction.id == result.interaction_id
    own = service.correct(bob, result.interaction_id, "Moderate left pleural effusion.")
    with pytest.raises(AppError, match="cannot review their own correction"):
        service.review(bob, own.id, "approved")
    assert service.review(bob, correction.id, "approved").decision == "approved"
    with pytest.raises(AppError, match="already approved"):
        service.review(carol, correction.id, "rejected")
    assert [c.id for _, c in service.review_queue(carol)] == [own.id]
    # The retraining export finds the saved image and training reads the pair back.
    out = tmp_path / "prefs.jsonl"
    exported = store.export_preferences(out, images=service.cases_dir)
    assert exported.count == 1
    [pair] = load_preferences(out)
    assert pair.image == case_image_path(service.cases_dir.resolve(), result.image_sha256)
    assert pair.chosen == "Small left pleural effusion." and pair.rejected == result.answer.text
    assert store.verify().ok and store.check_records().ok


def test_roles_are_enforced(service: WebService, store: Store, chest: Path) -> None:
    admin = service.sign_in("root", "admin")
    case = service.open_case(admin, chest).case
    with pytest.raises(AppError, match="An admin cannot ask questions"):
        service.ask(admin, case, QUESTION)
    alice = service.sign_in("alice", "clinician")
    result = service.ask(alice, case, QUESTION)
    with pytest.raises(AppError, match="an admin cannot correct answers"):  # the store's refusal
        service.correct(admin, result.interaction_id, "Something else.")
    with pytest.raises(AppError, match="Sign in first"):
        service.ask(None, case, QUESTION)
    with pytest.raises(AppError, match="Upload a study first"):
        service.ask(alice, None, QUESTION)
    with pytest.raises(AppError, match="Ask a question first"):
        service.correct(alice, None, "x")
    assert store.stats().interactions == 1 and store.stats().corrections["pending"] == 0


def test_model_failure_records_nothing_and_loses_nothing(
    service: WebService, backend: ScriptedBackend, store: Store, chest: Path
) -> None:
    me = service.sign_in("alice", "clinician")
    case = service.open_case(me, chest).case
    backend.fail = True
    with pytest.raises(AppError, match=r"^The model could not answer \(BackendError\); nothing was recorded"):
        service.ask(me, case, QUESTION)
    assert store.stats().interactions == 0 and not list(service.cases_dir.glob("*.png"))
    backend.fail = False  # the same case and question work once the model is back
    assert service.ask(me, case, QUESTION).interaction_id == 1


def test_knowledge_graph_failure_answers_without_facts(service: WebService, chest: Path) -> None:
    def broken(question: str) -> list:
        raise OSError("index missing")

    svc = dataclasses.replace(service, facts=broken)
    me = svc.sign_in("alice", "clinician")
    result = svc.ask(me, svc.open_case(me, chest).case, QUESTION)
    assert result.facts == [] and result.notes == [
        "Knowledge retrieval failed (OSError); answered without facts."
    ]


def test_several_views_become_the_montage_the_model_sees(
    service: WebService, ct_zip: Path, store: Store
) -> None:
    single = ScriptedBackend(multi_image=False)
    svc = dataclasses.replace(service, assistant=dataclasses.replace(service.assistant, backend=single))
    me = svc.sign_in("alice", "clinician")
    opened = svc.open_case(me, ct_zip)
    assert len(opened.case.views) == 4  # key slice, montage of slices, MIP, multi-window
    assert len(opened.model_input.images) == 1 and opened.model_input.descriptions[0].startswith(
        "Montage of 4"
    )
    # The two traversal members were left out, named by position only.
    left_out = [w for w in opened.case.warnings if "left out" in w]
    assert len(left_out) == 2 and all("refused as unsafe" in w for w in left_out)
    _no_phi(" ".join(opened.case.warnings), "etc", "evil")
    result = svc.ask(me, opened.case, "Is there a nodule?")
    saved = Image.open(case_image_path(svc.cases_dir, result.image_sha256)).convert("RGB")
    assert np.array_equal(np.asarray(saved), np.asarray(single.prompts[0].images[0]))


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("corrupt", r"^The file could not be read: .*\.$"),
        ("empty", r"^The uploaded file is empty\.$"),
        ("too large", r"^The uploaded file is larger than the 1 MB upload limit\.$"),
        (
            "zip bomb",
            r"^The file could not be read: file 1 of the zip \(\.dcm, 67,108,864 bytes\) has a compression "
            r"ratio over 200 \(a possible zip bomb\)\.$",
        ),
        (
            "traversal only",
            r"^The file could not be read: file 1 of the zip \(\.dcm, 500,000 bytes\) has a '\.\.' component",
        ),
        ("not a zip", r"^The file could not be read: upload\.zip is not a readable zip archive\.$"),
        ("png disguised", r"^The file could not be read: .*\.$"),
    ],
)
def test_bad_uploads_get_one_sentence_without_the_file_name(
    service: WebService, store: Store, tmp_path: Path, chest: Path, kind: str, message: str
) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    name = folder / "SMITH^JANE_MRN12345678"
    if kind == "corrupt":
        upload = name.with_suffix(".dcm")
        upload.write_bytes(chest.read_bytes()[:4000])  # truncated inside the header
    elif kind == "empty":
        upload = name.with_suffix(".dcm")
        upload.write_bytes(b"")
    elif kind == "too large":
        upload = name.with_suffix(".dcm")
        upload.write_bytes(b"\0" * (1024**2 + 1))
    elif kind == "zip bomb":  # 64 MB of zeros, about 1000:1
        upload = _zip(name.with_suffix(".zip"), {"SMITH/bomb.dcm": b"\0" * (64 * 1024**2)})
    elif kind == "traversal only":
        data = chest.read_bytes()[:500_000]
        upload = _zip(name.with_suffix(".zip"), {"../../DOE_JOHN.dcm": data, "/abs/x.dcm": data})
    elif kind == "not a zip":
        upload = name.with_suffix(".zip")
        upload.write_bytes(b"PK\x03\x04 this is not really a zip")
    else:
        upload = name.with_suffix(".png")
        upload.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    svc = dataclasses.replace(service, limits=UploadLimits(max_upload_bytes=1024**2))
    me = svc.sign_in("alice", "clinician")
    with pytest.raises(AppError, match=message) as caught:
        svc.open_case(me, upload)
    text = str(caught.value)
    assert "\n" not in text and text.count(". ") == 0, text  # one sentence
    _no_phi(text)
    assert store.stats().interactions == 0


def test_no_phi_in_logs_database_or_answer(
    service: WebService, store: Store, chest: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    me = service.sign_in("alice.smith.login", "clinician")
    result = service.ask(me, service.open_case(me, chest).case, QUESTION)
    service.correct(me, result.interaction_id, "Call 555-123-4567 about MRN 12345678 on 2024-01-02.")
    header = dcmread(chest)
    secrets = (
        str(header.PatientName),
        str(header.PatientID),
        str(header.StudyInstanceUID),
        "alice.smith.login",
    )
    _no_phi(caplog.text, *secrets)
    database = Path(str(store.engine.url.database)).read_bytes()
    for secret in (*secrets, "SMITH^JANE", "MRN12345678", "555-123-4567", "2024-01-02"):
        assert secret.encode() not in database, secret
    stored = store.pending_corrections()[0][1]
    assert "[PHONE]" in stored.corrected_answer and "[ID]" in stored.corrected_answer


def test_case_png_is_deterministic_and_saved_once(service: WebService, chest: Path) -> None:
    from app.web.cases import case_png, save_case_image

    me = service.sign_in("alice", "clinician")
    seen = service.open_case(me, chest).model_input
    png = case_png(seen.images)
    assert png == case_png(seen.images) and Image.open(io.BytesIO(png)).info == {}
    sha = save_case_image(service.cases_dir, png)
    path = case_image_path(service.cases_dir, sha)
    before = path.stat().st_mtime_ns
    assert save_case_image(service.cases_dir, png) == sha and path.stat().st_mtime_ns == before
    with pytest.raises(ValueError):
        case_png([])
    with pytest.raises(ValueError):
        UploadLimits(max_upload_bytes=0)


def test_a_zip_of_two_studies_is_refused_by_its_neutral_name(service: WebService, tmp_path: Path) -> None:
    from pydicom.uid import generate_uid

    from tests.data_prep._synth import ct_slice, write

    archive = tmp_path / "SMITH^JANE.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i, study in enumerate(("1.2.3.4", "1.2.3.5")):
            path = tmp_path / f"{i}.dcm"
            write(ct_slice(0, z=0.0, instance=1, series_uid=generate_uid(), study_uid=study), str(path))
            zf.write(path, f"DOE_JOHN/{i}.dcm")
    me = service.sign_in("alice", "clinician")
    with pytest.raises(
        AppError, match=r"^The file could not be read: upload\.zip holds 2 studies; ask about"
    ):
        service.open_case(me, archive)


def test_a_refused_request_cannot_be_corrected(service: WebService, store: Store, ct_zip: Path) -> None:
    from medvlm import GenerationSettings, ModelScope

    chest_only = ModelScope(frozenset({"CR", "DX"}), frozenset({"CHEST"}), name="the built-in model")
    svc = dataclasses.replace(service, settings=GenerationSettings(scope=chest_only))
    me = svc.sign_in("alice", "clinician")
    result = svc.ask(me, svc.open_case(me, ct_zip).case, "Is there a nodule?")
    assert result.answer.refused and store.get_interaction(result.interaction_id).refused
    with pytest.raises(AppError, match="A refused request has no model answer to correct"):
        svc.correct(me, result.interaction_id, "A 4 mm nodule.")
    assert store.stats().corrections["pending"] == 0


@dataclasses.dataclass
class UnsureBackend(ScriptedBackend):
    """Answers like the scripted model, but with yes/no probabilities too close to call: it abstains."""

    def generate(self, prompts: list, settings: object, yes_no: bool = False) -> list:  # type: ignore[override]
        from medvlm.schema import Generation

        return [Generation(g.text, 0.45, 0.55) for g in super().generate(prompts, settings, yes_no)]  # type: ignore[arg-type]


def test_an_abstained_answer_is_corrected_against_the_models_own_text(
    service: WebService, store: Store, chest: Path, tmp_path: Path
) -> None:
    svc = dataclasses.replace(
        service, assistant=dataclasses.replace(service.assistant, backend=UnsureBackend())
    )
    alice, bob = svc.sign_in("alice", "clinician"), svc.sign_in("bob", "reviewer")
    result = svc.ask(alice, svc.open_case(alice, chest).case, QUESTION)
    assert result.answer.abstained and result.answer.text != result.answer.raw_text
    stored = store.get_interaction(result.interaction_id)
    assert stored.answer == result.answer.text  # what was shown is what is recorded
    assert stored.model_answer == result.answer.raw_text == "No pleural effusion is seen [RID34539]."
    correction = svc.correct(alice, result.interaction_id, "Small left pleural effusion.")
    svc.review(bob, correction.id, "approved")
    assert store.export_preferences(tmp_path / "p.jsonl", images=svc.cases_dir).count == 1
    [pair] = load_preferences(tmp_path / "p.jsonl")
    assert pair.rejected == result.answer.raw_text and "confident" not in pair.rejected


def test_an_abstention_without_model_text_cannot_be_corrected(service: WebService, store: Store) -> None:
    from app.store import InteractionCreate

    alice = service.sign_in("alice", "clinician")
    study_id = "S-" + "0" * 20
    shown = "Not confident enough to answer yes or no (confidence 0.51 below 0.60); please review the images."
    data = InteractionCreate(
        study_pseudonym=study_id, question="q?", answer=shown, model_version="m@1", abstained=True
    )
    record = store.record_interaction(actor=alice.actor, data=data)
    with pytest.raises(AppError) as caught:
        service.correct(alice, record.id, "Effusion.")
    assert (
        str(caught.value)
        == "The model abstained without an answer of its own, so there is nothing to correct."
    )
    assert store.stats().corrections["pending"] == 0
