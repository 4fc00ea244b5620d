"""Measure how easily the manual scans: sentence lengths of the prose and the width of the code, per page.

The house style asks for sentences of about 25 words, never over 45, and code lines of at most 88 characters.
This is a measuring tool, not a CI rule: run it before and after rewriting a page.

    python docs/sentences.py                 # one row per page (README.md and docs/**/*.md), then the totals
    python docs/sentences.py --over 45       # also list every sentence over 45 words, with file:line
    python docs/sentences.py docs/live.md    # only the pages named

What counts as prose: paragraphs, list items, admonition bodies and headings are left out or split as below.
- Fenced code blocks are not prose; their lines are measured for width instead.
- Tables, front matter, HTML comments, snippet includes (``--8<--``) and mkdocstrings blocks (``:::``) are skipped.
- Headings are skipped; each list item starts a new sentence, even without a full stop.
- A sentence ends at ``.``, ``!`` or ``?`` before a space and a capital, a digit, a quote or a code span.
- Words are whitespace-separated tokens holding a letter or a digit; a link counts its text, not its address.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATED = {
    Path("docs/reference/cli.md")
}  # written by docs/gen_cli.py from --help, not by hand
LONG_WORDS = 40  # the measure: the share of sentences over this many words
CODE_WIDTH = 88  # the widest code line that shows whole on the site

FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
SKIP_LINE = re.compile(r"^\s*(?:\||#{1,6}\s|!!!|\?\?\?|:::|--8<--|<!--|\[[^\]]+\]:\s)")
LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
ATTRS = re.compile(r"\{\s*[#.][^}]*\}")  # attr_list: {#id .class}
TAG = re.compile(r"<[^>]+>")
ABBREV = re.compile(
    r"(?:\b(?i:e\.g|i\.e|vs|cf|etc|approx|resp|no|fig)\.|(?:^|[\s(])[A-Z]\.)$"
)  # and initials
END = re.compile(r"(?<=[.!?])[\"')\]*_]*\s+(?=[A-Z0-9`\"'(\[*_])")
WORD = re.compile(r"[A-Za-z0-9]")


@dataclass
class Sentence:
    line: int  # where it starts, 1-based
    words: int
    text: str


@dataclass
class Page:
    path: Path
    sentences: list[Sentence] = field(default_factory=list)
    code_lines: int = 0
    wide_code: list[int] = field(
        default_factory=list
    )  # line numbers of code lines over CODE_WIDTH

    def over(self, words: int) -> list[Sentence]:
        return [s for s in self.sentences if s.words > words]

    def longest(self) -> Sentence | None:
        return max(self.sentences, key=lambda s: s.words, default=None)


def units(lines: list[str]) -> Iterator[tuple[int, str]]:
    """The prose of a page as (first line, text) units: a paragraph, a list item or an admonition body's paragraph."""
    start, buf = 0, []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            if buf:
                yield start, " ".join(buf)
            start, buf = 0, []
            continue
        if LIST_ITEM.match(line) and buf:  # a list item ends the unit before it
            yield start, " ".join(buf)
            start, buf = 0, []
        if not buf:
            start = number
        buf.append(LIST_ITEM.sub("", line, count=1).strip())
    if buf:
        yield start, " ".join(buf)


def clean(text: str) -> str:
    """Markdown to plain words: a link is its text, emphasis marks and HTML tags go."""
    text = LINK.sub(r"\1", text)
    text = ATTRS.sub("", TAG.sub("", text))
    return text.replace("**", "").strip()


def split(text: str) -> list[str]:
    """One unit's sentences; a full stop after an abbreviation (e.g., vs.) or an initial does not end one."""
    pieces, begin = [], 0
    for m in END.finditer(text):
        if ABBREV.search(text[begin : m.start()]):
            continue
        pieces.append(text[begin : m.start()])
        begin = m.end()
    pieces.append(text[begin:])
    return [p.strip() for p in pieces if WORD.search(p)]


def measure(path: Path) -> Page:
    page = Page(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    prose: list[
        str
    ] = []  # the page with everything that is not prose blanked, so line numbers hold
    fence = ""
    in_front = bool(lines) and lines[0].strip() == "---"
    in_comment = False
    for number, line in enumerate(lines, 1):
        keep = ""
        if in_front:
            in_front = not (number > 1 and line.strip() == "---")
        elif fence:
            if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = ""
            else:
                page.code_lines += 1
                if len(line.rstrip()) > CODE_WIDTH:
                    page.wide_code.append(number)
        elif in_comment:
            in_comment = "-->" not in line
        elif m := FENCE.match(line):
            fence = m[1]
        elif line.strip().startswith("<!--") and "-->" not in line:
            in_comment = True
        elif not SKIP_LINE.match(line) and not line.startswith(
            "        "
        ):  # 8 spaces: :::'s options
            keep = line
        prose.append(keep)
    for start, text in units(prose):
        for sentence in split(clean(text)):
            words = sum(1 for token in sentence.split() if WORD.search(token))
            page.sentences.append(Sentence(start, words, sentence))
    return page


def pages(named: list[str]) -> list[Path]:
    if named:
        return [Path(p).resolve() for p in named]
    found = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [p for p in found if p.relative_to(ROOT) not in GENERATED]


def name(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def report(measured: list[Page], over: int | None) -> None:
    print(
        f"{'page':34} {'sentences':>9} {f'>{LONG_WORDS} w':>7} {'longest':>8}  {'code':>5} {f'>{CODE_WIDTH}':>5}"
    )
    for page in measured:
        long = len(page.over(LONG_WORDS))
        top = page.longest()
        share = f"{100 * long / len(page.sentences):.0f}%" if page.sentences else "-"
        print(
            f"{name(page.path):34} {len(page.sentences):9} {share:>7} {top.words if top else 0:8}"
            f"  {page.code_lines:5} {len(page.wide_code):5}"
        )
    every = [s for p in measured for s in p.sentences]
    long = sum(len(p.over(LONG_WORDS)) for p in measured)
    worst = max(
        ((s, p) for p in measured for s in p.sentences),
        key=lambda sp: sp[0].words,
        default=None,
    )
    code = sum(p.code_lines for p in measured)
    wide = sum(len(p.wide_code) for p in measured)
    print()
    print(
        f"pages: {len(measured)}; sentences: {len(every)}; mean {sum(s.words for s in every) / max(len(every), 1):.1f} words"
    )
    print(f"over {LONG_WORDS} words: {long} ({100 * long / max(len(every), 1):.1f}%)")
    if worst:
        print(
            f"longest: {worst[0].words} words at {name(worst[1].path)}:{worst[0].line}"
        )
    print(f"code lines over {CODE_WIDTH} characters: {wide} of {code}")
    if over is not None:
        print()
        for page in measured:
            for s in page.over(over):
                print(f"{name(page.path)}:{s.line}: {s.words} words: {s.text[:100]}…")
            for number in page.wide_code:
                print(
                    f"{name(page.path)}:{number}: code line over {CODE_WIDTH} characters"
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "pages",
        nargs="*",
        help="pages to measure (default: README.md and docs/**/*.md)",
    )
    parser.add_argument(
        "--over", type=int, metavar="WORDS", help="list every sentence over WORDS words"
    )
    args = parser.parse_args(argv)
    report([measure(p) for p in pages(args.pages)], args.over)
    return 0


if __name__ == "__main__":
    sys.exit(main())
