"""Document blocks (heading, paragraph, table, list, image) and their two renderings: Markdown and HTML.

A report is written once as a list of blocks, so its Markdown and its self-contained HTML page
say the same thing; the training report and the dataset validation report share them. Text may
carry two inline marks, `code` and **bold**, which both renderings show as such.
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence, Union

STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;"
         "line-height:1.45}h1{border-bottom:2px solid #ddd;padding-bottom:.2em}h2{margin-top:1.6em}"
         "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px}"
         "th{background:#eee}tr:nth-child(even) td{background:#fafafa}.num{text-align:right}"
         "code{background:#f3f3f3;padding:0 .2em;border-radius:3px}img{max-width:100%}"
         "figure{margin:1em 0}figcaption{color:#555;font-size:.9em}")


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    """Cells are text; `align` holds one letter per column, "l" or "r" (empty: Markdown's default)."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: str = ""


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Figure:
    """An image written beside the Markdown as `name`, embedded in the HTML; without `png` only the caption shows."""

    name: str
    caption: str
    png: bytes | None = field(default=None, repr=False)


Block = Union[Heading, Paragraph, Table, Bullets, Figure]


def cell(value: Any, digits: int = 3) -> str:
    """A table cell: floats to `digits` places, None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return "nan" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> Table:
    return Table(tuple(header), tuple(tuple(cell(value) for value in row) for row in rows), align)


def to_markdown(blocks: Sequence[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Table):
            rules = [":" if block.align[index:index + 1] == "r" else "" for index in range(len(block.header))]
            lines.append("| " + " | ".join(block.header) + " |")
            lines.append("|" + "".join(f"---{rule}|" for rule in rules))
            lines += ["| " + " | ".join(row) + " |" for row in block.rows]
            lines.append("")
        elif isinstance(block, Bullets):
            lines += [f"- {item}" for item in block.items] + [""]
        elif block.png is not None:
            lines += [f"![{block.caption}]({block.name})", ""]
        else:
            lines += [f"*{block.caption}*", ""]
    return "\n".join(lines)


def _inline(text: str) -> str:
    """Escaped text with its `code` and **bold** marks as HTML."""
    marked = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", marked)


def _html_table(block: Table) -> str:
    def numeric(index: int, text: str) -> bool:  # without an alignment, numbers align right
        if block.align:
            return block.align[index:index + 1] == "r"
        return bool(re.fullmatch(r"[-+]?[\d.,]+%?|nan|—", text.strip()))

    rows = ["<tr>" + "".join(f"<td{' class=num' if numeric(i, c) else ''}>{_inline(c)}</td>"
                             for i, c in enumerate(row)) + "</tr>" for row in block.rows]
    return "\n".join(["<table><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in block.header) + "</tr>",
                      *rows, "</table>"])


def _html_block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{_inline(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return f"<p>{_inline(block.text)}</p>"
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block.items) + "</ul>"
    if block.png is None:
        return f"<p><em>{_inline(block.caption)}</em></p>"
    mime = "image/jpeg" if block.name.endswith(".jpg") else "image/png"
    return (f"<figure><img alt='{html.escape(block.caption)}' src='data:{mime};base64,"
            f"{base64.b64encode(block.png).decode()}'><figcaption>{_inline(block.caption)}</figcaption></figure>")


def to_html(blocks: Sequence[Block], title: str) -> str:
    """One self-contained page: the images are embedded, nothing is fetched."""
    head = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>")
    return "\n".join([head, *map(_html_block, blocks), "</body></html>"])
