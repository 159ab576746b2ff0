"""A report as a list of blocks, rendered to Markdown and to self-contained HTML.

Blocks: ``("h", level, text)``, ``("p", text)``, ``("pre", text)``,
``("table", header, rows)``, ``("img", file, caption)``. The HTML inlines every
image as base64, so the file stands alone.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path


def to_markdown(blocks) -> str:
    out = []
    for b in blocks:
        if b[0] == "h":
            out.append("#" * b[1] + " " + b[2])
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "pre":
            out.append("```\n" + b[1] + "\n```")
        elif b[0] == "table":
            out.append("| " + " | ".join(b[1]) + " |")
            out[-1] += "\n|" + "|".join("---" for _ in b[1]) + "|"
            out[-1] += "".join("\n| " + " | ".join(str(c) for c in row) + " |" for row in b[2])
        elif b[0] == "img":
            out.append(f"![{b[2]}]({b[1]})")
    return "\n\n".join(out) + "\n"


def to_html(blocks, folder, title: str) -> str:
    body = []
    for b in blocks:
        if b[0] == "h":
            body.append(f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>")
        elif b[0] == "p":
            body.append(f"<p>{html.escape(b[1])}</p>")
        elif b[0] == "pre":
            body.append(f"<pre>{html.escape(b[1])}</pre>")
        elif b[0] == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                           for row in b[2])
            body.append(f"<table><tr>{head}</tr>{rows}</table>")
        elif b[0] == "img":
            data = base64.b64encode((Path(folder) / b[1]).read_bytes()).decode()
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b[2])}">'
                        f"<figcaption>{html.escape(b[2])}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:"
             "collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}"
             "img{max-width:100%}pre{background:#f6f6f6;padding:8px;font-size:12px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")

