"""The whole run as a short list of named stages.

    load -> geometry -> split -> targets -> fit -> uncertainty -> baselines -> per sample -> write -> explain -> domains -> report

`run_pipeline` is what ``structattn run`` and ``structattn demo`` call; each stage is a
function taking what the previous ones returned, and nothing re-reads what the run itself
just wrote. It prints nothing; progress goes to the optional ``log`` callable (the CLI
passes rich's console).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import r2_score

from . import __version__
from .data.io import load_sample, sample_checksum, source_files
from .data.patches import PAD_MODES, patch_inside
from .data.sample import Sample
from .explain import EXPLAINERS
from .nets.vit import READOUTS, SPATIAL, STEM_POOLS, ViTConfig, predict_linearly
from .nets.wavelet import check_orientations
from .points import check_points_spec, choose_points
from .runfolder import CHECKPOINTS, ENSEMBLE_DIR, RunFolder, atomic_write_json, staged_run_folder, write_explanations
from .scale.memory import release_freed_memory
from .scale.patches import PatchSource
from .targets import TargetSet, resolve_targets
from .train.baselines import (BASELINES, BaselineResult, best_baseline, fit_baselines, fit_cnn, learned_verdict, r2_margin,
                              r2_on)
from .train.metrics import regression_scores
from .train.split import SAMPLE_SPLITS, SampleSplit, SpatialSplit, point_bounds, sample_split, spatial_block_split
from .train.uncertainty import RUN_CALIBRATIONS
from .train.trainer import AUGMENTATIONS, CRITERIA, STOPPINGS, TrainConfig, TrainedModel, check_augment, check_ema, check_sam, check_target_patience, describe_training, fit_vit, pixel_ridge, standardise_patches

VERDICTS = ("primary", "ensemble")  # --verdict: what the verdict judges (RunConfig.verdict)


@dataclass
class RunConfig:
    """Every option of a run, resolved and saved to ``config.json``."""

    source: str = "synthetic"  # data: an .npz bundle, a BEPS .h5, "synthetic[:...]" or "semisynthetic:image=..."
    targets: str | None = None  # --targets spec; None = the data's given targets
    structure_from: str = "response@0V"  # BEPS .h5 input: structure image source (loops: response@0V or a descriptor)
    window: int | None = None  # patch side in pixels; None = from the data (see `resolve_geometry`)
    patch: int | None = None  # token side in pixels; None = window // 8 (an 8 x 8 token grid)
    pad_mode: str = "reflect"  # points near the edge: np.pad mode, or "exclude" to drop them
    dim: int = 64  # transformer width
    depth: int = 4  # transformer blocks
    heads: int = 4  # attention heads
    stem: int = 16  # conv stem channels before tokenising (0 = linear patch embedding); see docs/training.md
    stem_pool: str | None = None  # "avg"/"max": the stem's two conv blocks pool down to the token grid (a hybrid
    # stem), "none": two full-resolution convolutions; None = "avg" with a conv stem (docs/training.md, round 13b)
    wavelets: int = 8  # > 0: each token also embeds its cell's wavelet-modulus means at 2 scales and this many
    # orientations (fixed Morlet filters, first-order scattering); 0 = off (docs/training.md, round 16: default
    # since 2026-11-27, about 2.2x the ViT's training time on the benchmark)
    readout: str = "spatial"  # what the outputs read: [CLS] and a learned weighting of the patch tokens per
    # target ("spatial"), or [CLS] alone ("cls", the ViT convention); docs/training.md, sweep round 5
    prefer_ridge: bool | None = None  # a target whose ViT does not beat ridge on the validation blocks, where
    # ridge explains at least half the variance, is predicted by ridge (docs/training.md, round 10c); None = on
    # where it applies (a spatial readout, no augmentation), resolved when the config is made
    ridge_wavelets: int = 8  # --prefer-ridge also fits ridge on the pixels and their cells' wavelet moduli at this many
    # orientations, and holds it for a target where it beats pixel ridge and the ViT (by the margin) on the
    # validation blocks (`choose_ridges`, round 16c); 0 = pixel ridge only
    pretrain_epochs: int = 0  # masked-token pretraining epochs on the whole image before training (0 = none)
    epochs: int = 80  # training epochs (upper bound; early stopping)
    batch_size: int = 32  # training batch size (32: twice the steps of 64 per epoch; docs/training.md, round 20)
    lr: float = 3e-3  # peak learning rate, after a 5-epoch linear warm-up
    weight_decay: float = 0.3  # AdamW weight decay (0.3 beat 0.05 on real textures)
    dropout: float = 0.1  # the ViT's dropout on attention weights and MLP outputs (docs/training.md, round 21)
    patience: int = 15  # early-stopping patience in epochs
    criterion: str = "mse"  # what early stopping and the best epoch watch: see CRITERIA (docs/training.md)
    stopping: str = "criterion"  # when training ends: "criterion" (patience on it) or "targets" (once no target's
    # own validation MSE has improved for the patience); the ViT and the CNN baseline alike (round 23)
    target_patience: int = 0  # > 0: a target's loss term is left out while its own validation MSE has not
    # improved for this many epochs, and comes back when it does (0 = off; docs/training.md, round 7)
    ema: float = 0.0  # > 0: validate and keep a moving average of the weights with this decay per step (0 = off;
    # docs/training.md, round 11)
    sam: float = 0.0  # > 0: sharpness-aware minimisation with this radius around AdamW, for the ViT and the CNN
    # baseline alike (two passes a step; 0 = off; docs/training.md, round 15)
    augment: str = "none"  # "none", "flips" or "dihedral": only if the property cannot depend on orientation
    blocks: int = 4  # spatial split: blocks per image side
    split: str = "blocks"  # several samples: "blocks" within each sample, or "sample" (whole samples held out)
    val_fraction: float = 0.15  # share of blocks for validation
    test_fraction: float = 0.2  # share of blocks for test
    buffer: int | None = None  # px around val/test blocks without training points; None = window // 4
    ensemble: int = 3  # deep-ensemble size, the primary model included: uncertainty per prediction (1 = off)
    ensemble_jobs: int = 1  # ensemble members trained at once in worker processes (1 = one after another)
    calibration: str = "conformal"  # ensemble spread -> predictive std, fitted on the validation blocks (docs/uncertainty.md)
    verdict: str = "primary"  # what the verdict judges: member 0 against one CNN ("primary"), or the ensemble mean
    # against the mean of as many CNNs, trained with the members' seeds ("ensemble": M - 1 more CNN trainings;
    # docs/training.md, round 17)
    cnn_baseline: bool = True  # also train the small CNN baseline (doubles training time; mean/ridge/position always run)
    methods: tuple[str, ...] = ("attention", "rollout", "gradattn")  # fast methods by default; shap/ig/occlusion via --methods or `structattn explain`
    points: str = "test"  # which points to explain: "test", "all" or a number of test points
    gallery: int = 8  # test points shown with overlays in the report
    seed: int = 0  # seeds split, weights, batches, augmentation and explanations
    latent_kind: str = "vae"  # --targets latent: loop model ("vae", "pca", "nmf")
    latent_size: int = 3  # --targets latent: number of latents
    beta: float = 1.0  # --targets latent: KL weight of the VAE
    device: str = "cpu"  # "cpu", "cuda" or "auto"
    devices: int = 1  # processes (CPU) or GPUs per node for training, explaining (Lightning DDP; docs/scale.md)
    num_nodes: int = 1  # machines, each running `devices` processes started by torchrun / srun
    strategy: str = "auto"  # "auto" (ddp_spawn from one plain process, ddp under a launcher), "ddp", "ddp_spawn"
    precision: str = "32"  # "32" or "bf16-mixed" (autocast; GPUs; attention checked against fp32 in docs/scale.md)
    explain_batch: int = 64  # points explained at a time when streaming (bounds memory)
    score_points: int = 256  # explained points that are also scored (all maps are written)
    progress: bool = True  # progress bars
    domains: bool = True  # attribution by domain class (issue 6) when labels or amplitude+phase exist

    def __post_init__(self) -> None:
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"--pad-mode: expected one of {PAD_MODES}, got {self.pad_mode!r}")
        if self.patch is not None and self.patch < 1:
            raise ValueError(f"--patch: expected a positive number of pixels, got {self.patch}")
        if self.window is not None:
            p = self.patch or max(1, self.window // 8)
            if self.window < 8 or self.window % p:
                raise ValueError(f"--window: expected >= 8 and a multiple of patch={p}, got {self.window}")
        if self.epochs < 1:
            raise ValueError(f"--epochs: expected >= 1, got {self.epochs}")
        for name, flag in (("weight_decay", "--weight-decay"), ("stem", "--stem")):
            if getattr(self, name) < 0:
                raise ValueError(f"{flag}: expected >= 0, got {getattr(self, name)}")
        if self.readout not in READOUTS:
            raise ValueError(f"--readout: expected one of {READOUTS}, got {self.readout!r}")
        if self.stem_pool is None:
            self.stem_pool = "avg" if self.stem else "none"
        if self.stem_pool not in STEM_POOLS:
            raise ValueError(f"--stem-pool: expected one of {STEM_POOLS}, got {self.stem_pool!r}")
        if self.stem_pool != "none" and not self.stem:
            raise ValueError(f"--stem-pool {self.stem_pool}: needs a conv stem (--stem > 0), got --stem {self.stem}")
        check_orientations(self.wavelets, "--wavelets")
        check_orientations(self.ridge_wavelets, "--ridge-wavelets")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise ValueError(f"--dropout: expected a number in [0, 1), got {self.dropout!r}")
        if self.criterion not in CRITERIA:
            raise ValueError(f"--criterion: expected one of {CRITERIA}, got {self.criterion!r}")
        if self.stopping not in STOPPINGS:
            raise ValueError(f"--stopping: expected one of {STOPPINGS}, got {self.stopping!r}")
        if self.prefer_ridge and self.readout not in SPATIAL:
            raise ValueError(f"--prefer-ridge: needs --readout {' or '.join(SPATIAL)} (the model holds ridge per "
                             f"patch token), got --readout {self.readout}")
        try:
            self.target_patience = check_target_patience(self.target_patience)
        except ValueError as exc:
            raise ValueError(f"--{exc}".replace("target_patience", "target-patience", 1)) from None
        try:
            self.ema = check_ema(self.ema)
            self.sam = check_sam(self.sam)
        except ValueError as exc:
            raise ValueError(f"--{exc}") from None
        if self.pretrain_epochs < 0:
            raise ValueError(f"--pretrain-epochs: expected >= 0, got {self.pretrain_epochs}")
        if not isinstance(self.ensemble, int) or self.ensemble < 1:
            raise ValueError(f"--ensemble: expected a number of models >= 1 (1 = no uncertainty), got {self.ensemble!r}")
        if not isinstance(self.ensemble_jobs, int) or self.ensemble_jobs < 1:
            raise ValueError(f"--ensemble-jobs: expected >= 1, got {self.ensemble_jobs!r}")
        if self.calibration not in RUN_CALIBRATIONS:
            raise ValueError(f"--calibration: expected one of {RUN_CALIBRATIONS}, got {self.calibration!r}")
        if self.verdict not in VERDICTS:
            raise ValueError(f"--verdict: expected one of {VERDICTS}, got {self.verdict!r}")
        if self.verdict == "ensemble" and self.ensemble < 2:
            raise ValueError(f"--verdict ensemble: judges the mean of a deep ensemble, which needs --ensemble 2 or more, "
                             f"got --ensemble {self.ensemble}")
        if self.blocks < 2:
            raise ValueError(f"--blocks: expected >= 2 blocks per side, got {self.blocks}")
        if self.split not in SAMPLE_SPLITS:
            raise ValueError(f"--split: expected one of {SAMPLE_SPLITS}, got {self.split!r}")
        try:
            self.augment = check_augment(self.augment)
        except ValueError:
            raise ValueError(f"--augment: expected one of {AUGMENTATIONS}, got {self.augment!r}") from None
        if self.prefer_ridge and self.augment != "none":
            raise ValueError(f"--prefer-ridge: ridge reads each pixel at a fixed place in the patch, which "
                             f"--augment {self.augment}'s flips or turns deny; use --augment none")
        if self.prefer_ridge is None:  # auto: wherever the model can hold ridge and no symmetry is assumed
            self.prefer_ridge = self.readout in SPATIAL and self.augment == "none"
        elif not isinstance(self.prefer_ridge, bool):
            raise ValueError(f"--prefer-ridge: expected true, false or None (auto), got {self.prefer_ridge!r}")
        self.methods = tuple(self.methods)
        unknown = [m for m in self.methods if m not in EXPLAINERS]
        if unknown:
            raise ValueError(f"--methods: unknown method(s) {unknown}; choose from {sorted(EXPLAINERS)}")
        check_points_spec(self.points)
        if self.device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"--device: expected 'cpu', 'cuda' or 'auto', got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device: cuda asked for, but torch {torch.__version__} sees no CUDA GPU on this "
                             "machine; use --device cpu (or auto)")

        self.parallel()  # --devices, --num-nodes, --strategy, --precision: one-line errors now, not after loading
        for name, flag in (("explain_batch", "--explain-batch"), ("score_points", "--score-points")):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{flag}: expected a whole number >= 1, got {v!r}")

    def parallel(self):
        """The validated `structattn.scale.Parallel` of this run."""
        from .scale.parallel import check_parallel

        return check_parallel(accelerator={"cpu": "cpu", "cuda": "gpu", "auto": "auto"}[self.device],
                              devices=self.devices, num_nodes=self.num_nodes, strategy=self.strategy,
                              precision=self.precision)

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


# ---------------------------------------------------------------------------- geometry
def point_spacing(positions: np.ndarray) -> float:
    """Median distance (px) from each point to its nearest neighbour (0 for one point)."""
    from scipy.spatial import cKDTree

    if len(positions) < 2:
        return 0.0
    d, _ = cKDTree(positions).query(positions, k=2)
    return float(np.median(d[:, 1]))


def resolve_geometry(sample: Sample, cfg: RunConfig) -> dict:
    """Window, token size and buffer for this data, each with the reason it was chosen.

    Defaults follow the data, not our synthetic rule: the window is 32 px (the size that
    holds the regions of every rule of the real-texture benchmark, which reach 14 px from the
    point), at least 4 point spacings (so a patch sees its neighbours' surroundings) and at
    most a third of the shorter image side (so the spatial split still has whole blocks),
    rounded to a multiple of 8; tokens cut it into an 8 x 8 grid; the buffer is window / 4.
    """
    h, w = sample.shape
    spacing = point_spacing(sample.positions)
    why = {}
    if cfg.window is None:
        upper = max(8, int(min(h, w) / 3) // 8 * 8)
        want = max(32, int(np.ceil(4 * spacing / 8)) * 8)
        window = min(want, upper, 96)
        why["window"] = (f"auto: max(32, 4 x point spacing {spacing:.1f} px) = {want}, capped at a third of the "
                         f"{h}x{w} image ({upper}) and 96, a multiple of 8 -> {window} px")
    else:
        window = int(cfg.window)
        why["window"] = "given (--window)"
    if cfg.patch is None:
        patch = max(1, window // 8)
        while window % patch:
            patch -= 1
        why["patch"] = f"auto: window / 8 -> an {window // patch} x {window // patch} token grid of {patch} px tokens"
    else:
        patch = int(cfg.patch)
        why["patch"] = "given (--patch)"
    if window % patch:
        raise ValueError(f"--window: expected a multiple of patch={patch}, got {window}")
    if cfg.buffer is None:
        buffer = window // 4
        why["buffer"] = (f"auto: window / 4 = {buffer} px; at most a quarter of a training patch overlaps held-out "
                         "pixels (window / 2, no overlap, dropped a fifth of the training points and lost 0.06 R² "
                         "in the real-texture sweep)")
    else:
        buffer = int(cfg.buffer)
        why["buffer"] = "given (--buffer)"
    if buffer < 0:
        raise ValueError(f"--buffer: expected >= 0 pixels, got {buffer}")
    return {"window": window, "patch": patch, "buffer": buffer, "point_spacing_px": spacing,
            "n_points": sample.n_points, "image_shape": [h, w], "why": why}


# ---------------------------------------------------------------------------- stages
@dataclass
class Prepared:
    """What the stages before training produce: data, geometry, split, targets, patch source.

    No stage holds every patch at once: training, baselines and predictions ask `source` for
    a batch of points at a time (memory bounded by the batch, not by the number of points).
    """

    sample: Sample
    checksum: str
    geometry: dict
    split: SpatialSplit | SampleSplit
    targets: TargetSet
    train: np.ndarray  # point indices (into the sample) of each part
    val: np.ndarray
    test: np.ndarray
    source: PatchSource  # every point's standardised (C, w, w) patch, cut on demand a batch at a time
    channel_mean: np.ndarray  # (C,)
    channel_std: np.ndarray  # (C,)
    y: np.ndarray  # (N, K) float32 targets


@dataclass
class Fitted:
    """The trained ViT, its predictions for every point and its test scores."""

    trained: TrainedModel
    vit_cfg: ViTConfig
    train_cfg: TrainConfig
    history: dict
    pred: np.ndarray  # (N, K), NaN for points without a patch
    scores: dict  # target -> test scores (+ baselines and verdict after `baselines_stage`)
    baselines: BaselineResult | None = None
    members: list = field(default_factory=list)  # TrainedModel of ensemble members 1..M-1 (0 is `trained`)
    y_mean: np.ndarray | None = None  # (N, K) ensemble mean (None without an ensemble)
    y_std: np.ndarray | None = None  # (N, K) calibrated predictive std
    uncertainty: dict = field(default_factory=dict)  # metrics.json "uncertainty"
    ridge: dict | None = None  # --prefer-ridge: `pixel_ridge` and the targets it predicts ("chosen", indices)


def load_stage(cfg: RunConfig, sample: Sample | None, say) -> tuple[Sample, str]:
    if sample is None:
        say(f"reading {cfg.source}")
        sample = load_sample(cfg.source, structure_from=cfg.structure_from)
    return sample, sample_checksum(sample)


def split_stage(cfg: RunConfig, sample: Sample, geo: dict) -> tuple[np.ndarray, SpatialSplit | SampleSplit]:
    """Usable points (their patch fits, unless padding) dealt to spatial blocks."""
    if "samples" in sample.meta:  # several samples in one run (structattn.data.multi)
        return multi_split_stage(cfg, sample, geo)
    if cfg.split == "sample":
        raise ValueError("--split: 'sample' holds out whole samples and needs several (give 2 or more bundles); "
                         "this run has one")
    if cfg.pad_mode == "exclude":
        usable = np.flatnonzero(patch_inside(sample.positions, shape=sample.shape, window=geo["window"]))
        if len(usable) == 0:
            raise ValueError(f"--window: no point has a full {geo['window']}px patch inside the image")
    else:
        usable = np.arange(sample.n_points)
    side = min(sample.shape) / cfg.blocks
    if side < 2:
        raise ValueError(f"--blocks: {cfg.blocks} blocks per side of a {sample.shape[0]}x{sample.shape[1]} image are "
                         f"{side:.2g} px wide; use at most {min(sample.shape) // 2}")
    blocks_occupied = len(np.unique(np.floor(sample.positions[usable] / np.array(sample.shape) * cfg.blocks), axis=0))
    if blocks_occupied > len(usable) / 2:
        raise ValueError(f"--blocks: {cfg.blocks}x{cfg.blocks} blocks for {len(usable)} points leaves about one point "
                         "per block; use fewer blocks")
    split = spatial_block_split(sample.positions[usable], shape=sample.shape, blocks=cfg.blocks,
                                val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                                buffer=geo["buffer"], seed=cfg.seed,
                                bounds=point_bounds(sample.positions[usable], sample.shape))
    return usable, split


def multi_split_stage(cfg: RunConfig, sample: Sample, geo: dict) -> tuple[np.ndarray, SampleSplit]:
    """Several samples: whole samples held out (``--split sample``) or blocks within each one."""
    info = sample.meta["samples"]
    sop = np.asarray(info["sample_of_point"], int)
    boxes = np.asarray(info["boxes"], int)  # (S, 4): row0, col0, H, W of each sample in the mosaic
    if geo["window"] - geo["window"] // 2 > int(info["margin"]):
        raise ValueError(f"--window: {geo['window']} px needs a margin of {geo['window'] - geo['window'] // 2} px "
                         f"around each sample, the samples were laid out with {info['margin']}")
    usable = np.arange(sample.n_points)
    if cfg.pad_mode == "exclude":  # each point's patch must fit inside its own sample's image
        local = sample.positions - boxes[sop, :2]
        keep = np.zeros(sample.n_points, bool)
        for k in range(len(boxes)):
            sel = sop == k
            keep[sel] = patch_inside(local[sel], shape=tuple(boxes[k, 2:]), window=geo["window"])
        usable = np.flatnonzero(keep)
        if len(usable) == 0:
            raise ValueError(f"--window: no point has a full {geo['window']}px patch inside its sample's image")
    split = sample_split(sample.positions[usable], sop[usable], names=info["names"],
                         shapes=[tuple(b[2:]) for b in boxes], origins=boxes[:, :2], mode=cfg.split,
                         blocks=cfg.blocks, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                         buffer=geo["buffer"], seed=cfg.seed)
    return usable, split


def per_sample_stage(d: Prepared, f: Fitted, say) -> None:
    """Several samples: test R² of every target on each sample's test points -> scores[t]["per_sample"]."""
    if not isinstance(d.split, SampleSplit):
        return
    sop = np.asarray(d.sample.meta["samples"]["sample_of_point"], int)
    names = d.split.names
    for k, name in enumerate(d.targets.names):
        per = {}
        for j, sname in enumerate(names):
            idx = d.test[sop[d.test] == j]
            if len(idx) == 0:
                continue
            ok = len(idx) >= 2 and np.ptp(d.y[idx, k]) > 0
            per[sname] = float(regression_scores(d.y[idx, k:k + 1], f.pred[idx, k:k + 1], (name,))[name]["r2"]) \
                if ok else None
        f.scores[name]["per_sample"] = per
        say(f"test {name} per sample: " + ", ".join(f"{n} {'n/a' if v is None else f'{v:.3f}'}" for n, v in per.items()))


def _samples_summary(d: Prepared) -> dict:
    """metrics.json "samples": names, the part each sample went to, test points per sample."""
    sop = np.asarray(d.sample.meta["samples"]["sample_of_point"], int)
    return {**d.split.info(), "n_test": {n: int((sop[d.test] == j).sum()) for j, n in enumerate(d.split.names)}}


def targets_stage(cfg: RunConfig, sample: Sample, checksum: str, geo: dict, usable: np.ndarray,
                  split: SpatialSplit | SampleSplit, say) -> Prepared:
    train, val, test = usable[split.train], usable[split.val], usable[split.test]
    targets = resolve_targets(sample, cfg.targets, train_index=train, latent_kind=cfg.latent_kind,
                              latent_size=cfg.latent_size, beta=cfg.beta, seed=cfg.seed)
    valid = np.ones(sample.n_points, bool) if targets.valid is None else np.asarray(targets.valid, bool)
    train, val, test = (i[valid[i]] for i in (train, val, test))
    for part, idx in (("train", train), ("validation", val), ("test", test)):
        if len(idx) < 2:
            raise ValueError(f"split: only {len(idx)} {part} point(s); use more --blocks or more points")
    say(f"split: {split.describe()}")
    say(f"targets: {', '.join(targets.names)}")
    values = targets.values[train]
    for k, name in enumerate(targets.names):
        if np.ptp(values[:, k]) == 0:  # R² undefined, nothing to learn: say so before training
            where = Path(str(sample.meta.get("source", cfg.source))).name
            raise ValueError(f"targets: {name!r} is constant on the training points of {where} (value "
                             f"{values[0, k]:g}); there is nothing to learn. Leave it out with --targets")
    for k, name in enumerate(targets.names):
        if np.ptp(targets.values[test, k]) == 0:
            say(f"warning: {name} is constant on the test points: its test R² is undefined (NaN)")
    # whole-image channel statistics: no target information, so no leak between parts
    ch_mean = sample.image.mean(axis=(1, 2)).astype(np.float32)
    ch_std = np.maximum(sample.image.std(axis=(1, 2)), 1e-8).astype(np.float32)
    source = PatchSource(sample.image, sample.positions, window=geo["window"], pad_mode=cfg.pad_mode,
                         mean=ch_mean, std=ch_std)  # "exclude" cuts with "edge", as extract_patches did
    return Prepared(sample=sample, checksum=checksum, geometry=geo, split=split, targets=targets, train=train,
                    val=val, test=test, source=source, channel_mean=ch_mean, channel_std=ch_std,
                    y=targets.values.astype(np.float32))


def fit_stage(cfg: RunConfig, d: Prepared, usable: np.ndarray, say, checkpoints: Path | None = None) -> Fitted:
    image = d.sample.image
    y_mean = d.y[d.train].mean(0)
    y_std = np.maximum(d.y[d.train].std(0), 1e-8)
    geo = d.geometry
    vit_cfg = ViTConfig(in_channels=image.shape[0], window=geo["window"], patch=geo["patch"], dim=cfg.dim,
                        depth=cfg.depth, heads=cfg.heads, stem=cfg.stem, stem_pool=cfg.stem_pool, wavelets=cfg.wavelets,
                        readout=cfg.readout, dropout=cfg.dropout, n_outputs=len(d.targets.names))
    train_cfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                            patience=cfg.patience, criterion=cfg.criterion, stopping=cfg.stopping,
                            target_patience=cfg.target_patience, ema=cfg.ema, sam=cfg.sam, augment=cfg.augment, pretrain_epochs=cfg.pretrain_epochs,
                            seed=cfg.seed, device=cfg.device, progress=cfg.progress, devices=cfg.devices,
                            num_nodes=cfg.num_nodes, strategy=cfg.strategy, precision=cfg.precision)
    trained = TrainedModel(model=None, target_names=d.targets.names, channel_mean=d.channel_mean,  # type: ignore[arg-type]
                           channel_std=d.channel_std, target_mean=y_mean, target_std=y_std, pad_mode=cfg.pad_mode)
    stem = ("no conv stem" if not vit_cfg.stem else f"{vit_cfg.stem_pool}-pooled stem" if vit_cfg.stem_pool != "none"
            else "full-resolution stem") + (f", wavelet features ({vit_cfg.wavelets} orientations)" if vit_cfg.wavelets else "")
    say(f"training ViT ({vit_cfg.depth} layers, {vit_cfg.heads} heads, {vit_cfg.n_tokens} tokens of "
        f"{vit_cfg.patch} px, {stem}, window {vit_cfg.window} px, augmentation {cfg.augment}) on {len(d.train)} points")
    t0 = time.perf_counter()
    image_z = (standardise_patches(image[None], d.channel_mean, d.channel_std)[0]  # (C, H, W), for pretraining
               if cfg.pretrain_epochs > 0 else None)
    model, history = fit_vit(d.source, (d.y - y_mean) / y_std, train_index=d.train, val_index=d.val, vit=vit_cfg,
                             train=train_cfg, pretrain_image=image_z,
                             checkpoint_dir=None if checkpoints is None else checkpoints / "vit")
    history["seconds"] = time.perf_counter() - t0
    for line in describe_training(history, d.targets.names):
        say(f"  {line}")
    trained.model = model
    trained.extra = {"units": list(d.targets.units)}
    pred = np.full_like(d.y, np.nan)
    pred[usable] = trained.predict_points(d.source, usable)
    scores = {name: {**s, "unit": u} for (name, s), u in
              zip(regression_scores(d.y[d.test], pred[d.test], d.targets.names).items(), d.targets.units)}
    return Fitted(trained=trained, vit_cfg=vit_cfg, train_cfg=train_cfg, history=history, pred=pred, scores=scores)


