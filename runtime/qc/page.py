"""The HTML around the pictures: one inline stylesheet, no scripts, no external resources.

Pages are rendered from `string.Template`s (the standard library: the base install
stays light, no template engine). `render` HTML-escapes every value except markup
(`Html`: what `render` itself returns), so a file or subject name can never inject
markup; templates hold no whitespace between tags.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from pathlib import Path
from string import Template
from typing import Any

from mri2mri.runtime.core.atomic import atomic_path

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:1.6em}
h3{font-size:1.05em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.2em .6em;
text-align:left;font-size:.9em;vertical-align:top}
img{max-width:100%;display:block;background:#000}
.ok{color:#176117}.warn{background:#fff3cd;border:1px solid #e0a800;padding:.5em;
font-weight:bold}.fail{background:#f8d7da;border:1px solid #c82333;padding:.5em}
.flicker{position:relative;display:inline-block}
.flicker img.top{position:absolute;left:0;top:0;animation:flick 2s steps(1) infinite}
@keyframes flick{0%{opacity:1}50%{opacity:0}}
figcaption{font-size:.85em;color:#555;margin:.2em 0 .8em}
"""


class Html(str):
    """Markup, inserted by `render` as is (any other value is escaped)."""


PAGE = Template('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>$title</title>'
                "<style>$style</style></head><body><h1>$title</h1>$body</body></html>\n")
TABLE = Template("<table>$rows</table>")
ROW = Template("<tr><th>$key</th><td>$value</td></tr>")
FIGURE = Template('<figure><img src="$src" alt="$alt"><figcaption>$caption</figcaption></figure>')


def esc(value: Any) -> str:
    return html.escape(str(value))


def render(template: Template, **values: Any) -> Html:
    """`template` filled in: `Html` values as they are, every other value HTML-escaped."""
    return Html(template.substitute(
        {k: v if isinstance(v, Html) else esc(v) for k, v in values.items()}))


def join(parts: Iterable[str]) -> Html:
    """Rendered fragments, one after the other."""
    return Html("".join(parts))


def table(rows: Mapping[str, Any] | Iterable[tuple[Any, Any]]) -> Html:
    items = rows.items() if isinstance(rows, Mapping) else rows
    return render(TABLE, rows=join(render(ROW, key=k, value=v) for k, v in items))


def figure(uri: str, caption: str, alt: str | None = None) -> Html:
    """A picture (a data URI) with its caption; `alt` defaults to the caption."""
    return render(FIGURE, src=uri, alt=caption if alt is None else alt, caption=caption)


def document(title: str, body: str) -> str:
    return render(PAGE, title=title, style=Html(STYLE), body=Html(body))


def write_page(path: Path, title: str, body: str) -> Path:
    """Write `body` (markup) as a page titled `title`, atomically."""
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(document(title, body), encoding="utf-8")
    return path
