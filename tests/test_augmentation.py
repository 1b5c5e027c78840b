"""Augmentation: the paper's 16 operations and the x10 sample table (synthetic inputs only)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from skimage import data, transform

from liverfuse import augmentation as aug

S = 48


@pytest.fixture(scope="module")
def img() -> np.ndarray:
    """A square uint8 RGB histology image with no symmetry."""
    x = transform.resize(data.immunohistochemistry()[:300, 50:350], (S, S), anti_aliasing=True)
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)


def _table(n_per_class=(5, 4, 3), test_every=3) -> pd.DataFrame:
    rows = []
    for y, (label, n) in enumerate(zip(("poorly", "moderately", "well"), n_per_class)):
        for k in range(n):
            rows.append(
                {
                    "image_id": f"{label}/{label}-p{k // 2}/img{k}.png",
                    "label": label,
                    "y": y,
                    "group": f"{label}-p{k // 2}",
                    "split": "test" if k % test_every == 0 else "train",
                }
            )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- operations
def test_the_papers_sixteen_operations():
    assert len(aug.PAPER_OPERATIONS) == 16
    assert set(aug.OPERATIONS) == {"original", *aug.PAPER_OPERATIONS}
    expected = {f"rot{a}_{d}" for a in (45, 60, 90, 210, 240) for d in ("cw", "ccw")}
    expected |= {"flip_h", "flip_v", "shift_up", "shift_down", "shift_left", "shift_right"}
    assert set(aug.PAPER_OPERATIONS) == expected
    assert list(aug.operations_table()["op"]) == list(aug.PAPER_OPERATIONS)


@pytest.mark.parametrize("op", list(aug.OPERATIONS))
def test_shape_dtype_range(img, op):
    out = aug.apply(op, img)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert out.flags["C_CONTIGUOUS"]
    assert out is not img
    # reflected borders: no black wedges or bands appear
    assert out.min() >= img.min() and out.max() <= img.max()
    assert (out.reshape(-1, 3).sum(1) == 0).sum() <= (img.reshape(-1, 3).sum(1) == 0).sum()


def test_rotation_by_90_equals_rot90(img):
    np.testing.assert_array_equal(aug.apply("rot90_ccw", img), np.rot90(img, 1))
    np.testing.assert_array_equal(aug.apply("rot90_cw", img), np.rot90(img, -1))
    # the general skimage path agrees with the exact one at 90 degrees
    r = transform.rotate(img, 90, order=1, mode="reflect", preserve_range=True)
    np.testing.assert_array_equal(np.rint(r).astype(np.uint8), np.rot90(img))


def test_rotation_directions(img):
    # cw by a equals ccw by 360 - a: 210 cw == 150 ccw
    cw210 = aug.apply("rot210_cw", img)
    ccw150 = aug._rotate(img, 150)
    np.testing.assert_array_equal(cw210, ccw150)
    # 45 deg cw then 45 deg ccw gives back the centre of the image (up to interpolation)
    back = aug.apply("rot45_ccw", aug.apply("rot45_cw", img)).astype(float)
    c = slice(S // 4, 3 * S // 4)
    assert np.abs(back[c, c] - img[c, c]).mean() < 6
    assert not np.array_equal(aug.apply("rot60_cw", img), aug.apply("rot60_ccw", img))


def test_counter_clockwise_means_counter_clockwise():
    """A bright dot on the right of the centre goes to the top under a ccw quarter turn."""
    x = np.zeros((21, 21, 3), np.uint8)
    x[10, 18] = 255
    r, c = np.unravel_index(aug.apply("rot90_ccw", x)[..., 0].argmax(), (21, 21))
    assert (r, c) == (2, 10)
    r, c = np.unravel_index(aug.apply("rot90_cw", x)[..., 0].argmax(), (21, 21))
    assert (r, c) == (18, 10)
    # the interpolated path turns the same way: 45 deg ccw moves the dot up and to the right
    x = np.zeros((81, 81, 3), np.uint8)
    x[39:42, 54:57] = 255  # a 3x3 blob 15 px right of the centre (40, 40), far from the borders
    r, c = np.argwhere(aug.apply("rot45_ccw", x)[..., 0] > 128).mean(0)
    assert (r, c) == (pytest.approx(40 - 15 / 2**0.5, abs=1), pytest.approx(40 + 15 / 2**0.5, abs=1))
    r, c = np.argwhere(aug.apply("rot45_cw", x)[..., 0] > 128).mean(0)
    assert (r, c) == (pytest.approx(40 + 15 / 2**0.5, abs=1), pytest.approx(40 + 15 / 2**0.5, abs=1))


@pytest.mark.parametrize("op", ["flip_h", "flip_v"])
def test_flips_are_involutions(img, op):
    once = aug.apply(op, img)
    assert not np.array_equal(once, img)
    np.testing.assert_array_equal(aug.apply(op, once), img)
    np.testing.assert_array_equal(once, img[:, ::-1] if op == "flip_h" else img[::-1])


@pytest.mark.parametrize(
    "op,dr,dc", [("shift_up", -10, 0), ("shift_down", 10, 0), ("shift_left", 0, -10), ("shift_right", 0, 10)]
)
def test_shift_moves_content_by_exactly_10_px(img, op, dr, dc):
    out = aug.apply(op, img)
    src = img[max(-dr, 0) : S - max(dr, 0), max(-dc, 0) : S - max(dc, 0)]
    dst = out[max(dr, 0) : S - max(-dr, 0), max(dc, 0) : S - max(-dc, 0)]
    np.testing.assert_array_equal(dst, src)
    # a single marked pixel lands exactly 10 px away
    x = np.zeros((S, S), np.uint8)
    x[20, 20] = 255
    assert tuple(np.argwhere(aug.apply(op, x) == 255)[0]) == (20 + dr, 20 + dc)


def test_shift_border_is_reflection(img):
    out = aug.apply("shift_down", img)
    # row 10 is the old row 0; rows 0..9 mirror rows 1..10 of the original (edge not repeated)
    np.testing.assert_array_equal(out[:10], img[10:0:-1])


def test_apply_unknown_and_non_square(img):
    with pytest.raises(ValueError, match="op"):
        aug.apply("rot30_cw", img)
    with pytest.raises(ValueError, match="square"):
        aug.apply("flip_h", img[:, :-1])


# ----------------------------------------------------------------------------- expand
def test_train_x10_test_unchanged():
    t = _table()
    s = aug.expand(t, 10, seed=0)
    n_train, n_test = (t.split == "train").sum(), (t.split == "test").sum()
    assert (s.split == "train").sum() == 10 * n_train
    assert (s.split == "test").sum() == n_test
    assert list(s.columns) == ["sample_id", "image_id", "op", "split", "label", "y", "group", "row"]
    assert s["sample_id"].is_unique
    per_image = s[s.split == "train"].groupby("image_id")["op"]
    assert (per_image.nunique() == 10).all()  # original + 9 distinct operations
    assert (per_image.apply(lambda ops: "original" in set(ops))).all()
    assert set(s["op"]) <= set(aug.OPERATIONS)


def test_no_augmented_copy_of_a_test_image():
    t = _table()
    s = aug.expand(t, 10, seed=3)
    test_ids = set(t.loc[t.split == "test", "image_id"])
    assert (s.loc[s.image_id.isin(test_ids), "op"] == "original").all()
    assert (s.loc[s.image_id.isin(test_ids), "split"] == "test").all()
    assert (s.loc[s.op != "original", "split"] == "train").all()


def test_copies_keep_image_id_group_label_and_row():
    t = _table()
    s = aug.expand(t, 10, seed=0)
    src = t.assign(row=range(len(t))).set_index("image_id")
    for col in ("group", "label", "y", "split", "row"):
        np.testing.assert_array_equal(s[col].to_numpy(), src.loc[s["image_id"], col].to_numpy())
    assert (s["sample_id"] == s["image_id"] + "::" + s["op"]).all()


def test_expand_deterministic_and_order_independent():
    t = _table()
    a = aug.expand(t, 10, seed=0)
    pd.testing.assert_frame_equal(a, aug.expand(t, 10, seed=0))
    assert not a["op"].equals(aug.expand(t, 10, seed=1)["op"])
    # shuffling the table changes the rows' order but not any image's operations
    shuffled = t.sample(frac=1, random_state=0).assign(row=lambda d: d.index)
    b = aug.expand(shuffled, 10, seed=0)
    ops = lambda df: df.groupby("image_id")["op"].apply(frozenset)  # noqa: E731
    pd.testing.assert_series_equal(ops(a), ops(b))
    np.testing.assert_array_equal(
        a.set_index("sample_id").loc[b["sample_id"], "row"].to_numpy(), b["row"].to_numpy()
    )


def test_expand_uses_all_operations_over_many_images():
    t = _table((40, 40, 40), test_every=1000)
    s = aug.expand(t, 10, seed=0)
    freq = s.loc[s.op != "original", "op"].value_counts()
    assert set(freq.index) == set(aug.PAPER_OPERATIONS)


@pytest.mark.parametrize("factor", [1, 17])
def test_expand_factor_bounds(factor):
    s = aug.expand(_table(), factor, seed=0)
    assert (s.groupby("image_id").size()[lambda x: x > 1] == factor).all()


@pytest.mark.parametrize("factor", [0, 18, 2.5, "x"])
def test_expand_bad_factor(factor):
    with pytest.raises(ValueError, match="factor"):
        aug.expand(_table(), factor, seed=0)


def test_expand_needs_split():
    with pytest.raises(ValueError, match="split"):
        aug.expand(_table().drop(columns="split"), 10, seed=0)
    with pytest.raises(ValueError, match="split"):
        aug.expand(_table().assign(split="val"), 10, seed=0)


# ----------------------------------------------------------------------------- batches and counts
def test_images_streams_augmented_batches(img):
    t = _table((2, 1, 1), test_every=2)
    prepared = np.stack([np.roll(img, 5 * k, axis=0) for k in range(len(t))])
    s = aug.expand(t, 10, seed=0)
    batch = aug.images(prepared, s, 3, 9)
    assert batch.shape == (6, S, S, 3) and batch.dtype == np.uint8
    for b, (_, rec) in zip(batch, s.iloc[3:9].iterrows()):
        np.testing.assert_array_equal(b, aug.apply(rec.op, prepared[rec.row]))
    assert aug.images(prepared, s).shape == (len(s), S, S, 3)


def test_counts_table():
    t = _table()
    s = aug.expand(t, 10, seed=0)
    c = aug.counts(t, s).set_index("label")
    assert (c["train_after"] == 10 * c["train_before"]).all()
    assert (c["test_after"] == c["test_before"]).all()
    assert c.loc["total", "total_before"] == len(t)
    assert c.loc["total", "total_after"] == len(s)
    assert (c["train_factor"] == 10).all()
    assert list(c.index) == ["poorly", "moderately", "well", "total"]
    shuffled = t.sort_values("label")  # alphabetical rows must not change the class order
    assert list(aug.counts(shuffled, s)["label"]) == ["poorly", "moderately", "well", "total"]
