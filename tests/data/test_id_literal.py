"""Ids exactly as given, from every format (issue 31, case 2): an id is a string or an integer, kept as its literal
text; floats, booleans and binary ids are refused with the file, the row and the column. JSON Lines rows are the
file's lines, blank lines counted."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_helpers import fails, ok

from socialfeat.data.image_tables import read_table

FILTER = ["--set", "filter.min_user_interactions=1", "--set", "filter.min_item_interactions=1"]
BIG = "123456789012345678901234567890"  # 30 digits: no integer type holds it
ABOVE_INT64 = "12345678901234567890"  # fits uint64, not int64


def _write(path: Path, rows: list[dict[str, object]], raw: dict[int, str] | None = None) -> Path:
    """``rows`` in the format of ``path``'s extension; ``raw`` gives JSON Lines text for some item ids as written."""
    if path.suffix == ".jsonl":
        lines = []
        for k, r in enumerate(rows):
            text = json.dumps(r)
            if raw and k in raw:
                text = text.replace(json.dumps(r["item_id"]), raw[k])
            lines.append(text)
        path.write_text("\n".join(lines) + "\n")
    elif path.suffix in (".csv", ".tsv"):
        sep = "," if path.suffix == ".csv" else "\t"
        head = list(rows[0])
        path.write_text("\n".join([sep.join(head), *(sep.join(str(r[h]) for h in head) for r in rows)]) + "\n")
    else:
        pq.write_table(pa.table({h: [r[h] for r in rows] for h in rows[0]}), path)
    return path


def _ingest(tmp_path: Path, log: Path, *extra: str) -> list[str]:
    return ["ingest", "--interactions", str(log), "--out", str(tmp_path / "ds"), *FILTER, *extra]


def _item_ids(tmp_path: Path) -> tuple[str, list[object]]:
    table = pq.read_table(tmp_path / "ds" / "items.parquet")
    return str(table.schema.field("item_id").type), sorted(table.column("item_id").to_pylist(), key=str)


# ------------------------------------------------------------------------------------- JSON Lines, as in the issue


@pytest.mark.parametrize(
    ("written", "kind", "expected"),
    [
        ("2", "int64", [2, 5]),  # was stored as '2.0'
        (BIG, "string", [BIG, "5"]),  # was '1.2345678901234568e+29'
        (ABOVE_INT64, "string", [ABOVE_INT64, "5"]),  # was a DuckDB ConversionException traceback
        ("9223372036854775807", "int64", [5, 9223372036854775807]),  # int64's largest: still an integer
        ('"007"', "string", ["007", "5"]),
        ('"b"', "string", ["5", "b"]),  # a string beside a number: their text, no JSON quotes
    ],
)
def test_a_json_id_keeps_its_literal_text(tmp_path: Path, written: str, kind: str, expected: list[object]) -> None:
    rows = [{"user_id": "u1", "item_id": 0}, {"user_id": "u2", "item_id": 5}]
    ok(_ingest(tmp_path, _write(tmp_path / "log.jsonl", rows, raw={0: written})))
    assert _item_ids(tmp_path) == (kind, expected)
    stats = json.loads((tmp_path / "ds" / "stats.json").read_text())
    assert stats["id_types"]["item"] == ("integer" if kind == "int64" else "string")


