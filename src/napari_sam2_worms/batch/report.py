"""``report.csv`` and ``report.html`` of a batch, from its manifest.

One row per video: status, frames, objects, % good skeletons, a count per flag (why a
skeleton is not good: ``missing``, ``coiled``, ``touching``, ``border``...), tracking
frames/s, total seconds and the error. The HTML page shows each video's thumbnail (the
first frame with its masks and centerlines, PNGs in ``thumbnails/`` beside it) so a
person can scan a hundred videos at a glance. Both files are written atomically.
"""

from __future__ import annotations

import csv
import html
import io
import os
import time
from pathlib import Path
from typing import Any

from ..utils import atomic_write_text

BASE_COLUMNS = (
    "video",
    "name",
    "status",
    "frames",
    "objects",
    "good_skeletons_pct",
    "frames_per_s",
    "seconds",
    "output",
    "error",
)


def _rows(entries: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    flags = sorted({f for e in entries.values() for f in (e.get("metrics") or {}).get("flags", {})})
    rows = []
    for key, e in sorted(entries.items(), key=lambda kv: (str(kv[1].get("name")), kv[0])):
        m = e.get("metrics") or {}
        done = e.get("status") == "done"
        row: dict[str, Any] = {
            "video": key,
            "name": e.get("name", ""),
            "status": e.get("status", ""),
            "frames": m.get("frames", "") if done else "",
            "objects": m.get("objects", "") if done else "",
            "good_skeletons_pct": m.get("good_skeletons_pct", "") if done else "",
            "frames_per_s": m.get("frames_per_s", "") if done else "",
            "seconds": e.get("seconds", ""),
            "output": e.get("output", "") if done else "",
            "error": e.get("error") or "",
        }
        for f in flags:
            row[f"flag_{f}"] = m.get("flags", {}).get(f, 0) if done else ""
        row["_thumbnail"] = m.get("thumbnail") if done else None
        rows.append(row)
    return rows, [*BASE_COLUMNS[:6], *(f"flag_{f}" for f in flags), *BASE_COLUMNS[6:]]


def write_report(out: Path, entries: dict[str, dict[str, Any]]) -> tuple[Path, Path]:
    """Write ``<out>/report.csv`` and ``<out>/report.html``; returns both paths."""
    out = Path(out)
    rows, columns = _rows(entries)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    csv_path, html_path = out / "report.csv", out / "report.html"
    atomic_write_text(csv_path, buf.getvalue())
    atomic_write_text(html_path, _html(out, rows, columns))
    return csv_path, html_path


def _cell(value: Any) -> str:
    return html.escape(str(value)) if value is not None else ""


def _html(out: Path, rows: list[dict[str, Any]], columns: list[str]) -> str:
    n_done = sum(r["status"] == "done" for r in rows)
    n_failed = sum(r["status"] == "failed" for r in rows)
    head = "".join(f"<th>{_cell(c)}</th>" for c in ["thumbnail", *columns])
    body = []
    for r in rows:
        thumb = r.get("_thumbnail")
        if thumb and (out / thumb).is_file():
            src = html.escape(Path(thumb).as_posix(), quote=True)
            img = f'<a href="{src}"><img src="{src}" alt="{_cell(r["name"])}" loading="lazy"></a>'
        else:
            img = ""
        cells = []
        for c in columns:
            v = r.get(c, "")
            if c == "output" and v:
                href = html.escape(str(v), quote=True)
                cells.append(f'<td><a href="{href}/">{_cell(v)}</a></td>')
            else:
                cells.append(f"<td>{_cell(v)}</td>")
        body.append(f'<tr class="{_cell(r["status"])}"><td>{img}</td>{"".join(cells)}</tr>')
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>napari-sam2-worms batch report</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 4px 6px; vertical-align: top; font-size: 90%; }}
tr.failed {{ background: #fdd; }} tr.interrupted {{ background: #ffd; }}
img {{ max-width: 320px; }}
</style></head><body>
<h1>Batch report</h1>
<p>{len(rows)} videos: {n_done} done, {n_failed} failed; {_cell(os.fspath(out))}, {stamp}.
The thumbnails show the first frame with the masks and centerlines (white dot: head).
Open a run folder in napari (the plugin menu's Open tracking session) to review and correct it.</p>
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table></body></html>
"""
