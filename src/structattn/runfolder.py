"""The run folder contract (DESIGN.md) and atomic writing.

A run is built in a hidden staging folder beside its destination and renamed into place
only when every file is written, so a crash never leaves a folder that looks complete.
Files that later commands update (``explanations.h5``, ``metrics.json``, ``report.html``)
are replaced atomically (write a temp file, then ``os.replace``).

Layout:
  config.json       resolved run config, model config, versions, data source and checksum
  metrics.json      per target test R² / MAE, the split, training history, scores
  model.pt          weights, architecture, scalers (`TrainedModel.load`); deep-ensemble member 0
  ensemble/         member_<k>.pt, the other members (k = 1..M-1), when --ensemble > 1
  predictions.npz   point_index, positions, y_true, y_pred (N, K), split (0/1/2, -1 unused);
                    with an ensemble also y_mean (ensemble mean) and y_std (calibrated std)
  explanations.h5   /point_index (M,), /<method>/<target> float32 (M, w, w)
  report.html       self-contained report
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
from functools import cached_property
from pathlib import Path

import h5py
import numpy as np

REQUIRED_FILES = ("config.json", "metrics.json", "model.pt", "predictions.npz", "explanations.h5")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path, tuple, set)):
        return str(o) if isinstance(o, Path) else list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, default=_json_default).encode())


def write_explanations(path: Path, *, point_index: np.ndarray, maps: dict, attrs: dict | None = None) -> None:
    """Write (or extend) explanations.h5 atomically.

    Args:
        path: the file; existing methods not in `maps` are kept when `point_index` matches.
        point_index: (M,) indices into the sample's points.
        maps: {method: {target: (M, w, w) array}}.
        attrs: file attributes (window, patch, ...).
    """
    path = Path(path)
    keep: dict = {}
    if path.exists():
        with h5py.File(path, "r") as f:
            if np.array_equal(f["point_index"][()], point_index):
                for m in f:
                    if m != "point_index" and m not in maps:
                        keep[m] = {t: f[m][t][()] for t in f[m]}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("point_index", data=np.asarray(point_index, np.int64))
            for k, v in (attrs or {}).items():
                f.attrs[k] = v
            for method, per_target in {**keep, **maps}.items():
                g = f.create_group(method)
                for target, arr in per_target.items():
                    g.create_dataset(target, data=np.asarray(arr, np.float32), compression="gzip")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


MARKER = ".structattn-run"  # every finished run folder holds it; --overwrite replaces only such folders
OWNER = ".owner.json"  # inside a staging folder: who is writing it (pid, host) and what (config fingerprint)
ENSEMBLE_DIR = "ensemble"  # inside a run folder: deep-ensemble members 1..M-1 (member_<k>.pt)
CHECKPOINTS = "checkpoints"  # inside a staging folder: training checkpoints for --resume (removed on success)


class Interrupted(BaseException):
    """A run stopped by a signal (SIGTERM, SIGINT, SIGHUP); raised by the CLI's signal handler.

    A BaseException, like KeyboardInterrupt, so no ``except Exception`` swallows it; not a
    KeyboardInterrupt, which Lightning turns into ``sys.exit(1)`` without a word.
    """

    def __init__(self, signum: int) -> None:
        import signal as _signal

        self.signum = int(signum)
        self.name = _signal.Signals(signum).name if signum in iter(_signal.Signals) else str(signum)
        self.kept: Path | None = None  # the staging folder kept for --resume, if any
        super().__init__(f"interrupted by {self.name}")


def is_run_folder(path: Path) -> bool:
    """A folder structattn wrote: it holds the marker (or, for runs before the marker, every
    required file and a config.json that names structattn)."""
    path = Path(path)
    if (path / MARKER).is_file():
        return True
    if not all((path / f).is_file() for f in REQUIRED_FILES):
        return False
    try:
        return "structattn" in json.loads((path / "config.json").read_text()).get("versions", {})
    except (OSError, ValueError, AttributeError):
        return False


def check_out(out: Path, *, overwrite: bool, inputs=()) -> Path:
    """Refuse every `--out` that could lose data, before any work starts; returns it resolved.

    Never the current folder or one holding it, never a folder holding an input, and with
    ``overwrite`` only a structattn run folder (`is_run_folder`).
    """
    given = Path(out)
    if str(out).strip() == "":
        raise ValueError("--out: expected a folder path, got an empty string")
    out = given.resolve()
    cwd = Path.cwd().resolve()
    if out == cwd or out in cwd.parents:
        raise ValueError(f"--out: {given} is the current folder or holds it; name a new folder for the run "
                         "(e.g. --out runs/name)")
    for inp in inputs:
        inp = Path(inp)
        if inp.exists() and (inp.resolve() == out or out in inp.resolve().parents):
            raise ValueError(f"--out: {given} holds the input {inp}; a run folder must be a folder of its own")
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise FileExistsError(f"--out: {given} exists and is not a folder")
        if any(out.iterdir()):
            if not overwrite:
                raise FileExistsError(f"--out: {given} exists and is not empty; choose another folder or pass "
                                      "--overwrite (which replaces only a structattn run folder)")
            if not is_run_folder(out):
                raise FileExistsError(f"--out: {given} is not a structattn run folder (no {MARKER} marker); "
                                      "--overwrite replaces only run folders. Choose another folder")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"--out: cannot write in {parent}")
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def leftover_stages(out: Path) -> list[tuple[Path, dict, bool]]:
    """Staging folders beside `out` left by earlier runs: (path, owner info, writer alive)."""
    out = Path(out)
    found = []
    if not out.parent.is_dir():
        return found
    for p in sorted(out.parent.glob(f".{out.name}.partial-*")):
        if not p.is_dir():
            continue
        try:
            owner = json.loads((p / OWNER).read_text())
        except (OSError, ValueError):
            owner = {}
        alive = (owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int)
                 and owner["pid"] != os.getpid() and _pid_alive(owner["pid"]))
        found.append((p, owner, alive))
    return found


def _resumable(stage: Path) -> bool:
    """The staging folder holds training checkpoints (or finished models) worth resuming."""
    ck = Path(stage) / CHECKPOINTS
    return ck.is_dir() and any(p.suffix in (".ckpt", ".pt") for p in ck.rglob("*"))


@contextlib.contextmanager
def staged_run_folder(out: Path, *, overwrite: bool = False, inputs=(), fingerprint: str | None = None,
                      resume: bool = False, say=None):
    """Yield a staging folder that becomes `out` only if the block finishes without error.

    Args:
        out: the run folder to create (`check_out` decides whether that is safe).
        overwrite: replace an existing run folder (only one that holds the marker).
        inputs: input files: `out` may not hold any of them.
        fingerprint: identifies the run's config; a staging folder with the same fingerprint
            left by a killed run is continued when `resume`.
        resume: continue a killed run's staging folder (its checkpoints) instead of starting anew.
        say: receives one line per leftover folder removed or reused.

    On an error the staging folder is removed. On a signal (`Interrupted`) it is kept when it
    holds training checkpoints, so ``--resume`` can continue; the exception's ``kept`` says where.
    Leftovers of killed runs beside `out` are removed (or, with `resume`, the matching one reused);
    a folder another live run is writing is an error.
    """
    say = say or (lambda _m: None)
    given = Path(out)
    resolved = given.resolve()
    for old in sorted(resolved.parent.glob(f".{resolved.name}.old-*")) if resolved.parent.is_dir() else ():
        if resolved.exists():  # a run killed between its two renames left the replaced folder
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, resolved)
            say(f"restored the previous run folder {given} from {old.name}")
    out = check_out(given, overwrite=overwrite, inputs=inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = None
    for path, owner, alive in leftover_stages(out):
        if owner.get("host") not in (None, socket.gethostname()):
            say(f"left {path.name} alone: another machine ({owner['host']}) wrote it")
            continue
        if alive:
            raise FileExistsError(f"--out: another structattn run (pid {owner['pid']}) is writing {given} "
                                  f"(staging folder {path.name}); wait for it or stop it")
        if (resume and stage is None and path.name.startswith(f".{out.name}.partial-")
                and fingerprint is not None and owner.get("fingerprint") == fingerprint and _resumable(path)):
            stage = path
            say(f"resuming the interrupted run in {path.name}")
            continue
        shutil.rmtree(path, ignore_errors=True)
        say(f"removed {path.name}, left beside {given.name} by an interrupted run")
    if resume and stage is None:
        say("nothing to resume (no interrupted run with the same options): starting from the beginning")
    if stage is None:
        stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
        os.chmod(stage, 0o755)
    atomic_write_json(stage / OWNER, {"pid": os.getpid(), "host": socket.gethostname(),
                                      "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "fingerprint": fingerprint})
    old = None
    try:
        yield stage
        shutil.rmtree(stage / CHECKPOINTS, ignore_errors=True)
        (stage / OWNER).unlink(missing_ok=True)
        atomic_write_json(stage / MARKER, {"what": "a structattn run folder; `--overwrite` may replace it",
                                           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(stage, out)
    except Interrupted as exc:
        if _resumable(stage):
            exc.kept = stage
        else:
            shutil.rmtree(stage, ignore_errors=True)
        _restore(old, out)
        raise
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        _restore(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _restore(old: Path | None, out: Path) -> None:
    """Put the replaced run folder back if the new one did not take its place."""
    if old is not None and old.exists() and not out.exists():
        os.replace(old, out)


class RunFolder:
    """Read access to a finished run folder; raises a clear error if it is not one."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"RUN: no such run folder: {self.path}")
        missing = [f for f in REQUIRED_FILES if not (self.path / f).is_file()]
        if missing:
            raise ValueError(f"RUN: {self.path} is not a complete structattn run folder (missing {missing})")

    @cached_property
    def config(self) -> dict:
        return json.loads((self.path / "config.json").read_text())

    @property
    def metrics(self) -> dict:
        return json.loads((self.path / "metrics.json").read_text())

    def update_metrics(self, **sections) -> dict:
        m = self.metrics
        m.update(sections)
        atomic_write_json(self.path / "metrics.json", m)
        return m

    @cached_property
    def predictions(self) -> dict:
        with np.load(self.path / "predictions.npz", allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def explanations(self, rows: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
        """(point_index (M,), {method: {target: (M, w, w)}}), read into memory.

        `rows` (increasing positions along M) reads only those explained points: then both
        the index and the maps hold just them. For all maps of many points use
        `open_explanations`, which reads only what is sliced.
        """
        with self.open_explanations() as (idx, maps):
            sel = slice(None) if rows is None else np.asarray(rows, np.int64)
            return idx[sel], {m: {t: ds[sel] for t, ds in per.items()} for m, per in maps.items()}

    def explanation_index(self) -> np.ndarray:
        """(M,) point_index of explanations.h5 (no map is read)."""
        with h5py.File(self.path / "explanations.h5", "r") as f:
            return f["point_index"][()]

    @contextlib.contextmanager
    def open_explanations(self):
        """``with run.open_explanations() as (point_index, maps):`` maps[method][target] are
        h5py datasets (M, w, w), read only where sliced (``ds[a:b]``, ``ds[sorted index]``):
        memory follows the slice, not the number of explained points."""
        with h5py.File(self.path / "explanations.h5", "r") as f:
            idx = f["point_index"][()]
            yield idx, {m: {t: f[m][t] for t in f[m]} for m in f if m != "point_index"}

    @cached_property
    def model(self):
        from .train.trainer import TrainedModel

        return TrainedModel.load(self.path / "model.pt")

    @cached_property
    def members(self) -> list:
        """Every deep-ensemble member as a `TrainedModel`: model.pt first, then ensemble/member_<k>.pt."""
        from .train.trainer import TrainedModel

        n = int((self.metrics.get("uncertainty") or {}).get("members", 1))
        paths = [self.path / ENSEMBLE_DIR / f"member_{k}.pt" for k in range(1, n)]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise ValueError(f"RUN: {self.path} lists {n} ensemble members but {ENSEMBLE_DIR}/ lacks {missing}")
        return [self.model] + [TrainedModel.load(p) for p in paths]

    @property
    def calibration(self):
        """The `Calibration` of the ensemble spread, or None for a run without an ensemble."""
        from .train.uncertainty import Calibration

        cal = (self.metrics.get("uncertainty") or {}).get("calibration")
        return None if cal is None else Calibration.from_dict(cal, self.model.target_names)

    @cached_property
    def sample(self):
        from .data.io import load_sample, sample_checksum

        s = load_sample(self.config["data"]["source"],
                        structure_from=self.config["run"].get("structure_from", "response@0V"))  # loops: BEPS .h5
        want = self.config["data"]["checksum"]
        if sample_checksum(s) != want:
            raise ValueError(f"RUN: the data at {self.config['data']['source']} changed since the run (checksum differs)")
        return s
