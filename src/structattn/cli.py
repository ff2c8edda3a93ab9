"""The ``structattn`` command. Only this module prints.

Subcommands are registered in `SUBCOMMANDS` (name -> (add_arguments, handler)); modules
that add analyses add theirs here.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings

import numpy as np
from rich.console import Console
from rich.text import Text

console = Console(stderr=True, highlight=False)


def _quiet_libraries() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def _add_run_options(p: argparse.ArgumentParser, *, demo: bool) -> None:
    from .data.patches import PAD_MODES
    from .nets.vit import READOUTS, STEM_POOLS
    from .train.trainer import CRITERIA, STOPPINGS
    from .train.uncertainty import RUN_CALIBRATIONS
    from .pipeline import VERDICTS, RunConfig

    d = RunConfig()
    if not demo:
        p.add_argument("bundle", nargs="*", metavar="BUNDLE",
                       help="input: an .npz bundle (see docs/data.md), a BEPS .h5, or 'synthetic[:seed=N,radius=R]'; "
                            "several bundles = several samples in one run (see --split); or leave it out and "
                            "give --image and --loops")
        _add_file_options(p)
        p.add_argument("--split", default=d.split, choices=("blocks", "sample"),
                       help="several samples: 'blocks' (default) holds out spatial blocks within each sample; "
                            "'sample' holds out whole samples (test, and validation from 3 samples on)")
    p.add_argument("--out", default="runs/demo" if demo else None, required=not demo,
                   help="run folder to create" + (" (default runs/demo)" if demo else ""))
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing run folder once the new one is complete (only a folder structattn "
                        "wrote, never one holding your input or other files)")
    p.add_argument("--resume", action="store_true",
                   help="continue a run with the same options that was interrupted (SIGTERM, Ctrl-C, a kill) from "
                        "its last training checkpoint; starts from the beginning if there is none")
    p.add_argument("--targets", default=None,
                   help="comma-separated targets: given target names (default: all given targets), "
                        "loop descriptors computed from the loops (e.g. V+,V-,imprint), "
                        "'latent' (all unsupervised loop latents) or 'latent:0,2' (some of them)")
    p.add_argument("--structure-from", default="response@0V",
                   help="BEPS .h5 input (no image of its own): derive the structure image from the loops, "
                        "'response@0V' (default) or a descriptor name such as 'V+' (see docs/loops.md)")
    p.add_argument("--latent-kind", default=d.latent_kind, choices=("vae", "pca", "nmf"),
                   help=f"loop model for --targets latent, fitted on the training split only (default {d.latent_kind})")
    p.add_argument("--latent-size", type=int, default=d.latent_size,
                   help=f"number of latents for --targets latent (default {d.latent_size})")
    p.add_argument("--beta", type=float, default=d.beta, help=f"KL weight of the loop VAE (default {d.beta})")
    p.add_argument("--window", type=int, default=None,
                   help="patch side in pixels (default: from the data, 32 px or 4 point spacings, at most a third "
                        "of the image; the reason is recorded in config.json)")
    p.add_argument("--patch", type=int, default=None, help="token side in pixels (default window / 8: 8 x 8 tokens)")
    p.add_argument("--buffer", type=int, default=None,
                   help="pixels around held-out blocks without training points (default window / 4)")
    p.add_argument("--pad-mode", default=d.pad_mode, choices=PAD_MODES,
                   help=f"points near the edge: pad the image this way, or 'exclude' them (default {d.pad_mode})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed for split, model and explanations (default {d.seed})")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"maximum training epochs (default {d.epochs})")
    p.add_argument("--pretrain-epochs", type=int, default=d.pretrain_epochs,
                   help="masked-token pretraining epochs on the whole structure image before training "
                        f"(default {d.pretrain_epochs}: off; see docs/training.md)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"training batch size (default {d.batch_size})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr})")
    p.add_argument("--dim", type=int, default=d.dim, help=f"transformer width (default {d.dim})")
    p.add_argument("--depth", type=int, default=d.depth, help=f"transformer blocks (default {d.depth})")
    p.add_argument("--heads", type=int, default=d.heads, help=f"attention heads (default {d.heads})")
    p.add_argument("--stem", type=int, default=d.stem,
                   help=f"conv stem channels before tokenising, 0 = linear patch embedding (default {d.stem})")
    p.add_argument("--stem-pool", default=None, choices=STEM_POOLS,
                   help="avg, max or avgmax (both, concatenated): the conv stem's two blocks pool down to the token "
                        "grid (a hybrid stem, like the CNN baseline's first two blocks); none: two full-resolution "
                        "convolutions (default avg with a conv stem, none with --stem 0; see docs/training.md, "
                        "rounds 13b and 14)")
    p.add_argument("--wavelets", type=int, default=d.wavelets, metavar="L",
                   help=f"each token also embeds its cell's first-order scattering coefficients: the mean modulus of "
                        f"fixed Morlet wavelets at 2 scales and L orientations (8 is kymatio's design), per channel; "
                        f"0 = off (default {d.wavelets}; docs/training.md, round 16)")
    p.add_argument("--readout", default=d.readout, choices=READOUTS,
                   help=f"what the outputs read: spatial (the final [CLS] state and a learned weighting of the "
                        f"patch tokens per target), cls (the [CLS] state alone, the ViT convention), spatial_embed (spatial, "
                        f"and through a second weighting each token's embedding before the blocks: a linear path), "
                        f"tokens, pool (default {d.readout}; see docs/training.md)")
    auto_ridge = type(d).__dataclass_fields__["prefer_ridge"].default  # the field's default (instances resolve None)
    p.add_argument("--prefer-ridge", action=argparse.BooleanOptionalAction, default=auto_ridge,
                   help="predict a target by ridge on the patch pixels where ridge explains at least half its "
                        "validation variance and the ViT does not beat it there (the verdict's margin); the run "
                        "says which (spatial readouts, no augmentation; docs/training.md round 10c) (default "
                        + ("on where it applies" if auto_ridge is None else "on" if auto_ridge else "off") + ")")
    p.add_argument("--ridge-wavelets", type=int, default=d.ridge_wavelets, metavar="L",
                   help=f"--prefer-ridge also fits ridge on the pixels and their token cells' wavelet moduli (fixed "
                        f"Morlet wavelets, 2 scales x L orientations) and holds it for a target where, on the validation "
                        f"blocks, it beats pixel ridge and beats the ViT by the verdict's margin; 0 = pixel ridge only (default {d.ridge_wavelets}; docs/training.md, "
                        f"round 16c)")
    p.add_argument("--criterion", default=d.criterion, choices=CRITERIA,
                   help="what early stopping and the best epoch watch on the validation blocks: mse (over all "
                        "targets together), log_mse (the mean over targets of each target's log MSE) or capped_mse "
                        "(the mean over targets of the MSE capped at the training mean's, so a target the model "
                        f"predicts worse than the mean does not decide when the others stop) (default {d.criterion})")
    p.add_argument("--stopping", default=d.stopping, choices=STOPPINGS,
                   help="when training ends: criterion (after --patience epochs without improving --criterion) or "
                        "targets (only once no target's own validation MSE has improved for --patience epochs, so a "
                        "target the model cannot learn does not end training for the others); the best epoch is "
                        f"the criterion's either way (default {d.stopping}; docs/training.md, round 23)")
    p.add_argument("--target-patience", type=int, default=d.target_patience,
                   help="leave a target's term out of the loss while its own validation MSE has not improved "
                        "for this many epochs (it comes back when it improves); the others go on; 0 = off (default "
                        f"{d.target_patience}; see docs/training.md)")
    p.add_argument("--ema", type=float, default=d.ema,
                   help="validate, pick the best epoch and keep an exponential moving average of the weights, "
                        f"updated after every step with this decay (e.g. 0.99); 0 = off (default {d.ema}; see "
                        "docs/training.md, round 11)")
    p.add_argument("--sam", type=float, default=d.sam,
                   help="sharpness-aware minimisation around AdamW with this radius rho (e.g. 0.05), for the ViT and "
                        f"the CNN baseline; about twice the training time; 0 = off (default {d.sam}; see "
                        "docs/training.md, round 15)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"AdamW weight decay (default {d.weight_decay})")
    p.add_argument("--dropout", type=float, default=d.dropout,
                   help=f"the ViT's dropout on attention weights and MLP outputs, in [0, 1) (default {d.dropout}; "
                        f"docs/training.md, round 21)")
    p.add_argument("--blocks", type=int, default=d.blocks, help=f"spatial split blocks per side (default {d.blocks})")
    p.add_argument("--augment", default=d.augment, choices=("none", "flips", "dihedral"),
                   help="random symmetries of training patches: none (default), flips (mirrors), dihedral (mirrors "
                        "and 90° turns). Only when the property cannot depend on where or in which orientation a "
                        "structure sits in the patch")
    p.add_argument("--no-augment", action="store_true", help="same as --augment none (kept for old scripts)")
    p.add_argument("--ensemble", type=int, default=d.ensemble,
                   help=f"deep-ensemble size, the primary model included: each more member costs one more ViT "
                        f"training and gives every prediction a calibrated uncertainty (default {d.ensemble}; 1 = off; "
                        "see docs/uncertainty.md)")
    p.add_argument("--ensemble-jobs", type=int, default=d.ensemble_jobs,
                   help=f"ensemble members trained at once in worker processes, cores shared between them "
                        f"(default {d.ensemble_jobs}: one after another)")
    p.add_argument("--calibration", default=d.calibration, choices=RUN_CALIBRATIONS,
                   help="ensemble spread -> intervals on the validation blocks: normalised split-conformal quantiles "
                        "(no distribution assumed) per validation block, the larger kept, or of the blocks pooled; "
                        "a Gaussian scale alone (the RMS of the validation z-scores), or a scale and a noise floor "
                        f"by Gaussian maximum likelihood (default {d.calibration}; docs/uncertainty.md)")
    p.add_argument("--verdict", default=d.verdict, choices=VERDICTS,
                   help="what the verdict judges: the primary ViT (member 0) against one CNN, or the ensemble's "
                        "mean (what predict and suggest map) against the mean of as many CNNs trained with the "
                        f"members' seeds, for --ensemble - 1 more CNN trainings (default {d.verdict}; "
                        "docs/training.md, round 17)")
    p.add_argument("--no-cnn-baseline", action="store_true",
                   help="skip the small CNN baseline (saves about the ViT's training time; mean, ridge and "
                        "position baselines always run)")
    p.add_argument("--methods", default=",".join(d.methods),
                   help=f"explanation methods, comma-separated (default {','.join(d.methods)})")
    p.add_argument("--points", default=d.points, help="points to explain: test, all or N test points (default test)")
    p.add_argument("--device", default=d.device, choices=("cpu", "cuda", "auto"), help="where to train (default cpu)")
    _add_parallel_options(p)
    p.add_argument("--explain-batch", type=int, default=d.explain_batch,
                   help=f"points explained at a time when streaming maps (default {d.explain_batch})")
    p.add_argument("--score-points", type=int, default=d.score_points,
                   help=f"explained points also scored; maps of all are written (default {d.score_points})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--no-domains", action="store_true",
                   help="skip attribution by domain class (default: on when a segmentation is available)")


def _add_parallel_options(p: argparse.ArgumentParser) -> None:
    """--accelerator/--devices/--num-nodes/--strategy/--precision, passed to Lightning (docs/scale.md)."""
    g = p.add_argument_group("several processes, GPUs or nodes (Lightning DDP; see docs/scale.md)")
    g.add_argument("--accelerator", default=None, choices=("cpu", "gpu", "auto"),
                   help="cpu, gpu or auto (same as --device cpu/cuda/auto; default: --device)")
    g.add_argument("--devices", type=int, default=1, help="processes (CPU) or GPUs per node (default 1)")
    g.add_argument("--num-nodes", type=int, default=1,
                   help="machines, each running --devices processes started by torchrun or srun (default 1)")
    g.add_argument("--strategy", default="auto", choices=("auto", "ddp", "ddp_spawn"),
                   help="auto: ddp_spawn from one plain process, ddp under torchrun/srun (default auto)")
    g.add_argument("--precision", default="32", choices=("32", "bf16-mixed"),
                   help="32 or bf16-mixed (autocast, for GPUs; default 32)")


def _device_from(args) -> str:
    acc = getattr(args, "accelerator", None)
    return {"gpu": "cuda", "cpu": "cpu", "auto": "auto"}[acc] if acc else getattr(args, "device", "cpu")


def _parallel_from(args):
    from .scale.parallel import check_parallel

    return check_parallel(accelerator={"cuda": "gpu"}.get(_device_from(args), _device_from(args)),
                          devices=args.devices, num_nodes=args.num_nodes, strategy=args.strategy,
                          precision=args.precision)


def _add_file_options(p: argparse.ArgumentParser, *, title: str = "from instrument files (instead of a bundle; "
                                                                    "see docs/data.md)") -> None:
    """From the microscope's files: a structure image and a spectroscopy grid placed on it."""
    g = p.add_argument_group(title)
    g.add_argument("--image", default=None,
                   help="structure image: Gwyddion .gwy, Asylum .ibw, NSID PFM .h5, or .npz/.npy")
    g.add_argument("--loops", default=None,
                   help="spectroscopy grid: NSID or USID (SHO-fitted) .h5, or .npz/.npy of shape (rows, cols, V)")
    g.add_argument("--extent", default=None, metavar="W_M,H_M",
                   help="grid width,height in metres from its first to its last point (default: the grid covers "
                        "the same scan area as the image)")
    g.add_argument("--offset", default=None, metavar="X_M,Y_M",
                   help="position in metres of the grid's first point from the image's corner pixel (default 0,0)")
    g.add_argument("--channels", default=None,
                   help="image channels to use, by name, comma-separated (default: height, amplitude, phase "
                        "when present); with several bundles: the channels matched across samples")
    g.add_argument("--voltage", default=None,
                   help="bias waveform of a .npy grid: a .npy/.txt file or comma-separated volts")
    g.add_argument("--field", default="out-of-field", choices=("out-of-field", "in-field"),
                   help="USID band-excitation files: which loops to read (default out-of-field, the remanent loop)")
    g.add_argument("--cycle", type=int, default=0, help="USID files with several cycles: which one (default 0)")


