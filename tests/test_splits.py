"""Split protocols: whole patients on one side (patient) vs random images (paper), overlap and counts."""
from __future__ import annotations

import pandas as pd
import pytest

from liverfuse import phantom
from liverfuse.splits import PROTOCOLS, counts, leakage, overlap, split


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    """A dataset table with the paper's structure (24/27/22 patients x 6 images); no pixels needed."""
    rows = [
        {
            "image_id": f"{c}/{c}-p{k:02d}/{j}.png",
            "path": f"/x/{c}/{c}-p{k:02d}/{j}.png",
            "label": c,
            "y": y,
            "group": f"{c}-p{k:02d}",
        }
        for y, c in enumerate(phantom.CLASSES)
        for k in range(phantom.PATIENTS[c])
        for j in range(6)
    ]
    return pd.DataFrame(rows)


def test_patient_protocol_keeps_patients_whole(table):
    t = split(table, "patient", seed=0)
    assert overlap(t).empty
    assert t.groupby("group")["split"].nunique().max() == 1
    test_patients = t.loc[t["split"] == "test", "group"].nunique()
    assert test_patients == 22  # ceil(0.3 * 73)
    assert abs((t["split"] == "test").mean() - 0.3) < 0.02
    per_class = t[t["split"] == "test"].groupby("label")["group"].nunique()
    assert per_class.to_dict() == {"poorly": 7, "moderately": 8, "well": 7}  # stratified by class


def test_paper_protocol_splits_images_and_leaks(table):
    t = split(table, "paper", seed=0)
    assert (t["split"] == "test").sum() == 132
    per_class = t[t["split"] == "test"].groupby("label").size()
    assert per_class.to_dict() == {"poorly": 43, "moderately": 49, "well": 40}  # stratified 7:3
    both = overlap(t)
    assert len(both) > 50  # most patients straddle the split
    assert list(both.columns) == ["group", "label", "train images", "test images"]
    assert ((both["train images"] > 0) & (both["test images"] > 0)).all()
    assert both["label"].iloc[0] == "poorly" and both["label"].iloc[-1] == "well"  # class order


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_deterministic(table, protocol):
    a = split(table, protocol, seed=0)["split"]
    assert a.equals(split(table, protocol, seed=0)["split"])
    assert not a.equals(split(table, protocol, seed=1)["split"])


def test_split_returns_a_copy(table):
    t = split(table, "patient", seed=0)
    assert "split" not in table.columns and t.drop(columns="split").equals(table)


def test_counts_table(table):
    c = counts(split(table, "patient", seed=0))
    assert list(c.columns) == ["class", "patients", "images", "train images", "test images"]
    assert c["class"].tolist() == ["poorly", "moderately", "well", "total"]
    assert c["patients"].tolist() == [24, 27, 22, 73]
    assert c["images"].tolist() == [144, 162, 132, 438]
    assert (c["train images"] + c["test images"] == c["images"]).all()
    assert c.iloc[-1, 3:].tolist() == [306, 132]


def test_leakage_table(table):
    lk = leakage(table, seed=0).set_index("protocol")
    assert lk.loc["patient", "patients on both sides"] == 0
    assert lk.loc["patient", "test images whose patient is also in train"] == 0
    assert lk.loc["paper", "patients on both sides"] > 50


def test_bad_protocol_lists_allowed(table):
    with pytest.raises(ValueError, match="patient, paper"):
        split(table, "bogus", seed=0)


def test_too_few_patients_to_stratify(table):
    small = table[table["group"].isin(["poorly-p00", "moderately-p00", "moderately-p01", "well-p00", "well-p01"])]
    with pytest.raises(ValueError, match="at least 3 patients per class.*poorly"):
        split(small, "patient", seed=0)


def test_three_patients_per_class_give_every_class_both_sides(table):
    keep = [f"{c}-p0{k}" for c in ("poorly", "moderately", "well") for k in range(3)]
    t = split(table[table["group"].isin(keep)], "patient", seed=0)
    per_side = t.groupby(["label", "split"])["group"].nunique().unstack()
    assert (per_side["train"] == 2).all() and (per_side["test"] == 1).all()


def test_paper_protocol_needs_three_images_per_class(table):
    tiny = pd.concat([table[table["label"] != "well"], table[table["label"] == "well"].head(2)])
    with pytest.raises(ValueError, match="at least 3 images per class.*well"):
        split(tiny, "paper", seed=0)


@pytest.mark.shared_data
def test_lc25000_patient_split(lc25000, tmp_path):
    from liverfuse.data import load_dataset

    t = split(load_dataset(lc25000, cache_dir=tmp_path).table, "patient", seed=0)
    assert overlap(t).empty
    assert counts(t)["patients"].tolist() == [24, 27, 22, 73]
