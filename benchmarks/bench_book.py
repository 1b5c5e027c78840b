"""Book build time on this machine, cold and warm, against the ``quick`` profile's targets.

    python benchmarks/bench_book.py [--keep DIR] [--skip-warm]

The ``quick`` profile is sized so that the whole book, all eight sections, builds cold in 15 minutes
or less and warm in 3 or less on a 2-core machine. How long a build takes depends on how fast the
machine's cores are (the 2-vCPU cloud VMs this project was built on have run the same float32 matrix
multiply at 41 to 205 GFLOP/s on different days), so this script measures the build and the machine
side by side:

1. **cold**: ``jupyter-book build book --path-output T/cold`` with ``LIVERFUSE_CACHE=T/cache`` empty,
   i.e. a fresh clone's first build (phantom generated, images prepared, features extracted, FuNet
   trained, every notebook executed);
2. **rebuild**: the same command again: jupyter-cache finds every notebook unchanged and executes none;
3. **warm**: ``--path-output T/warm`` with the same ``LIVERFUSE_CACHE``: jupyter-cache is empty, so every
   notebook executes again, but the liverfuse caches (phantom, prepared images, features, FuNet) are
   warm, as after editing every notebook's text.

It prints each notebook's execution seconds (myst-nb's "Executed notebook in" lines), the totals for
the eight sections and for the whole book, the wall time of each build, and the machine's float32
matrix-multiply rate (numpy, all cores) before and after, so that figures from different days or
machines can be compared. The repository's own ``_build`` and ``.cache`` are not touched; the
notebooks write their tables and figures under ``results/`` as in any build.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
EXECUTED = re.compile(r"book/(?P<nb>[\w/.-]+)\.ipynb: Executed notebook in (?P<s>[\d.]+) seconds")
TARGET_COLD_S, TARGET_WARM_S = 15 * 60, 3 * 60


def gflops(n: int = 2048, repeats: int = 10) -> float:
    """Best-of float32 matrix-multiply rate of numpy's BLAS on all cores, GFLOP/s."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    a @ a  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def build(out: Path, cache: Path, log: Path) -> tuple[float, dict[str, float]]:
    """One ``jupyter-book build book``; wall seconds and per-notebook execution seconds."""
    exe = shutil.which("jupyter-book")
    if exe is None:
        sys.exit("jupyter-book is not installed: python -m pip install -e '.[book]'")
    env = dict(os.environ, LIVERFUSE_CACHE=str(cache))
    t0 = time.perf_counter()
    lines = []
    with subprocess.Popen([exe, "build", "book", "--path-output", str(out)], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        for line in proc.stdout:  # progress: one line per executed notebook, as it finishes
            lines.append(line)
            if m := EXECUTED.search(line):
                print(f"  {time.perf_counter() - t0:6.0f} s  {m['nb']}: {float(m['s']):.1f} s", flush=True)
    wall = time.perf_counter() - t0
    text = "".join(lines)
    log.write_text(text)
    if proc.returncode != 0:
        sys.exit(f"jupyter-book build failed (exit {proc.returncode}); log: {log}\n{text[-3000:]}")
    return wall, {m["nb"]: float(m["s"]) for m in EXECUTED.finditer(text)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    ap.add_argument("--skip-warm", action="store_true", help="only the cold build and the rebuild")
    args = ap.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="liverfuse-bench-book-"))
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    if cache.exists() or (work / "cold").exists():
        sys.exit(f"{work} already holds a build; pass an empty or new --keep folder.")
    print(f"{os.cpu_count()} logical CPUs, {len(os.sched_getaffinity(0))} usable; "
          f"float32 matmul {gflops():.0f} GFLOP/s; work folder {work}", flush=True)

    runs: dict[str, tuple[float, dict[str, float]]] = {}
    runs["cold"] = build(work / "cold", cache, work / "cold.log")
    print(f"cold build: {runs['cold'][0]:.0f} s", flush=True)
    runs["rebuild"] = build(work / "cold", cache, work / "rebuild.log")
    print(f"rebuild: {runs['rebuild'][0]:.0f} s", flush=True)
    if not args.skip_warm:
        runs["warm"] = build(work / "warm", cache, work / "warm.log")
        print(f"warm build: {runs['warm'][0]:.0f} s", flush=True)
    rate_after = gflops()

    names = list(runs["cold"][1])
    table = pd.DataFrame({k: [v[1].get(nb, 0.0) for nb in names] for k, v in runs.items()}, index=names)
    sections = [nb for nb in names if nb.startswith("notebooks/")]
    table.loc["eight sections (sum)"] = table.loc[sections].sum()
    table.loc["all notebooks (sum)"] = table.loc[names].sum()
    table.loc["build wall time"] = [v[0] for v in runs.values()]
    table.index.name = "notebook execution, seconds"
    print()
    print(table.round(1).to_string())
    print(f"\nfloat32 matmul after the builds: {rate_after:.0f} GFLOP/s")
    cold = table.loc["eight sections (sum)", "cold"]
    print(f"eight sections cold: {cold / 60:.1f} min (target <= {TARGET_COLD_S // 60}): "
          f"{'met' if cold <= TARGET_COLD_S else 'NOT met'}; whole book cold (wall, with the reproduction page): "
          f"{runs['cold'][0] / 60:.1f} min")
    if "warm" in runs:
        warm = runs["warm"][0]
        print(f"whole book warm (every notebook re-executed on warm caches): {warm / 60:.1f} min "
              f"(target <= {TARGET_WARM_S // 60}): {'met' if warm <= TARGET_WARM_S else 'NOT met'}")
    print(f"rebuild with unchanged notebooks: {runs['rebuild'][0]:.0f} s")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
