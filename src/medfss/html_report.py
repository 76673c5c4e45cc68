"""A one-file HTML report of a ``medfss segment`` run: the overlay, the per-label volumes, the warnings.

Everything comes from the run's JSON summary and overlay PNG (embedded as
base64), so the report says nothing the summary does not; every value is
HTML-escaped.
"""

from __future__ import annotations

import base64
from html import escape


def segmentation_report(summary: dict, png: bytes | None) -> str:
    """The HTML text of the report of one run (``summary``: :attr:`Segmentation.summary`)."""
    settings, inputs = summary["settings"], summary["inputs"]
    rows = "".join(
        f"<tr><td>{escape(c['name'])}</td><td>{escape(value)}</td><td>{c['voxels']}</td>"
        f"<td>{c['millilitres']:.1f}</td><td>{', '.join(f'{ml:.1f}' for ml in c['support_millilitres'])}</td>"
        f"<td>{c['extent'][0]}:{c['extent'][1]} ({escape(settings['extent'])})</td></tr>"
        for value, c in summary["classes"].items())
    warnings = "".join(f"<li>{escape(w)}</li>" for w in summary["warnings"]) or "<li>none</li>"
    image = (f'<img alt="overlay" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
             if png is not None else "<p>(no overlay requested)</p>")
    return "\n".join([
        "<!DOCTYPE html>", '<html><head><meta charset="utf-8"><title>medfss segment</title>',
        "<style>body{font-family:sans-serif;max-width:70em}td,th{padding:0 .8em;text-align:left}"
        "img{max-width:100%}</style></head><body>",
        f"<h1>medfss segment: {escape(inputs['query'])}</h1>",
        f"<p>Model: {escape(str(inputs['model'].get('checkpoint', inputs['model'])))}; query modality "
        f"{escape(settings['modality'])} ({escape(settings['modality_rule'])}); medfss "
        f"{escape(summary['medfss_version'])}. Not for clinical use.</p>",
        "<h2>Warnings</h2>", f"<ul>{warnings}</ul>",
        "<h2>Labels</h2>",
        "<table><tr><th>name</th><th>value</th><th>voxels</th><th>mL</th><th>support mL</th>"
        f"<th>slices (axis {settings['axis']})</th></tr>{rows}</table>",
        "<h2>Overlay</h2>", image, "</body></html>", ""])
