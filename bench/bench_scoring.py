"""Explanation scoring: the vectorised rank statistics and shared deletion forwards against
their references, side by side in one run (same inputs, results checked equal).

* pixel AUROC of M maps against causal masks: ``row_auroc`` vs one
  ``sklearn.metrics.roc_auc_score`` call per map (what `ground_truth_scores` did before);
* token Spearman of two methods' maps: ``row_spearman`` vs one ``scipy.stats.spearmanr`` per map;
* deletion/insertion curves of one target-free map for K targets: ``deletion_insertion_targets``
  (one set of forwards) vs K calls of ``deletion_insertion``.

    python bench/bench_scoring.py            # prints times and ratios
"""

from __future__ import annotations

import time

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from structattn.evaluate._tokens import row_auroc, row_spearman
from structattn.evaluate.faithfulness import deletion_insertion, deletion_insertion_targets
from structattn.nets.vit import ViTConfig, ViTRegressor


def timed(fn, repeat=3):
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(m: int = 135, w: int = 32, k: int = 4) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    maps = rng.random((m, w * w))
    masks = rng.random((m, w * w)) < 0.2
    t_ref, ref = timed(lambda: np.array([roc_auc_score(y, s) for y, s in zip(masks, maps)]))
    t_new, new = timed(lambda: row_auroc(maps, masks))
    assert np.allclose(ref, new, atol=1e-12)
    print(f"pixel AUROC, {m} maps of {w}x{w}: sklearn per map {t_ref * 1e3:.1f} ms, row_auroc {t_new * 1e3:.2f} ms "
          f"-> {t_ref / t_new:.0f}x")
    other = maps + 0.3 * rng.random(maps.shape)
    t_ref, ref = timed(lambda: np.array([spearmanr(a, b).statistic for a, b in zip(maps, other)]))
    t_new, new = timed(lambda: row_spearman(maps, other))
    assert np.allclose(ref, new, atol=1e-12)
    print(f"Spearman, {m} map pairs: scipy per pair {t_ref * 1e3:.1f} ms, row_spearman {t_new * 1e3:.2f} ms "
          f"-> {t_ref / t_new:.0f}x")
    torch.set_num_threads(1)
    model = ViTRegressor(ViTConfig(in_channels=3, window=w, patch=4, dim=48, depth=2, heads=4, n_outputs=k)).eval()
    x = torch.randn(m, 3, w, w)
    amap = torch.rand(m, w, w)
    t_ref, ref = timed(lambda: [deletion_insertion(model, x, amap, target=t) for t in range(k)], repeat=1)
    t_new, new = timed(lambda: deletion_insertion_targets(model, x, amap, targets=range(k)), repeat=1)
    assert all(np.allclose(a["deletion"], b["deletion"], atol=1e-5) for a, b in zip(ref, new))
    print(f"deletion/insertion (+ random order), one map, {k} targets, {m} points, 1 thread: "
          f"per target {t_ref:.2f} s, shared {t_new:.2f} s -> {t_ref / t_new:.1f}x")


if __name__ == "__main__":
    main()
