"""The preview page: one self-contained HTML document (inline CSS, SVG and data URIs).

Each shown record is an ``<article class="record">`` holding its conversation (each turn's
images, in order, then the user text and the answer) with its validation issues beside it.
No script, no external resource: the file opens offline in any browser.
"""

from __future__ import annotations

import re
from html import escape
from typing import Any

import orjson

from phiv_data.preview.issues import SampleIssues, ShownIssue
from phiv_data.preview.thumbnails import Thumbnails
from phiv_data.schema import Record

RAW_LINE_CHARACTERS = 4000
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1280px;padding:16px;
color:#1d1d1f;background:#fafafa}
h1{font-size:20px;margin:0 0 4px;word-break:break-all}h2{font-size:15px;margin:0 0 8px}
.summary{color:#444}.summary b{color:#1d1d1f}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:12px;
margin:16px 0}.plots figure{margin:0;background:#fff;border:1px solid #ddd;padding:8px}
.plots figcaption{font-size:12px;color:#555}svg.plot{width:100%;height:auto;font-size:10px}
svg .grid{stroke:#e4e4e4}svg .plot-title{font-size:13px;font-weight:600}
svg .axis-label{font-size:11px;fill:#555}
.record{display:grid;grid-template-columns:minmax(0,3fr) minmax(0,1fr);gap:12px;
background:#fff;border:1px solid #ddd;margin:12px 0;padding:12px}
.record.invalid{border-color:#c62828}.muted{color:#777;font-weight:normal;font-size:12px}
.turn{border-left:3px solid #4C78A8;padding-left:10px;margin:8px 0}
.images{display:flex;flex-wrap:wrap;gap:6px}
.images figure{margin:0;width:168px}.images img{max-width:160px;max-height:160px;
display:block;border:1px solid #ccc}.images figcaption{font-size:11px;color:#555;
word-break:break-all}.broken{width:160px;height:90px;display:flex;align-items:center;
justify-content:center;background:#fdecea;color:#c62828;font-size:12px;text-align:center}
.text{white-space:pre-wrap;word-break:break-word;margin:4px 0}.role{font-weight:600}
.unlabeled{color:#8a6d00}pre{white-space:pre-wrap;word-break:break-all;font-size:12px;
background:#f4f4f4;padding:6px;margin:4px 0}
.issues ul{margin:0;padding-left:18px}.issues li{margin:2px 0;word-break:break-word}
.error{color:#c62828}.warning{color:#8a6d00}.info{color:#555}.ok{color:#2e7d32}
"""


def visible(text: str) -> str:
    """Escape text for HTML, showing control characters as their Unicode pictures."""
    return escape(_CONTROL.sub(_control_picture, text))


def _control_picture(match: re.Match[str]) -> str:
    character = match.group()
    return "\u2421" if character == "\x7f" else chr(0x2400 + ord(character))


def _issue_item(issue: ShownIssue) -> str:
    field = f"{visible(issue.field)}: " if issue.field else ""
    return (f'<li class="{escape(issue.severity)}" data-issue="{escape(issue.code)}">'
            f'<b>[{escape(issue.code)}]</b> {field}{visible(issue.message)}</li>')


def _issues_block(issues: list[ShownIssue] | None) -> str:
    if issues is None:
        return '<aside class="issues"><p class="muted">validation not run</p></aside>'
    if not issues:
        return '<aside class="issues"><p class="ok">no issues</p></aside>'
    return ('<aside class="issues"><ul>' + "".join(_issue_item(issue) for issue in issues)
            + "</ul></aside>")


def _figure(number: int, path: str, thumbnails: Thumbnails) -> str:
    uri, problem = thumbnails.get(path)
    caption = f"<figcaption>{number}. {visible(path)}</figcaption>"
    if uri is None:
        return (f'<figure data-missing-image="{number}"><div class="broken">'
                f'{visible(problem or "unreadable")}</div>{caption}</figure>')
    return (f'<figure><img src="{uri}" alt="image {number}: {escape(path)}" '
            f'data-image="{number}" loading="eager">{caption}</figure>')


def record_article(line: int, record: Record, thumbnails: Thumbnails,
                   issues: list[ShownIssue] | None) -> str:
    """One valid record: its turns with their images in order, and its issues."""
    parts = [f'<article class="record" data-record data-line="{line}" id="line-{line}">'
             f'<div class="conversation"><h2>{visible(record.id)} <span class="muted">line '
             f'{line}{" &middot; " + visible(record.source) if record.source else ""}'
             f'</span></h2>']
    number = 0
    for index, turn in enumerate(record.conversations):
        parts.append(f'<div class="turn" data-turn="{index}">')
        if turn.images:
            parts.append('<div class="images">')
            for path in turn.images:
                number += 1
                parts.append(_figure(number, path, thumbnails))
            parts.append("</div>")
        parts.append(f'<p class="text"><span class="role">user:</span> {visible(turn.user)}</p>')
        if turn.assistant is None:
            parts.append('<p class="text unlabeled"><span class="role">assistant:</span> '
                         "(unlabeled)</p>")
        else:
            parts.append(f'<p class="text"><span class="role">assistant:</span> '
                         f"{visible(turn.assistant)}</p>")
        parts.append("</div>")
    if record.meta is not None:
        meta = orjson.dumps(record.meta, option=orjson.OPT_INDENT_2).decode()
        parts.append(f"<details><summary>meta</summary><pre>{visible(meta)}</pre></details>")
    parts.append("</div>" + _issues_block(issues) + "</article>")
    return "".join(parts)


def invalid_article(line: int, raw: bytes, issues: list[ShownIssue] | None) -> str:
    """A line that is not a valid record: its raw text and its issues."""
    text = raw.decode("utf-8", "replace")
    if len(text) > RAW_LINE_CHARACTERS:
        text = text[:RAW_LINE_CHARACTERS] + f"\u2026 ({len(text)} characters)"
    return (f'<article class="record invalid" data-record data-invalid data-line="{line}" '
            f'id="line-{line}"><div class="conversation"><h2>not a valid record '
            f'<span class="muted">line {line}</span></h2><pre>{visible(text)}</pre></div>'
            f"{_issues_block(issues)}</article>")


def page(*, title: str, summary: list[str], plots: list[tuple[str, str]],
         articles: list[str], sample_issues: SampleIssues | None, notes: list[str]) -> str:
    """The whole document.

    Args:
        title: the file shown.
        summary: HTML fragments (already escaped) for the summary line.
        plots: ``(svg, caption)`` pairs.
        articles: the rendered records.
        sample_issues: issues of the shown records (``None`` when validation did not run).
        notes: plain-text notes shown under the summary.
    """
    general = ""
    if sample_issues is not None and sample_issues.general:
        general = ("<h2>Issues of the shown sample as a whole</h2><ul class=\"issues\">"
                   + "".join(_issue_item(issue) for issue in sample_issues.general) + "</ul>")
    figures = "".join(f"<figure>{svg}<figcaption>{visible(caption)}</figcaption></figure>"
                      for svg, caption in plots)
    note_items = "".join(f"<li>{visible(note)}</li>" for note in notes)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>phiv preview: {visible(title)}</title><style>{STYLE}</style></head><body>"
        f'<header><h1>{visible(title)}</h1><p class="summary">{" &middot; ".join(summary)}'
        f'</p><ul class="muted">{note_items}</ul></header>'
        f'<section class="plots">{figures}</section>'
        f'<section class="records" data-shown="{len(articles)}">{general}'
        f'{"".join(articles)}</section></body></html>\n'
    )


def fragment(value: Any, label: str) -> str:
    """``<b>value</b> label`` for the summary line."""
    return f"<b>{visible(str(value))}</b> {visible(label)}"
