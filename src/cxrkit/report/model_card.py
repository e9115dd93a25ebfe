"""A model card (Mitchell et al. 2019, "Model Cards for Model Reporting") as Markdown and as HTML.

The card is a list of sections of paragraphs and tables, built by ``workflows.card`` from a run's
own files; this module only renders it, the same content twice, and types no figure of its own.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from cxrkit.report.html import Section, render_page


@dataclass(frozen=True)
class Table:
    """A table of text cells: a header row and body rows (already formatted)."""

    header: Sequence[str]
    rows: Sequence[Sequence[str]]


@dataclass(frozen=True)
class CardSection:
    """One heading of the card and its blocks: paragraphs (str, `code` spans allowed) and tables."""

    title: str
    blocks: list[str | Table] = field(default_factory=list)


def card_markdown(title: str, sections: Sequence[CardSection]) -> str:
    """The card as GitHub-flavoured Markdown."""
    out = [f"# {title}", ""]
    for section in sections:
        out += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Table):
                out.append("| " + " | ".join(_md_cell(c) for c in block.header) + " |")
                out.append("|" + "|".join("---" for _ in block.header) + "|")
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            else:
                out.append(block)
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _inline_html(text: str) -> str:
    """Escape a paragraph and turn its `code` spans and **bold** into tags."""
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", escaped)


def _block_html(block: str | Table) -> str:
    if isinstance(block, Table):
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in block.header)
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in block.rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    if block.startswith("- "):
        return "<ul>" + "".join(f"<li>{_inline_html(line[2:])}</li>" for line in block.splitlines()) + "</ul>"
    return f"<p>{_inline_html(block)}</p>"


def card_html(title: str, sections: Sequence[CardSection], subtitle: str = "") -> str:
    """The card as one self-contained HTML page, in the report pages' style."""
    return render_page(
        title,
        [Section(s.title, "".join(_block_html(b) for b in s.blocks)) for s in sections],
        subtitle,
    )