PREFER_RIDGE_MIN_R2 = 0.5  # --prefer-ridge: ridge must explain this much of the validation variance


def ridge_choice(y_val: np.ndarray, vit_val: np.ndarray, ridge_val: np.ndarray, *, seed: int = 0) -> list[dict]:
    """Per target (columns of the (m, K) validation values and predictions): "ridge" when ridge explains at
    least `PREFER_RIDGE_MIN_R2` of the validation variance and the ViT does not beat it by the verdict's
    margin (`r2_margin`), else "vit"; with the figures that decided (docs/training.md, round 10c)."""
    out = []
    for k in range(np.shape(y_val)[1]):
        yv, vv, rv = (np.asarray(a, np.float64)[:, k] for a in (y_val, vit_val, ridge_val))
        vit_r2, ridge_r2 = float(r2_score(yv, vv)), float(r2_score(yv, rv))
        margin = r2_margin(yv, vv, rv, seed=seed)
        use = ridge_r2 >= PREFER_RIDGE_MIN_R2 and not vit_r2 >= ridge_r2 + margin
        out.append({"predicted_by": "ridge" if use else "vit", "vit_val_r2": vit_r2, "ridge_val_r2": ridge_r2,
                    "margin": margin, "rule": f"ridge when its validation R² >= {PREFER_RIDGE_MIN_R2:g} and the "
                                              "ViT's is not higher by the margin"})
    return out


