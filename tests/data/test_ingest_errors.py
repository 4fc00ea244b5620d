"""Every user mistake ends in exit code 2 and one line ``error: <file or option>: <what was expected>``,
with no traceback and no output folder left behind."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import pytest

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
