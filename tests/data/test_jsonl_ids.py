"""JSON Lines can hold anything in an id field: a list or an object is named with its row and field, and a
column that mixes strings and numbers is read as their text."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from socialfeat.cli import main

FILTER = ["--set", "filter.min_user_interactions=1", "--set", "filter.min_item_interactions=1"]


def ingest(tmp_path: Path, lines: list[str]) -> list[str]:
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(lines) + "\n")
    return ["ingest", "--interactions", str(log), "--out", str(tmp_path / "ds"), *FILTER]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            ['{"user_id": "u1", "item_id": ["a", "b"]}', '{"user_id": "u2", "item_id": "b"}'],
            "row 1: field 'item_id' is a list",
        ),
        (
            ['{"user_id": "u2", "item_id": "b"}', '{"user_id": "u1", "item_id": ["a"]}'],
            "row 2: field 'item_id' is a list",
        ),
        (['{"user_id": {"x": 1}, "item_id": "a"}'], "row 1: field 'user_id' is an object"),
        (
            ['{"user_id": 1, "item_id": 5}', '{"user_id": 2, "item_id": {"k": 1}}'],
            "row 2: field 'item_id' is an object",
        ),
    ],
)
def test_a_list_or_object_id_is_named_with_row_and_field(
    lines: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(ingest(tmp_path, lines))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "log.jsonl" in err and expected in err, err
    assert err.endswith("expected a string or integer id") and len(err.splitlines()) == 1
    assert not (tmp_path / "ds").exists()


def test_mixed_string_and_number_ids_are_read_as_their_text(tmp_path: Path) -> None:
    lines = [
        '{"user_id": "u1", "item_id": "b"}',
        '{"user_id": "u1", "item_id": 5}',
        '{"user_id": "u2", "item_id": "b"}',
    ]
    with pytest.raises(SystemExit) as exc:
        main(ingest(tmp_path, lines))
    assert exc.value.code in (0, None)
    items = pq.read_table(tmp_path / "ds" / "items.parquet").column("item_id").to_pylist()
    assert sorted(items) == ["5", "b"]  # not '"b"' with its JSON quotes
