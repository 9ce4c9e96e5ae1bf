"""``mcil report``: the versions' figures as a picture: accuracy-matrix heatmaps and forgetting over versions.

Built from ListVersions alone (each version carries its row of the accuracy matrix and its figures),
as one self-contained SVG (``--out report.svg``) or an HTML page around it with a table of every
figure (``--out report.html``). Written by hand, with no plotting library, so the CLI needs nothing
more than the daemon's client. Rows of a heatmap are versions (after the task each learned), columns
the tasks in learning order, cells the accuracy on that task's held-out examples (docs/metrics.md).
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from service._proto import mcil_pb2

PATHS = ("av", "visual", "audio")
PATH_TITLES = {"av": "image + sound (av)", "visual": "image only (visual)", "audio": "sound only (audio)"}
FIGURES = ("new_task_accuracy", "last_accuracy", "average_accuracy", "forgetting", "bwt", "fwt", "m1", "m2")
LINE_COLOURS = {"av": "#1f77b4", "visual": "#2ca02c", "audio": "#d62728"}
CELL, LEFT, TOP = 34, 70, 46


@dataclass(frozen=True)
class VersionRow:
    version: int
    classes: list[str]
    current: bool
    rows: dict[str, list[float]]  # path -> accuracy per task after this version
    figures: dict[str, dict[str, float]]  # path -> figure -> value


def version_rows(reply: "mcil_pb2.ListVersionsResponse") -> list[VersionRow]:
    out = []
    for v in reply.versions:
        rows = {p: list(v.metrics.paths[p].task_accuracy) for p in PATHS if p in v.metrics.paths}
        figures = {p: {f: float(getattr(v.metrics.paths[p], f)) for f in FIGURES}
                   for p in PATHS if p in v.metrics.paths}
        out.append(VersionRow(v.version, list(v.class_names), v.current, rows, figures))
    return out


def _colour(accuracy: float) -> str:
    """White (0 %) to green (100 %)."""
    t = max(0.0, min(1.0, accuracy / 100.0))
    r, g, b = (round(255 - t * (255 - c)) for c in (26, 152, 80))
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap(versions: Sequence[VersionRow], path: str, x: int, y: int) -> tuple[list[str], int, int]:
    """SVG elements of one path's accuracy matrix at (x, y); its width and height."""
    rows = [v for v in versions if v.rows.get(path)]
    tasks = max((len(v.rows[path]) for v in rows), default=0)
    width, height = LEFT + CELL * max(tasks, 1) + 10, TOP + CELL * max(len(rows), 1) + 10
    out = [f'<text x="{x}" y="{y + 16}" font-size="14" font-weight="bold">{html.escape(PATH_TITLES[path])}</text>',
           f'<text x="{x + LEFT}" y="{y + 36}" font-size="11">task (learning order) &#8594;</text>']
    for j in range(tasks):
        out.append(f'<text x="{x + LEFT + CELL * j + CELL / 2}" y="{y + TOP - 2}" font-size="11" '
                   f'text-anchor="middle">{j + 1}</text>')
    for i, v in enumerate(rows):
        cy = y + TOP + CELL * i
        out.append(f'<text x="{x + LEFT - 6}" y="{cy + CELL / 2 + 4}" font-size="11" text-anchor="end">'
                   f'v{v.version}{" *" if v.current else ""}</text>')
        for j, acc in enumerate(v.rows[path]):
            cx = x + LEFT + CELL * j
            out.append(f'<rect x="{cx}" y="{cy}" width="{CELL - 2}" height="{CELL - 2}" fill="{_colour(acc)}">'
                       f'<title>version {v.version}, task {j + 1}: {acc:.1f}%</title></rect>')
            out.append(f'<text x="{cx + CELL / 2 - 1}" y="{cy + CELL / 2 + 3}" font-size="10" '
                       f'text-anchor="middle">{acc:.0f}</text>')
    return out, width, height


