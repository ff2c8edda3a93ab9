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
from .summary import unlearned_targets  # noqa: E402

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

    @cached_property
    def loop_analysis(self):
        """The batched loop fit of the sample's loops (None without loops), computed once for
        every section that shows loops (deterministic: same seed, one thread)."""
        if self.sample.loops is None:
            return None
        from ..targets import _loop_analysis

        return _loop_analysis(self.sample)


def fig_to_html(fig, *, alt: str = "") -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"/>'


def table_html(header: list[str], rows: list[list], *, row_classes: list[str | None] | None = None) -> str:
    """An HTML table; every cell is escaped, floats shown to 3 significant digits, None as n/a.

    Args:
        header: column titles.
        rows: one list of cell values per row.
        row_classes: optional CSS class per row (None: none), e.g. ``"unlearned"``.
    """
    if row_classes is not None and len(row_classes) != len(rows):
        raise ValueError(f"row_classes: expected one entry per row ({len(rows)}), got {len(row_classes)}")

    def cell(v):
        if v is None:
            return "n/a"
        if isinstance(v, float):
            return f"{v:.3g}"
        return html.escape(str(v))

    def tr(k):
        c = None if row_classes is None else row_classes[k]
        return f"<tr class='{html.escape(c)}'>" if c else "<tr>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(tr(k) + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for k, r in enumerate(rows))
    return f"<table><tr>{head}</tr>{body}</table>"


def not_learned_sentence(target: str, verdict: str) -> str:
    """Escaped HTML: "<target> was not learned: <why>. Its explanations ... are not evidence."."""
    why = str(verdict).strip().rstrip(".")
    if why.lower().startswith("not learned"):  # verdicts read "not learned: ..."; say it once
        why = why[len("not learned"):].lstrip(" :;,-")
    why = why or "the ViT did no better than its baselines"
    # "not learned beyond the baselines" (the ViT predicts, but a simpler model does as well) is not
    # "does not predict": say which, the reader's conclusion differs
    what = "a simpler baseline predicts as well or better" if "baseline" in why else "does not predict it"
    return (f"<b>{html.escape(str(target))} was not learned</b>: {html.escape(why)}. Its explanations and domain "
            f"statistics below describe a model that {what}; they are not evidence of what drives {html.escape(str(target))}.")


def not_learned_warning(target: str, verdict: str) -> str:
    """A warning box (``<div class='warn'>``) for one target whose ``learned`` is false."""
    return f"<div class='warn'>{not_learned_sentence(target, verdict)}</div>"


def not_learned_summary(unlearned: dict[str, str]) -> str:
    """The box at the top of the report listing every unlearned target ('' when none)."""
    if not unlearned:
        return ""
    items = "".join(f"<li>{not_learned_sentence(t, v)}</li>" for t, v in unlearned.items())
    return (f"<div class='warn'><b>Not learned on this run: {html.escape(', '.join(unlearned))}.</b> "
            f"The ViT did not beat its baselines on {'this target' if len(unlearned) == 1 else 'these targets'} "
            f"(see \"Accuracy on held-out spatial blocks\").<ul>{items}</ul></div>")


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
