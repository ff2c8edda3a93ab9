"""What every report section builds on: the section registry, the context and the HTML helpers.

A section is a function ``(ctx: ReportContext) -> str | None`` (an HTML fragment, or None to
skip) registered with `register_section`; `structattn.report.html` imports the section modules
and assembles them in order. Figures are embedded as base64 PNG so the single file can be
mailed around.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..runfolder import RunFolder  # noqa: E402

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
