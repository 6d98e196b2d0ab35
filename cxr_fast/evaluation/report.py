"""report.md and a self-contained report.html from one list of blocks.

Blocks are ("h1"|"h2", text), ("p", text), ("warn", text), ("table", header, rows) and
("img", path, caption); markdown links images beside it, HTML inlines them as base64 so the
file can be mailed or archived alone.
"""
import base64
import html
import os

from cxr_fast import atomic

# docs/reference.md: the paper (Jahan, Anower & Hassan, ICICT4SD 2021) and the course
# report that reproduced it (image-level split, so its numbers are optimistic).
REFERENCE_RESULTS = {
    "paper": {"accuracy": 0.963, "precision": 0.97, "recall": 0.96, "f1": 0.96, "auc": 0.991},
    "report model 1": {"accuracy": 0.89, "precision": 0.99, "recall": 0.85, "f1": 0.92, "auc": 0.990},
    "report model 2": {"accuracy": 0.88, "precision": 0.91, "recall": 0.93, "f1": 0.92, "auc": 0.934},
}
REFERENCE_SOURCE = ("docs/reference.md in the cxr_fast repository (paper: Jahan, Anower & Hassan, ICICT4SD 2021; "
                    "report: the course reproduction; both split by image, so optimistic)")


def split_warning(manifest):
    """[a warning block] when patients have films in several splits (an image-level split), else []."""
    if manifest["settings"]["split"] != "image" and not manifest["patients"]["in_several_splits"]:
        return []
    return [("warn", f"this record set uses the {manifest['settings']['split']} split: "
                     f"{manifest['patients']['in_several_splits']} patients have films in more than one "
                     "split, so these numbers are optimistic (as the reference report's were).")]


def fmt(value, digits=3):
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def to_markdown(blocks):
    lines = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2"):
            lines += [("# " if kind == "h1" else "## ") + block[1], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "warn":
            lines += [f"> **Warning:** {block[1]}", ""]
        elif kind == "table":
            header, rows = block[1], block[2]
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
            lines.append("")
        elif kind == "img":
            lines += [f"![{block[2]}]({os.path.basename(block[1])})", f"*{block[2]}*", ""]
    return "\n".join(lines)


def to_html(blocks, title):
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
             "body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;"
             "text-align:right}th{background:#eee}td:first-child,th:first-child{text-align:left}"
             ".warn{background:#fff3cd;border:1px solid #e0c060;padding:8px}img{max-width:100%}"
             "</style></head><body>"]
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2"):
            parts.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(block[1])}</p>")
        elif kind == "warn":
            parts.append(f"<p class='warn'><b>Warning:</b> {html.escape(block[1])}</p>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block[1])
            body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in row) + "</tr>"
                           for row in block[2])
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        elif kind == "img":
            with open(block[1], "rb") as f:
                data = base64.b64encode(f.read()).decode()
            parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(block[2])}'>"
                         f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write(blocks, folder, title):
    """Writes report.md and report.html into `folder`; returns their paths."""
    md_path, html_path = os.path.join(folder, "report.md"), os.path.join(folder, "report.html")
    atomic.write_text(md_path, to_markdown(blocks))
    atomic.write_text(html_path, to_html(blocks, title))
    return md_path, html_path
