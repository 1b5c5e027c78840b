"""Data augmentation (paper section "Data augmentation", Tables 3-6).

The paper's operations, exactly: rotations by 45, 60, 90, 210 and 240 degrees, each clockwise and
counter-clockwise (10); horizontal and vertical flips (2); translations by 10 pixels up, down, left and
right (4) - 16 operations, in :data:`OPERATIONS`, plus ``original`` (the identity).

They act on the prepared, network-ready ``uint8`` images (``S x S``, see
:func:`liverfuse.preprocessing.prepare`) and return the same shape and dtype.

* Rotations by multiples of 90 degrees are exact pixel permutations (:func:`numpy.rot90`); the other
  angles use :func:`skimage.transform.rotate` about the image centre, bilinear, rounded to ``uint8``.
* **Border handling**: pixels that a rotation or a translation brings in from outside the image are
  filled by mirror reflection of the image about its edge (``mode='reflect'`` in both
  :func:`skimage.transform.rotate` and :func:`numpy.pad`, which use the same convention: the edge
  pixel itself is not repeated). No black corners or bands appear that a classifier could learn.
* Translations move the content by exactly 10 pixels (``shift_up``: the pixel at row ``r + 10``
  lands on row ``r``), whatever the input size; flips are :func:`numpy.flip`.

:func:`expand` builds the *sample* table after the train/test split: test images appear once
(``original``); each training image appears ``factor`` times: its original plus ``factor - 1``
distinct operations drawn from the 16 by a random generator seeded with ``(seed, image_id)``.
Drawing per image (rather than one fixed list of 9 operations for everyone) uses every one of the
paper's 16 operations about equally often while keeping the paper's x10; seeding per image id makes
each image's operations independent of the table's row order and of which other images are present.
Every sample keeps its ``image_id`` and ``group`` (patient), so grouped validation can keep all
copies of an image, and of a patient, on one side.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
from skimage import transform

from .cache import digest

__all__ = [
    "SHIFT",
    "ROTATION_ANGLES",
    "OPERATIONS",
    "PAPER_OPERATIONS",
    "apply",
    "operations_table",
    "expand",
    "images",
    "counts",
]

SHIFT = 10
"""Translation distance in pixels (the paper's 10 px)."""

ROTATION_ANGLES = (45, 60, 90, 210, 240)
"""The paper's rotation angles in degrees, applied clockwise and counter-clockwise."""

BORDER_MODE = "reflect"


def _check(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim not in (2, 3) or img.shape[0] != img.shape[1]:
        raise ValueError(
            f"augmentation expects a square (S, S) or (S, S, C) image at the network input size, got shape "
            f"{img.shape}; apply it to the output of liverfuse.preprocessing.prepare."
        )
    return img


def _rotate(img: np.ndarray, degrees_ccw: float) -> np.ndarray:
    """Rotate counter-clockwise about the centre, same shape; multiples of 90 deg exactly."""
    img = _check(img)
    quarter, rest = divmod(degrees_ccw % 360, 90)
    if rest == 0:
        return np.ascontiguousarray(np.rot90(img, int(quarter)))
    out = transform.rotate(img, degrees_ccw, resize=False, order=1, mode=BORDER_MODE, preserve_range=True)
    if img.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.astype(img.dtype, copy=False)


def _shift(img: np.ndarray, down: int, right: int) -> np.ndarray:
    """Translate content by (down, right) pixels, reflecting the image into the vacated band."""
    img = _check(img)
    n = img.shape[0]
    if max(abs(down), abs(right)) >= n:
        raise ValueError(f"a {max(abs(down), abs(right))}-pixel shift needs images larger than {n} px.")
    pad = [(max(down, 0), max(-down, 0)), (max(right, 0), max(-right, 0))] + [(0, 0)] * (img.ndim - 2)
    padded = np.pad(img, pad, mode=BORDER_MODE)
    r0, c0 = max(-down, 0), max(-right, 0)
    return np.ascontiguousarray(padded[r0 : r0 + n, c0 : c0 + n])


def _identity(img: np.ndarray) -> np.ndarray:
    return np.array(_check(img), copy=True)


def _make_rotation(deg: float) -> Callable[[np.ndarray], np.ndarray]:
    def op(img: np.ndarray) -> np.ndarray:
        return _rotate(img, deg)

    return op


def _make_shift(down: int, right: int) -> Callable[[np.ndarray], np.ndarray]:
    def op(img: np.ndarray) -> np.ndarray:
        return _shift(img, down, right)

    return op


OPERATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"original": _identity}
for _a in ROTATION_ANGLES:
    OPERATIONS[f"rot{_a}_cw"] = _make_rotation(-_a)
    OPERATIONS[f"rot{_a}_ccw"] = _make_rotation(_a)
OPERATIONS["flip_h"] = lambda img: np.ascontiguousarray(np.flip(_check(img), axis=1))  # mirror left-right
OPERATIONS["flip_v"] = lambda img: np.ascontiguousarray(np.flip(_check(img), axis=0))  # mirror top-bottom
OPERATIONS["shift_up"] = _make_shift(-SHIFT, 0)
OPERATIONS["shift_down"] = _make_shift(SHIFT, 0)
OPERATIONS["shift_left"] = _make_shift(0, -SHIFT)
OPERATIONS["shift_right"] = _make_shift(0, SHIFT)
del _a

PAPER_OPERATIONS: tuple[str, ...] = tuple(k for k in OPERATIONS if k != "original")
"""The paper's 16 operations, in a fixed canonical order."""


def apply(op: str, img: np.ndarray) -> np.ndarray:
    """Apply the operation named ``op`` (a key of :data:`OPERATIONS`); same shape and dtype."""
    try:
        fn = OPERATIONS[op]
    except KeyError:
        raise ValueError(f"Unknown augmentation op={op!r}. Allowed: {', '.join(OPERATIONS)}.") from None
    return fn(img)


def operations_table() -> pd.DataFrame:
    """One row per operation: family, name, parameter and how it is computed (the paper's Tables 3-4
    list augmentation methods used in the literature; this lists the ones used here)."""
    rows = []
    for a in ROTATION_ANGLES:
        how = "numpy.rot90 (exact)" if a % 90 == 0 else "skimage.transform.rotate, bilinear, reflect border"
        rows.append(("rotation", f"rot{a}_cw", f"{a} deg clockwise", how))
        rows.append(("rotation", f"rot{a}_ccw", f"{a} deg counter-clockwise", how))
    rows.append(("flip", "flip_h", "horizontal (left-right mirror)", "numpy.flip axis 1"))
    rows.append(("flip", "flip_v", "vertical (top-bottom mirror)", "numpy.flip axis 0"))
    for d in ("up", "down", "left", "right"):
        rows.append(("translation", f"shift_{d}", f"{SHIFT} px {d}", "numpy.pad reflect + crop (exact)"))
    return pd.DataFrame(rows, columns=["family", "op", "parameter", "implementation"])


def _ops_for(image_id: str, k: int, seed: int) -> list[str]:
    """``k`` distinct paper operations for one image, from a generator seeded by (seed, image_id)."""
    if k == 0:
        return []
    rng = np.random.default_rng([int(seed), int(digest(str(image_id)), 16)])
    chosen = set(rng.choice(len(PAPER_OPERATIONS), size=k, replace=False).tolist())
    return [op for i, op in enumerate(PAPER_OPERATIONS) if i in chosen]


def expand(table_with_split: pd.DataFrame, factor: int, seed: int) -> pd.DataFrame:
    """The sample table: every test image once, every training image ``factor`` times.

    Parameters
    ----------
    table_with_split : DataFrame
        The dataset table in dataset order with a ``split`` column (``train``/``test``), as returned by
        :func:`liverfuse.splits.split`. Its rows are numbered 0..N-1 in order (the rows of the prepared
        stack) unless it already carries a ``row`` column.
    factor : int
        Copies of each training image, 1 (no augmentation) to 17: the original plus ``factor - 1``
        distinct operations of the 16, drawn per image from ``(seed, image_id)``.
    seed : int
        Random seed.

    Returns
    -------
    DataFrame
        Columns ``sample_id`` (``"<image_id>::<op>"``), ``image_id``, ``op``, ``split``, ``label``,
        ``y``, ``group``, ``row``; sources in table order, each source's samples ``original`` first,
        then in :data:`PAPER_OPERATIONS` order. Test rows only ever have ``op == 'original'``.
    """
    try:
        f = int(factor)
    except (TypeError, ValueError):
        raise ValueError(f"factor must be an integer from 1 to {len(PAPER_OPERATIONS) + 1}, got {factor!r}.") from None
    if f != factor or not 1 <= f <= len(PAPER_OPERATIONS) + 1:
        raise ValueError(
            f"factor must be an integer from 1 (no augmentation) to {len(PAPER_OPERATIONS) + 1} "
            f"(original + all 16 operations), got {factor!r}."
        )
    need = {"image_id", "split", "label", "y", "group"}
    missing = need - set(table_with_split.columns)
    if missing:
        raise ValueError(
            f"expand needs columns {sorted(need)}; missing {sorted(missing)} "
            "(split the table first with liverfuse.splits.split)."
        )
    bad = set(table_with_split["split"].unique()) - {"train", "test"}
    if bad:
        raise ValueError(f"split column must hold 'train' or 'test', found {sorted(map(str, bad))}.")
    t = table_with_split.reset_index(drop=True)
    rows = t["row"].astype(int).to_numpy() if "row" in t.columns else np.arange(len(t))
    out = []
    for r, rec in zip(rows, t.itertuples(index=False)):
        ops = ["original"]
        if rec.split == "train":
            ops += _ops_for(rec.image_id, f - 1, seed)
        for op in ops:
            out.append(
                (f"{rec.image_id}::{op}", rec.image_id, op, rec.split, rec.label, int(rec.y), rec.group, int(r))
            )
    cols = ["sample_id", "image_id", "op", "split", "label", "y", "group", "row"]
    return pd.DataFrame(out, columns=cols)


def images(prepared: np.ndarray, samples: pd.DataFrame, start: int = 0, stop: int | None = None) -> np.ndarray:
    """The augmented ``uint8`` batch for ``samples`` rows ``start:stop`` (positional).

    ``prepared`` is the stack from :func:`liverfuse.preprocessing.prepare`; each sample's ``row``
    indexes it and its ``op`` is applied. Lets feature extraction stream batches without holding every
    augmented copy in memory.
    """
    prepared = np.asarray(prepared)
    if prepared.ndim != 4:
        raise ValueError(f"prepared must be an (N, S, S, C) stack, got shape {prepared.shape}.")
    part = samples.iloc[start:stop]
    out = np.empty((len(part),) + prepared.shape[1:], dtype=prepared.dtype)
    for i, (row, op) in enumerate(zip(part["row"].to_numpy(), part["op"].to_numpy())):
        if not 0 <= row < len(prepared):
            raise ValueError(f"sample row {row} is outside the prepared stack of {len(prepared)} images.")
        out[i] = apply(op, prepared[row])
    return out


def counts(table_with_split: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """Images per class and split before and after augmentation (the paper's Tables 5-6).

    Columns ``label``, ``train_before``, ``train_after``, ``test_before``, ``test_after``,
    ``total_before``, ``total_after``, ``train_factor``; classes in ``y`` order, then a ``total`` row.
    """
    def per(df: pd.DataFrame, split: str) -> pd.Series:
        return df[df["split"] == split].groupby("label").size()

    order = table_with_split.sort_values("y", kind="stable") if "y" in table_with_split else table_with_split
    labels = list(dict.fromkeys(order["label"]))  # class order (y), not alphabetical
    out = pd.DataFrame(index=pd.Index(labels, name="label"))
    out["train_before"] = per(table_with_split, "train")
    out["train_after"] = per(samples, "train")
    out["test_before"] = per(table_with_split, "test")
    out["test_after"] = per(samples, "test")
    out = out.fillna(0).astype(int)
    out.loc["total"] = out.sum()
    out["total_before"] = out["train_before"] + out["test_before"]
    out["total_after"] = out["train_after"] + out["test_after"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["train_factor"] = np.round(out["train_after"] / out["train_before"].replace(0, np.nan), 2)
    return out.reset_index()