RIDGE_FEATURES = {"pixels": "ridge on the patch pixels",
                  "pixels+wavelets": "ridge on the patch pixels and their wavelet moduli"}


def ridge_candidates(source, y: np.ndarray, *, train: np.ndarray, val: np.ndarray, wavelets: int,
                     patch: int) -> dict[str, dict]:
    """The ridges `--prefer-ridge` may hold, fitted on the standardised targets `y`: "pixels" (`pixel_ridge`)
    and, with `wavelets` > 0, "pixels+wavelets" (the pixels and their token cells' wavelet moduli)."""
    out = {"pixels": pixel_ridge(source, y, train_index=train, val_index=val)}
    if wavelets:
        out["pixels+wavelets"] = pixel_ridge(source, y, train_index=train, val_index=val, wavelets=wavelets,
                                             patch=patch)
    return out


def choose_ridges(y_val: np.ndarray, vit_val: np.ndarray, candidates: dict[str, np.ndarray], *,
                  seed: int = 0) -> list[dict]:
    """Per target (columns of the (m, K) validation values and predictions), which predictor to hold
    (docs/training.md, rounds 10c and 16c), with the figures that decided:

    - "pixels+wavelets" (when a candidate) if it explains more of the validation variance than pixel
      ridge, at least `PREFER_RIDGE_MIN_R2` of it, and beats the ViT there by the verdict's margin: it is
      no baseline, so it must win, not tie;
    - else "pixels" by round 10c's rule (`ridge_choice`): it is the ridge baseline, so a tie is enough;
    - else the ViT ("vit").
    """
    base = ridge_choice(y_val, vit_val, candidates["pixels"], seed=seed)
    if "pixels+wavelets" not in candidates:
        return [{**c, "ridge_features": "pixels"} for c in base]
    wav = ridge_choice(y_val, vit_val, candidates["pixels+wavelets"], seed=seed)
    out = []
    for c, w in zip(base, wav):
        by = {"pixels": c["ridge_val_r2"], "pixels+wavelets": w["ridge_val_r2"]}
        wins = (w["ridge_val_r2"] > c["ridge_val_r2"] and w["ridge_val_r2"] >= PREFER_RIDGE_MIN_R2
                and w["ridge_val_r2"] >= w["vit_val_r2"] + w["margin"])
        pick = {**w, "predicted_by": "ridge", "ridge_features": "pixels+wavelets"} if wins else \
            {**c, "ridge_features": "pixels"}
        pick["ridge_val_r2_by_features"] = {k: (v if np.isfinite(v) else None) for k, v in by.items()}
        pick["rule"] = (f"ridge on the pixels and their wavelet moduli when it explains more of the validation "
                        f"variance than pixel ridge, at least {PREFER_RIDGE_MIN_R2:g} of it, and beats the ViT's R² by "
                        f"the margin; else pixel ridge when its validation R² >= {PREFER_RIDGE_MIN_R2:g} and the "
                        f"ViT's is not higher by the margin")
        out.append(pick)
    return out


