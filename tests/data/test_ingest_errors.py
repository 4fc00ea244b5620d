"""Every user mistake ends in exit code 2 and one line ``error: <file or option>: <what was expected>``,
with no traceback and no output folder left behind."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_helpers import fails

from socialfeat.cli import main

GOOD = "user_id,item_id,event,timestamp,value\nu1,a,view,2024-01-01,1\nu2,a,like,2024-01-02,1\nu2,b,view,2024-01-03,1\n"


def setup_images(d: Path, names: tuple[str, ...] = ("a.png", "b.png")) -> Path:
    (d / "img").mkdir(exist_ok=True)
    for n in names:
        (d / "img" / n).write_bytes(b"x")
    return d / "img"


def args_for(d: Path, log: str | None = GOOD, name: str = "log.csv", extra: tuple[str, ...] = ()) -> list[str]:
    path = d / name
    if log is not None:
        path.write_text(log)
    return [
        "ingest",
        "--interactions",
        str(path),
        "--out",
        str(d / "run" / "dataset"),
        "--set",
        "filter.min_user_interactions=1",
        "--set",
        "filter.min_item_interactions=1",
        *extra,
    ]


def items_args(d: Path, items: str, root: Path | None = None, extra: tuple[str, ...] = ()) -> list[str]:
    (d / "items.csv").write_text(items)
    return args_for(d, extra=("--items", str(d / "items.csv"), "--image-root", str(root or setup_images(d)), *extra))


def comments_args(d: Path, comments: str) -> list[str]:
    (d / "comments.csv").write_text(comments)
    return args_for(d, extra=("--comments", str(d / "comments.csv")))


JSONL = '{"user_id": "u1", "item_id": "a", "value": 1}\n{"user_id": "u2", "item_id": "b", "value": 2}\n'


def parquet_log(d: Path, values: list[float], times: list[float] | None = None) -> list[str]:
    columns = {"user_id": ["u1", "u2", "u2"], "item_id": ["a", "a", "b"], "value": values}
    pq.write_table(pa.table({**columns, **({"timestamp": times} if times else {})}), d / "log.parquet")
    return args_for(d, None, "log.parquet")


def latin1_log(d: Path, bad_line: int) -> list[str]:
    """A log whose line ``bad_line`` (the header is line 1) holds a Latin-1 é: not UTF-8."""
    rows = [f"u{n},a,view,2024-01-01,1" for n in range(2, bad_line)] + [
        "u0,caf\xe9,view,2024-01-01,1",
        "u1,b,view,2024-01-01,1",
    ]
    (d / "log.csv").write_bytes(("user_id,item_id,event,timestamp,value\n" + "\n".join(rows) + "\n").encode("latin-1"))
    return args_for(d, None)


def config_args(d: Path, text: str) -> list[str]:
    (d / "c.yaml").write_text(text)
    return args_for(d, extra=("--config", str(d / "c.yaml")))


CASES: dict[str, tuple[Callable[[Path], list[str]], str, str]] = {
    "missing file": (lambda d: args_for(d, None, "nope.csv"), "nope.csv", "file not found"),
    "unknown format": (lambda d: args_for(d, GOOD, "log.xlsx"), "log.xlsx", "unknown format (.xlsx)"),
    "empty file": (lambda d: args_for(d, ""), "log.csv", "file is empty"),
    "header only": (lambda d: args_for(d, "user_id,item_id\n"), "log.csv", "no rows after the header"),
    "required column missing": (
        lambda d: args_for(d, "userId,item_id\n1,2\n"),
        "log.csv",
        "no user id column 'user_id' (found: userId, item_id); map it with --user-col",
    ),
    "mapped column absent": (
        lambda d: args_for(d, extra=("--user-col", "uid")),
        "--user-col",
        "column 'uid' is not in log.csv (found: user_id, item_id, event, timestamp, value)",
    ),
    "null user id": (lambda d: args_for(d, GOOD + ",b,view,2024-01-04,1\n"), "log.csv", "row 4: empty user id"),
    "null item id": (lambda d: args_for(d, GOOD + "u3,,view,2024-01-04,1\n"), "log.csv", "row 4: empty item id"),
    "non-numeric value": (
        lambda d: args_for(d, GOOD.replace("b,view,2024-01-03,1", "b,view,2024-01-03,lots")),
        "log.csv",
        "row 3: 'lots' in column 'value' is not a number",
    ),
    "negative value": (
        lambda d: args_for(d, GOOD.replace("a,like,2024-01-02,1", "a,like,2024-01-02,-2")),
        "log.csv",
        "row 2: '-2' in column 'value' is negative",
    ),
    "bad timestamp": (
        lambda d: args_for(d, GOOD.replace("2024-01-02", "yesterday")),
        "log.csv",
        "row 2: 'yesterday' in column 'timestamp' is not a time",
    ),
    "ragged csv row": (
        lambda d: args_for(d, GOOD + "u3,b,view,2024-01-05,1,extra,more\n"),
        "log.csv",
        "line 5: expected 5 fields, as many as the header has",
    ),
    "conflicting duplicate items": (
        lambda d: items_args(d, "item_id,image\na,a.png\nb,b.png\na,other.png\n"),
        "items.csv",
        "item id 'a' appears more than once with different images (a.png, other.png)",
    ),
    "image root missing": (
        lambda d: items_args(d, "item_id,image\na,a.png\n", root=d / "nowhere"),
        "--image-root",
        "does not exist",
    ),
    "all images missing": (
        lambda d: items_args(d, "item_id,image\na,x.png\nb,y.png\n"),
        "--image-root",
        "none of the 2 images exist",
    ),
    "strict with a missing image": (
        lambda d: items_args(d, "item_id,image\na,a.png\nb,gone.png\n", extra=("--strict",)),
        "items.csv",
        "1 of 2 images are missing",
    ),
    "items without image column": (
        lambda d: items_args(d, "item_id,picture\na,a.png\n"),
        "items.csv",
        "no image path column 'image' (found: item_id, picture); map it with --image-col",
    ),
    "bad --set key": (
        lambda d: args_for(d, extra=("--set", "filter.min_users=3")),
        "--set filter.min_users=3",
        "unknown key 'filter.min_users'",
    ),
    "bad --set value": (
        lambda d: args_for(d, extra=("--set", "filter.drop_top_users=2")),
        "--set filter.drop_top_users=2",
        "less than 1",
    ),
    "bad event weight": (
        lambda d: args_for(d, extra=("--event-weight", "like=much")),
        "--event-weight like=much",
        "expected KIND=WEIGHT",
    ),
    "filtering leaves nothing": (
        lambda d: args_for(d, extra=("--set", "filter.min_user_interactions=50")),
        "filter.min_user_interactions=50",
        "no user keeps that many interactions",
    ),
    # numbers are finite: a NaN, an infinity or an overflow is refused with the file, row and column
    "nan value": (
        lambda d: args_for(d, GOOD.replace("b,view,2024-01-03,1", "b,view,2024-01-03,nan")),
        "log.csv",
        "row 3, column 'value': not a finite number (nan); expected a count or weight",
    ),
    "inf value": (
        lambda d: args_for(d, GOOD.replace("b,view,2024-01-03,1", "b,view,2024-01-03,inf")),
        "log.csv",
        "row 3, column 'value': not a finite number (inf)",
    ),
    "minus inf value": (
        lambda d: args_for(d, GOOD.replace("a,like,2024-01-02,1", "a,like,2024-01-02,-inf")),
        "log.csv",
        "row 2, column 'value': not a finite number (-inf)",
    ),
    "overflowing value": (
        lambda d: args_for(d, GOOD.replace("b,view,2024-01-03,1", "b,view,2024-01-03,1e400")),
        "log.csv",
        "row 3, column 'value': not a finite number (1e400)",
    ),
    "value beyond float32": (
        lambda d: args_for(d, GOOD.replace("b,view,2024-01-03,1", "b,view,2024-01-03,1e39")),
        "log.csv",
        "row 3, column 'value': too large (1e39)",
    ),
    "pair whose weights sum beyond float32": (
        lambda d: args_for(d, GOOD + "u2,b,view,2024-01-04,3e38\nu2,b,view,2024-01-05,3e38\n"),
        "log.csv",
        "the rows of user 'u2' with item 'b' sum to more than a dataset holds",
    ),
    "nan value in parquet": (
        lambda d: parquet_log(d, [1.0, float("nan"), 1.0]),
        "log.parquet",
        "row 2, column 'value': not a finite number (nan)",
    ),
    "inf value in jsonl": (
        lambda d: args_for(d, JSONL.replace('"value": 2', '"value": 1e400'), "log.jsonl"),
        "log.jsonl",
        "row 2, column 'value': not a finite number (inf)",
    ),
    "nan timestamp in parquet": (
        lambda d: parquet_log(d, [1.0, 1.0, 1.0], times=[1.7e9, float("nan"), 1.7e9]),
        "log.parquet",
        "row 2: nan in column 'timestamp' is not a time",
    ),
    "epoch beyond any timestamp": (
        lambda d: args_for(d, "user_id,item_id,timestamp\nu1,a,1700000000\nu2,a,1e15\n"),
        "log.csv",
        "row 2: '1e15' in column 'timestamp' is not a time",
    ),
    "nan event weight": (
        lambda d: args_for(d, extra=("--event-weight", "like=nan")),
        "--event-weight like=nan",
        "'nan' is not a finite number",
    ),
    "inf event weight": (
        lambda d: args_for(d, extra=("--event-weight", "like=inf")),
        "--event-weight like=inf",
        "'inf' is not a finite number",
    ),
    "event weight beyond float32": (
        lambda d: args_for(d, extra=("--event-weight", "like=1e39")),
        "--event-weight like=1e39",
        "ingest.event_weights.like: 1e+39 is beyond 3.4e+38",
    ),
    "nan alpha": (
        lambda d: args_for(d, extra=("--set", "factorize.alpha=nan")),
        "--set factorize.alpha=nan",
        "factorize.alpha: input should be a finite number",
    ),
    "nan in a config file": (
        lambda d: config_args(d, "ingest:\n  event_weights:\n    like: .nan\n"),
        "c.yaml",
        "ingest.event_weights.like: input should be a finite number",
    ),
    "duplicate config keys": (
        lambda d: config_args(
            d, "filter:\n  min_user_interactions: 1\n  min_item_interactions: 1\n  min_user_interactions: 2\n"
        ),
        "c.yaml",
        "line 4: key 'filter.min_user_interactions' appears twice in one mapping (first on line 2)",
    ),
    # weak messages made good
    "latin-1 byte on line 10": (
        lambda d: latin1_log(d, bad_line=10),
        "log.csv",
        "line 10, byte 7 (0xe9): not UTF-8 text; expected UTF-8",
    ),
    "latin-1 byte far down": (
        lambda d: latin1_log(d, bad_line=3000),
        "log.csv",
        "line 3000: not UTF-8 text; expected UTF-8",
    ),
    "latin-1 header": (
        lambda d: (
            (d / "log.csv").write_bytes("user_id,item_id,caf\xe9\nu1,a,1\n".encode("latin-1")) and args_for(d, None)
        ),
        "log.csv",
        "line 1, byte 20 (0xe9): not UTF-8 text",
    ),
    "latin-1 byte in jsonl": (
        lambda d: (
            (d / "log.jsonl").write_bytes(JSONL.replace('"b"', '"caf\xe9"').encode("latin-1"))
            and args_for(d, None, "log.jsonl")
        ),
        "log.jsonl",
        "line 2, byte 34 (0xe9): not UTF-8 text",
    ),
    "blank image cell under --strict": (
        lambda d: items_args(d, "item_id,image\na,a.png\nb,\n", extra=("--strict",)),
        "items.csv",
        "1 of 2 items have an empty image cell in column 'image' (e.g. row 2: item 'b'); --strict forbids",
    ),
    "every image cell blank": (
        lambda d: items_args(d, "item_id,image\na,\nb,  \n"),
        "items.csv",
        "2 of 2 items have an empty image cell in column 'image' (e.g. row 1: item 'a'); expected image paths",
    ),
    "image root is a file": (
        lambda d: items_args(d, "item_id,image\na,a.png\n", root=(d / "root.txt", (d / "root.txt").write_text("x"))[0]),
        "--image-root",
        "root.txt' is a file, expected a folder",
    ),
    # found by the fuzz run
    "image path too long for the file system": (
        lambda d: items_args(d, f"item_id,image\na,{'x' * 300}.png\nb,{'y' * 300}.png\n"),
        "--image-root",
        "none of the 2 images exist",
    ),
    "input path too long for the file system": (
        lambda d: args_for(d, None, "y" * 300 + ".csv"),
        "yyyy…",
        "cannot look up this path: file name too long",
    ),
    "config path too long for the file system": (
        lambda d: args_for(d, extra=("--config", str(d / ("z" * 300 + ".yaml")))),
        "zzzz…",
        "cannot look up this config file: file name too long",
    ),
    "column mapped by --set": (
        lambda d: args_for(d, extra=("--set", "ingest.columns.user=1KB")),
        "--set ingest.columns.user=1KB",
        "column '1KB' is not in log.csv",
    ),
    "column mapped in a config file": (
        lambda d: config_args(d, "ingest:\n  columns:\n    user: uid\n"),
        "c.yaml: ingest.columns.user",
        "column 'uid' is not in log.csv",
    ),
    "image root given in a config file is a file": (
        lambda d: (d / "root.txt").write_text("x") and config_args(d, f"ingest:\n  image_root: {d / 'root.txt'}\n"),
        "c.yaml: ingest.image_root",
        "is a file, expected a folder",
    ),
    "bad comment time": (
        lambda d: comments_args(d, "item_id,user_id,text,timestamp\na,u1,nice,1700000000\nb,u2,ok,soon\n"),
        "comments.csv",
        "row 2: 'soon' in column 'timestamp' is not a time like the column's other values",
    ),
    "corrupt gzip": (
        lambda d: (d / "log.csv.gz").write_bytes(gzip.compress(GOOD.encode())[:20]) and args_for(d, None, "log.csv.gz"),
        "log.csv.gz",
        "cannot read",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_user_mistake_is_one_clear_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_args, where, fragment = CASES[case]
    argv = make_args(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert exc.value.code == 2, captured.err
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert lines[0].startswith("error: ") and where in lines[0].split(": ")[1] + lines[0], lines[0]
    assert fragment in lines[0], lines[0]
    assert not (tmp_path / "run").exists(), "a failed ingest left its output folder behind"


def test_failed_ingest_keeps_previous_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(args_for(tmp_path))
    assert exc.value.code in (0, None)
    before = (tmp_path / "run" / "dataset" / "interactions.parquet").read_bytes()
    with pytest.raises(SystemExit) as exc:
        main(args_for(tmp_path, GOOD + "u9,,view,2024-01-04,1\n"))
    assert exc.value.code == 2
    assert (tmp_path / "run" / "dataset" / "interactions.parquet").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["dataset"]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ('u2,"' + "x" * 500 + ",view,2024-01-03,1", "line 3: Value with unterminated quote found."),
        (
            "u2," + "y" * 500 + ",view,2024-01-03,1,extra",
            "line 3: expected 5 fields, as many as the header has, found 6",
        ),
    ],
)
def test_a_long_line_is_shortened_never_its_reason(
    row: str, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = fails(args_for(tmp_path, GOOD.splitlines()[0] + "\nu1,a,view,2024-01-01,1\n" + row + "\n"), capsys)
    assert reason in line, line
    assert line.index(reason) < line.index(row[:10]), "the reason must come before the echoed row"
    assert len(line) < 250 and "…" in line, line
    assert not (tmp_path / "run").exists()


def test_a_blank_image_cell_is_dropped_with_its_item_and_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(items_args(tmp_path, "item_id,image\na,a.png\nb,\n"))
    assert exc.value.code in (0, None)
    err = " ".join(capsys.readouterr().err.split())  # the warning may be wrapped
    assert "1 of 2 items have an empty image cell in column 'image' (e.g. row 2: item 'b')" in err, err
    stats = json.loads((tmp_path / "run" / "dataset" / "stats.json").read_text())
    assert stats["missing_images"]["empty_cells"] == 1
    assert stats["missing_images"]["examples"] == ["row 2: item 'b' (empty cell)"]


def test_a_non_finite_value_leaves_the_previous_dataset_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(args_for(tmp_path))
    assert exc.value.code in (0, None)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run" / "dataset").iterdir()}
    line = fails(args_for(tmp_path, GOOD + "u3,b,view,2024-01-04,nan\n"), capsys)
    assert "row 4, column 'value': not a finite number (nan)" in line
    assert {p.name: p.read_bytes() for p in (tmp_path / "run" / "dataset").iterdir()} == before
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["dataset"]


def test_an_image_path_too_long_for_the_file_system_is_a_missing_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The OS refuses to look such a name up (ENAMETOOLONG): the item is dropped like one whose image is missing,
    and the path is clipped wherever it is echoed."""
    long = "x" * 300 + ".png"
    with pytest.raises(SystemExit) as exc:
        main(items_args(tmp_path, f"item_id,image\na,a.png\nb,{long}\n"))
    assert exc.value.code in (0, None), capsys.readouterr().err
    assert long not in capsys.readouterr().err
    stats = json.loads((tmp_path / "run" / "dataset" / "stats.json").read_text())
    assert stats["dropped"]["items_missing_image"] == 1
    [example] = stats["missing_images"]["examples"]
    assert example.startswith("xxx") and example.endswith("…") and len(example) < 250
    line = fails(items_args(tmp_path, f"item_id,image\na,a.png\nb,{long}\n", extra=("--strict",)), capsys)
    assert "1 of 2 images are missing" in line and "x" * 200 not in line and "x…" in line, line


def test_comments_take_epoch_seconds_as_interactions_do(tmp_path: Path) -> None:
    comments_args(tmp_path, "item_id,user_id,text,timestamp\na,u1,nice,1700000000\nb,u2,ok,1700000100\n")
    with pytest.raises(SystemExit) as exc:
        main(comments_args(tmp_path, "item_id,user_id,text,timestamp\na,u1,nice,1700000000\nb,u2,ok,1700000100\n"))
    assert exc.value.code in (0, None)
    times = pq.read_table(tmp_path / "run" / "dataset" / "comments.parquet").column("timestamp").to_pylist()
    assert [t.isoformat() for t in times] == ["2023-11-14T22:13:20", "2023-11-14T22:15:00"]
