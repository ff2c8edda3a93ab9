"""End to end: `--targets latent:0,1` trains the ViT on VAE latents and reports them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from structattn.data.synthetic import make_synthetic

torch.set_num_threads(1)


def test_surrogate_path_end_to_end(tmp_path):
    from structattn.pipeline import RunConfig, run_pipeline

    sample = make_synthetic(size=96, spacing=6, margin=8, seed=0)  # 169 points: small and fast
    cfg = RunConfig(source="synthetic", targets="latent:0,1", latent_kind="vae", latent_size=3, beta=1.0,
                    window=16, patch=4, dim=16, depth=1, heads=2, epochs=2, batch_size=64, blocks=4,
                    progress=False, seed=0, ensemble=1)
    res = run_pipeline(cfg, tmp_path / "run", sample=sample)
    out = res.out
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["targets"]) == {"latent0", "latent1"}
    assert all(np.isfinite(metrics["targets"][n]["r2"]) for n in ("latent0", "latent1"))
    conf = json.loads((out / "config.json").read_text())
    assert conf["targets"]["info"]["latent"]["fitted_on"] == "training split only"
    with np.load(out / "latent.npz") as f:
        assert f["latents"].shape == (sample.n_points, 3) and f["traversals"].shape[:2] == (3, 7)
    import h5py

    with h5py.File(out / "explanations.h5", "r") as f:
        assert set(f["attention"]) >= {"latent0", "latent1"}
    html = (out / "report.html").read_text()
    assert "Unsupervised loop latents" in html and "surrogate test R" in html


def test_latent_spec_errors_name_targets():
    from structattn.targets import resolve_targets

    sample = make_synthetic(size=64, spacing=8, margin=8, seed=0)
    with pytest.raises(ValueError, match="--targets: latent index 4"):
        resolve_targets(sample, "latent:4", latent_kind="pca", latent_size=3)
    t = resolve_targets(sample, "latent:0,2,V+", latent_kind="pca", latent_size=3)
    assert t.names == ("latent0", "latent2", "V+") and t.values.shape == (sample.n_points, 3)
