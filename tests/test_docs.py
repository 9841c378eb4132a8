"""The docs are kept honest: every format, validation code and CLI command is documented."""

from __future__ import annotations

import re

import pytest

from curate.cli import main
from curation.formats import CODES, EXPORT_FORMATS, INPUT_FORMATS, OUTPUT_FORMATS
from tests.conftest import PROJECT_ROOT

FORMATS_DOC = (PROJECT_ROOT / "docs" / "formats.md").read_text()
README = (PROJECT_ROOT / "README.md").read_text()


@pytest.mark.parametrize("fmt", sorted(set(INPUT_FORMATS + OUTPUT_FORMATS + EXPORT_FORMATS)
                                          - {"auto"}))
def test_every_format_has_a_heading_in_the_spec(fmt):
    headings = [line for line in FORMATS_DOC.splitlines() if line.startswith("#")]
    assert any(fmt in h for h in headings), f"docs/formats.md has no heading naming {fmt}"


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_validation_code_is_documented(code):
    assert f"`{code}`" in FORMATS_DOC


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_cli_command_is_in_the_readme(command):
    assert re.search(rf"`curate {command}\b", README), f"README lacks `curate {command}`"


def test_readme_gives_the_two_commands_first():
    code = README.split("```bash", 1)[1].split("```", 1)[0]
    assert "scripts/dev.sh app" in code and "scripts/dev.sh test" in code
    assert (PROJECT_ROOT / ".ci" / "run").read_text().strip().endswith("bash scripts/dev.sh test")


QUALITY_DOC = (PROJECT_ROOT / "docs" / "quality.md").read_text()


def test_every_registered_check_is_documented():
    from curation.checks import REGISTRY

    missing = [name for name in REGISTRY if f"`{name}`" not in QUALITY_DOC]
    assert not missing, f"docs/quality.md lacks {missing}"
