"""Loading both layouts, every validation error, colour conversion, the lc25000 tiles and the sample grid."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from liverfuse import data, phantom
from liverfuse.data import DataError, load_dataset, read_rgb


def _img(path: Path, mode: str = "RGB", size=(24, 20), fmt=None, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    im = Image.fromarray(arr, "RGBA").convert(mode) if mode != "RGBA" else Image.fromarray(arr, "RGBA")
    im.save(path, format=fmt)
    return path


def _tree(root: Path, classes=("a", "b"), patients=2, images=3, ext=".png") -> Path:
    """``root/<class>/<class>-p<k>/<n>.ext``"""
    for c in classes:
        for k in range(patients):
            for n in range(images):
                _img(root / c / f"{c}-p{k}" / f"{n}{ext}", seed=k * 10 + n)
    return root


def _flat(root: Path, groups: dict[str, list[str]]) -> Path:
    """``root/<class>/<image>`` + manifest.csv; ``groups`` maps class -> patient of each image."""
    rows = []
    for c, pats in groups.items():
        for n, g in enumerate(pats):
            _img(root / c / f"{c}{n}.jpg", seed=n)
            rows.append({"path": f"{c}/{c}{n}.jpg", "label": c, "group": g})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


def load(root, cache):
    return load_dataset(root, cache_dir=cache)


# --------------------------------------------------------------------------- layouts


def test_class_patient_image_layout(tmp_path):
    root = _tree(tmp_path / "d", classes=("b", "a"), patients=2, images=3)
    ds = load(root, tmp_path / "cache")
    t = ds.table
    assert list(t.columns) == ["image_id", "path", "label", "y", "group"]
    assert ds.classes == ("a", "b") and ds.name == "d" and not ds.synthetic and ds.notes == []
    assert len(ds) == 12 and t["image_id"].is_unique
    assert t["image_id"].iloc[0] == "a/a-p0/0.png"
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in t["path"])
    assert t.groupby("group")["label"].nunique().max() == 1 and t["group"].nunique() == 4
    assert (t["y"] == t["label"].map({"a": 0, "b": 1})).all()
    assert ds.image(0).shape == (20, 24, 3) and ds.image("b/b-p1/2.png").dtype == np.uint8
    assert "12 images from 4 patients" in ds.summary()


def test_repeated_patient_names_are_made_unique(tmp_path):
    root = tmp_path / "d"
    for c in ("a", "b"):
        _img(root / c / "p1" / "x.png")
    ds = load(root, tmp_path / "cache")
    assert sorted(ds.table["group"]) == ["a/p1", "b/p1"]
    assert any("repeat" in n for n in ds.notes)


def test_flat_layout_with_manifest(tmp_path):
    root = _flat(tmp_path / "d", {"x": ["g1", "g1", "g2"], "y": ["g3", "g3"]})
    ds = load(root, tmp_path / "cache")
    assert len(ds) == 5 and ds.classes == ("x", "y")
    assert dict(ds.table.groupby("group").size()) == {"g1": 2, "g2": 1, "g3": 2}


def test_manifest_is_authoritative(tmp_path):
    root = _tree(tmp_path / "d", patients=2, images=2)
    _img(root / "a" / "a-p0" / "unlisted.png")
    rows = [("a/a-p0/0.png", "a", "P1"), ("a/a-p1/0.png", "a", "P1"), ("b/b-p0/1.png", "b", "P2")]
    pd.DataFrame(rows, columns=["path", "label", "group"]).to_csv(root / "manifest.csv", index=False)
    ds = load(root, tmp_path / "cache")
    assert len(ds) == 3 and set(ds.table["group"]) == {"P1", "P2"}
    assert any("not listed" in n for n in ds.notes)


def test_paper_class_names_keep_paper_order(tmp_path):
    root = _tree(tmp_path / "d", classes=("well", "poorly", "moderately"), patients=1, images=1)
    assert load(root, tmp_path / "cache").classes == phantom.CLASSES


def test_tiff_and_jpeg_load(tmp_path):
    root = tmp_path / "d"
    _img(root / "a" / "p1" / "x.tif")
    _img(root / "b" / "p2" / "y.jpeg")
    ds = load(root, tmp_path / "cache")
    assert [ds.image(i).shape for i in range(2)] == [(20, 24, 3)] * 2


# --------------------------------------------------------------------------- validation errors


def test_truncated_jpeg_names_the_file(tmp_path):
    root = _tree(tmp_path / "d", ext=".jpg")
    bad = root / "b" / "b-p1" / "1.jpg"
    _img(bad, size=(256, 256), fmt="JPEG")
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    with pytest.raises(DataError, match="1.jpg") as e:
        load(root, tmp_path / "cache")
    assert str(bad) in str(e.value) and "truncated" in str(e.value)
    with pytest.raises(DataError, match="1.jpg"):
        read_rgb(bad)


def test_corrupt_files_are_all_listed(tmp_path):
    root = _tree(tmp_path / "d")
    (root / "a" / "a-p0" / "0.png").write_bytes(b"not a png at all")
    (root / "b" / "b-p1" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError) as e:
        load(root, tmp_path / "cache")
    msg = str(e.value)
    assert "2 images cannot be read" in msg and "a-p0/0.png" in msg and "b-p1/2.png" in msg


def test_single_class(tmp_path):
    root = _tree(tmp_path / "d", classes=("only",))
    with pytest.raises(DataError, match="single class.*'only'"):
        load(root, tmp_path / "cache")


def test_single_class_in_manifest(tmp_path):
    root = _flat(tmp_path / "d", {"x": ["g1", "g2"]})
    with pytest.raises(DataError, match="single class"):
        load(root, tmp_path / "cache")


def test_empty_class_folder(tmp_path):
    root = _tree(tmp_path / "d")
    (root / "c").mkdir()
    with pytest.raises(DataError, match=r"class folder .*/c contains no images"):
        load(root, tmp_path / "cache")


def test_empty_patient_folder(tmp_path):
    root = _tree(tmp_path / "d")
    (root / "a" / "a-p9").mkdir()
    with pytest.raises(DataError, match="a-p9 contains no images"):
        load(root, tmp_path / "cache")


def test_non_image_file_in_class_folder(tmp_path):
    root = _tree(tmp_path / "d")
    (root / "a" / "a-p0" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="notes.txt") as e:
        load(root, tmp_path / "cache")
    assert "not images" in str(e.value)


def test_hidden_and_junk_files_are_skipped(tmp_path):
    root = _tree(tmp_path / "d")
    (root / "a" / ".DS_Store").write_bytes(b"\0")
    (root / "a" / "a-p0" / "Thumbs.db").write_bytes(b"\0")
    (root / "README.md").write_text("root-level files are fine")
    _img(root / "__MACOSX" / "a" / "a-p0" / "._0.png")  # what macOS zips add beside the data
    _img(root / "b" / "@eaDir" / "x" / "0.png")  # Synology thumbnails
    assert len(load(root, tmp_path / "cache")) == 12


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda r: _img(r / "x.png"), ["unknown layout", "directly"]),
        (lambda r: r.mkdir(parents=True), ["unknown layout", "no class folders"]),
        (lambda r: (_tree(r), _img(r / "a" / "a-p0" / "deeper" / "z.png")), ["unknown layout", "nested"]),
        (lambda r: (_tree(r), _img(r / "stray.png")), ["unknown layout", "stray.png"]),
    ],
)
def test_unknown_layout(tmp_path, make, words):
    root = tmp_path / "d"
    make(root)
    with pytest.raises(DataError) as e:
        load(root, tmp_path / "cache")
    for w in words:
        assert w in str(e.value)


def test_flat_layout_without_manifest_says_how_to_fix(tmp_path):
    root = tmp_path / "d"
    for c in ("a", "b"):
        _img(root / c / "x.png")
    with pytest.raises(DataError, match="manifest.csv") as e:
        load(root, tmp_path / "cache")
    assert "path,label,group" in str(e.value)


@pytest.mark.parametrize(
    "rows, words",
    [
        ("path,label\na/a0.jpg,a\n", ["missing column", "group"]),
        ("path,label,group\na/nope.jpg,a,g1\nb/b0.jpg,b,g2\n", ["do not exist", "nope.jpg", "line 2"]),
        ("path,label,group\na/a0.jpg,a,g1\nb/b0.jpg,b,g1\n", ["more than one class", "g1"]),
        ("path,label,group\na/a0.jpg,a,\nb/b0.jpg,b,g2\n", ["empty", "line 2"]),
        ("path,label,group\na/a0.jpg,a,g1\na/a0.jpg,a,g1\nb/b0.jpg,b,g2\n", ["more than once"]),
        ("path,label,group\na/a0.jpg,a,g1\n../b/b0.jpg,b,g2\n", ["outside the data folder", "line 3"]),
    ],
)
def test_manifest_errors(tmp_path, rows, words):
    root = _flat(tmp_path / "d", {"a": ["g1"], "b": ["g2"]})
    (root / "manifest.csv").write_text(rows)
    with pytest.raises(DataError) as e:
        load(root, tmp_path / "cache")
    assert "manifest.csv" in str(e.value)
    for w in words:
        assert w in str(e.value)


def test_data_error_is_value_error():
    assert issubclass(DataError, ValueError)


# --------------------------------------------------------------------------- conversion


@pytest.mark.parametrize("mode, kind", [("L", "greyscale"), ("RGBA", "transparency"), ("P", "palette")])
def test_conversions_to_rgb_are_noted(tmp_path, mode, kind):
    root = _tree(tmp_path / "d")
    odd = _img(root / "a" / "a-p0" / "0.png", mode=mode)
    ds = load(root, tmp_path / "cache")
    img = ds.image("a/a-p0/0.png")
    assert img.shape == (20, 24, 3) and img.dtype == np.uint8
    assert any(kind in n and odd.name in n and n.startswith("converted 1 ") for n in ds.notes), ds.notes


def test_rgba_transparency_becomes_white(tmp_path):
    p = tmp_path / "t.png"
    Image.fromarray(np.zeros((4, 4, 4), np.uint8), "RGBA").save(p)
    assert (read_rgb(p) == 255).all()


def test_grey_16bit_tiff(tmp_path):
    p = tmp_path / "g.tif"
    Image.fromarray((np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)).save(p)
    img = read_rgb(p)
    assert img.shape == (8, 8, 3) and img.dtype == np.uint8 and img.max() > 200
    assert (img[..., 0] == img[..., 2]).all()


# --------------------------------------------------------------------------- validation cache


def test_validation_is_cached_and_invalidated_by_changes(tmp_path, monkeypatch):
    root = _tree(tmp_path / "d")
    cache = tmp_path / "cache"
    load(root, cache)
    calls = []
    real = data._decode
    monkeypatch.setattr(data, "_decode", lambda p: calls.append(p) or real(p))
    load(root, cache)
    assert calls == []  # nothing decoded again
    changed = root / "a" / "a-p0" / "1.png"
    _img(changed, size=(30, 30), seed=99)
    load(root, cache)
    assert calls == [changed]
    changed.write_bytes(b"broken later")
    with pytest.raises(DataError, match="1.png"):
        load(root, cache)


# --------------------------------------------------------------------------- phantom and real data


def test_phantom_dataset(tmp_path, monkeypatch):
    monkeypatch.setattr(phantom, "PATIENTS", {"poorly": 2, "moderately": 2, "well": 2})
    ds = load_dataset(None, cache_dir=tmp_path, seed=0, phantom_size=(48, 40))
    assert ds.synthetic and ds.name == "phantom" and ds.classes == phantom.CLASSES
    assert len(ds) == 36 and ds.table["group"].nunique() == 6 and ds.notes == []
    assert ds.table["label"].iloc[0] == "poorly" and ds.image(0).shape == (40, 48, 3)


def test_load_from_params(params, monkeypatch):
    monkeypatch.setattr(phantom, "PATIENTS", {"poorly": 1, "moderately": 1, "well": 1})
    P = params()
    ds = data.load(P)
    assert ds.synthetic and len(ds) == 18
    assert ds.image(0).shape[:2][::-1] == P.profile.phantom_size


@pytest.mark.shared_data
def test_lc25000_loads_as_it_is(lc25000, tmp_path):
    ds = load(lc25000, tmp_path / "cache")
    t = ds.table
    assert len(t) == 438 and t["group"].nunique() == 73 and ds.notes == []
    assert ds.classes == ("lung_aca", "lung_n", "lung_scc")
    assert t.groupby("label")["group"].nunique().to_dict() == {"lung_aca": 24, "lung_n": 27, "lung_scc": 22}
    assert (t.groupby("group").size() == 6).all()
    assert ds.image(0).shape == (224, 224, 3)


def test_sample_grid_one_row_per_class(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from liverfuse.figures import sample_grid

    ds = load(_tree(tmp_path / "d", classes=("a", "b", "c"), patients=2, images=2), tmp_path / "cache")
    fig = sample_grid(ds, n_per_class=3, seed=0)
    axes = np.array(fig.axes).reshape(3, 3)
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["a", "b", "c"]
    shown = [ax.get_title() for ax in axes[0] if ax.images]
    assert len(shown) == 3 and set(shown[:2]) == {"a-p0", "a-p1"}  # distinct patients first
    assert all(ax.get_title() for ax in axes.ravel())
    assert sample_grid(ds, n_per_class=3, seed=0).axes[0].get_title() == axes[0, 0].get_title()