def held_ridge(candidates: dict[str, dict], features: list[str], chosen: list[int]) -> dict:
    """One linear map for `predict_linearly`: per target, the weights of the ridge named in `features`.
    "wavelet_weight" (zero rows for pixel targets) and "wavelets" only when a `chosen` target reads the
    moduli."""
    pix = candidates["pixels"]
    r = {"weight": pix["weight"].copy(), "bias": np.asarray(pix["bias"], np.float64).copy(), "chosen": list(chosen),
         "features": list(features)}
    wav = candidates.get("pixels+wavelets")
    uses = [k for k in chosen if features[k] == "pixels+wavelets"]
    if uses:
        r["wavelet_weight"] = np.zeros_like(wav["wavelet_weight"])
        for k in uses:
            r["weight"][k], r["bias"][k], r["wavelet_weight"][k] = wav["weight"][k], wav["bias"][k], wav["wavelet_weight"][k]
        r["wavelets"] = wav["wavelets"]
    return r


def ridge_choice_stage(cfg: RunConfig, d: Prepared, f: Fitted, usable: np.ndarray, say) -> None:
    """--prefer-ridge (docs/training.md, rounds 10c and 16c): per target, `choose_ridges` decides on the
    validation blocks whether ridge on the patch pixels, ridge on the pixels and their wavelet moduli, or the
    ViT predicts it; a target given to a ridge has the model's transformer terms for it zeroed and that
    ridge held as its linear base (`predict_linearly`). Records ``predicted_by`` and the figures that chose
    it in each target's scores."""
    if not cfg.prefer_ridge:
        return
    tm, names = f.trained, d.targets.names
    cands = ridge_candidates(d.source, (d.y - tm.target_mean) / tm.target_std, train=d.train, val=d.val,
                             wavelets=cfg.ridge_wavelets, patch=d.geometry["patch"])
    choice = choose_ridges(d.y[d.val], f.pred[d.val],
                           {k: r["val_pred"] * tm.target_std + tm.target_mean for k, r in cands.items()}, seed=cfg.seed)
    chosen = [k for k, c in enumerate(choice) if c["predicted_by"] == "ridge"]
    features = [c["ridge_features"] for c in choice]
    for name, c in zip(names, choice):
        f.scores[name]["predicted_by"] = c.pop("predicted_by")
        f.scores[name]["choice"] = {**c, "vit_test_r2": f.scores[name]["r2"]}
    f.ridge = held_ridge(cands, features, chosen)
    if not chosen:
        say("--prefer-ridge: the ViT predicts every target (it beats ridge on the validation blocks, or ridge "
            "explains less than half their variance)")
        return
    tm.model = hold_ridge(tm.model, f.ridge)
    pred = tm.predict_points(d.source, usable)
    for k in chosen:
        f.pred[usable, k] = pred[:, k]
    test = regression_scores(d.y[d.test], f.pred[d.test], names)
    for k in chosen:
        f.scores[names[k]].update(test[names[k]])
    say("--prefer-ridge: predicted by ridge, which the ViT did not beat on the validation blocks: " + ", ".join(
        f"{names[k]} ({RIDGE_FEATURES[features[k]]}; validation R² ridge "
        f"{f.scores[names[k]]['choice']['ridge_val_r2']:.3f}, ViT {f.scores[names[k]]['choice']['vit_val_r2']:.3f})"
        for k in chosen))


