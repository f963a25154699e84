"""``medvlm app``: arguments, the embedded database created when absent, one-sentence start failures."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from app.cli import main
from app.commands.web import ANALYTICS_ENV, StartError, open_store
from app.store import AuditKey, Store
from data_prep.pseudonym import PseudonymKey


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there once the socket is closed


def test_help_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["app", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--host" in out and "127.0.0.1" in out and "--db-url" in out and "--server" in out
    assert main(["app", "--server", "http://127.0.0.1:1", "--model", "somewhere"]) == 2
    assert "not both" in capsys.readouterr().err


def test_open_store_creates_the_sqlite_database_once(tmp_path: Path) -> None:
    key = AuditKey.derive(PseudonymKey(b"web-app-test-site-key-0123456789", "test"))
    url = f"sqlite:///{tmp_path / 'new' / 'home' / 'medvlm.db'}"
    store = open_store(url, key)
    assert isinstance(store, Store) and store.verify().ok
    store.engine.dispose()
    again = open_store(url, key)  # idempotent: the same database, the same chain
    assert again.verify().events == store.verify().events
    again.engine.dispose()
    other = AuditKey.derive(PseudonymKey(b"another-site-key-0123456789abcd", "test"))
    with pytest.raises(StartError, match="opening the database failed: the audit key"):
        open_store(url, other)


def test_an_unreachable_model_server_is_one_sentence_after_the_database_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEDVLM_PSEUDONYM_KEY", "web-app-test-site-key-0123456789")
    monkeypatch.setenv("MEDVLM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(ANALYTICS_ENV, "True")  # restored afterwards; the command turns it off
    server = f"http://127.0.0.1:{_closed_port()}"
    code = main(["app", "--server", server, "--timeout", "2", "--no-kg"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("medvlm app: loading the model failed:") and err.count("\n") == 1
    assert (tmp_path / "home" / "medvlm.db").exists()  # $MEDVLM_HOME's SQLite database, created
    assert os.environ[ANALYTICS_ENV] == "False"


def test_a_non_loopback_host_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEDVLM_PSEUDONYM_KEY", "web-app-test-site-key-0123456789")
    monkeypatch.setenv(ANALYTICS_ENV, "False")
    url = f"sqlite:///{tmp_path / 'medvlm.db'}"
    server = f"http://127.0.0.1:{_closed_port()}"
    assert main(["app", "--host", "0.0.0.0", "--db-url", url, "--server", server, "--timeout", "2"]) == 1
    assert "WARNING binding 0.0.0.0 (not loopback)" in capsys.readouterr().err
