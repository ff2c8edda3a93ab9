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


def load_bundle(path: str | os.PathLike) -> Sample:
    """Read an NPZ bundle into a validated `Sample`; errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bundle: no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ValueError(f"bundle: {path} is not a readable .npz file ({exc})") from None
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ValueError(f"bundle: {path} is missing required key(s) {missing}; present: {sorted(data)}")
    if "loops" not in data and "targets" not in data:
        raise ValueError(f"bundle: {path} needs `loops` (with `voltage`) or `targets`; present: {sorted(data)}")
    truth = None
    if "truth_radius" in data and "truth_classes" in data and "label_names" in data and "target_names" in data:
        names = [str(n) for n in data["label_names"]]
        tc = np.asarray(data["truth_classes"], bool)
        truth = {
            "radius": float(data["truth_radius"]),
            "classes": {
                str(t): [names[j] for j in np.flatnonzero(tc[i])] for i, t in enumerate(data["target_names"])
            },
        }
    try:
        return Sample(
            image=data["image"],
            channels=tuple(str(c) for c in data.get("channels", ())),
            positions=data["positions"],
            loops=data.get("loops"),
            voltage=data.get("voltage"),
            targets=data.get("targets"),
            target_names=tuple(str(c) for c in data.get("target_names", ())),
            pixel_size=float(data["pixel_size"]) if "pixel_size" in data else None,
            labels=data.get("labels"),
            label_names=tuple(str(c) for c in data.get("label_names", ())),
            truth=truth,
            meta={
                "source": str(path),
                "reader": "npz",
                "sha256": file_sha256(path),
                "target_units": dict(zip((str(t) for t in data.get("target_names", ())),
                                         (str(u) for u in data.get("target_units", ())))),
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