def hold_ridge(model, ridge: dict):
    """`predict_linearly` with the held ridge of `ridge_choice_stage` (`f.ridge`) for its chosen targets."""
    return predict_linearly(model, ridge["chosen"], ridge["weight"], ridge["bias"], ridge.get("wavelet_weight"),
                            wavelets=ridge.get("wavelets", 0))


def validation_groups(split: SpatialSplit | SampleSplit, usable: np.ndarray, n_points: int,
                      val: np.ndarray) -> tuple[np.ndarray, str]:
    """(len(val),) block (one sample: `SpatialSplit`) or sample (`SampleSplit`) of each validation
    point, and which of the two ("block" / "sample").

    `val` indexes the sample's points and may be a subset of ``usable[split.val]`` (points whose
    targets are not valid, e.g. a failed loop fit, leave it after the split).
    """
    by_block = isinstance(split, SpatialSplit)
    ids = np.full(n_points, -1)
    ids[usable] = split.block_of_point if by_block else split.sample_of_point
    out = ids[val]
    if (out < 0).any():
        raise ValueError("validation points outside the split's usable points")  # an internal invariant, not input
    return out, "block" if by_block else "sample"


def uncertainty_stage(cfg: RunConfig, d: Prepared, f: Fitted, usable: np.ndarray, say,
                      checkpoints: Path | None = None) -> None:
    """Deep ensemble: members 1..M-1, spread calibrated on validation, coverage on test.

    Fills f.members, f.y_mean, f.y_std, f.uncertainty and, per target, ``coverage_68``,
    ``coverage_95`` (None without an ensemble), ``r2_ensemble``. The ViT's ``r2`` (and so
    the verdict) stays the primary model's.
    """
    from .train.ensemble import fit_members, member_seed
    from .train.uncertainty import (LEVELS, calibration_groups, coverage_warnings, ensemble_stats, fit_calibration,
                                    reliability, uncertainty_scores)

    names = d.targets.names
    if cfg.ensemble < 2:
        f.uncertainty = {"members": 1, "what": "off (--ensemble 1): no uncertainty, no coverage"}
        for name in names:
            f.scores[name].update(coverage_68=None, coverage_95=None)
        return
    t0 = time.perf_counter()
    how = "one after another" if cfg.ensemble_jobs == 1 else f"{min(cfg.ensemble_jobs, cfg.ensemble - 1)} at once"
    say(f"uncertainty: training {cfg.ensemble - 1} more ViT(s) for a deep ensemble of {cfg.ensemble} ({how})")
    image_z = (standardise_patches(d.sample.image[None], d.channel_mean, d.channel_std)[0]
               if cfg.pretrain_epochs > 0 else None)
    tm = f.trained
    fitted = fit_members(d.source, (d.y - tm.target_mean) / tm.target_std, train_index=d.train, val_index=d.val,
                         vit=f.vit_cfg, train=f.train_cfg, members=cfg.ensemble, jobs=cfg.ensemble_jobs,
                         pretrain_image=image_z, checkpoint_dir=None if checkpoints is None else checkpoints / "ensemble",
                         on_member=lambda k, h: say(f"  member {k} (seed {member_seed(cfg.seed, k)}): best epoch "
                                                    f"{h['best_epoch']}, {h['seconds']:.0f} s"))
    f.members = [TrainedModel(model=m, target_names=names, channel_mean=tm.channel_mean, channel_std=tm.channel_std,
                              target_mean=tm.target_mean, target_std=tm.target_std, pad_mode=tm.pad_mode,
                              extra=dict(tm.extra, member=k, seed=member_seed(cfg.seed, k)))
                 for k, (m, _) in enumerate(fitted, start=1)]
    chosen = [] if f.ridge is None else f.ridge["chosen"]
    if chosen:  # --prefer-ridge: every member predicts those targets by the same ridge
        for m in f.members:
            m.model = hold_ridge(m.model, f.ridge)
    preds = np.full((cfg.ensemble, *d.y.shape), np.nan)
    preds[0] = f.pred
    for k, m in enumerate(f.members, start=1):
        preds[k][usable] = m.predict_points(d.source, usable)
    mean, spread = np.full_like(d.y, np.nan, dtype=np.float64), np.full_like(d.y, np.nan, dtype=np.float64)
    mean[usable], spread[usable] = ensemble_stats(preds[:, usable])
    constant = np.isin(np.arange(len(names)), chosen) if chosen else None  # ridge: one width, its residuals'
    groups, grouping = calibration_groups(*validation_groups(d.split, usable, len(d.y), d.val), cfg.calibration)
    cal = fit_calibration(d.y[d.val], mean[d.val], spread[d.val], constant=constant, groups=groups,
                          method="conformal" if cfg.calibration.startswith("conformal") else cfg.calibration)
    std = np.full_like(spread, np.nan)
    std[usable] = cal.apply(spread[usable])
    f.y_mean, f.y_std = mean.astype(np.float32), std.astype(np.float32)
    test = uncertainty_scores(d.y[d.test], mean[d.test], spread[d.test], cal, names)
    rel = reliability(d.y[d.test], mean[d.test], spread[d.test], cal)
    ens_r2 = regression_scores(d.y[d.test], mean[d.test], names)
    for name in names:
        f.scores[name].update(coverage_68=test[name]["coverage_68"], coverage_95=test[name]["coverage_95"],
                              r2_ensemble=ens_r2[name]["r2"])
    seconds = time.perf_counter() - t0
    f.uncertainty = {
        "members": cfg.ensemble,
        "seeds": [member_seed(cfg.seed, k) for k in range(cfg.ensemble)],
        "what": (f"deep ensemble of {cfg.ensemble} ViTs (seeds differ, same split and options); interval centre = "
                 "ensemble mean, std = calibrated member spread"),
        "calibration": {**cal.to_dict(names),
                        "choice": cfg.calibration,
                        "fitted_on": f"validation blocks ({len(d.val)} points); {grouping}",
                        "formula": ("interval at level p = mean +- quantiles[p] * spread (normalised split-conformal); "
                                    "std = scale * spread, the 68.27 % half-width" if cal.method == "conformal" else
                                    "std = sqrt((scale * spread)^2 + floor^2); interval = mean +- z_p * std")},
        "test": test,
        "coverage_warnings": coverage_warnings(test, len(d.test)),
        "reliability": {"levels": list(LEVELS), "observed": {n: rel[:, k].tolist() for k, n in enumerate(names)}},
        "member_history": [{"best_epoch": h["best_epoch"], "stopped_epoch": h["stopped_epoch"],
                            "seconds": h["seconds"]} for _, h in fitted],
        "seconds": seconds,
    }
    say("uncertainty: test coverage of the 68 % / 95 % intervals: " + ", ".join(
        f"{n} {test[n]['coverage_68']:.2f} / {test[n]['coverage_95']:.2f}" for n in names) + f" ({seconds:.0f} s)")
    for sentence in f.uncertainty["coverage_warnings"].values():
        say(f"  calibration off on the test blocks: {sentence}")


