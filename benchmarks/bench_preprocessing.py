"""Preprocessing throughput (images/s) at the paper's size and at the quick profile's size.

    python benchmarks/bench_preprocessing.py [--n-paper 6] [--n-quick 40] [--n-jobs 2]

Times each step of the network-ready chain on one histology image (scikit-image's bundled
immunohistochemistry image, resized) at 1665 x 1393 (the paper's images, 224 px network input) and
at 333 x 278 (the quick profile's phantom, 96 px input), plus scikit-image's own colour CLAHE for
comparison and a whole :func:`liverfuse.preprocessing.prepare` on PNG files (hash, decode,
AHE + Gaussian, resize, cache write). Prints one table, both sizes side by side, and what that means
for the paper's 438 images.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from skimage import data, exposure, io, transform

from liverfuse import PROFILES
from liverfuse import preprocessing as pp

SIZES = {"paper": PROFILES["paper"], "quick": PROFILES["quick"]}


@dataclass
class _Folder:
    table: pd.DataFrame
    name: str = "bench"

    def image(self, i):
        return io.imread(self.table["path"].iloc[i])


def _image(width: int, height: int) -> np.ndarray:
    x = transform.resize(data.immunohistochemistry(), (height, width), anti_aliasing=False)
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)


def _rate(fn, n: int) -> float:
    fn()  # warm-up (imports, FFT plans, allocator)
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t)


def _prepare_rate(img: np.ndarray, n: int, size: int, n_jobs: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for k in range(n):
            p = Path(tmp) / f"im{k}.png"
            io.imsave(p, np.roll(img, k, axis=1), check_contrast=False)  # distinct files, distinct digests
            rows.append({"image_id": p.name, "path": str(p)})
        ds = _Folder(pd.DataFrame(rows))
        t = time.perf_counter()
        pp.prepare(ds, method="paper", input_size=size, cache_dir=Path(tmp) / "cache", n_jobs=n_jobs, progress=False)
        return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-paper", type=int, default=6, help="images timed at 1665 x 1393")
    ap.add_argument("--n-quick", type=int, default=40, help="images timed at 333 x 278")
    ap.add_argument("--n-jobs", type=int, default=2, help="also time prepare() with this many workers")
    args = ap.parse_args()

    cols = {}
    for name, prof in SIZES.items():
        w, h = prof.phantom_size
        n = args.n_paper if name == "paper" else args.n_quick
        img = _image(w, h)
        f32 = np.float32  # the pipeline's working precision
        ahe = pp.ahe(img, dtype=f32)
        chain = pp._preprocess_float(img, "paper")
        col = {
            "CLAHE, skimage colour path (HSV round trip)": _rate(lambda: exposure.equalize_adapthist(img), max(2, n // 3)),
            "AHE, liverfuse.ahe (same result, float32)": _rate(lambda: pp.ahe(img, dtype=f32), n),
            "Gaussian filter (sigma 1)": _rate(lambda: pp.gaussian(ahe, dtype=f32), n),
            "resize to input size (anti-aliased)": _rate(lambda: pp.resize(chain, prof.input_size), n),
            "AHE + Gaussian + resize (per image)": _rate(
                lambda: pp.resize(pp._preprocess_float(img, "paper"), prof.input_size), n
            ),
        }
        for jobs in sorted({1, args.n_jobs}):
            col[f"prepare() on PNG files, n_jobs={jobs}"] = _prepare_rate(img, n, prof.input_size, jobs)
        cols[f"{name}: {w}x{h} -> {prof.input_size} px (images/s)"] = col
    table = pd.DataFrame(cols)
    table.index.name = "step"
    with pd.option_context("display.width", 160, "display.max_colwidth", 60):
        print(table.round(2).to_string())
    paper = table.iloc[:, 0]
    print()
    best = paper[[i for i in paper.index if i.startswith("prepare()")]].max()
    print(
        f"438 images at 1665x1393: prepare() {438 / best / 60:.1f} min "
        f"(with skimage's colour CLAHE the AHE step alone would take {438 / paper.iloc[0] / 60:.1f} min); "
        "cached afterwards, so paid once per dataset, method and input size."
    )


if __name__ == "__main__":
    main()
