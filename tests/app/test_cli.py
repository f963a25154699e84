"""The top-level command line: every subcommand answers --help, usage errors exit 2."""

from __future__ import annotations

import pytest

from app.cli import build_parser, main


def _subcommands() -> list[str]:
    parser = build_parser()
    for action in parser._actions:
        if action.dest == "command":
            return sorted(action.choices)  # type: ignore[arg-type]
    return []


def test_no_command_is_usage_error() -> None:
    assert main([]) == 2


def test_unknown_command_exits_2() -> None:
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2


@pytest.mark.parametrize("name", _subcommands() or ["__none__"])
def test_every_subcommand_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    if name == "__none__":
        pytest.skip("no subcommands registered yet")
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_unexpected_exception_is_one_sentence_and_exit_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import argparse

    from app.commands import model as model_cmd

    def crash(args: argparse.Namespace) -> int:
        raise KeyError("patient SMITH^JANE")

    monkeypatch.setattr(model_cmd, "ask_handler", crash)
    assert main(["ask", "x.png", "What is seen?"]) == 1
    err = capsys.readouterr().err
    assert err == "medvlm: internal error in ask: KeyError; rerun with -v for details\n"
    # The traceback is logged at INFO, which only -v shows (pytest's handler stands in for stderr).
    with caplog.at_level("INFO", logger="app.cli"):
        assert main(["-v", "ask", "x.png", "What is seen?"]) == 1
    assert [r.exc_info[0] for r in caplog.records if r.exc_info] == [KeyError]


def test_main_enforces_offline_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit):
        main(["ask", "--help"])
    main(["ask"])  # a usage error, but the environment is set before any handler runs
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
