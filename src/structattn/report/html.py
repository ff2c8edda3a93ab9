"""The self-contained HTML report: sections assembled from a run folder.

Each section is a function ``(ctx: ReportContext) -> str | None`` (an HTML fragment, or
None to skip) registered with `structattn.report.base.register_section`; figures are embedded
as base64 PNG so the single file can be mailed around. Modules that add analyses (loops,
explanations, latents, domains) register their own sections; this module imports them and
puts them in order.
"""

from __future__ import annotations

import html
from pathlib import Path

from ..runfolder import RunFolder, atomic_write_bytes
from .base import _SECTIONS, ReportContext, not_learned_summary
from .summary import unlearned_targets

_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}img{max-width:100%}.note{color:#555;font-size:.9em}
.warn{background:#fff3cd;border:2px solid #d9822b;border-left:8px solid #c0392b;padding:.6em 1em;margin:.8em 0;color:#5a2d00}
.warn ul{margin:.4em 0 0 0}tr.unlearned td{background:#fdecea;color:#7a1f1f}
.best{background:#e8f5e9;border-left:6px solid #2e7d32;padding:.4em .8em;margin:.6em 0}"""


class _PartialRun(RunFolder):
    """A RunFolder over a staging folder whose report is being written (no completeness check)."""

    def __init__(self, path) -> None:  # noqa: D107
        self.path = Path(path)


def render_report(run_dir: str | Path, *, sample=None) -> str:
    """The report HTML for a run folder (or a staging folder during a run)."""
    from . import sections  # noqa: F401  (registers the core sections)
    from . import registration  # noqa: F401  (issue 14: points on the image, co-registration)
    from . import explain_section  # noqa: F401  (issue 4: explanation methods compared)
    from . import loop_section  # noqa: F401  (loops: descriptor maps, fit quality, example fits)
    from . import explorer  # noqa: F401  (issue 17: the interactive explorer, plotly inlined)
    from . import domain_section  # noqa: F401  (registers "Domain patterns"; skips runs without it)
    from . import latent_section  # noqa: F401  (latents: maps, traversals, surrogate R²)
    from . import uncertainty_section  # noqa: F401  (issue 15: ensemble calibration, reliability plot)

    ctx = ReportContext(run=_PartialRun(run_dir), sample_override=sample)
    cfg = ctx.run.config
    parts = [f"<h1>structattn report</h1><p class='note'>data: {html.escape(str(cfg['data']['source']))} · "
             f"created {html.escape(cfg.get('created', ''))} · structattn {html.escape(cfg['versions']['structattn'])}</p>",
             not_learned_summary(unlearned_targets(ctx.run.metrics))]  # issue 12: first thing a reader sees
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