@pytest.mark.parametrize(
    ("written", "kind"),
    [
        ("1.5", "a floating-point number (1.5)"),
        ("2.0", "a floating-point number (2.0)"),
        ("1e3", "a floating-point number (1e3)"),
        ("1E400", "a floating-point number (1E400)"),
        ("true", "a boolean (true)"),
        ("false", "a boolean (false)"),
    ],
)
def test_a_json_float_or_boolean_id_is_refused_with_its_line_and_field(
    tmp_path: Path, written: str, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [{"user_id": "u1", "item_id": 1}, {"user_id": "u1", "item_id": 2}, {"user_id": "u2", "item_id": 0}]
    log = _write(tmp_path / "log.jsonl", rows, raw={2: written})
    line = fails(_ingest(tmp_path, log), capsys)
    assert line == f"error: {log}: row 3: field 'item_id' is {kind}; expected a string or integer id"
    assert not (tmp_path / "ds").exists()


def test_a_json_user_id_follows_the_same_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text('{"user_id": 7, "item_id": "a"}\n{"user_id": 7.5, "item_id": "b"}\n')
    assert "row 2: field 'user_id' is a floating-point number (7.5)" in fails(_ingest(tmp_path, log), capsys)
    log.write_text(f'{{"user_id": {BIG}, "item_id": "a"}}\n{{"user_id": 7, "item_id": "b"}}\n')
    ok(_ingest(tmp_path, log))
    users = pq.read_table(tmp_path / "ds" / "users.parquet").column("user_id").to_pylist()
    assert sorted(users) == sorted([BIG, "7"])


def test_json_items_and_comments_tables_keep_their_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "b.png").write_bytes(b"x")
    log = tmp_path / "log.jsonl"
    log.write_text(f'{{"user_id": "u1", "item_id": {BIG}}}\n{{"user_id": "u2", "item_id": 2}}\n')
    items = tmp_path / "items.jsonl"
    items.write_text(f'{{"item_id": {BIG}, "image": "a.png"}}\n{{"item_id": 2, "image": "b.png"}}\n')
    comments = tmp_path / "comments.jsonl"
    comments.write_text(f'{{"item_id": {BIG}, "user_id": "u1", "text": "nice"}}\n')
    ok(_ingest(tmp_path, log, "--items", str(items), "--comments", str(comments)))
    table = pq.read_table(tmp_path / "ds" / "items.parquet")
    assert dict(zip(table.column("item_id").to_pylist(), table.column("image").to_pylist(), strict=True)) == {
        BIG: "a.png",
        "2": "b.png",
    }
    assert pq.read_table(tmp_path / "ds" / "comments.parquet").column("item_id").to_pylist() == [BIG]
    items.write_text('{"item_id": 2, "image": "b.png"}\n\n{"item_id": 2.5, "image": "a.png"}\n')
    line = fails(_ingest(tmp_path, log, "--items", str(items)), capsys)
    assert (
        line
        == f"error: {items}: row 3: field 'item_id' is a floating-point number (2.5); expected a string or integer id"
    )
    items.write_text(f'{{"item_id": {BIG}, "image": "a.png"}}\n{{"item_id": 2, "image": "b.png"}}\n')
    comments.write_text('{"item_id": true, "user_id": "u1", "text": "nice"}\n')
    line = fails(_ingest(tmp_path, log, "--items", str(items), "--comments", str(comments)), capsys)
    assert "row 1: field 'item_id' is a boolean (true)" in line


# -------------------------------------------------------------------------------- the same ids in CSV and TSV


@pytest.mark.parametrize("ext", [".csv", ".tsv"])
@pytest.mark.parametrize(
    ("given", "kind", "expected"),
    [
        ("2", "int64", [2, 5]),
        (BIG, "string", [BIG, "5"]),
        (ABOVE_INT64, "string", [ABOVE_INT64, "5"]),
        ("9223372036854775807", "int64", [5, 9223372036854775807]),
        ("1.5", "string", ["1.5", "5"]),  # a cell is text: '1.5' is the string id 1.5
        ("true", "string", ["5", "true"]),
        ("007", "string", ["007", "5"]),
    ],
)
def test_text_ids_keep_their_literal_text(tmp_path: Path, ext: str, given: str, kind: str, expected: list) -> None:
    rows = [{"user_id": "u1", "item_id": given}, {"user_id": "u2", "item_id": "5"}]
    ok(_ingest(tmp_path, _write(tmp_path / f"log{ext}", rows)))
    assert _item_ids(tmp_path) == (kind, expected)


# ------------------------------------------------------------------------------------------------------ Parquet


@pytest.mark.parametrize(
    ("column", "kind", "expected"),
    [
        (pa.array([2, 9223372036854775807], pa.int64()), "int64", [2, 9223372036854775807]),
        (pa.array([2, 18446744073709551615], pa.uint64()), "string", ["18446744073709551615", "2"]),
        (pa.array([2, 5], pa.uint64()), "int64", [2, 5]),
        (pa.array([Decimal(2), Decimal(BIG)], pa.decimal128(38, 0)), "string", [BIG, "2"]),
        (pa.array(["2", BIG]), "string", [BIG, "2"]),  # strings stay strings, even "2"
    ],
)
def test_parquet_integer_ids_round_trip_as_their_decimal_text(
    tmp_path: Path, column: pa.Array, kind: str, expected: list[object]
) -> None:
    log = tmp_path / "log.parquet"
    pq.write_table(pa.table({"user_id": ["u1", "u2"], "item_id": column}), log)
    ok(_ingest(tmp_path, log))
    assert _item_ids(tmp_path) == (kind, expected)


