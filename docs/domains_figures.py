"""Regenerate the figures and the class-fraction table of docs/domains.md.

    PYTHONPATH=src python docs/domains_figures.py   # from the project root, ~15 s

Reads the real PFM images from ../shared/data/pto_pfm_images/ (not copied into the repo;
DTMicroscope, MIT licence) and the default synthetic sample.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from structattn.data.pfm import read_pfm  # noqa: E402
from structattn.data.synthetic import make_synthetic  # noqa: E402
from structattn.physics import segment_domains  # noqa: E402
from structattn.report.domain_figures import plot_channel, plot_segmentation  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "pto_pfm_images"
if not DATA.exists():
    DATA = Path("/work/shared/data/pto_pfm_images")
OUT = ROOT / "docs" / "img"


def save_small(fig, path: Path, *, dpi: int = 65) -> None:
    """Save as a 128-colour palette PNG (a few tens of kB instead of ~200 kB)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    Image.open(buf).convert("RGB").quantize(colors=128).save(path, optimize=True)


def real_figure(stem: str) -> None:
    pfm = read_pfm(DATA / f"{stem}.h5", reader="h5py")
    seg = segment_domains(pfm.image, pfm.channels)
    side_um = pfm.pixel_size * (pfm.image.shape[2] - 1) * 1e6
    fig, axs = plt.subplots(1, 4, figsize=(12.5, 3.2))
    plot_channel(pfm.image[pfm.channels.index("height")], ax=axs[0], title="height")
    plot_channel(pfm.image[pfm.channels.index("amplitude")], ax=axs[1], title="PFM amplitude")
    plot_channel(pfm.image[pfm.channels.index("phase")], ax=axs[2], title="PFM phase", cmap="twilight")
    plot_segmentation(seg.labels, seg.names, ax=axs[3], title="segmentation")
    fig.suptitle(f"{stem}  ({side_um:.0f} um scan)", fontsize=10)
    fig.tight_layout()
    save_small(fig, OUT / f"domains_{stem}.png")
    plt.close(fig)


def synthetic_figure() -> float:
    s = make_synthetic(seed=0)
    seg = segment_domains(s.image, s.channels)
    fig, axs = plt.subplots(1, 3, figsize=(10, 3.2))
    plot_channel(s.image[0], ax=axs[0], title="synthetic amplitude")
    plot_segmentation(s.labels, s.label_names, ax=axs[1], title="generator labels")
    plot_segmentation(seg.labels, seg.names, ax=axs[2], title="unsupervised segmentation")
    fig.tight_layout()
    save_small(fig, OUT / "domains_synthetic.png")
    plt.close(fig)
    lut = np.array([s.label_names.index(n) if n in s.label_names else -1 for n in seg.names])
    return float((lut[seg.labels] == s.labels).mean())


def table() -> str:
    names = ("c+", "c-", "a", "wall_cc", "wall_ac", "wall")
    rows = ["| image | scan | " + " | ".join(names) + " | low/high amplitude | c+ phase |",
            "|---|---|" + "---|" * len(names) + "---|---|"]
    for path in sorted(DATA.glob("PTO_Funakubo000*.h5")):
        pfm = read_pfm(path, reader="h5py")
        seg = segment_domains(pfm.image, pfm.channels)
        fr = seg.fractions
        side = pfm.pixel_size * (pfm.image.shape[2] - 1) * 1e6
        ratio = seg.notes["_amplitude_ratio"].split("= ")[-1]
        cplus = seg.notes.get("c+", "").split(" deg")[0].replace("phase near ", "")
        cells = " | ".join(f"{100 * fr.get(n, 0.0):.0f}%" for n in names)
        rows.append(f"| {path.stem[-4:]} | {side:.0f} um | {cells} | {ratio} | {cplus} deg |")
    return "\n".join(rows)


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for stem in ("PTO_Funakubo0001", "PTO_Funakubo0004", "PTO_Funakubo0007"):
        real_figure(stem)
    print(f"synthetic pixel accuracy: {synthetic_figure():.3f}")
    print(table())
