"""The whole run: data -> targets -> patches -> split -> model -> explanations -> run folder.

`run_pipeline` is what ``structattn run`` and ``structattn demo`` call. It prints nothing;
progress goes to the optional ``log`` callable (the CLI passes rich's console).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .data.io import load_sample, sample_checksum
from .data.patches import PAD_MODES, extract_patches, patch_inside
from .data.sample import Sample
from .explain import EXPLAINERS
from .nets.vit import ViTConfig
from .runfolder import RunFolder, atomic_write_json, staged_run_folder, write_explanations
from .targets import TargetSet, resolve_targets
from .train.metrics import regression_scores
from .train.split import spatial_block_split
from .train.trainer import TrainConfig, TrainedModel, fit_vit


@dataclass
class RunConfig:
    """Every option of a run, resolved and saved to ``config.json``."""

    source: str = "synthetic"  # data: an .npz bundle path or "synthetic[:seed=N]"
    targets: str | None = None  # --targets spec; None = the data's given targets
    structure_from: str = "response@0V"  # BEPS .h5 input: structure image source (loops: response@0V or a descriptor)
    window: int = 32  # patch side in pixels around each point
    patch: int = 4  # token side in pixels (window must be a multiple)
    pad_mode: str = "reflect"  # points near the edge: np.pad mode, or "exclude" to drop them
    dim: int = 64  # transformer width
    depth: int = 4  # transformer blocks
    heads: int = 4  # attention heads
    epochs: int = 80  # training epochs (upper bound; early stopping)
    batch_size: int = 64  # training batch size
    lr: float = 3e-3  # peak learning rate (3e-3 trains this small ViT reliably; 1e-3 can stall)
    patience: int = 15  # early-stopping patience in epochs
    augment: bool = True  # random flips / 90-degree turns of training patches
    blocks: int = 4  # spatial split: blocks per image side
    val_fraction: float = 0.15  # share of blocks for validation
    test_fraction: float = 0.2  # share of blocks for test
    buffer: int | None = None  # px around val/test blocks without training points; None = window // 4
    methods: tuple[str, ...] = ("attention", "rollout", "gradattn")  # fast methods by default; shap/ig/occlusion via --methods or `structattn explain`
    points: str = "test"  # which points to explain: "test", "all" or a number of test points
    gallery: int = 8  # test points shown with overlays in the report
    seed: int = 0  # seeds split, weights, batches, augmentation and explanations
    latent_kind: str = "vae"  # --targets latent: loop model ("vae", "pca", "nmf")
    latent_size: int = 3  # --targets latent: number of latents
    beta: float = 1.0  # --targets latent: KL weight of the VAE
    device: str = "cpu"  # "cpu", "cuda" or "auto"
    progress: bool = True  # progress bars
    domains: bool = True  # attribution by domain class (issue 6) when labels or amplitude+phase exist

    def __post_init__(self) -> None:
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"--pad-mode: expected one of {PAD_MODES}, got {self.pad_mode!r}")
        if self.window < 8 or self.window % self.patch:
            raise ValueError(f"--window: expected >= 8 and a multiple of patch={self.patch}, got {self.window}")
        if self.epochs < 1:
            raise ValueError(f"--epochs: expected >= 1, got {self.epochs}")
        self.methods = tuple(self.methods)
        unknown = [m for m in self.methods if m not in EXPLAINERS]
        if unknown:
            raise ValueError(f"--methods: unknown method(s) {unknown}; choose from {sorted(EXPLAINERS)}")
        check_points_spec(self.points)

    @property
    def resolved_buffer(self) -> int:
        return self.window // 4 if self.buffer is None else int(self.buffer)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if k == "methods" else v) for k, v in d.items() if k in names})


@dataclass
class RunResult:
    out: Path
    metrics: dict
    seconds: float


def _versions() -> dict:
    import lightning
    import numpy

    return {
        "structattn": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
    }


def check_points_spec(spec: str) -> None:
    """Validate a --points spec: "test", "all" or a positive number of test points."""
    if spec not in ("test", "all") and not (str(spec).isdigit() and int(spec) > 0):
        raise ValueError(f"--points: expected 'test', 'all' or a positive number, got {spec!r}")


def choose_points(split_test: np.ndarray, n_points: int, spec: str, *, seed: int) -> np.ndarray:
    """Indices of the points to explain: all test points, all points or N test points."""
    if spec == "all":
        return np.arange(n_points)
    if spec == "test":
        return np.sort(split_test)
    n = min(int(spec), len(split_test))
    return np.sort(np.random.default_rng(seed).choice(split_test, size=n, replace=False))


def run_pipeline(
    cfg: RunConfig,
    out: str | Path,
    *,
    sample: Sample | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> RunResult:
    """Run everything and write the run folder `out` (atomically).

    Args:
        cfg: the options.
        out: destination folder; must not exist (or be empty) unless `overwrite`.
        sample: an already loaded sample (else ``cfg.source`` is read).
        overwrite: replace an existing run folder once the new one is complete.
        log: receives one-line progress messages.
        progress: receives one line per explanation/scoring step.
    """
    say = log or (lambda _msg: None)
    t_start = time.perf_counter()
    out = Path(out)
    with staged_run_folder(out, overwrite=overwrite) as stage:
        if sample is None:
            say(f"reading {cfg.source}")
            sample = load_sample(cfg.source, structure_from=cfg.structure_from)
        checksum = sample_checksum(sample)

        # Points whose patch fits (all of them unless pad_mode == "exclude").
        if cfg.pad_mode == "exclude":
            usable = np.flatnonzero(patch_inside(sample.positions, shape=sample.shape, window=cfg.window))
            if len(usable) == 0:
                raise ValueError(f"--window: no point has a full {cfg.window}px patch inside the image")
        else:
            usable = np.arange(sample.n_points)

        split = spatial_block_split(
            sample.positions[usable],
            shape=sample.shape,
            blocks=cfg.blocks,
            val_fraction=cfg.val_fraction,
            test_fraction=cfg.test_fraction,
            buffer=cfg.resolved_buffer,
            seed=cfg.seed,
        )
        train_idx, val_idx, test_idx = usable[split.train], usable[split.val], usable[split.test]
        targets: TargetSet = resolve_targets(sample, cfg.targets, train_index=train_idx,
                                                latent_kind=cfg.latent_kind, latent_size=cfg.latent_size,
                                                beta=cfg.beta, seed=cfg.seed)
        valid = np.ones(sample.n_points, bool) if targets.valid is None else np.asarray(targets.valid, bool)
        train_idx, val_idx, test_idx = (i[valid[i]] for i in (train_idx, val_idx, test_idx))
        for part, idx in (("train", train_idx), ("validation", val_idx), ("test", test_idx)):
            if len(idx) < 2:
                raise ValueError(f"split: only {len(idx)} {part} point(s); use more --blocks or more points")
        say(f"split: {split.describe()}")
        say(f"targets: {', '.join(targets.names)}")

        patches = extract_patches(sample.image, sample.positions, window=cfg.window,
                                  pad_mode="edge" if cfg.pad_mode == "exclude" else cfg.pad_mode)
        ch_mean = sample.image.mean(axis=(1, 2)).astype(np.float32)
        ch_std = np.maximum(sample.image.std(axis=(1, 2)), 1e-8).astype(np.float32)
        y = targets.values.astype(np.float32)
        y_mean = y[train_idx].mean(0)
        y_std = np.maximum(y[train_idx].std(0), 1e-8)

        vit_cfg = ViTConfig(in_channels=sample.image.shape[0], window=cfg.window, patch=cfg.patch, dim=cfg.dim,
                            depth=cfg.depth, heads=cfg.heads, n_outputs=len(targets.names))
        train_cfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, patience=cfg.patience,
                                augment=cfg.augment, seed=cfg.seed, device=cfg.device, progress=cfg.progress)
        trained = TrainedModel(model=None, target_names=targets.names, channel_mean=ch_mean,  # type: ignore[arg-type]
                               channel_std=ch_std, target_mean=y_mean, target_std=y_std, pad_mode=cfg.pad_mode)
        x = trained.standardise(patches).numpy()
        say(f"training ViT ({vit_cfg.depth} layers, {vit_cfg.heads} heads, {vit_cfg.n_tokens} tokens) "
            f"on {len(train_idx)} points")
        t0 = time.perf_counter()
        model, history = fit_vit(x, (y - y_mean) / y_std, train_index=train_idx, val_index=val_idx,
                                 vit=vit_cfg, train=train_cfg)
        history["seconds"] = time.perf_counter() - t0
        trained.model = model
        trained.extra = {"units": list(targets.units)}

        pred = np.full_like(y, np.nan)
        pred[usable] = trained.predict(patches[usable])
        scores = {name: {**s, "unit": u} for (name, s), u in
                  zip(regression_scores(y[test_idx], pred[test_idx], targets.names).items(), targets.units)}
        for name in targets.names:
            say(f"test {name}: R² {scores[name]['r2']:.3f}, MAE {scores[name]['mae']:.3g} {scores[name]['unit']}")

        index = choose_points(test_idx, sample.n_points, cfg.points, seed=cfg.seed)

        split_labels = np.full(sample.n_points, -1)
        split_labels[train_idx], split_labels[val_idx], split_labels[test_idx] = 0, 1, 2
        metrics = {
            "targets": scores,
            "split": {
                "description": split.describe(),
                "blocks": split.blocks,
                "buffer_px": split.buffer,
                "n_train": int(len(train_idx)),
                "n_val": int(len(val_idx)),
                "n_test": int(len(test_idx)),
                "why": "whole spatial blocks are held out: neighbouring patches overlap, a random split leaks",
            },
            "training": history,
        }

        trained.save(stage / "model.pt")
        np.savez_compressed(stage / "predictions.npz", point_index=np.arange(sample.n_points),
                            positions=sample.positions, y_true=y, y_pred=pred, split=split_labels,
                            target_names=np.array(targets.names), units=np.array(targets.units))
        for key, arrs in targets.arrays.items():  # e.g. latent.npz (latent maps, traversals)
            np.savez_compressed(stage / f"{key}.npz", **arrs)
        write_explanations(stage / "explanations.h5", point_index=index, maps={},
                           attrs={"window": cfg.window, "patch": cfg.patch, "pad_mode": cfg.pad_mode})
        atomic_write_json(stage / "metrics.json", metrics)
        atomic_write_json(stage / "config.json", {
            "run": asdict(cfg),
            "model": vit_cfg.to_dict(),
            "train": asdict(train_cfg),
            "data": {"source": sample.meta.get("spec", cfg.source),  # synthetic: the canonical spec
                     "checksum": checksum, "n_points": sample.n_points, "image_shape": list(sample.image.shape),
                     "channels": list(sample.channels), "file_sha256": sample.meta.get("sha256")},
            "targets": {"names": list(targets.names), "units": list(targets.units), "info": targets.info},
            "versions": _versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
        # Explanation stage: the same code as `structattn explain RUN` (maps + scores, in place).
        from .explain_run import auroc_lines, explain_run

        say(f"explaining {len(index)} points with {', '.join(cfg.methods)} and scoring them")
        section = explain_run(stage, methods=cfg.methods, points=cfg.points, seed=cfg.seed, on_step=progress,
                              sample=sample)
        for line in auroc_lines(section):
            say(line)
        metrics = json.loads((stage / "metrics.json").read_text())
        if cfg.domains:  # issue 6: attribution by domain class -> domains.h5, metrics["domains"]
            from .physics import run_domains

            try:  # an optional analysis must not lose a trained run; `structattn domains` can redo it
                dom = run_domains(stage, sample=sample, point_index=index, maps=RunFolder(stage).explanations()[1],
                                  window=cfg.window,
                                  pad_mode=cfg.pad_mode, seed=cfg.seed,
                                  values={n: y[index, k] for k, n in enumerate(targets.names)})
            except ValueError as exc:
                dom = None
                say(f"domains skipped: {exc}")
            if dom is not None:
                say(f"domains: {dom.segmentation.method} segmentation, classes {', '.join(dom.segmentation.names)}")
                metrics = json.loads((stage / "metrics.json").read_text())
        say("writing report")
        from .report.html import write_report

        write_report(stage, sample=sample)
    return RunResult(out=out, metrics=metrics, seconds=time.perf_counter() - t_start)

