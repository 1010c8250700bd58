"""The README is the front door: what it says about settings and commands must be true."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from procella.cli import main
from procella.settings import SETTINGS, markdown_table

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_readme_settings_table_is_the_generated_one() -> None:
    start = README.index("<!-- settings table")
    start = README.index("\n", start) + 1
    end = README.index("<!-- end of settings table -->")
    assert README[start:end].strip() == markdown_table()


def test_every_setting_is_in_the_readme() -> None:
    for setting in SETTINGS:
        assert f"`{setting.env}`" in README, setting.env


def test_every_command_the_readme_names_exists() -> None:
    runner = CliRunner()
    for command in sorted(set(re.findall(r"`procella ([a-z]+)", README))):
        result = runner.invoke(main, [command, "--help"])
        assert result.exit_code == 0, (command, result.output)