def baselines_stage(cfg: RunConfig, d: Prepared, f: Fitted, say, checkpoints: Path | None = None) -> None:
    """Mean, ridge, position and CNN on the same split; the verdict per target into f.scores.

    With ``--verdict ensemble`` the CNN is trained once more per further ensemble member (the
    members' seeds), its ``cnn`` prediction and R² become the mean's, and the verdict judges the
    ViT ensemble's mean (``r2_ensemble``) against it. ``r2_judged`` and ``judged`` record which.
    """
    say("baselines: training mean, ridge on patch pixels, position-only trend"
        + (", small CNN" if cfg.cnn_baseline else ""))
    t0 = time.perf_counter()
    b = fit_baselines(d.source, d.y, d.sample.positions, shape=d.sample.shape, train=d.train, val=d.val,
                      test=d.test, train_cfg=f.train_cfg, cnn=cfg.cnn_baseline,
                      checkpoint_dir=None if checkpoints is None else checkpoints / "cnn")
    on_ensemble = cfg.verdict == "ensemble" and f.y_mean is not None
    if on_ensemble and cfg.cnn_baseline:
        from .train.ensemble import member_seed

        say(f"baselines: training {cfg.ensemble - 1} more CNN(s) (seeds {member_seed(cfg.seed, 1)}-"
            f"{member_seed(cfg.seed, cfg.ensemble - 1)}), so that the verdict compares ensembles of {cfg.ensemble}")
        members = [b.predictions["cnn"]]
        for k in range(1, cfg.ensemble):
            pred, _ = fit_cnn(d.source, d.y, train=d.train, val=d.val,
                              train_cfg=replace(f.train_cfg, seed=member_seed(cfg.seed, k)),
                              checkpoint_dir=None if checkpoints is None else checkpoints / f"cnn_member{k}")
            members.append(pred)
        b.info["cnn"].update(members=cfg.ensemble, r2_member0=b.r2["cnn"].tolist())
        b.predictions["cnn"] = np.mean(members, axis=0)
        b.r2.update(r2_on(d.y, {"cnn": b.predictions["cnn"]}, d.test))
    b.info["seconds"] = time.perf_counter() - t0
    f.baselines = b
    judged_pred = f.y_mean if on_ensemble else f.pred
    judged = (f"ensemble mean of {cfg.ensemble} ViTs, against the mean of {cfg.ensemble} CNNs" if on_ensemble
              else "member 0 (the primary ViT), against one CNN")
    for k, name in enumerate(d.targets.names):
        s = f.scores[name]
        base = {n: (float(b.r2[n][k]) if n in b.r2 and np.isfinite(b.r2[n][k]) else None) for n in BASELINES}
        yt = d.y[d.test, k]
        margin = r2_margin(yt, judged_pred[d.test, k], b.predictions[best_baseline(base)][d.test, k], seed=cfg.seed)
        r2 = s["r2_ensemble"] if on_ensemble else s["r2"]
        vit_r2 = r2 if r2 is not None else float("nan")
        held = s["choice"] if s.get("predicted_by") == "ridge" else None
        what = (RIDGE_FEATURES[held.get("ridge_features", "pixels")] if held
                else f"the mean of the {cfg.ensemble} ViTs" if on_ensemble else "the ViT")
        learned, best, verdict = learned_verdict(name, vit_r2, base, margin=margin, who=what)
        if held:
            verdict += (f". It is predicted by {what} (--prefer-ridge): the ViT did not beat ridge on the validation "
                        f"blocks (R² {held['vit_val_r2']:.3f} against {held['ridge_val_r2']:.3f}); the ViT's own "
                        f"test R² was {held['vit_test_r2']:.3f}.")
        s.update(baselines=base, best_baseline=best, margin=margin, learned=bool(learned), verdict=verdict,
                 r2_judged=r2, judged=judged)
        say(f"test {name}: {'ViT ensemble' if on_ensemble else 'ViT'} R² {vit_r2:.3f} | " + ", ".join(
            f"{n} {'n/a' if v is None else f'{v:.3f}'}" for n, v in base.items()) + f" -> {verdict}")


