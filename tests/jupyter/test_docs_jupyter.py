"""docs/jupyter.md covers every setting and every subcommand the extension has."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT
from tms_console.jupyter.magics import CELL_SUBCOMMANDS, SUBCOMMANDS, TmsMagics

DOC = ROOT / "docs" / "jupyter.md"


@pytest.mark.parametrize("name", sorted(TmsMagics.class_traits(config=True)))
def test_every_setting_is_documented(name: str) -> None:
    assert f"`TmsMagics.{name}`" in DOC.read_text(), f"TmsMagics.{name} is not in {DOC}"


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_is_documented(name: str) -> None:
    assert f"`%tms {name}" in DOC.read_text(), f"%tms {name} is not in {DOC}"


@pytest.mark.parametrize("name", CELL_SUBCOMMANDS)
def test_every_cell_subcommand_is_documented(name: str) -> None:
    assert f"`%%tms {name}" in DOC.read_text(), f"%%tms {name} is not in {DOC}"