_PLACEMENT = ("extent", "offset", "voltage")


def _files_source(args) -> str:
    """The JSON source of --image/--loops (checked: both given, placement values parse)."""
    from .data.coregister import files_spec

    missing = [f"--{k}" for k in ("image", "loops") if getattr(args, k) is None]
    if missing:
        raise ValueError(f"{missing[0]}: --image and --loops go together; {missing[0]} is missing")
    return files_spec(image=args.image, loops=args.loops, extent=args.extent, offset=args.offset,
                      channels=args.channels, voltage=args.voltage, field=args.field, cycle=args.cycle)


def _run_source(args) -> str:
    """One data source from the run's arguments: a bundle, --image/--loops, or several bundles."""
    bundles = list(args.bundle or [])
    if args.image is not None or args.loops is not None:
        if bundles:
            raise ValueError(f"BUNDLE: give either bundles ({', '.join(bundles)}) or --image with --loops, not both")
        return _files_source(args)
    used = [f"--{k}" for k in _PLACEMENT if getattr(args, k) is not None]
    if used:
        raise ValueError(f"{used[0]}: only used with --image and --loops")
    if not bundles:
        raise ValueError("BUNDLE: give a bundle (or several), or --image IMAGE --loops GRID")
    if len(bundles) == 1:
        if args.channels:
            raise ValueError("--channels: only used with --image/--loops or with several bundles")
        return bundles[0]
    from .data.multi import MIN_MARGIN, multi_spec

    margin = max(MIN_MARGIN, 0 if args.window is None else args.window - args.window // 2)
    return multi_spec(bundles, channels=args.channels, margin=margin, pad_mode=args.pad_mode)


def _config_from_args(args, source: str):
    from .pipeline import RunConfig

    return RunConfig(
        source=source, targets=args.targets, structure_from=args.structure_from, window=args.window,
        patch=args.patch, buffer=args.buffer, pad_mode=args.pad_mode,
        seed=args.seed, epochs=args.epochs, pretrain_epochs=args.pretrain_epochs, batch_size=args.batch_size, lr=args.lr, dim=args.dim,
        depth=args.depth, heads=args.heads, stem=args.stem, stem_pool=args.stem_pool, wavelets=args.wavelets, readout=args.readout,
        criterion=args.criterion, stopping=args.stopping,
        prefer_ridge=args.prefer_ridge, ridge_wavelets=args.ridge_wavelets,
        target_patience=args.target_patience, ema=args.ema, sam=args.sam,
        weight_decay=args.weight_decay, dropout=args.dropout, blocks=args.blocks,
        augment="none" if args.no_augment else args.augment, cnn_baseline=not args.no_cnn_baseline,
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()), points=args.points,
        device=_device_from(args), progress=not args.quiet, domains=not args.no_domains,
        devices=args.devices, num_nodes=args.num_nodes, strategy=args.strategy, precision=args.precision,
        explain_batch=args.explain_batch, score_points=args.score_points,
        latent_kind=args.latent_kind, latent_size=args.latent_size, beta=args.beta,
        split=getattr(args, "split", "blocks"), ensemble=args.ensemble, ensemble_jobs=args.ensemble_jobs,
        calibration=args.calibration, verdict=args.verdict,
    )


