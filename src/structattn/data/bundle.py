"""The NPZ input bundle (DESIGN.md contract) and reading any supported file into a `Sample`.

Bundle keys:
  image (C,H,W) or (H,W) float      required
  channels (C,) str                 optional
  positions (N,2) float (row, col)  required, image pixels
  loops (N,V) float, voltage (V,)   required unless `targets` is given
  targets (N,K) float, target_names (K,) str   optional: train on these directly
  target_units (K,) str                        optional
  pixel_size () float metres        optional
  labels (H,W) int, label_names (L,) str       optional domain labels
  truth_radius () float, truth_classes (K,L) bool   optional generator ground truth:
      target k's causal region is the disk of truth_radius around the point restricted to
      the label classes where truth_classes[k] is True.
  channel_units (C,) str            optional units of the image channels
  registration () str               optional JSON: where the spectroscopy grid sits on the image
                                    (`structattn.data.coregister.Registration`, written by
                                    ``structattn bundle``)
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .sample import Sample

REQUIRED = ("image", "positions")


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_bundle(sample: Sample, path: str | os.PathLike) -> Path:
    """Write `sample` as an NPZ bundle (atomically: temp file then rename)."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {
        "image": sample.image,
        "channels": np.array(sample.channels),
        "positions": sample.positions,
    }
    if sample.loops is not None:
        arrays["loops"] = sample.loops
        arrays["voltage"] = sample.voltage
    if sample.targets is not None:
        arrays["targets"] = sample.targets
        arrays["target_names"] = np.array(sample.target_names)
        units = sample.meta.get("target_units", {})
        arrays["target_units"] = np.array([str(units.get(t, "")) for t in sample.target_names])
    if sample.pixel_size is not None:
        arrays["pixel_size"] = np.array(sample.pixel_size)
    if sample.labels is not None:
        arrays["labels"] = sample.labels
        arrays["label_names"] = np.array(sample.label_names)
    if sample.truth is not None and sample.targets is not None:
        classes = sample.truth["classes"]
        arrays["truth_radius"] = np.array(sample.truth["radius"])
        arrays["truth_classes"] = np.array(
            [[lab in classes.get(t, ()) for lab in sample.label_names] for t in sample.target_names]
        )
    units = sample.meta.get("channel_units")
    if units:
        arrays["channel_units"] = np.array([str(units.get(c, "")) for c in sample.channels])
    if sample.meta.get("registration"):
        arrays["registration"] = np.array(json.dumps(sample.meta["registration"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _names(data: dict, key: str) -> tuple[str, ...]:
    """A (K,) array of names as strings (() when absent)."""
    if key not in data:
        return ()
    arr = np.asarray(data[key])
    if arr.dtype.kind not in "USO" and arr.size:
        raise TypeError(f"{key}: expected an array of strings, got dtype {arr.dtype}")
    return tuple(str(v) for v in arr.reshape(-1).tolist())


def _bundle_truth(data: dict) -> dict | None:
    """The optional ground truth (truth_radius, truth_classes), validated against the names."""
    keys = [k for k in ("truth_radius", "truth_classes") if k in data]
    if not keys:
        return None
    missing = [k for k in ("truth_radius", "truth_classes", "label_names", "target_names") if k not in data]
    if missing:
        raise ValueError(f"{keys[0]}: ground truth needs truth_radius, truth_classes, label_names and "
                         f"target_names; missing {missing}")
    names = [str(n) for n in np.asarray(data["label_names"]).reshape(-1)]
    targets = [str(t) for t in np.asarray(data["target_names"]).reshape(-1)]
    tc = np.asarray(data["truth_classes"])
    if tc.shape != (len(targets), len(names)):
        raise ValueError(f"truth_classes: expected shape (targets, label classes) = ({len(targets)}, {len(names)}), "
                         f"got {tc.shape}")
    if tc.dtype != bool and not (np.issubdtype(tc.dtype, np.number) and np.isin(tc, (0, 1)).all()):
        raise TypeError(f"truth_classes: expected booleans (or 0/1), got dtype {tc.dtype}")
    radius = np.asarray(data["truth_radius"])
    if radius.shape != () or not np.issubdtype(radius.dtype, np.number) or not (np.isfinite(radius) and radius > 0):
        raise ValueError(f"truth_radius: expected one positive number of pixels, got {radius!r}")
    tc = tc.astype(bool)
    return {"radius": float(radius),
            "classes": {t: [names[j] for j in np.flatnonzero(tc[i])] for i, t in enumerate(targets)}}


def load_bundle(path: str | os.PathLike) -> Sample:
    """Read an NPZ bundle into a validated `Sample`; errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bundle: no such file: {path}")
    data, key = {}, None
    try:
        z = np.load(path, allow_pickle=False)
        if hasattr(z, "files"):
            with z:
                for key in z.files:  # one at a time, so a broken array is named
                    data[key] = z[key]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as exc:
        first = (str(exc).splitlines() or [""])[0] or type(exc).__name__
        where = f"array {key!r} cannot be read" if key is not None else "not a readable .npz file"
        raise ValueError(f"bundle {path.name}: {where} ({first})") from None
    if not hasattr(z, "files"):
        raise ValueError(f"bundle {path.name}: holds one bare array {np.shape(z)}, expected an .npz archive of "
                         "named arrays (image, positions, ...; see docs/data.md)")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ValueError(f"bundle {path.name}: missing required key(s) {missing}; present: {sorted(data)}")
    if "loops" not in data and "targets" not in data:
        raise ValueError(f"bundle {path.name}: needs `loops` (with `voltage`) or `targets`; present: {sorted(data)}")
    try:
        truth = _bundle_truth(data)
        names = {k: _names(data, k) for k in ("channels", "target_names", "label_names", "target_units")}
        return Sample(
            image=data["image"],
            channels=names["channels"],
            positions=data["positions"],
            loops=data.get("loops"),
            voltage=data.get("voltage"),
            targets=data.get("targets"),
            target_names=names["target_names"],
            pixel_size=data.get("pixel_size"),
            labels=data.get("labels"),
            label_names=names["label_names"],
            truth=truth,
            meta={
                "source": str(path),
                "reader": "npz",
                "sha256": file_sha256(path),
                "target_units": dict(zip(names["target_names"], names["target_units"])),
                **_optional_meta(path, data),
            },
        )
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"bundle {path.name}: {exc}") from None


def _optional_meta(path: Path, data: dict) -> dict:
    """channel_units and registration of a bundle written by ``structattn bundle``."""
    out: dict = {}
    if "channel_units" in data and "channels" in data:
        out["channel_units"] = dict(zip((str(c) for c in data["channels"]), (str(u) for u in data["channel_units"])))
    if "registration" in data:
        try:
            out["registration"] = json.loads(str(data["registration"]))
        except json.JSONDecodeError:
            raise ValueError(f"bundle: {path} key 'registration' is not valid JSON") from None
    return out
