"""CSV rows of the history export: values as spreadsheets read them, formulas defused."""

from __future__ import annotations

import csv
import io

from gateway.http_history import csv_rows


def test_csv_rows_keep_types_and_defuse_formulas():
    """Numbers stay numbers, booleans read true/false, and a device string that a spreadsheet
    would run as a formula starts with an apostrophe; commas and quotes are quoted."""
    rows = csv_rows(
        [(1.5, 21.25), (2.0, 7), (3.0, True), (4.0, "=HYPERLINK(1)"), (5.0, 'a,"b"'), (6.0, "-1")]
    )
    parsed = list(csv.reader(io.StringIO(rows.decode())))
    assert parsed == [
        ["1.5", "21.25"],
        ["2.0", "7"],
        ["3.0", "true"],
        ["4.0", "'=HYPERLINK(1)"],
        ["5.0", 'a,"b"'],
        ["6.0", "'-1"],
    ]