def _do_run(args, source: str) -> int:
    from .pipeline import run_pipeline

    cfg = _config_from_args(args, source)
    t0 = time.perf_counter()
    # user text (paths, target names) never goes through rich markup
    say = lambda m: console.print(Text.assemble(("• ", "dim"), str(m)), soft_wrap=True)  # noqa: E731
    step = None if args.quiet else (
        lambda m: console.print(Text(f"  explaining and scoring {m}", style="dim"), soft_wrap=True))
    result = run_pipeline(cfg, args.out, overwrite=args.overwrite, resume=args.resume, log=say, progress=step)
    from .scale.parallel import global_rank

    if global_rank(cfg.devices) != 0:  # torchrun / srun: the other ranks worked in a scratch folder
        return 0
    _print_summary(result.metrics)
    console.print(Text.assemble(("done", "bold green"), f" in {time.perf_counter() - t0:.0f} s → {result.out}/report.html"),
                  soft_wrap=True)
    return 0


def _print_summary(metrics: dict) -> None:
    """ViT against its baselines per target, the verdict, and the most faithful method."""
    from .report.summary import summary_lines

    console.print(Text("summary (test blocks):", style="bold"))
    for line in summary_lines(metrics):
        style = "red" if "NOT LEARNED" in line else None
        console.print(Text("  " + line, style=style or ""), soft_wrap=True)