def forgetting_chart(versions: Sequence[VersionRow], x: int, y: int, width: int = 420,
                     height: int = 200) -> list[str]:
    """SVG elements of forgetting (points) over versions, one line per path, at (x, y)."""
    plot_x, plot_y, plot_w, plot_h = x + 50, y + 30, width - 70, height - 70
    values = [v.figures[p]["forgetting"] for v in versions for p in PATHS if p in v.figures]
    top = max(10.0, *values) if values else 10.0
    out = [f'<text x="{x}" y="{y + 16}" font-size="14" font-weight="bold">Forgetting over versions '
           f'(points; lower is better)</text>',
           f'<line x1="{plot_x}" y1="{plot_y + plot_h}" x2="{plot_x + plot_w}" y2="{plot_y + plot_h}" stroke="#333"/>',
           f'<line x1="{plot_x}" y1="{plot_y}" x2="{plot_x}" y2="{plot_y + plot_h}" stroke="#333"/>']
    for k in range(5):
        value = top * k / 4
        ty = plot_y + plot_h - plot_h * k / 4
        out.append(f'<text x="{plot_x - 6}" y="{ty + 4}" font-size="10" text-anchor="end">{value:.0f}</text>')
    n = len(versions)

    def px(i: int) -> float:
        return plot_x + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    for i, v in enumerate(versions):
        out.append(f'<text x="{px(i)}" y="{plot_y + plot_h + 16}" font-size="10" text-anchor="middle">v{v.version}</text>')
    for k, path in enumerate(PATHS):
        points = [(px(i), plot_y + plot_h - plot_h * v.figures[path]["forgetting"] / top)
                  for i, v in enumerate(versions) if path in v.figures]
        if not points:
            continue
        colour = LINE_COLOURS[path]
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                   + " ".join(f"{a:.1f},{b:.1f}" for a, b in points) + '"/>')
        out += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{colour}"/>' for a, b in points]
        out.append(f'<text x="{plot_x + plot_w - 60}" y="{plot_y + 12 + 14 * k}" font-size="11" fill="{colour}">'
                   f'{path}</text>')
    return out


def render_svg(versions: Sequence[VersionRow]) -> str:
    """The whole picture: a heatmap per modality path side by side, the forgetting chart below."""
    parts: list[str] = []
    x, tallest = 10, 0
    for path in PATHS:
        elements, w, h = heatmap(versions, path, x, 10)
        parts += elements
        x += w + 20
        tallest = max(tallest, h)
    chart_y = 10 + tallest + 20
    parts += forgetting_chart(versions, 10, chart_y)
    width, height = max(x, 450), chart_y + 210
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n'
            + "\n".join(parts) + "\n</svg>\n")


def render_html(versions: Sequence[VersionRow], target: str) -> str:
    """A page with the picture and a table of every figure of every version."""
    header = "".join(f"<th>{html.escape(f)}</th>" for f in FIGURES)
    rows = []
    for v in versions:
        for path in PATHS:
            if path not in v.figures:
                continue
            cells = "".join(f"<td>{v.figures[path][f]:.3f}</td>" if f == "m2" else f"<td>{v.figures[path][f]:.1f}</td>"
                            for f in FIGURES)
            classes = html.escape(", ".join(v.classes))
            rows.append(f"<tr><td>v{v.version}{' (served)' if v.current else ''}</td><td>{classes}</td>"
                        f"<td>{path}</td>{cells}</tr>")
    made = time.strftime("%Y-%m-%d %H:%M:%S")
    return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>mcil report: {html.escape(target)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style></head><body>\n"
            f"<h1>Versions of the daemon at {html.escape(target)}</h1><p>Made {made}. Accuracy in percent on "
            "each task's held-out examples; forgetting in points (docs/metrics.md).</p>\n"
            + render_svg(versions)
            + f"<h2>Every figure</h2><table><tr><th>version</th><th>classes</th><th>path</th>{header}</tr>\n"
            + "\n".join(rows) + "\n</table></body></html>\n")
