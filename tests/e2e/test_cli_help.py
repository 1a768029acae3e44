"""Every command's ``--help`` renders (exit 0) and shows flags as flags: no ``<bool>`` beside
an option that takes no value."""

from __future__ import annotations

import pytest
import typer

from stockctl.cli import app
from tests.e2e.test_cli_api_url import commands
from tests.e2e.test_remote_cli import in_process

EVERY = ["", *commands(typer.main.get_command(app))]


@pytest.mark.parametrize("command", EVERY)
def test_help_shows_no_bool_metavar(command: str) -> None:
    run = in_process({"COLUMNS": "200"}, (*command.split(), "--help"))
    assert run.code == 0, run.err
    assert "Usage" in run.out
    assert "<bool>" not in run.out, run.out