def cmd_run(args) -> int:
    return _do_run(args, _run_source(args))


# --- issue 14: from the microscope's own files to a bundle --------------------------------
def _add_bundle(p):
    _add_file_options(p, title="inputs: the microscope's files (see docs/data.md)")
    p.add_argument("--out", required=True, help="the .npz bundle to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def cmd_bundle(args) -> int:
    """--image + --loops -> an .npz bundle (docs/data.md), with the registration it used."""
    from pathlib import Path

    from .data.bundle import save_bundle
    from .data.coregister import sample_from_files
    from .report.registration import registration_text

    out = Path(args.out)
    if out.suffix.lower() != ".npz":
        raise ValueError(f"--out: expected a .npz path, got {str(out)!r}")
    for k in ("image", "loops"):
        if getattr(args, k) is None:
            raise ValueError(f"--{k}: required (the bundle is built from --image and --loops)")
        if out.exists() and out.resolve() == Path(getattr(args, k)).resolve():
            raise ValueError(f"--out: {str(out)!r} is the --{k} file; input files are never written")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"--out: {str(out)!r} exists; choose another path or pass --overwrite")
    s = sample_from_files(args.image, args.loops, extent=args.extent, offset=args.offset, channels=args.channels,
                          voltage=args.voltage, field=args.field, cycle=args.cycle)
    save_bundle(s, out)
    units = s.meta.get("channel_units", {})
    console.print(Text.assemble(("image ", "bold"), f"{args.image}: channels "
                                + ", ".join(f"{c} [{units.get(c, '') or '?'}]" for c in s.channels)
                                + f", {s.shape[0]} x {s.shape[1]} px"), soft_wrap=True)
    console.print(Text.assemble(("loops ", "bold"), f"{args.loops}: {s.n_points} points, {s.loops.shape[1]} bias steps "
                                f"({s.voltage.min():g} to {s.voltage.max():g} V)"), soft_wrap=True)
    console.print(Text(registration_text(s)), soft_wrap=True)
    console.print(Text.assemble(("done", "bold green"), f" → {out}"), soft_wrap=True)
    return 0