@pytest.mark.parametrize(
    ("column", "kind"),
    [
        (pa.array([1.0, 2.0, 1.5], pa.float64()), "a floating-point number (1.0)"),
        (pa.array([1.0, 2.0, 1.5], pa.float32()), "a floating-point number (1.0)"),
        (pa.array([Decimal("1.50"), Decimal(2), Decimal(3)], pa.decimal128(10, 2)), "a decimal fraction (1.50)"),
        (pa.array([True, False, True]), "a boolean (true)"),
        (pa.array([b"\x01a", b"b", b"c"]), "binary data (0x0161)"),
        (pa.array([None, 2.0, 3.0]), "a floating-point number (2.0)"),  # the first row that holds one
    ],
)
def test_parquet_float_boolean_and_binary_ids_are_refused_with_row_and_column(
    tmp_path: Path, column: pa.Array, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "log.parquet"
    pq.write_table(pa.table({"user_id": ["u1", "u1", "u2"], "item_id": column}), log)
    row = 2 if column.null_count else 1
    line = fails(_ingest(tmp_path, log), capsys)
    assert line == f"error: {log}: row {row}: column 'item_id' is {kind}; expected a string or integer id"


# ------------------------------------------------------------------------------ JSON Lines: the rows are lines


def test_a_bad_value_on_line_3_says_row_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text(
        '{"user_id": "u1", "item_id": "a", "value": 1}\n'
        '{"user_id": "u1", "item_id": "b", "value": 2}\n'
        '{"user_id": "u2", "item_id": "a", "value": -1}\n'
    )
    assert "log.jsonl: row 3: -1 in column 'value' is negative" in fails(_ingest(tmp_path, log), capsys)
    log.write_text('{"user_id": "u1", "item_id": "a"}\n\n   \n{"user_id": "u2", "item_id": null}\n')
    assert fails(_ingest(tmp_path, log), capsys) == f"error: {log}: row 4: empty item id in column 'item_id'"


@pytest.mark.parametrize(
    ("third", "expected"),
    [
        ('{"user_id": "u2", "item_id": "a" "value": 1}', "line 3, character 34: not JSON (expecting ',' delimiter)"),
        ('{"user_id": "u2", "item_id": "a"', "line 3, character 33: not JSON (expecting ',' delimiter)"),
        ('{"user_id": "u2"}{"item_id": "a"}', "line 3, character 18: not JSON (extra data)"),
        ("[1, 2]", "line 3: a list, not an object; expected one JSON object per line"),
    ],
)
def test_malformed_json_names_its_own_line(
    tmp_path: Path, third: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """DuckDB's reader names the line after the bad one (line 4 here)."""
    log = tmp_path / "log.jsonl"
    log.write_text('{"user_id": "u1", "item_id": "a"}\n{"user_id": "u1", "item_id": "b"}\n' + third + "\n")
    line = fails(_ingest(tmp_path, log), capsys)
    assert line.startswith(f"error: {log}: {expected}"), line


# ------------------------------------------------------------------------ tables of images (embed --images)


def test_an_image_table_keeps_json_ids_as_written(tmp_path: Path) -> None:
    table = tmp_path / "new.jsonl"
    table.write_text(f'{{"image": "a.png", "item_id": {BIG}, "n": 2, "f": 1e3, "ok": true}}\n\n{{"image": "b.png"}}\n')
    names, columns = read_table(table)
    assert names == ["image", "item_id", "n", "f", "ok"]
    assert columns["item_id"] == [BIG, None] and columns["n"] == ["2", None] and columns["f"] == ["1e3", None]
    assert columns["ok"] == ["true", None]


# ------------------------------------------------------------------------------------ a --cold-items split file


def test_a_json_split_file_names_items_by_their_literal_ids(tmp_path: Path) -> None:
    from socialfeat.config import SplitConfig
    from socialfeat.data.splits import TEST, TRAIN, VALID, item_splits
    from socialfeat.errors import UserError

    ids: list[object] = [2, BIG, "b"]
    split = tmp_path / "split.jsonl"
    split.write_text(f'{{"item_id": 2, "split": "test"}}\n\n{{"item_id": {BIG}, "split": "valid"}}\n')
    codes, _ = item_splits(ids, SplitConfig(cold_items=split), seed=0)
    assert codes.tolist() == [TEST, VALID, TRAIN]  # was: BIG read as 1.2345678901234568e+29, matching nothing
    split.write_text('{"item_id": 2, "split": "test"}\n\n{"item_id": 2.0, "split": "valid"}\n')
    with pytest.raises(UserError, match="row 3: field 'item_id' is a floating-point number"):
        item_splits(ids, SplitConfig(cold_items=split), seed=0)
    split.write_text('{"item_id": 2, "split": "test"}\n\n{"item_id": "b", "split": "cold"}\n')
    with pytest.raises(UserError, match="row 3: split 'cold'"):
        item_splits(ids, SplitConfig(cold_items=split), seed=0)
