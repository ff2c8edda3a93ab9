"""The interactive explorer of report.html: click a spectroscopy point, see why it was predicted.

One section of the self-contained report. Plotly (plotly.js inlined once, no network at view
time) draws the linked maps (structure with the points coloured by a chosen quantity |
measured property | prediction error | uncertainty when the run has one, zoom shared), the
measured and fitted loop of the selected point and its prediction against the measurement;
a small script (`explorer.js`, beside this file) draws the selected point's patch and every
method's map for every target on canvases and sorts the score table.

Everything the page needs is embedded once as JSON with compact base64 arrays: the padded
structure channels as uint8 (patches are cut from it in the browser, the same crop as
`extract_patches`), targets and predictions as float32, and the maps quantised to uint8 per
map (value / max|value| · 127 + 128, with the float32 scale kept), at token resolution
when a map is constant over each token (every method except pixel-resolution ones), once
when it is the same for every point (the centre prior). For a 2025-point run with seven
targets and five maps each the file stays near 13 MB (docs/explanations.md).
"""

from __future__ import annotations

import base64
import contextlib
import json
from importlib import resources

import numpy as np

from ..evaluate.suite import TABLE_COLUMNS, comparison_rows
from .base import register_section

MAX_MAP_BYTES = 12_000_000  # base64 characters of all maps; beyond, pixel-resolution maps are coarsened 2x, 4x, ...
SPLIT_NAMES = {0: "train", 1: "validation", 2: "test", -1: "unused"}


def _b64(a: np.ndarray, dtype: str) -> str:
    """Little-endian bytes of `a` as `dtype`, base64 (JS: new Float32Array / Uint8Array on them)."""
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()).decode()


def _scaled_like(padded: np.ndarray, image: np.ndarray) -> np.ndarray:
    """`padded` as uint8 on the 1st-99th percentile range of `image` (the unpadded channel)."""
    finite = image[np.isfinite(image)]
    lo, hi = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
    hi = hi if hi > lo else lo + 1.0
    return np.clip(np.rint((np.nan_to_num(padded, nan=lo) - lo) / (hi - lo) * 255), 0, 255).astype(np.uint8)


def _lut(name: str) -> str:
    """A matplotlib colormap as 256 RGB triples, base64 uint8."""
    import matplotlib

    rgb = matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3]
    return _b64(np.rint(rgb * 255), "u1")


def quantise_maps(maps: np.ndarray, *, patch: int) -> dict:
    """(M, w, w) float maps -> the explorer's compact form.

    Returns a dict: ``res`` (side of the stored grid: w // patch when every map is constant
    over each token, w // f for constant f x f blocks with f = patch/2, patch/4, ..., else w), ``shared`` (True when every point has the same map, stored
    once), ``data`` (base64 uint8, ``round(a / max|a| · 127) + 128`` per map) and ``scale``
    (base64 float32 max|a| per stored map).

    Example:
        >>> q = quantise_maps(np.ones((3, 8, 8)), patch=4)
        >>> q["res"], q["shared"], len(base64.b64decode(q["data"]))
        (2, True, 4)
    """
    a = np.asarray(maps, dtype=np.float32)
    if a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape[1] % patch:
        raise ValueError(f"maps: expected (M, w, w) with w a multiple of patch={patch}, got {a.shape}")
    f = patch
    while f > 1:  # the coarsest block size the maps are constant on (tokens, or blocks of coarsened maps)
        if a.shape[-1] % f == 0 and np.array_equal(a, a[:, ::f, ::f].repeat(f, 1).repeat(f, 2)):
            a = a[:, ::f, ::f]
            break
        f //= 2
    shared = bool(len(a) > 1 and (a == a[:1]).all())
    if shared:
        a = a[:1]
    scale = np.abs(a).reshape(len(a), -1).max(1)
    q = np.rint(a / np.where(scale > 0, scale, 1.0)[:, None, None] * 127) + 128
    return {"res": int(a.shape[-1]), "shared": shared, "data": _b64(np.clip(q, 0, 255), "u1"),
            "scale": _b64(scale, "f4"), "signed": bool((a < 0).any())}


