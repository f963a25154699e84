"""The Gradio handlers without a browser: a failure changes only its status line, uploads are deleted."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.web.service import WebService
from app.web.ui import _handlers, create_app

gr = pytest.importorskip("gradio")


def _skipped(value: object) -> bool:
    return isinstance(value, dict) and value.get("__type__") == "update" and len(value) == 1


def test_a_failed_sign_in_keeps_the_session_and_says_so(service: WebService) -> None:
    on = _handlers(service)
    session, who, login = on["sign_in"](None, "alice", "clinician")
    assert "Signed in as" in who and login == ""
    kept, who, login = on["sign_in"](session, "alice", "reviewer")
    assert _skipped(kept) and _skipped(login)
    assert "registered as clinician" in who and f"Still signed in as **{session.label}**" in who


def test_uploads_are_deleted_once_read_and_a_bad_one_changes_nothing_else(
    service: WebService, chest: Path, tmp_path: Path
) -> None:
    on = _handlers(service)
    session, _, _ = on["sign_in"](None, "alice", "clinician")
    upload = tmp_path / "cache" / chest.name
    upload.parent.mkdir()
    shutil.copyfile(chest, upload)
    case, gallery, views, status, cleared = on["upload"](session, str(upload))
    assert not upload.exists() and cleared is None and status.startswith("Study loaded")
    assert len(gallery) == 1 and "CR CHEST" in views and case.study_pseudonym.startswith("S-")
    bad = tmp_path / "cache" / "SMITH.dcm"
    bad.write_bytes(b"not dicom at all" * 10)
    outputs = on["upload"](session, str(bad))
    assert not bad.exists() and all(_skipped(o) for o in outputs[:3])
    assert outputs[3].startswith("⚠ The file could not be read") and "SMITH" not in outputs[3]
    interaction, answer, status = on["ask"](session, case, "Is there a pleural effusion?")
    assert interaction == 1 and "Recorded as interaction 1" in answer and status == ""
    kept, answer, status = on["ask"](session, case, "   ")
    assert _skipped(kept) and _skipped(answer) and status == "⚠ Type a question\\."


def test_create_app_builds_without_analytics(service: WebService) -> None:
    demo = create_app(service)
    assert isinstance(demo, gr.Blocks) and demo.analytics_enabled is False