def cmd_demo(args) -> int:
    console.print(Text.assemble(("structattn demo", "bold"),
                                f": synthetic PbTiO3-like a/c domains (seed {args.data_seed}) → ViT → attention"))
    args.overwrite = True  # `make demo` twice just works; check_out still replaces only a run folder
    return _do_run(args, f"synthetic:seed={args.data_seed}")


def _add_demo(p):
    _add_run_options(p, demo=True)
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data (default 0)")


# --- issue 4: explanations compared and scored -----------------------------------------
def _explain_and_score(run_dir, *, methods, points: str, seed: int, quiet: bool, parallel=None, batch: int = 64,
                       score_points: int | None = None) -> dict:
    from .explain_run import SCORE_POINTS, auroc_lines, explain_run
    from .report.html import write_report

    step = None if quiet else (lambda s: console.print(Text(f"  explaining and scoring {s}", style="dim"), soft_wrap=True))
    section = explain_run(run_dir, methods=methods, points=points, seed=seed, on_step=step, parallel=parallel,
                          batch=batch, score_points=score_points or SCORE_POINTS)
    write_report(run_dir)
    for line in auroc_lines(section):
        console.print(Text.assemble(("• ", "dim"), line), soft_wrap=True)
    return section


def cmd_explain(args) -> int:
    t0 = time.perf_counter()
    _explain_and_score(args.run, methods=args.methods, points=args.points, seed=args.seed, quiet=args.quiet,
                       parallel=_parallel_from(args), batch=args.batch, score_points=args.score_points)
    console.print(Text.assemble(("done", "bold green"), f" in {time.perf_counter() - t0:.0f} s → {args.run}/metrics.json, "
                                "explanations.h5, report.html"), soft_wrap=True)
    return 0


