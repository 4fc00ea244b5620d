"""Ids in every input format, as real exports spell them — JSON numbers (``2``, ``1.5``, ``1e3``, 30 digits, above
int64), booleans, null, nested objects and arrays, Parquet binary — through ``ingest``, judged by the id rule: an id
is either kept as its literal text in the dataset's ``users.parquet``/``items.parquet``, or refused with one
``error:`` line naming the file and the column. An id accepted with other text (``2`` stored as ``2.0``) fails.

Shared by ``tests/test_fuzz.py`` (a sample) and ``bench/fuzz.py`` (every case).
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from fuzzing import Case, Outcome, run_cli

FORMATS = ("csv", "tsv", "parquet", "jsonl")
N_USERS, N_ITEMS = 8, 6
KEEP_ALL = ["filter.min_user_interactions=1", "filter.min_item_interactions=1", "filter.drop_top_users=0",
            "filter.drop_top_items=0"]  # fmt: skip


@dataclass(frozen=True)
class Kind:
    """How one kind of id is spelled: the JSON token of the k-th id, and the Parquet value of a typed column."""

    name: str
    tokens: tuple[str, ...]  # JSON tokens, one per id (fewer than the ids: only the first ids get them)
    typed: pa.DataType | None = None  # Parquet column type when every id of the column is of this kind


def _ints(start: int, n: int) -> tuple[str, ...]:
    return tuple(str(start + k) for k in range(n))


KINDS = [
    Kind("int", _ints(2, 8), pa.int64()),
    Kind("float", tuple(f"{k}.5" for k in range(1, 9)), pa.float64()),
    Kind("exponent", tuple(f"{k}e3" for k in range(1, 9)), pa.float64()),
    Kind("30 digits", _ints(123456789012345678901234567890, 8), pa.decimal128(38, 0)),
    Kind("above int64", _ints(12345678901234567890, 8), pa.uint64()),
    Kind("int64 max", ("9223372036854775807",)),
    Kind("negative zero", ("-0",)),
    Kind("leading zeros", ('"007"', '"0007"', '"07"')),
    Kind("digit string", ('"2"', '"3"', '"1.5"')),
    Kind("true", ("true",)),
    Kind("false", ("false",)),
    Kind("bool", ("true", "false"), pa.bool_()),
    Kind("null", ("null",)),
    Kind("object", tuple(f'{{"a": {k}}}' for k in range(8)), pa.struct([("a", pa.int64())])),
    Kind("array", tuple(f"[{k}, {k + 1}]" for k in range(8)), pa.list_(pa.int64())),
    Kind("binary", ()),  # Parquet only: binary columns
]


@dataclass
class IdCase:
    """Which column holds the odd ids, in which format, and the texts an accepted id may be stored as."""

    fmt: str
    kind: Kind
    column: str  # user_id or item_id
    typed: bool  # every id of the column is of the kind (a typed Parquet column), else only the first few
    case: Case
    expected: dict[str, set[str]]  # per hostile id: the texts it may be stored as (empty set: must not be stored)
    normal: set[str]  # the plain string ids beside them


def _value(token: str, dtype: pa.DataType | None) -> object:
    """The Python value of a JSON token, for a Parquet column."""
    value = json.loads(token)
    if pa.types.is_decimal(dtype) if dtype is not None else False:
        return Decimal(token)
    return value


def _literal(fmt: str, token: str, typed: bool, dtype: pa.DataType | None) -> set[str]:
    """The texts an accepted id may keep: the cell's text (CSV), the token (JSON Lines), the value's text (a
    typed Parquet column: a float's repr, a decimal's digits). None of them for a null: it is never an id."""
    value = json.loads(token)
    if value is None:
        return set()
    if isinstance(value, str):
        return {value}
    if fmt == "parquet" and typed and isinstance(value, float):
        return {repr(value)}
    if fmt == "parquet" and typed and isinstance(value, bool):
        return {"true" if value else "false"}
    return {token}


def _cell(token: str) -> str:
    value = json.loads(token)
    return "" if value is None else value if isinstance(value, str) else token


def _serialize(fmt: str, rows: list[tuple[str, str]], column: str, kind: Kind, typed: bool) -> bytes:
    """The log (user_id, item_id, event) with JSON-token ids in ``fmt``; plain ids are JSON strings."""
    if fmt == "jsonl":
        return "".join(f'{{"user_id": {u}, "item_id": {i}, "event": "view"}}\n' for u, i in rows).encode()
    if fmt in ("csv", "tsv"):
        import csv

        buf = io.StringIO()
        writer = csv.writer(buf, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
        writer.writerow(["user_id", "item_id", "event"])
        writer.writerows([_cell(u), _cell(i), "view"] for u, i in rows)
        return buf.getvalue().encode()
    k = 0 if column == "user_id" else 1
    arrays = []
    for c in range(2):
        tokens = [r[c] for r in rows]
        if c == k and kind.name == "binary":
            first = json.dumps(f"{column[0]}0")  # the first id: bytes that are not UTF-8
            arrays.append(pa.array([b"\xff\xfe" if t == first else json.loads(t).encode() for t in tokens]))
        elif c == k and typed and kind.typed is not None:
            arrays.append(pa.array([_value(t, kind.typed) for t in tokens], kind.typed))
        else:
            arrays.append(pa.array([None if json.loads(t) is None else _cell(t) for t in tokens], pa.string()))
    arrays.append(pa.array(["view"] * len(rows)))
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_arrays(arrays, names=["user_id", "item_id", "event"]), buf)
    return buf.getvalue()


def id_cases() -> list[IdCase]:
    """Every kind × format × column, the odd ids alone in their column (typed) and beside plain ids."""
    cases = []
    for fmt in FORMATS:
        for kind in KINDS:
            if kind.name == "binary" and fmt != "parquet":
                continue
            for column in ("user_id", "item_id"):
                n = N_USERS if column == "user_id" else N_ITEMS
                for typed in (False, True):
                    if typed and (kind.typed is None or len(kind.tokens) < 2):
                        continue
                    if kind.name == "binary" and typed:
                        continue
                    cases.append(_case(fmt, kind, column, typed, n))
    return cases


def _case(fmt: str, kind: Kind, column: str, typed: bool, n: int) -> IdCase:
    prefix = "u" if column == "user_id" else "i"
    if kind.name == "binary":  # every id binary: plain ones as their bytes, one not UTF-8
        ids = [json.dumps(f"{prefix}{k}") for k in range(n)]
        expected = {"b'\\xff\\xfe'": set()}  # not text: refused (or at least never stored mangled)
        normal = {f"{prefix}{k}" for k in range(1, n)}
        odd = ids[0]
    else:
        count = min(len(kind.tokens), n) if typed else 1
        odd_tokens = list(kind.tokens[:count])
        if typed and count < n:  # a typed column of a kind with few values (bool): the other rows get them too
            odd_tokens += [kind.tokens[k % len(kind.tokens)] for k in range(count, n)]
        ids = odd_tokens + [json.dumps(f"{prefix}{k}") for k in range(len(odd_tokens), n)]
        expected = {t: _literal(fmt, t, typed, kind.typed) for t in dict.fromkeys(odd_tokens)}
        normal = {f"{prefix}{k}" for k in range(len(odd_tokens), n)}
        odd = None
    users = ids if column == "user_id" else [json.dumps(f"u{k}") for k in range(N_USERS)]
    items = ids if column == "item_id" else [json.dumps(f"i{k}") for k in range(N_ITEMS)]
    rows = [(u, i) for u in users for i in items]
    data = _serialize(fmt, rows, column, kind, typed)
    name = f"log.{fmt}"
    argv = ["ingest", "--interactions", f"{{w}}/{name}", "--out", "{OUT}"]
    for item in KEEP_ALL:
        argv += ["--set", item]
    shown = "every id" if typed else f"{'the first id' if odd is None else 'one id'}"
    case = Case("ids", f"{fmt} {column}: {shown} {kind.name} ({', '.join(list(expected)[:2])})", {name: data}, argv)
    return IdCase(fmt, kind, column, typed, case, expected, normal)


def _stored(dataset: Path, column: str) -> list[str]:
    """The ids as the dataset holds them, as text (an int column's value as its digits, a float's repr)."""
    table = "users.parquet" if column == "user_id" else "items.parquet"
    values = pq.read_table(dataset / table).column(column).to_pylist()
    return [v if isinstance(v, str) else repr(v) if isinstance(v, float) else str(v) for v in values]


def run_id_case(idc: IdCase, base: Path) -> Outcome:
    """Ingest the log, then check the id rule: kept literally (every stored id a text written in the file), or
    refused in one line that names the file and the column."""
    holder = Path(tempfile.mkdtemp(prefix="ids-out-", dir=base))
    out = holder / "dataset"
    case = Case(idc.case.command, idc.case.summary, idc.case.files,
                [a.replace("{OUT}", str(out)) for a in idc.case.argv])  # fmt: skip
    outcome = run_cli(case, base)
    problems = list(outcome.problems)
    if outcome.code == 0:
        try:
            stored = _stored(out, idc.column)
        except (OSError, KeyError, pa.ArrowException) as e:
            stored = []
            problems.append(f"exit 0 but the dataset's ids cannot be read ({type(e).__name__}: {e})")
        allowed = idc.normal | {t for texts in idc.expected.values() for t in texts}
        altered = [s for s in stored if s not in allowed]
        if altered:
            problems.append(f"id altered: stored {altered[:4]}, the file says {list(idc.expected)[:4]}")
        written = len(idc.normal) + sum(1 for texts in idc.expected.values() if texts)
        if len(set(stored)) < written and not altered:
            problems.append(f"id altered: {written} distinct ids stored as {len(set(stored))} ({sorted(stored)[:4]})")
        missing = [t for t, texts in idc.expected.items() if texts and not texts & set(stored)]
        if missing and not altered:
            problems.append(f"id dropped without an error: {missing[:3]}")
    elif outcome.code == 2:
        line = outcome.detail
        if "log." not in line or idc.column not in line:
            problems.append(f"the refusal does not name the file and the column: {line[:200]!r}")
    shutil.rmtree(holder, ignore_errors=True)
    return Outcome(case, outcome.code, problems, outcome.detail)