def write_stage(stage: Path, cfg: RunConfig, d: Prepared, f: Fitted, index: np.ndarray) -> dict:
    """model.pt, predictions.npz, metrics.json, config.json and an empty explanations.h5."""
    n = d.sample.n_points
    split_labels = np.full(n, -1)
    split_labels[d.train], split_labels[d.val], split_labels[d.test] = 0, 1, 2
    metrics = {
        "targets": f.scores,
        "split": {
            "description": d.split.describe(),
            "blocks": d.split.blocks,
            "buffer_px": d.split.buffer,
            "n_train": int(len(d.train)),
            "n_val": int(len(d.val)),
            "n_test": int(len(d.test)),
            "why": getattr(d.split, "why", "whole spatial blocks are held out: neighbouring patches overlap, a random "
                                             "split leaks"),
        },
        "training": f.history,
        "uncertainty": f.uncertainty,
        **({"samples": _samples_summary(d)} if isinstance(d.split, SampleSplit) else {}),
        "baselines": {} if f.baselines is None else {
            "info": f.baselines.info,
            "learned_rule": ("ViT test R² >= 0.1 and >= the best baseline's + margin (2 x paired-bootstrap SE, >= 0.02)"
                             + ("; judged on the ensemble mean against the mean of as many CNNs (--verdict ensemble)"
                                if cfg.verdict == "ensemble" else "")),
        },
    }
    f.trained.save(stage / "model.pt")
    if f.members:  # deep-ensemble members 1..M-1; model.pt is member 0
        (stage / ENSEMBLE_DIR).mkdir(exist_ok=True)
        for k, m in enumerate(f.members, start=1):
            m.save(stage / ENSEMBLE_DIR / f"member_{k}.pt")
    extra_pred = {} if f.baselines is None else {f"y_pred_{k}": v for k, v in f.baselines.predictions.items()}
    if f.y_std is not None:  # ensemble mean and calibrated predictive std
        extra_pred.update(y_mean=f.y_mean, y_std=f.y_std)
    if "samples" in d.sample.meta:  # several samples: which one each point belongs to
        extra_pred.update(sample=np.asarray(d.sample.meta["samples"]["sample_of_point"], int),
                          sample_names=np.array(d.sample.meta["samples"]["names"]))
    np.savez_compressed(stage / "predictions.npz", point_index=np.arange(n), positions=d.sample.positions,
                        y_true=d.y, y_pred=f.pred, split=split_labels, target_names=np.array(d.targets.names),
                        units=np.array(d.targets.units), **extra_pred)
    for key, arrs in d.targets.arrays.items():  # e.g. latent.npz (latent maps, traversals)
        np.savez_compressed(stage / f"{key}.npz", **arrs)
    geo = d.geometry
    write_explanations(stage / "explanations.h5", point_index=index, maps={},
                       attrs={"window": geo["window"], "patch": geo["patch"], "pad_mode": cfg.pad_mode})
    atomic_write_json(stage / "metrics.json", metrics)
    run = asdict(cfg)
    run.update(window=geo["window"], patch=geo["patch"], buffer=geo["buffer"])  # resolved values
    atomic_write_json(stage / "config.json", {
        "run": run,
        "geometry": geo,
        "model": f.vit_cfg.to_dict(),
        "train": asdict(f.train_cfg),
        "data": {"source": d.sample.meta.get("spec", cfg.source),  # synthetic: the canonical spec
                 "checksum": d.checksum, "n_points": n, "image_shape": list(d.sample.image.shape),
                 "channels": list(d.sample.channels), "file_sha256": d.sample.meta.get("sha256")},
        "targets": {"names": list(d.targets.names), "units": list(d.targets.units), "info": d.targets.info},
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return metrics


def explain_stage(stage: Path, cfg: RunConfig, d: Prepared, index: np.ndarray, say, progress,
                  shard_dir: Path | None = None) -> None:
    """The same code as `structattn explain RUN` (maps + scores, in place)."""
    from .explain_run import auroc_lines, explain_run

    say(f"explaining {len(index)} points with {', '.join(cfg.methods)} and scoring them")
    section = explain_run(stage, methods=cfg.methods, points=cfg.points, seed=cfg.seed, on_step=progress,
                          sample=d.sample, parallel=cfg.parallel(), batch=cfg.explain_batch,
                          score_points=cfg.score_points, shard_dir=shard_dir)
    for line in auroc_lines(section):
        say(line)


def domains_stage(stage: Path, cfg: RunConfig, d: Prepared, index: np.ndarray, say) -> None:
    """Attribution by domain class -> domains.h5, metrics["domains"]; never loses the trained run."""
    from .physics import run_domains

    try:  # `structattn domains` can redo it
        with RunFolder(stage).open_explanations() as (_, maps):  # read a chunk of points at a time
            dom = run_domains(stage, sample=d.sample, point_index=index, maps=maps,
                              window=d.geometry["window"], pad_mode=cfg.pad_mode, seed=cfg.seed,
                              values={n: d.y[index, k] for k, n in enumerate(d.targets.names)})
    except ValueError as exc:
        say(f"domains skipped: {exc}")
        return
    if dom is not None:
        say(f"domains: {dom.segmentation.method} segmentation, classes {', '.join(dom.segmentation.names)}")


def report_stage(stage: Path, d: Prepared, say) -> None:
    from .report.html import write_report
    from .report.registration import write_registration_png

    say("writing report")
    write_registration_png(stage / "registration.png", d.sample)
    write_report(stage, sample=d.sample)


def run_fingerprint(cfg: RunConfig) -> str:
    """Identifies a run's options (not its progress display): `--resume` continues only a run
    with the same fingerprint."""
    import hashlib

    opts = {k: v for k, v in asdict(cfg).items() if k != "progress"}
    return hashlib.sha256(json.dumps(opts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_resumed_data(stage: Path, checksum: str) -> None:
    """A resumed run must see the same data as the interrupted one."""
    f = stage / CHECKPOINTS / "data.json"
    if f.is_file():
        before = json.loads(f.read_text()).get("checksum")
        if before != checksum:
            raise ValueError("--resume: the input data changed since the interrupted run (checksum differs); "
                             "run again without --resume")
    else:
        f.parent.mkdir(exist_ok=True)
        atomic_write_json(f, {"checksum": checksum})


def run_pipeline(
    cfg: RunConfig,
    out: str | Path,
    *,
    sample: Sample | None = None,
    overwrite: bool = False,
    resume: bool = False,
    log: Callable[[str], None] | None = None,
    progress: Callable[[str], None] | None = None,
    _shard_dir: Path | None = None,
) -> RunResult:
    """Run every stage and write the run folder `out` (atomically).

    Args:
        cfg: the options.
        out: destination folder; must not exist (or be empty) unless `overwrite`, which only
            replaces a structattn run folder (see `runfolder.check_out`).
        sample: an already loaded sample (else ``cfg.source`` is read).
        overwrite: replace an existing run folder once the new one is complete.
        resume: continue a run with the same options that was interrupted (a signal, a kill)
            from its last training checkpoint; starts from the beginning if there is none.
        log: receives one-line progress messages.
        progress: receives one line per explanation/scoring step.
    """
    say = log or (lambda _msg: None)
    t_start = time.perf_counter()
    out = Path(out)
    inputs = source_files(cfg.source)
    from .scale.parallel import global_rank, launched_externally

    # ranks started by a launcher: explanation shards go beside the real destination (a file
    # system every rank sees); otherwise inside the staging folder
    shard_dir = out.resolve().parent / f".{out.name}.explain-shards" if launched_externally() else None
    rank = global_rank(cfg.devices)
    if rank != 0 and _shard_dir is None:  # a launcher (torchrun, srun) started every rank: only rank 0 writes `out`
        import shutil
        import tempfile

        scratch = Path(tempfile.mkdtemp(prefix=f".structattn-rank{rank}-"))
        try:
            return run_pipeline(cfg, scratch / "run", sample=sample, log=None, progress=None,
                                _shard_dir=shard_dir or out.resolve().parent / f".{out.name}.explain-shards")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    shard_dir = _shard_dir or shard_dir
    with staged_run_folder(out, overwrite=overwrite, inputs=inputs, fingerprint=run_fingerprint(cfg),
                           resume=resume, say=say) as stage:
        sample, checksum = load_stage(cfg, sample, say)
        _check_resumed_data(stage, checksum)
        checkpoints = stage / CHECKPOINTS
        geo = resolve_geometry(sample, cfg)
        usable, split = split_stage(cfg, sample, geo)
        data = targets_stage(cfg, sample, checksum, geo, usable, split, say)
        fitted = fit_stage(cfg, data, usable, say, checkpoints)
        ridge_choice_stage(cfg, data, fitted, usable, say)
        release_freed_memory()  # each stage's freed batches back to the OS before the next one
        uncertainty_stage(cfg, data, fitted, usable, say, checkpoints)
        release_freed_memory()
        baselines_stage(cfg, data, fitted, say, checkpoints)
        release_freed_memory()
        per_sample_stage(data, fitted, say)
        index = choose_points(data.test, sample.n_points, cfg.points, seed=cfg.seed)
        write_stage(stage, cfg, data, fitted, index)
        explain_stage(stage, cfg, data, index, say, progress, shard_dir=shard_dir)
        if cfg.domains:
            domains_stage(stage, cfg, data, index, say)
        report_stage(stage, data, say)
        metrics = json.loads((stage / "metrics.json").read_text())
    return RunResult(out=out, metrics=metrics, seconds=time.perf_counter() - t_start)
