"""Small, generic figures shared by the notebooks."""
from __future__ import annotations

import numpy as np


def _pick(table, n_per_class: int, seed: int) -> list[list[int]]:
    """Row positions: per class (in ``y`` order), up to ``n`` images from distinct patients where possible."""
    rng = np.random.default_rng(seed)
    rows = []
    t = table.reset_index(drop=True)
    for _, cls in t.groupby("y", sort=True):
        groups = cls["group"].unique()
        groups = groups[rng.permutation(len(groups))]
        chosen = []
        for g in groups[:n_per_class]:  # one image from each of n patients
            members = cls.index[cls["group"] == g].to_numpy()
            chosen.append(int(rng.choice(members)))
        if len(chosen) < n_per_class:  # fewer patients than panels: fill with other images
            rest = np.setdiff1d(cls.index.to_numpy(), chosen)
            chosen += [int(i) for i in rng.permutation(rest)[: n_per_class - len(chosen)]]
        rows.append(chosen)
    return rows


def sample_grid(dataset, n_per_class: int = 4, seed: int = 0, panel_inches: float = 2.2, images=None):
    """A grid of sample images: one row per class, titled panels (the paper's Fig. 1a).

    Parameters
    ----------
    dataset : liverfuse.data.Dataset
        Any dataset (``table`` with ``y``, ``label`` and ``group``; ``image()``).
    n_per_class : int
        Panels per row; images come from different patients where possible.
    seed : int
        Which images are shown.
    panel_inches : float
        Width of one panel.
    images : callable, optional
        ``images(row_position) -> uint8 image`` to show something other than the
        raw image (e.g. a preprocessed version); default ``dataset.image``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    get = images if images is not None else dataset.image
    picks = _pick(dataset.table, n_per_class, seed)
    first = get(picks[0][0])
    aspect = first.shape[0] / first.shape[1]
    fig, axes = plt.subplots(
        len(picks),
        n_per_class,
        figsize=(panel_inches * n_per_class, panel_inches * aspect * len(picks) + 0.35 * len(picks)),
        squeeze=False,
        dpi=90,
    )
    table = dataset.table.reset_index(drop=True)
    for r, chosen in enumerate(picks):
        for c in range(n_per_class):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(chosen):
                ax.axis("off")
                continue
            i = chosen[c]
            ax.imshow(first if (r, c) == (0, 0) else get(i))
            ax.set_title(f"{table['group'].iloc[i]}", fontsize=8)
            if c == 0:
                ax.set_ylabel(str(table["label"].iloc[i]), fontsize=10)
    fig.tight_layout()
    return fig
