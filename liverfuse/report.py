"""Saving what a notebook shows: every table as CSV, every figure as PNG, under ``output_dir``."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .cache import atomic_write


def save_table(df: pd.DataFrame, P, name: str, index: bool = False) -> pd.DataFrame:
    """Write ``df`` to ``P.output_dir/<name>.csv`` atomically and return it (so a cell can display it)."""
    path = Path(P.output_dir) / f"{name}.csv"
    with atomic_write(path, "w") as f:
        df.to_csv(f, index=index)
    return df


def save_figure(fig, P, name: str, dpi: int = 110):
    """Write ``fig`` to ``P.output_dir/<name>.png`` atomically and return it."""
    path = Path(P.output_dir) / f"{name}.png"
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight")
    return fig


def notebook_style(dpi: int = 80) -> None:
    """Show notebook figures as JPEG at ``dpi``: keeps committed notebooks and the book light.

    Only the inline display changes; :func:`save_figure` still writes full-quality PNG files.
    """
    import matplotlib.pyplot as plt
    from matplotlib_inline.backend_inline import set_matplotlib_formats

    set_matplotlib_formats("jpeg", pil_kwargs={"quality": 85})
    plt.rcParams["figure.dpi"] = dpi
