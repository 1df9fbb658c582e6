"""The HTML around the pictures: one inline stylesheet, no scripts, no external resources."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from pathlib import Path
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


def esc(value: Any) -> str:
    return html.escape(str(value))


def table(rows: Mapping[str, Any] | Iterable[tuple[Any, Any]]) -> str:
    items = rows.items() if isinstance(rows, Mapping) else rows
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in items)
    return f"<table>{body}</table>"


def figure(uri: str, caption: str) -> str:
    return f'<figure><img src="{uri}" alt="{esc(caption)}"><figcaption>{esc(caption)}' \
           "</figcaption></figure>"


def document(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head>"
            f"<body><h1>{esc(title)}</h1>{body}</body></html>\n")


def write_page(path: Path, title: str, body: str) -> Path:
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(document(title, body), encoding="utf-8")
    return path