def _add_explain(p):
    p.add_argument("run", help="a run folder written by `structattn run`")
    p.add_argument("--methods", default="attention,rollout,gradattn,shap,ig,occlusion,attnlrp",
                   help="comma-separated: attention, rollout, gradattn, shap, ig, occlusion, attnlrp (default all)")
    p.add_argument("--points", default="test", help="points to explain: test, all or N test points (default test)")
    p.add_argument("--seed", type=int, default=0, help="seed for the point choice, SHAP and the randomisation check")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--batch", type=int, default=64, help="points explained at a time when streaming (default 64)")
    p.add_argument("--score-points", type=int, default=256,
                   help="explained points also scored; maps of all are written (default 256)")
    _add_parallel_options(p)
# ----------------------------------------------------------------------------------------


def _add_domains(p):
    p.add_argument("run", metavar="RUN", help="a finished run folder (from structattn run/demo)")
    p.add_argument("--source", default="auto", choices=("auto", "labels", "segment"),
                   help="auto: the bundle's labels if given, else segment amplitude+phase (default auto)")
    p.add_argument("--reference", default="area", choices=("area", "profile"),
                   help="enrichment against class area, or against the method's mean map profile (default area)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples over points (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="segmentation and bootstrap seed (default 0)")


def cmd_domains(args) -> int:
    """Attribution by domain class for a run folder; rewrites metrics.json['domains'] and the report."""
    from .physics import run_domains
    from .report.html import write_report
    from .runfolder import RunFolder

    run = RunFolder(args.run)
    cfg = run.config["run"]
    pred = run.predictions  # the run's measured targets drive the low/high split
    with run.open_explanations() as (idx, maps):  # maps read a chunk of points at a time
        values = {str(n): pred["y_true"][idx, k] for k, n in enumerate(pred["target_names"])}
        dom = run_domains(run.path, sample=run.sample, point_index=idx, maps=maps, window=int(cfg["window"]),
                          pad_mode=cfg["pad_mode"], values=values, source=args.source, n_boot=args.n_boot,
                          seed=args.seed, reference=args.reference)
    if dom is None:
        raise ValueError("RUN: no segmentation available: the data has no labels and no amplitude+phase channels")
    write_report(run.path, sample=run.sample)
    seg = dom.segmentation
    console.print(Text.assemble(("domains", "bold"), f": {seg.method}; "
                                + ", ".join(f"{n} {100 * f:.0f}%" for n, f in seg.fractions.items())), soft_wrap=True)
    for method, per_t in dom.results.items():
        for target, res in per_t.items():
            line = Text(f"  {method} / {target}: ")
            for n, e, (lo, hi) in zip(res.names, res.enrichment, res.ci):
                if not np.isfinite(e):
                    continue
                line.append(f"{n} {e:.2f} [{lo:.2f}, {hi:.2f}]")
                line.append(*(("↑", "green") if lo > 1 else ("↓", "red") if hi < 1 else (" ",)))
                line.append("  ")
            console.print(line, soft_wrap=True)
    console.print(Text.assemble(("done", "bold green"), f" → {run.path}/domains.h5, metrics.json['domains'], report.html"),
                  soft_wrap=True)
    return 0


# --- issue 15: dense maps with uncertainty, and where to measure next ----------------------
def _add_predict(p):
    p.add_argument("run", metavar="RUN", help="a finished run folder (from structattn run/demo)")
    p.add_argument("--step", type=int, required=True, help="grid pitch in pixels (1 = every pixel)")
    p.add_argument("--out", required=True, help="the .h5 file to write (a .png of the maps goes beside it)")
    p.add_argument("--image", default=None,
                   help="another structure image of the same kind (same channel names: .gwy, .ibw, NSID .h5, "
                        ".npz, .npy), standardised with its own statistics (default: the run's image)")
    p.add_argument("--batch", type=int, default=256,
                   help="positions predicted at a time; bounds memory (default 256)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--no-figure", action="store_true", help="write no .png beside --out")
    _add_parallel_options(p)


def cmd_predict(args) -> int:
    from .maps import predict_dense

    t0 = time.perf_counter()
    last = [0.0]

    def step(done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 5 or done == total:
            last[0] = time.perf_counter()
            console.print(Text(f"  {done}/{total} positions", style="dim"), soft_wrap=True)

    res = predict_dense(args.run, step=args.step, out=args.out, image=args.image, batch=args.batch,
                        overwrite=args.overwrite, figure=not args.no_figure, on_batch=step,
                        parallel=_parallel_from(args))
    if res is None:  # another rank of several processes: global rank 0 writes --out
        return 0
    console.print(Text.assemble(("done", "bold green"), f" in {time.perf_counter() - t0:.0f} s: {res.n_positions} "
                                f"positions ({res.shape[0]} x {res.shape[1]}), {res.members} model(s), peak memory "
                                f"{res.peak_rss_mb:.0f} MiB → {res.path}"
                                + (f", {res.figure}" if res.figure else "")), soft_wrap=True)
    return 0


def _add_suggest(p):
    from .acquire import GOAL_HELP

    p.add_argument("run", metavar="RUN", help="a finished run folder trained with --ensemble 2 or more")
    p.add_argument("--n", type=int, required=True, help="how many positions to suggest")
    p.add_argument("--out", required=True, help="the .csv to write (a .png overlay goes beside it)")
    p.add_argument("--goal", default=None,
                   help=f"rank by expected improvement toward a goal: {GOAL_HELP} (default: rank by uncertainty)")
    p.add_argument("--target", default=None, help="without --goal: rank by this target's uncertainty alone "
                                                  "(default: all targets)")
    p.add_argument("--step", type=int, default=None,
                   help="candidate grid pitch in pixels (default: half the measured points' spacing)")
    p.add_argument("--exclude", type=float, default=None,
                   help="drop candidates closer than this many pixels to a measured point (default: a third of the "
                        "spacing, at least 1)")
    p.add_argument("--min-distance", type=float, default=None,
                   help="suggested positions at least this many pixels apart (default: twice the spacing)")
    p.add_argument("--batch", type=int, default=256, help="positions predicted at a time (default 256)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--no-figure", action="store_true", help="write no .png beside --out")
    p.add_argument("--density", action="store_true",
                   help="without --goal: weigh the uncertainty by each patch's information density among the image's "
                        "patches, so outlying patches rank lower (in the simulated campaigns better than plain uncertainty on two of "
                        "four textures, worse on two; docs/uncertainty.md)")


def cmd_suggest(args) -> int:
    from .suggest import suggest

    res = suggest(args.run, n=args.n, out=args.out, goal=args.goal, target=args.target, step=args.step,
                  exclude=args.exclude, min_distance=args.min_distance, batch=args.batch, overwrite=args.overwrite,
                  figure=not args.no_figure, density=args.density)
    console.print(Text(f"ranked {res.n_candidates} unmeasured positions by {res.acquisition}"), soft_wrap=True)
    for k, ((r, c), s) in enumerate(zip(res.positions[:5], res.scores[:5]), start=1):
        console.print(Text(f"  {k}. row {r:.0f}, col {c:.0f}: score {s:.3g}"), soft_wrap=True)
    console.print(Text.assemble(("done", "bold green"), f" in {res.seconds:.0f} s → {res.path}"
                                + (f", {res.figure}" if res.figure else "")), soft_wrap=True)
    return 0


SUBCOMMANDS = {
    "run": ("train on a data bundle, explain, and write a run folder", lambda p: _add_run_options(p, demo=False), cmd_run),
    "demo": ("run the whole pipeline on the bundled synthetic default data", _add_demo, cmd_demo),
    "bundle": ("build an .npz bundle from a structure image and a spectroscopy grid (instrument files)",
               _add_bundle, cmd_bundle),
    "explain": ("explain a run with several methods and score them (faithfulness, ground truth, "
                "agreement, randomisation, cost)", _add_explain, cmd_explain),
    "domains": ("attribution by domain class (c+, c-, a, walls) for a run folder", _add_domains, cmd_domains),
    "predict": ("predict every target and its uncertainty on a dense grid of the structure image -> maps.h5",
                _add_predict, cmd_predict),
    "suggest": ("rank unmeasured positions by an acquisition function: where to measure next -> next.csv",
                _add_suggest, cmd_suggest),
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="structattn",
        description="Learn structure-property relationships from microscopy with a Vision Transformer "
        "and explain them with attention.",
    )
    parser.add_argument("--version", action="version", version=f"structattn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add, handler) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
        p.set_defaults(handler=handler)
    return parser


def _on_signal(signum, _frame):
    from .runfolder import Interrupted

    raise Interrupted(signum)


def _install_signal_handlers() -> dict:
    """SIGTERM, SIGINT and SIGHUP raise `Interrupted`: a scheduler sees a non-zero status and a
    one-line message, and the partial run is kept for --resume. Returns the previous handlers."""
    import signal

    previous = {}
    for name in ("SIGTERM", "SIGINT", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None:
            try:
                previous[sig] = signal.signal(sig, _on_signal)
            except ValueError:  # not the main thread (e.g. called from a worker): leave signals alone
                pass
    return previous


def main(argv: list[str] | None = None) -> int:
    import signal

    from .runfolder import Interrupted

    args = build_parser().parse_args(argv)
    _quiet_libraries()
    previous = _install_signal_handlers()
    try:
        return args.handler(args)
    except Interrupted as exc:
        where = (f"the partial run is kept in {exc.kept}; continue it with the same command and --resume"
                 if exc.kept is not None else "no run folder was written")
        console.print(Text.assemble(("interrupted", "bold red"), f" by {exc.name}: {where}"), soft_wrap=True)
        return 128 + exc.signum
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, KeyError, OSError) as exc:
        if os.environ.get("STRUCTATTN_DEBUG"):
            raise
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        # one line, never wrapped, message text not parsed as rich markup (paths may hold [ ])
        console.print(Text.assemble(("error: ", "bold red"), msg), soft_wrap=True)
        return 2
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