def _downsample(a: np.ndarray, factor: int) -> np.ndarray:
    """(M, w, w) -> (M, w, w) with each ``factor x factor`` block replaced by its mean."""
    m, w, _ = a.shape
    b = a.reshape(m, w // factor, factor, w // factor, factor).mean((2, 4))
    return b.repeat(factor, 1).repeat(factor, 2)


def _maps_payload(idx: np.ndarray, maps: dict, *, n_points: int, patch: int, methods: list[str],
                  order: list[str] = ()) -> dict:
    index = np.full(n_points, -1, np.int32)
    index[np.asarray(idx, int)] = np.arange(len(idx))
    present = {t for m in methods for t in maps[m]}  # columns of the maps grid: the run's target order
    targets = [t for t in order if t in present] + sorted(present - set(order))
    raw = {m: maps[m] for m in methods}  # arrays or h5py datasets: one (M, w, w) stack in memory at a time
    out = {m: {t: quantise_maps(np.asarray(a, np.float32), patch=patch) for t, a in per.items()}
           for m, per in raw.items()}
    note, factor = "", 1
    size = lambda: sum(len(q["data"]) for per in out.values() for q in per.values())  # noqa: E731
    while size() > MAX_MAP_BYTES and factor < patch:  # pixel-resolution maps of many points: coarsen them
        factor *= 2
        for m, per in raw.items():
            for t, a in per.items():
                q = out[m][t]
                if not q["shared"] and q["res"] > a.shape[-1] // factor:
                    out[m][t] = quantise_maps(_downsample(np.asarray(a, np.float32), factor), patch=patch)
        note = (f"pixel-resolution maps are shown averaged over {factor} x {factor} pixel blocks to keep the file "
                "small; explanations.h5 has them at full resolution")
    for m in methods:  # one sign convention per method, whatever the target
        signed = any(q["signed"] for q in out[m].values())
        for q in out[m].values():
            q["signed"] = signed
    return {"methods": methods, "targets": targets, "index": _b64(index, "i4"), "maps": out, "note": note}


def _loops_payload(ctx, n_points: int) -> dict | None:
    s = ctx.sample
    if s.loops is None or s.voltage is None:
        return None
    loops = np.asarray(s.loops, np.float32)
    if loops.shape[0] != n_points:
        return None
    out = {"voltage": np.asarray(s.voltage, float).round(6).tolist(), "measured": _b64(loops, "f4"),
           "fitted": None, "note": ""}
    try:
        res = ctx.loop_analysis
    except Exception as exc:  # noqa: BLE001 - the explorer still shows the measured loops
        out["note"] = f"no fitted loops: the loop fit failed ({type(exc).__name__})"
        return out
    if res is not None and res.fitted is not None and np.shape(res.fitted) == loops.shape:
        out["fitted"] = _b64(res.fitted, "f4")
    else:
        out["note"] = "this run has no loop fit: measured loops only"
    return out


def _score_rows(metrics: dict) -> tuple[list[str], list[list]]:
    scores = (metrics.get("explanations") or {}).get("scores") or {}
    header = ["target", "method"] + [label for _, label in TABLE_COLUMNS]
    rows = []
    for r in comparison_rows(scores):
        vals = [r.get(k) for k, _ in TABLE_COLUMNS]
        rows.append([str(r["target"]), str(r["method"])]
                    + [None if v is None or not np.isfinite(v) else float(f"{v:.4g}") for v in vals])
    return header, rows


def explorer_payload(ctx) -> dict:
    """Everything the explorer shows, as a JSON-ready dict (arrays base64-encoded)."""
    run, s = ctx.run, ctx.sample
    p = run.predictions
    cfg = run.config
    window = int(cfg["run"]["window"])
    patch = int(cfg["run"].get("patch") or cfg["model"]["patch"])
    pad = cfg["run"].get("pad_mode", "reflect")
    pad = "edge" if pad == "exclude" else pad
    half = window // 2
    img = np.asarray(s.image, float)  # (C, H, W)
    # the crop of `extract_patches`: pad by window//2 with the run's mode, then padded[r : r+w, c : c+w]
    padded = np.pad(img, ((0, 0), (half, window - half), (half, window - half)), mode=pad)
    n = len(p["positions"])
    names = [str(x) for x in p["target_names"]]
    opened = contextlib.ExitStack()  # maps stay in the file: read one (method, target) at a time
    try:
        idx, maps = opened.enter_context(run.open_explanations())
    except (OSError, KeyError):
        idx, maps = np.zeros(0, np.int64), {}
    metrics = run.metrics
    listed = list((metrics.get("explanations") or {}).get("methods", []))  # the run's order first
    methods = list(dict.fromkeys(m for m in listed + list(maps) if m in maps and m != "centre"))
    methods += ["centre"] if "centre" in maps else []  # the prior last: a reference, not a method
    header, rows = _score_rows(metrics)
    payload = {
        "n": n,
        "positions": _b64(p["positions"], "f4"),
        "split": _b64(p["split"], "i1"),
        "splitNames": {str(k): v for k, v in SPLIT_NAMES.items()},
        "targets": names,
        "units": [str(u) for u in p["units"]],
        "yTrue": _b64(p["y_true"], "f4"),
        "yPred": _b64(p["y_pred"], "f4"),
        "yStd": _b64(p["y_std"], "f4") if "y_std" in p else None,
        # each channel scaled on its own (1st-99th percentile of the image, padding excluded)
        "image": {"h": int(img.shape[1]), "w": int(img.shape[2]), "channels": [str(c) for c in s.channels],
                  "half": half, "ph": int(padded.shape[1]), "pw": int(padded.shape[2]),
                  "padded": [_b64(_scaled_like(p, c), "u1") for p, c in zip(padded, img)]},
        "window": window,
        "patch": patch,
        "maps": None,
        "loops": _loops_payload(ctx, n),
        "scores": {"header": header, "rows": rows},
        "luts": {"seq": _lut("inferno"), "div": _lut("RdBu_r")},
    }
    with opened:
        if maps and len(idx):
            payload["maps"] = _maps_payload(idx, maps, n_points=n, patch=patch, methods=methods, order=names)
    return payload


def _figures(payload: dict, image_u8: np.ndarray) -> dict:
    """Initial Plotly figures (explorer.js fills in the points' coordinates and colours before the
    first draw; the selected point is a layout shape, so selecting redraws no trace)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    panels = ["structure", "measured", "prediction error"] + (["uncertainty"] if payload["yStd"] else [])
    fig = make_subplots(rows=1, cols=len(panels), shared_xaxes="all", shared_yaxes="all",
                        subplot_titles=panels, horizontal_spacing=0.06)
    fig.add_trace(go.Heatmap(z=image_u8, colorscale="gray", showscale=False, hoverinfo="skip", name="image"), 1, 1)
    for j in range(len(panels)):
        right = fig.layout[f"xaxis{j + 1 if j else ''}"].domain[1]  # colour bar just right of its panel
        fig.add_trace(go.Scatter(x=[], y=[], mode="markers", name=panels[j], hovertemplate="%{text}<extra></extra>",
                                 marker={"size": 6, "colorscale": "Viridis", "showscale": True,
                                         "colorbar": {"thickness": 8, "len": 0.8, "x": right + 0.003,
                                                      "xpad": 0}}),
                      1, j + 1)
    fig.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain", showgrid=False, zeroline=False)
    fig.update_xaxes(constrain="domain", showgrid=False, zeroline=False)
    fig.update_layout(height=430, margin={"l": 30, "r": 30, "t": 30, "b": 30}, showlegend=False,
                      hovermode="closest", clickmode="event", dragmode="zoom", plot_bgcolor="white")
    loop = go.Figure(layout={"height": 260, "margin": {"l": 50, "r": 10, "t": 30, "b": 40}, "title": {"text": "loop"},
                             "xaxis": {"title": {"text": "voltage"}}, "yaxis": {"title": {"text": "response"}},
                             "legend": {"orientation": "h", "y": -0.3}})
    loop.add_trace(go.Scatter(x=[], y=[], mode="lines+markers", name="measured", marker={"size": 3}))
    loop.add_trace(go.Scatter(x=[], y=[], mode="lines", name="fitted", line={"color": "#e31a1c"}))
    parity = go.Figure(layout={"height": 260, "margin": {"l": 50, "r": 10, "t": 30, "b": 40}, "showlegend": False,
                               "title": {"text": "predicted vs measured"}, "hovermode": "closest",
                               "xaxis": {"title": {"text": "measured"}}, "yaxis": {"title": {"text": "predicted"}}})
    parity.add_trace(go.Scatter(x=[], y=[], mode="markers", name="points", hovertemplate="%{text}<extra></extra>",
                                marker={"size": 4, "color": [], "opacity": 0.6}))
    parity.add_trace(go.Scatter(x=[], y=[], mode="lines", name="identity", line={"color": "black", "dash": "dash"},
                                hoverinfo="skip"))
    return {"maps": json.loads(fig.to_json()), "loop": json.loads(loop.to_json()),
            "parity": json.loads(parity.to_json()), "panels": panels}


def _script_json(obj) -> str:
    """JSON safe inside <script>: <, > and & as \\u escapes, so no name from the data (a target
    called "<img ...>") can close the tag or appear as markup; JSON.parse restores them."""
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


_CSS = """#sa-explorer .row{display:flex;gap:1.2em;flex-wrap:wrap;align-items:flex-start}
#sa-explorer select{margin:0 .6em 0 .2em}#sa-explorer canvas{image-rendering:pixelated;border:1px solid #ccc}
#sa-point-info table{font-size:.85em}#sa-maps-grid td,#sa-maps-grid th{padding:2px;font-size:.75em;text-align:center}
#sa-scores th{cursor:pointer;user-select:none}#sa-scores th.sorted-asc:after{content:" ▲"}
#sa-scores th.sorted-desc:after{content:" ▼"}#sa-scores{font-size:.85em}"""

_HELP = ("<p class='note'>Click a point on any of the linked maps (zoom and pan are shared) to see its patch, every "
         "method's map for every target, its loop and its prediction against the measurement. Maps: signed methods in "
         "blue (lowers the target) to red (raises it, square-root scale), non-negative ones in inferno; each map on its "
         "own scale; "
         "+ marks the spectroscopy point. The score table sorts by any column (click its header).</p>")


@register_section(15, "Explore the points")
def explorer_section(ctx) -> str | None:
    try:
        import plotly.offline
    except ImportError:  # a core dependency; say so rather than break the report
        return "<p class='note'>The interactive explorer needs plotly (pip install plotly).</p>"
    payload = explorer_payload(ctx)
    first = np.asarray(ctx.sample.image[0], float)
    figs = _figures(payload, _scaled_like(first, first))
    js = resources.files(__package__).joinpath("explorer.js").read_text(encoding="utf-8")
    controls = ("<div class='row'><label>target<select id='sa-target'></select></label>"
                "<label>channel<select id='sa-channel'></select></label>"
                "<label>colour the structure's points by<select id='sa-colour'>"
                "<option value='measured'>measured</option><option value='predicted'>prediction</option>"
                "<option value='error'>error (prediction − measured)</option><option value='split'>split</option>"
                "</select></label></div>")
    body = (
        f"<style>{_CSS}</style><div id='sa-explorer' data-ready='0'>{_HELP}{controls}"
        "<div id='sa-linked'></div>"
        "<div class='row'><div><h3 id='sa-point-title'>no point selected</h3><canvas id='sa-patch' width='160' "
        "height='160' data-point='-1'></canvas><div id='sa-point-info'></div></div>"
        "<div style='flex:1;min-width:420px'><h3>maps of this point</h3><div id='sa-maps-note' class='note'></div>"
        "<div id='sa-maps-grid' data-point='-1'></div></div></div>"
        "<div class='row'><div id='sa-loop' style='width:46%;min-width:320px'></div>"
        "<div id='sa-parity' style='width:46%;min-width:320px'></div></div>"
        "<div id='sa-loop-note' class='note'></div>"
        "<h3>Scores of every method (click a header to sort)</h3><div id='sa-scores-wrap'></div></div>"
        f"<script>{plotly.offline.get_plotlyjs()}</script>"
        f"<script type='application/json' id='sa-data'>{_script_json(payload)}</script>"
        f"<script type='application/json' id='sa-figs'>{_script_json(figs)}</script>"
        f"<script>{js}</script>"
    )
    return body


__all__ = ["explorer_payload", "explorer_section", "quantise_maps"]
