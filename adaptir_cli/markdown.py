"""Markdown tables, the one way the docs' generated tables are written (experiment reports, the
benchmark tables, the scripts behind docs/ pages).

Terminal tables are rich's (bench/render.py); these are for files, where a table must not wrap
or cut anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def table(header: Sequence[object], rows: Iterable[Sequence[object]], align: str) -> list[str]:
    """The lines of a markdown table. `align` has one letter per column: "l" left, "r" right.

    A "|" inside a cell is escaped, so a label cannot break the table.
    """
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align needs one of 'l'/'r' per column ({len(header)}), got {align!r}")
    rule = "|" + "".join("---:|" if a == "r" else "---|" for a in align)
    lines = [_row(header), rule]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a row has {len(row)} cells for {len(header)} columns: {list(row)}")
        lines.append(_row(row))
    return lines


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"
