"""The doctor's report: diagnosis.json and an offline report.html (the table, the images, previews, sweeps)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .doctor import Diagnosis

STYLE = """body{font:14px system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;
text-align:left}th{background:#f3f3f3}code{font-size:12px;background:#f6f6f6;padding:1px 3px}
figure{display:inline-block;margin:0 12px 12px 0;text-align:center}figure img{image-rendering:pixelated;
width:160px}figcaption{font-size:12px;max-width:160px}.grid img{max-width:100%;image-rendering:pixelated}
.ok{color:#17692d}.bad{color:#b3261e}"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _causes_table(diag: "Diagnosis") -> str:
    if not diag.causes:
        verdict = "no cause found" if diag.symptom else "nothing wrong found"
        return f"<p class='ok'>{_e(verdict)}</p>"
    rows = "".join(f"<tr><td>{n}</td><td>{_e(c.symptom)}</td><td><b>{_e(c.cause)}</b></td><td>{_e(c.evidence)}"
                   f"</td><td><code>{_e(c.fix)}</code></td></tr>" for n, c in enumerate(diag.causes, 1))
    return ("<table><tr><th>#</th><th>symptom</th><th>likely cause</th><th>evidence</th><th>fix</th></tr>"
            f"{rows}</table>")


def _figures(diag: "Diagnosis") -> str:
    figs = []
    if diag.case.image is not None:
        figs.append(f"<figure><img src='{_e(diag.case.image.resolve().as_uri())}'><figcaption>your image"
                    "</figcaption></figure>")
    for label, rel in diag.images.items():
        name = {"user": "your settings, re-run", "recipe": "the recipe's settings"}.get(label, label)
        figs.append(f"<figure><img src='{_e(rel)}'><figcaption>{_e(name)}</figcaption></figure>")
    return "".join(figs)


def render_html(diag: "Diagnosis") -> str:
    """The whole report page (images by relative path: the page opens offline from its folder)."""
    checks = "".join(f"<tr><td>{_e(c.name)}</td><td>{_e(c.result)}</td></tr>" for c in diag.checks)
    previews = next((f"<h2>x0 previews</h2><p class='grid'><img src='{_e(c.image)}'></p>" for c in diag.checks
                     if c.name == "x0 previews"), "")
    grids = "".join(f"<p class='grid'><img src='{_e(p.relative_to(diag.run_dir))}'></p>" for p in diag.grids)
    notes = "".join(f"<li>{_e(n)}</li>" for n in diag.case.notes)
    symptom = (f"<p class='bad'>symptom: {_e(diag.symptom)}</p>" if diag.symptom
               else "<p class='ok'>no symptom measured</p>")
    return (f"<!doctype html><meta charset='utf-8'><title>iga doctor</title><style>{STYLE}</style>"
            f"<h1>iga doctor</h1><p>{_e(diag.case.where)} ({_e(diag.case.source)}) on {_e(diag.case.model_path)}</p>"
            f"{symptom}<h2>Likely causes, most likely first</h2>{_causes_table(diag)}"
            f"<h2>Images</h2>{_figures(diag)}<h2>Checks</h2><table>{checks}</table>{previews}"
            + (f"<h2>Sweeps around your setting</h2>{grids}" if grids else "")
            + (f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""))


def write_report(diag: "Diagnosis") -> None:
    """diagnosis.json and report.html in the doctor's folder, each atomically."""
    from iga.checkpoint import write_bytes_atomic

    from .doctor import write_json

    write_json(diag)
    write_bytes_atomic(diag.run_dir / "report.html", render_html(diag).encode())
