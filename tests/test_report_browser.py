"""report.html in a real browser: headless Chromium opens the report of a small run, a mouse
click on a point updates the patch and map panels, the score table sorts, and the console
stays free of errors. Skipped (with the reason) where chromium/chromedriver are missing;
.ci/run installs Debian's."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from browser import click_point, console_errors, find_browser, open_chromium, open_report, wait_for
from structattn.pipeline import RunConfig, run_pipeline
from structattn.report.explorer import quantise_maps
from structattn.runfolder import RunFolder

_, _, WHY = find_browser()


@pytest.fixture(scope="module")
def explored_run(tmp_path_factory):
    """A quick run on the synthetic sample (it has loops, so fitted loops are shown), 12 test
    points explained with three methods."""
    out = tmp_path_factory.mktemp("runs") / "explorer"
    cfg = RunConfig(source="synthetic:seed=0,size=96,spacing=8", window=16, patch=4, dim=16, depth=1, heads=2,
                    epochs=1, blocks=3, methods=("attention", "gradattn", "attnlrp"), points="12", progress=False,
                    domains=False, cnn_baseline=False)
    run_pipeline(cfg, out)
    return out


def _payload(html: str) -> dict:
    start = html.index("<script type='application/json' id='sa-data'>") + len("<script type='application/json' id='sa-data'>")
    return json.loads(html[start: html.index("</script>", start)])


def test_report_embeds_the_explorer_once_and_offline(explored_run):
    html = (explored_run / "report.html").read_text()
    assert html.count("id='sa-explorer'") == 1
    # plotly.js inlined, nothing loaded from elsewhere (the browser test also checks no request is made)
    assert "<script src=" not in html and "<link " not in html
    d = _payload(html)
    run = RunFolder(explored_run)
    idx, maps = run.explanations()
    assert d["n"] == len(run.predictions["positions"]) and d["targets"] == list(run.predictions["target_names"])
    assert d["maps"]["methods"] == ["attention", "gradattn", "attnlrp", "centre"]
    index = np.frombuffer(base64.b64decode(d["maps"]["index"]), "<i4")
    np.testing.assert_array_equal(np.flatnonzero(index >= 0), np.sort(idx))
    assert d["maps"]["maps"]["centre"]["V+"]["shared"] and not d["maps"]["maps"]["attnlrp"]["V+"]["shared"]
    assert d["maps"]["maps"]["attnlrp"]["V+"]["signed"] and not d["maps"]["maps"]["attention"]["V+"]["signed"]
    assert d["loops"]["fitted"] is not None  # the synthetic sample has loops: the fit is shown


def test_quantised_maps_round_trip_within_one_level():
    rng = np.random.default_rng(0)
    tok = rng.normal(size=(5, 4, 4))
    a = tok.repeat(4, 1).repeat(4, 2)  # token-constant, as most methods
    q = quantise_maps(a, patch=4)
    assert q["res"] == 4 and not q["shared"] and q["signed"]
    u = np.frombuffer(base64.b64decode(q["data"]), np.uint8).reshape(5, 4, 4).astype(float)
    s = np.frombuffer(base64.b64decode(q["scale"]), "<f4")
    np.testing.assert_allclose((u - 128) / 127 * s[:, None, None], tok, atol=float(s.max()) / 127)
    pix = rng.normal(size=(2, 8, 8))  # not token-constant: kept at pixel resolution
    assert quantise_maps(pix, patch=4)["res"] == 8
    with pytest.raises(ValueError, match="maps"):
        quantise_maps(np.zeros((2, 6, 6)), patch=4)


@pytest.mark.skipif(bool(WHY), reason=WHY or "browser available")
def test_click_a_point_updates_patch_and_maps_in_chromium(explored_run, tmp_path):
    drv = open_chromium()
    try:
        seconds = open_report(drv, explored_run / "report.html")
        assert seconds < 30.0, seconds  # a pathological-slowness guard on a loaded CI machine; docs give the quiet figure
        first = int(drv.execute_script("return Number(document.getElementById('sa-explorer').dataset.selected)"))
        grid = "document.getElementById('sa-maps-grid')"
        cells = drv.execute_script(f"return {grid}.querySelectorAll('canvas').length")
        d = drv.execute_script("return window.structattnExplorer.data")
        assert cells == len(d["maps"]["methods"]) * len(d["maps"]["targets"])
        patch_before = drv.execute_script("return document.getElementById('sa-patch').toDataURL()")
        map_js = f"return {grid}.querySelector('canvas[data-method=\"attnlrp\"][data-target=\"V+\"]').toDataURL()"
        map_before = drv.execute_script(map_js)
        # another explained point, far from the first so that the click cannot land on it
        index = np.frombuffer(base64.b64decode(d["maps"]["index"]), "<i4")
        pos = np.frombuffer(base64.b64decode(d["positions"]), "<f4").reshape(-1, 2)
        explained = np.flatnonzero(index >= 0)
        target = int(explained[np.argmax(np.abs(pos[explained] - pos[first]).sum(1))])
        click_point(drv, target)
        wait_for(drv, f"document.getElementById('sa-patch').dataset.point === '{target}'", timeout=10)
        assert drv.execute_script(f"return {grid}.dataset.point") == str(target)
        patch_after = drv.execute_script("return document.getElementById('sa-patch').toDataURL()")
        assert patch_after != patch_before
        assert drv.execute_script(map_js) != map_before
        assert f"point {target} " in drv.find_element("id", "sa-point-title").text
        # another structure channel: the patch is redrawn from it, the point stays selected
        drv.execute_script("const s = document.getElementById('sa-channel'); s.value = '1'; "
                           "s.dispatchEvent(new Event('change'));")
        patch_ch1 = drv.execute_script("return document.getElementById('sa-patch').toDataURL()")
        assert patch_ch1 != patch_after and drv.execute_script(f"return {grid}.dataset.point") == str(target)
        # the loop panel now shows this point's measured and fitted loop
        loop_y = drv.execute_script("return document.getElementById('sa-loop').data.map(t => t.y.length)")
        assert loop_y[0] > 0 and loop_y[1] == loop_y[0]
        # the score table sorts by a numeric column, descending on a second click
        ths = drv.find_elements("css selector", "#sa-scores th")
        col = [t.text for t in ths].index("GT AUROC")
        ths[col].click()
        ths[col].click()
        vals = drv.execute_script(f"return Array.from(document.querySelectorAll('#sa-scores tbody tr'))"
                                  f".map(r => r.children[{col}].dataset.v).filter(v => v !== '').map(Number)")
        assert len(vals) > 3 and vals == sorted(vals, reverse=True)
        drv.save_screenshot(str(tmp_path / "explorer.png"))
        fetched = drv.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert not [u for u in fetched if not u.startswith(("data:", "blob:"))], fetched  # opens offline
        assert console_errors(drv) == []
    finally:
        drv.quit()
