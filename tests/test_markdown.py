"""The markdown table renderer behind every generated docs table."""

from __future__ import annotations

import pytest

from adaptir_cli import markdown


def test_table_aligns_columns_and_escapes_pipes() -> None:
    lines = markdown.table(["set", "dB"], [["Set5", 32.64], ["a|b", "-"]], "lr")
    assert lines == ["| set | dB |", "|---|---:|", "| Set5 | 32.64 |", "| a\\|b | - |"]


@pytest.mark.parametrize(("header", "rows", "align"), [
    (["a", "b"], [], "l"),  # one alignment letter short
    (["a"], [], "c"),  # not l or r
    (["a", "b"], [["only one"]], "ll"),  # a row of the wrong width
])
def test_table_refuses_shapes_that_do_not_fit(header: list[str], rows: list[list[str]], align: str) -> None:
    with pytest.raises(ValueError):
        markdown.table(header, rows, align)
