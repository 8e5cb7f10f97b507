"""How qcamo shows things to a person: image sizes, names that fit, and tables that fit a terminal.

One notation everywhere: sizes are written width first, ``"384 x 288 pixels (W x H)"``
(:func:`format_size`), in messages, tables and plots alike. Printed tables fit
:data:`TABLE_WIDTH` columns (:func:`table`), shortening the one column that holds file names with a
middle ellipsis (:func:`ellipsize`), so both ends of a name stay readable; the full names and every
number are in the CSV / JSON files the commands write next to the table.

Pure string functions, no imports beyond the standard library.
"""

from __future__ import annotations

from typing import Sequence

#: Columns a printed table may use (a terminal of 100 columns; wider detail goes to CSV / JSON).
TABLE_WIDTH = 100
ELLIPSIS = "…"


def format_size(width: int, height: int) -> str:
    """An image size as every qcamo message and table writes it: ``"384 x 288 pixels (W x H)"``, width first."""
    return f"{int(width)} x {int(height)} pixels (W x H)"


def ellipsize(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` characters by replacing its middle with ``…``.

    The start and the end (a file's folder and its extension) are kept, the end getting the extra
    character: ``ellipsize("hubble_deep_field.png", 12) == "hubbl…ld.png"``.

    Raises:
      ValueError: ``width < 1``.
    """
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    if len(text) <= width:
        return text
    if width == 1:
        return ELLIPSIS
    keep = width - 1
    head = keep // 2
    return text[:head] + ELLIPSIS + text[len(text) - (keep - head):]


def table(header: Sequence[str], rows: Sequence[Sequence[str]], *, width: int = TABLE_WIDTH, shrink: int = 0,
          gap: int = 2) -> str:
    """Lines of a text table: column ``0`` left-aligned, the others right-aligned, ``gap`` spaces apart.

    If the table would be wider than ``width`` characters, the cells of column ``shrink`` (the file
    names) are shortened with :func:`ellipsize` until it fits, down to 8 characters.

    Args:
      header: column titles.
      rows: cells (strings), each row as long as ``header``.
      width: maximum line length in characters.
      shrink: index of the column that may be shortened.
      gap: spaces between columns.

    Raises:
      ValueError: a row's length differs from the header's.
    """
    lines = [list(header)] + [list(r) for r in rows]
    for r in lines:
        if len(r) != len(header):
            raise ValueError(f"row has {len(r)} cells, header {len(header)}: {r}")
    widths = [max(len(r[c]) for r in lines) for c in range(len(header))]
    excess = sum(widths) + gap * (len(widths) - 1) - width
    if excess > 0:
        widths[shrink] = max(8, len(header[shrink]), widths[shrink] - excess)
        for r in lines:
            r[shrink] = ellipsize(r[shrink], widths[shrink])
    sep = " " * gap
    return "\n".join(
        sep.join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(r, widths))).rstrip()
        for r in lines)
