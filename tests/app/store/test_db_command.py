"""``medvlm db init / verify / stats``: exit codes, one-sentence errors, default URL, no key in output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from app.cli import main
from app.store import make_engine

SITE_KEY = "cli-test-site-key-0123456789"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDVLM_PSEUDONYM_KEY", SITE_KEY)
    monkeypatch.setenv("MEDVLM_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("MEDVLM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MEDVLM_DATABASE_URL", raising=False)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert SITE_KEY not in out + err
    return code, out, err


def test_init_verify_stats_and_tampering(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "db", "init", "--url", db_url, "--json")
    assert code == 0 and json.loads(out)["created"] is True
    code, out, _ = _run(capsys, "db", "init", "--url", db_url, "--json")
    assert code == 0 and json.loads(out)["created"] is False
    code, out, _ = _run(capsys, "db", "verify", "--url", db_url, "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True and report["events"] == 1 and len(report["head_hash"]) == 64
    code, out, _ = _run(capsys, "db", "stats", "--url", db_url, "--json")
    stats = json.loads(out)
    assert code == 0 and stats["audit_events"] == 1 and stats["interactions"] == 0

    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET payload = '{}' WHERE seq = 1"))
    engine.dispose()
    code, out, err = _run(capsys, "db", "verify", "--url", db_url)
    assert code == 1
    assert (
        err.strip()
        == "medvlm db verify: the audit log fails at seq 1: event 1 was altered (its hash does not match)"
    )
    code, out, _ = _run(capsys, "db", "verify", "--url", db_url, "--json")
    assert code == 1 and json.loads(out)["first_bad_seq"] == 1


def test_default_url_is_under_medvlm_home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "db", "init")
    assert code == 0
    assert (tmp_path / "home" / "medvlm.db").is_file()
    assert "medvlm.db" in out
    assert _run(capsys, "db", "verify")[0] == 0


def test_database_url_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'elsewhere' / 'x.db'}"
    monkeypatch.setenv("MEDVLM_DATABASE_URL", url)
    assert _run(capsys, "db", "init")[0] == 0
    assert (tmp_path / "elsewhere" / "x.db").is_file()
    assert not (tmp_path / "home" / "medvlm.db").exists()


def test_wrong_key_fails_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(capsys, "db", "init")[0] == 0
    monkeypatch.setenv("MEDVLM_PSEUDONYM_KEY", "another-site-key-0123456789")
    code, _, err = _run(capsys, "db", "verify")
    assert code == 1
    assert err.strip() == "medvlm db verify: the audit key is not the key this database was created with"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("db", "verify"), "there is no database file at"),
        (("db", "stats", "--url", "postgresql+psycopg://u:pw@127.0.0.1:1/x"), "cannot be reached"),
        (("db", "init", "--url", "mysql://u@h/db"), "is not supported"),
    ],
)
def test_failures_are_one_sentence(
    argv: tuple[str, ...], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, *argv)
    assert code == 1
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err and "pw@" not in err


def test_db_without_action_is_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(capsys, "db")[0] == 2
