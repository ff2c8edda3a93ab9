"""The self-contained HTML report: sections assembled from a run folder.

Each section is a function ``(ctx: ReportContext) -> str | None`` (an HTML fragment, or
None to skip) registered with `register_section`; figures are embedded as base64 PNG so
the single file can be mailed around. Modules that add analyses (loops, explanations,
latents, domains) register their own sections.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..runfolder import RunFolder, atomic_write_bytes  # noqa: E402

_SECTIONS: list[tuple[int, str, Callable]] = []


def register_section(order: int, title: str):
    """Decorator: add a report section; lower `order` comes first."""

    def deco(fn: Callable):
        _SECTIONS[:] = [s for s in _SECTIONS if s[1] != title]
        _SECTIONS.append((order, title, fn))
        _SECTIONS.sort(key=lambda s: s[0])
        return fn

    return deco


@dataclass
class ReportContext:
    """What a section may read: the run folder and the sample it was trained on."""

    run: RunFolder
    sample_override: object = None

    @cached_property
    def sample(self):
        return self.sample_override if self.sample_override is not None else self.run.sample


def fig_to_html(fig, *, alt: str = "") -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"/>'


def table_html(header: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}img{max-width:100%}.note{color:#555;font-size:.9em}"""


class _PartialRun(RunFolder):
    """A RunFolder over a staging folder whose report is being written (no completeness check)."""

    def __init__(self, path) -> None:  # noqa: D107
        self.path = Path(path)


def render_report(run_dir: str | Path, *, sample=None) -> str:
    """The report HTML for a run folder (or a staging folder during a run)."""
    from . import sections  # noqa: F401  (registers the core sections)
    from . import explain_section  # noqa: F401  (issue 4: explanation methods compared)
    from . import loop_section  # noqa: F401  (loops: descriptor maps, fit quality, example fits)
    from . import domain_section  # noqa: F401  (registers "Domain patterns"; skips runs without it)
    from . import latent_section  # noqa: F401  (latents: maps, traversals, surrogate R²)

    ctx = ReportContext(run=_PartialRun(run_dir), sample_override=sample)
    cfg = ctx.run.config
    parts = [f"<h1>structattn report</h1><p class='note'>data: {html.escape(str(cfg['data']['source']))} · "
             f"created {html.escape(cfg.get('created', ''))} · structattn {html.escape(cfg['versions']['structattn'])}</p>"]
    for _, title, fn in _SECTIONS:
        body = fn(ctx)
        if body:
            parts.append(f"<h2>{html.escape(title)}</h2>{body}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>structattn report</title><style>{_CSS}</style></head><body>{''.join(parts)}</body></html>"


def write_report(run_dir: str | Path, *, sample=None) -> Path:
    """Render and atomically write ``report.html`` into `run_dir`."""
    path = Path(run_dir) / "report.html"
    atomic_write_bytes(path, render_report(run_dir, sample=sample).encode())
    return path
