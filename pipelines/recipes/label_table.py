"""The loop every label-file recipe shares: read the rows, require the columns, turn each row into a segment, and
let a bad row fail alone, named by as much of its id as was read before it failed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..inputs import (
    ParsedInputs,
    RowError,
    SegmentSpec,
    Where,
    check_row,
    need_columns,
    read_rows,
    row_failure,
    unique_specs,
)


@dataclass
class RowId:
    """The segment id a row reader has read so far (None until then): what its failure row is named by."""

    segment: str | None = None


RowReader = Callable[[dict[str, Any], RowId], SegmentSpec]


def read_label_table(path: Where, columns: Sequence[str], source: str, read_row: RowReader,
                     first_id: Callable[[dict[str, Any]], str | None] | None = None) -> ParsedInputs:
    """`read_row(row, id)` -> one segment, raising RowError for a bad row (it sets `id.segment` once it knows the
    id); `first_id(row)`: an id to name the row by before anything is checked. Rows are numbered as in the file
    (header = row 1); repeated segment ids fail every copy."""
    rows = read_rows(path)
    need_columns(path, rows, tuple(columns))
    out = ParsedInputs(source=source, path=str(path))
    for n, r in enumerate(rows, start=2):
        rid = RowId(first_id(r) if first_id is not None else None)
        try:
            check_row(r)
            out.specs.append(read_row(r, rid))
        except RowError as e:
            out.failures.append(row_failure(path, n, rid.segment, e))
    return unique_specs(out)
