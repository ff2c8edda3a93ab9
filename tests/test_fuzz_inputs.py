"""Malformed inputs end in one line that names the file and the field, never a traceback; the
inputs stay byte-identical with their modification time, and nothing is left at or beside --out.

Every case below is built here, from a small valid bundle (or BEPS file) broken in one way.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from structattn.cli import main

BASE_SIZE = 64


def _valid() -> dict:
    from structattn.data.synthetic import make_synthetic

    s = make_synthetic(size=BASE_SIZE, spacing=6, seed=2)
    return dict(image=s.image, channels=np.array(s.channels), positions=s.positions, targets=s.targets,
                target_names=np.array(s.target_names), loops=s.loops, voltage=s.voltage,
                labels=s.labels, label_names=np.array(s.label_names), pixel_size=np.array(1e-8))


def _with(**changes) -> dict:
    d = _valid()
    for k, v in changes.items():
        if v is None:
            d.pop(k)
        else:
            d[k] = v
    return d


def _npz_cases() -> list[tuple[str, object, str]]:
    """(case id, bundle dict or raw bytes, word the error must contain)."""
    v = _valid()
    n, (c, h, w) = len(v["positions"]), v["image"].shape
    k = v["targets"].shape[1]
    return [
        ("not-a-zip", b"this is not an npz file at all\n" * 10, "npz"),
        ("empty-file", b"", "npz"),
        ("no-image", _with(image=None), "image"),
        ("no-positions", _with(positions=None), "positions"),
        ("neither-loops-nor-targets", _with(loops=None, voltage=None, targets=None, target_names=None), "loops"),
        ("image-1d", _with(image=np.zeros(10)), "image"),
        ("image-4d", _with(image=np.zeros((1, c, h, w))), "image"),
        ("image-nan", _with(image=np.where(np.arange(h * w).reshape(h, w) == 5, np.nan, v["image"])), "image"),
        ("image-complex", _with(image=v["image"] + 1j), "image"),
        ("image-strings", _with(image=np.full((h, w), "x")), "image"),
        ("image-tiny", _with(image=np.zeros((c, 1, w))), "image"),
        ("positions-3-columns", _with(positions=np.zeros((n, 3))), "positions"),
        ("positions-nan", _with(positions=np.where(np.arange(n * 2).reshape(n, 2) == 3, np.nan, v["positions"])),
         "positions"),
        ("positions-outside", _with(positions=v["positions"] + h), "positions"),
        ("positions-empty", _with(positions=np.zeros((0, 2))), "positions"),
        ("loops-without-voltage", _with(voltage=None, targets=None, target_names=None), "voltage"),
        ("voltage-wrong-length", _with(voltage=v["voltage"][:-3]), "voltage"),
        ("voltage-nan", _with(voltage=np.full_like(v["voltage"], np.nan)), "voltage"),
        ("loops-wrong-count", _with(loops=v["loops"][:-1]), "loops"),
        ("targets-wrong-count", _with(targets=v["targets"][:-2]), "targets"),
        ("targets-nan", _with(targets=np.where(np.arange(n * k).reshape(n, k) == 7, np.nan, v["targets"])),
         "targets"),
        ("targets-complex", _with(targets=v["targets"] * 1j), "targets"),
        ("target-names-count", _with(target_names=np.array(["a"])), "target_names"),
        ("target-names-duplicate", _with(target_names=np.array(["a"] * k)), "target_names"),
        ("target-name-slash", _with(target_names=np.array(["V+/x"] + [f"t{i}" for i in range(k - 1)])),
         "target_names"),
        ("target-name-empty", _with(target_names=np.array([""] + [f"t{i}" for i in range(k - 1)])), "target_names"),
        ("target-names-numbers", _with(target_names=np.arange(k)), "target_names"),
        ("channels-count", _with(channels=np.array(["a"])), "channels"),
        ("labels-wrong-shape", _with(labels=v["labels"][:-1]), "labels"),
        ("labels-float", _with(labels=v["labels"].astype(float)), "labels"),
        ("labels-negative", _with(labels=v["labels"] - 1), "labels"),
        ("truth-classes-shape", _with(truth_radius=np.array(5.0), truth_classes=np.ones(7, bool)), "truth_classes"),
        ("truth-radius-negative", _with(truth_radius=np.array(-1.0), truth_classes=np.ones((k, 5), bool)),
         "truth_radius"),
        ("truth-without-labels", _with(label_names=None, labels=None, truth_radius=np.array(5.0),
                                       truth_classes=np.ones((k, 5), bool)), "truth"),
        ("pixel-size-negative", _with(pixel_size=np.array(-1.0)), "pixel_size"),
        ("pixel-size-array", _with(pixel_size=np.array([1e-8, 2e-8])), "pixel_size"),
        ("constant-target", _with(targets=np.ones((n, 1)), target_names=np.array(["flat"])), "flat"),
    ]


def _valid_beps(path: Path, *, data=None, voltage=None, spectral=True, dtype=float) -> None:
    """A small pyNSID-like (X, Y, Voltage) loop grid (as `read_beps_nsid` expects)."""
    rng = np.random.default_rng(0)
    v = np.concatenate([np.linspace(0, 5, 8), np.linspace(5, -5, 16), np.linspace(-5, 0, 8)])
    cube = rng.normal(size=(12, 12, len(v))) if data is None else data
    with h5py.File(path, "w") as f:
        g = f.create_group("Measurement_000/Channel_000")
        ds = g.create_dataset("generic", data=np.asarray(cube).astype(dtype))
        for i, (name, vals) in enumerate((("X", np.arange(cube.shape[0]) * 4e-8), ("Y", np.arange(cube.shape[1]) * 4e-8),
                                          ("Voltage", v if voltage is None else voltage))):
            sc = g.create_dataset(name, data=vals)
            sc.make_scale(name)
            sc.attrs["dimension_type"] = "SPECTRAL" if (name == "Voltage" and spectral) else "SPATIAL"
            ds.dims[i].attach_scale(sc)
        ds.attrs["DIMENSION_LABELS"] = np.array(["X", "Y", "Voltage"], dtype="S")


def _h5_cases(tmp: Path) -> list[tuple[str, Path, str]]:
    cases = []

    def add(name, word, **kw):
        p = tmp / f"{name}.h5"
        _valid_beps(p, **kw)
        cases.append((name, p, word))

    good = tmp / "good-beps.h5"
    _valid_beps(good)
    raw = good.read_bytes()
    for name, blob in (("h5-truncated", raw[: len(raw) // 3]), ("h5-text", b"not hdf5\n" * 50), ("h5-empty", b"")):
        p = tmp / f"{name}.h5"
        p.write_bytes(blob)
        cases.append((name, p, "HDF5"))
    p = tmp / "h5-no-grid.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("Measurement_000/image", data=np.zeros((8, 8)))
    cases.append(("h5-no-grid", p, "3-D"))
    add("h5-voltage-nan", "voltage", voltage=np.full(32, np.nan))
    add("h5-strings", "dtype", data=np.full((12, 12, 32), "x"), dtype="S1")
    add("h5-voltage-length", "voltage", voltage=np.linspace(0, 1, 5))
    return cases


def _snapshot(paths) -> dict:
    return {p: (p.read_bytes(), os.stat(p).st_mtime_ns) for p in paths}


def test_fuzzed_inputs_one_line_errors_inputs_untouched(tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    cases = []
    for name, payload, word in _npz_cases():
        p = inputs / f"{name}.npz"
        if isinstance(payload, bytes):
            p.write_bytes(payload)
        else:
            np.savez(p, **payload)
        cases.append((name, p, word))
    cases += _h5_cases(inputs)
    assert len(cases) >= 30
    # a file must look old, so that any write (even of the same bytes) shows in its mtime
    for _, p, _ in cases:
        os.utime(p, ns=(1_000_000_000, 1_000_000_000))
    before = _snapshot([p for _, p, _ in cases])
    outs = tmp_path / "outs"
    outs.mkdir()
    failures = []
    for name, path, word in cases:
        rc = main(["run", str(path), "--out", str(outs / name), "--epochs", "1", "--quiet", "--no-cnn-baseline"])
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("•")]
        ok = (rc == 2 and len(lines) == 1 and lines[0].startswith("error:") and path.name in lines[0]
              and word.lower() in lines[0].lower() and "Traceback" not in err)
        if not ok:
            failures.append(f"{name}: rc={rc} {err!r}")
    assert not failures, "\n".join(failures)
    assert _snapshot([p for _, p, _ in cases]) == before  # bytes and mtime unchanged
    assert sorted(os.listdir(outs)) == []  # no run folder, no staging folder, nothing beside --out
