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
