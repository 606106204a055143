"""Write the blocks twice, as Markdown and as one self-contained HTML file (inline CSS, plots as
``data:`` URIs, a script counting the images that decoded)."""

from __future__ import annotations

import base64
import html
import re

from greencpn.report.elements import Block, Image, Table

# ----------------------------------------------------------------------------- Markdown


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for kind, payload in blocks:
        if kind in {"h1", "h2", "h3"}:
            out += ["#" * int(kind[1]) + " " + payload, ""]
        elif kind == "p":
            out += [payload, ""]
        elif kind == "table":
            t: Table = payload
            align = [
                "---:" if (i < len(t.numeric) and t.numeric[i]) else "---"
                for i in range(len(t.header))
            ]
            out.append("| " + " | ".join(_md_cell(h) for h in t.header) + " |")
            out.append("|" + "|".join(align) + "|")
            for row in t.rows:
                out.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
            out.append("")
        elif kind == "ul":
            out += [f"- {_md_cell(item)}" for item in payload] + [""]
        elif kind == "img":
            img: Image = payload
            out += [f"![{img.alt}]({img.file})", ""]
    return "\n".join(out).rstrip() + "\n"


# ----------------------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:1180px;padding:0 1rem;color:#1d2327;line-height:1.45}
h1{font-size:1.6rem;border-bottom:3px solid #2e7d32;padding-bottom:.3rem}
h2{font-size:1.25rem;margin-top:2rem;color:#1b5e20}
h3{font-size:1.05rem;margin-bottom:.3rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.88rem}
th,td{border:1px solid #cfd8dc;padding:.25rem .55rem;vertical-align:top}
th{background:#eef3ee;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#fafbfa}
img{max-width:100%;height:auto;border:1px solid #e0e0e0}
code{background:#f3f3f3;padding:0 .2rem}
p.headline{font-size:1.1rem;background:#e8f5e9;padding:.6rem .8rem;border-left:4px solid #2e7d32}
""".strip()

IMG_SCRIPT = """
(function(){
  function count(){
    var imgs=document.getElementsByTagName('img'), n=0;
    for(var i=0;i<imgs.length;i++){ if(imgs[i].complete && imgs[i].naturalWidth>0){ n++; } }
    document.body.setAttribute('data-images-total', String(imgs.length));
    document.body.setAttribute('data-images-loaded', String(n));
  }
  if(document.readyState==='complete'){ count(); } else { window.addEventListener('load', count); }
})();
""".strip()


def _inline(text: str) -> str:
    """Escape, then render **bold**, *italic* and `code` like the Markdown does."""
    s = html.escape(text)
    s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
    s = re.sub(r"\*(.+?)\*", r"<em>\1</em>", s)
    s = re.sub(r"`(.+?)`", r"<code>\1</code>", s)
    return s


def to_html(blocks: list[Block], images: dict[str, bytes]) -> str:
    title = next((p for k, p in blocks if k == "h1"), "greencpn report")
    body: list[str] = []
    first_p = True
    for kind, payload in blocks:
        if kind in {"h1", "h2", "h3"}:
            body.append(f"<{kind}>{html.escape(payload)}</{kind}>")
        elif kind == "p":
            cls = ' class="headline"' if first_p else ""
            first_p = False
            body.append(f"<p{cls}>{_inline(payload)}</p>")
        elif kind == "table":
            t: Table = payload
            head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
            rows = []
            for row in t.rows:
                cells = "".join(
                    f'<td class="num">{html.escape(c)}</td>'
                    if i < len(t.numeric) and t.numeric[i]
                    else f"<td>{html.escape(c)}</td>"
                    for i, c in enumerate(row)
                )
                rows.append(f"<tr>{cells}</tr>")
            body.append(
                f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            )
        elif kind == "ul":
            items = "".join(f"<li>{_inline(item)}</li>" for item in payload)
            body.append(f"<ul>{items}</ul>")
        elif kind == "img":
            img: Image = payload
            data = base64.b64encode(images[img.file]).decode("ascii")
            body.append(
                f'<figure><img alt="{html.escape(img.alt)}" data-file="{html.escape(img.file)}" '
                f'src="data:image/png;base64,{data}"></figure>'
            )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>{IMG_SCRIPT}</script>\n</body></html>\n"
    )
