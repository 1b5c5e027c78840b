"""Train/test protocols: by patient (the honest one) or by image (the paper's).

Dong et al. 2022 split their 438 images "randomly in the ratio of 7:3". With six
images per patient, a random image split puts most patients on both sides, so
the test set is not independent of training: images of the same patient share
stain, preparation and morphology. This module offers both protocols and a check
that shows how many patients straddle the split.

``patient``
    stratified 7:3 split of *patients* (whole patients on one side), stratified by
    the patient's class (:func:`sklearn.model_selection.train_test_split`).
``paper``
    stratified random 7:3 split of *images*, as the paper did.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

PROTOCOLS = ("patient", "paper")


def _check(table: pd.DataFrame, need: tuple[str, ...]) -> None:
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise ValueError(f"table is missing column(s) {', '.join(missing)} (expected a Dataset.table).")


def _class_order(table: pd.DataFrame) -> list[str]:
    if "y" in table.columns:
        return table.sort_values("y", kind="stable")["label"].drop_duplicates().tolist()
    return sorted(table["label"].unique())


def split(table: pd.DataFrame, protocol: str, seed: int, test_size: float = 0.3) -> pd.DataFrame:
    """Assign every image to ``train`` or ``test``.

    Parameters
    ----------
    table : pandas.DataFrame
        A :attr:`liverfuse.data.Dataset.table` (needs ``label`` and ``group``).
    protocol : {'patient', 'paper'}
        ``patient``: whole patients go to one side, stratified by class;
        ``paper``: images are split at random, stratified by class.
    seed : int
        Random state; the same seed gives the same split.
    test_size : float
        Fraction of patients (``patient``) or images (``paper``) in the test set.

    Returns
    -------
    pandas.DataFrame
        A copy of ``table`` with a ``split`` column (``'train'`` or ``'test'``).

    Raises
    ------
    ValueError
        Unknown protocol, or too few patients per class to stratify.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown protocol={protocol!r}. Allowed values: {', '.join(PROTOCOLS)}.")
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must lie strictly between 0 and 1, got {test_size}.")
    _check(table, ("label", "group"))
    out = table.copy()
    if protocol == "patient":
        labels = table.groupby("group", sort=True)["label"]
        if (labels.nunique() > 1).any():
            bad = labels.nunique()[lambda s: s > 1].index.tolist()
            raise ValueError(f"patients with images in more than one class: {', '.join(bad[:5])}.")
        patients = labels.first()
        per_class = patients.value_counts()
        if (per_class < 3).any():
            raise ValueError(
                "protocol='patient' needs at least 3 patients per class (2 to train on, 1 to test); "
                f"{', '.join(per_class[per_class < 3].index)} has fewer. Add patients or use protocol='paper'."
            )
        _, test_groups = train_test_split(
            patients.index.to_numpy(), test_size=_test_count(per_class, test_size, "patients"),
            stratify=patients.to_numpy(), random_state=seed,
        )
        out["split"] = np.where(table["group"].isin(set(test_groups)).to_numpy(), "test", "train").astype(object)
        unit = "patients"
        sides = pd.crosstab(patients, patients.index.isin(set(test_groups)))
    else:
        per_class = table["label"].value_counts()
        if (per_class < 3).any():
            raise ValueError(
                "protocol='paper' needs at least 3 images per class (training and test images of every class); "
                f"{', '.join(per_class[per_class < 3].index)} has fewer. Add images or drop that class folder."
            )
        _, test_pos = train_test_split(
            np.arange(len(table)), test_size=_test_count(per_class, test_size, "images"),
            stratify=table["label"].to_numpy(), random_state=seed,
        )
        side = np.full(len(table), "train", dtype=object)
        side[test_pos] = "test"
        out["split"] = side
        unit = "images"
        sides = pd.crosstab(table["label"].to_numpy(), side == "test")
    sides = sides.reindex(columns=[False, True], fill_value=0)
    short = [f"{c} ({int(r[False])} training, {int(r[True])} test {unit})" for c, r in sides.iterrows()
             if r[False] < 2 or r[True] < 1]
    if short:
        raise ValueError(
            f"protocol={protocol!r}: every class needs at least 2 training and 1 test {unit[:-1]}, but the split "
            f"gives {'; '.join(short)}. Add {unit} to these classes (at least 3 each, better 10 or more)."
        )
    return out


def _test_count(per_class: pd.Series, test_size: float, unit: str) -> int:
    """Size of the test set: ``test_size`` of the units, but at least one per class."""
    n, k = int(per_class.sum()), len(per_class)
    count = max(int(np.ceil(test_size * n)), k)
    if n - count < 2 * k:
        raise ValueError(
            f"{n} {unit} in {k} classes are too few for a {test_size:.0%} test split with at least 2 training "
            f"and 1 test {unit[:-1]} per class; add {unit}."
        )
    return count


def overlap(table_with_split: pd.DataFrame) -> pd.DataFrame:
    """Patients with images on both sides of the split.

    Returns one row per such patient: ``group``, ``label``, ``train images``,
    ``test images``. Empty for the ``patient`` protocol.
    """
    _check(table_with_split, ("label", "group", "split"))
    n = pd.crosstab(table_with_split["group"], table_with_split["split"])
    for side in ("train", "test"):
        if side not in n.columns:
            n[side] = 0
    both = n[(n["train"] > 0) & (n["test"] > 0)]
    label = table_with_split.groupby("group")["label"].first()
    out = pd.DataFrame(
        {
            "group": both.index.astype(str),
            "label": label.reindex(both.index).to_numpy(),
            "train images": both["train"].to_numpy(),
            "test images": both["test"].to_numpy(),
        }
    )
    rank = {c: i for i, c in enumerate(_class_order(table_with_split))}
    out = out.assign(_k=out["label"].map(rank)).sort_values(["_k", "group"], kind="stable")
    return out.drop(columns="_k").reset_index(drop=True)


def counts(table_with_split: pd.DataFrame) -> pd.DataFrame:
    """Per-class counts, the analogue of the paper's Tables 2 and 5.

    Columns ``class``, ``patients``, ``images``, ``train images``, ``test images``;
    one row per class (in class order) and a ``total`` row.
    """
    _check(table_with_split, ("label", "group", "split"))
    t = table_with_split
    rows = []
    for c in _class_order(t):
        s = t[t["label"] == c]
        rows.append(
            {
                "class": c,
                "patients": int(s["group"].nunique()),
                "images": int(len(s)),
                "train images": int((s["split"] == "train").sum()),
                "test images": int((s["split"] == "test").sum()),
            }
        )
    rows.append(
        {
            "class": "total",
            "patients": int(t["group"].nunique()),
            "images": int(len(t)),
            "train images": int((t["split"] == "train").sum()),
            "test images": int((t["split"] == "test").sum()),
        }
    )
    return pd.DataFrame(rows)


def leakage(table: pd.DataFrame, seed: int, test_size: float = 0.3) -> pd.DataFrame:
    """How much each protocol lets patients straddle the split (one row per protocol).

    Columns ``protocol``, ``patients``, ``patients on both sides``, ``test images``
    and ``test images whose patient is also in train``.
    """
    rows = []
    for protocol in PROTOCOLS:
        t = split(table, protocol, seed, test_size)
        both = overlap(t)
        test = t[t["split"] == "test"]
        rows.append(
            {
                "protocol": protocol,
                "patients": int(t["group"].nunique()),
                "patients on both sides": int(len(both)),
                "test images": int(len(test)),
                "test images whose patient is also in train": int(test["group"].isin(set(both["group"])).sum()),
            }
        )
    return pd.DataFrame(rows)
