"""Preprocessing: the AHE + Gaussian chain, the restoration demo and the cached ``prepare`` stack.

Synthetic inputs only (scikit-image's bundled immunohistochemistry image, random arrays), so these
tests do not depend on the data loader.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from skimage import data, exposure, io, metrics, transform

from liverfuse import preprocessing as pp


@pytest.fixture(scope="module")
def ihc() -> np.ndarray:
    """A small real histology image (IHC stain), uint8 RGB, 96 x 120."""
    img = transform.resize(data.immunohistochemistry(), (96, 120), anti_aliasing=True)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- chain
def test_ahe_matches_scikit_image_colour_path(ihc):
    img = ihc.copy()
    img[:5, :5] = 0  # black pixels take the grey branch
    ours = pp.ahe(img)
    ref = exposure.equalize_adapthist(img)
    assert ours.shape == img.shape and ours.dtype == np.float64
    assert np.abs(ours - ref).max() < 1e-12
    ours32 = pp.ahe(img, dtype=np.float32)
    assert ours32.dtype == np.float32 and np.abs(ours32 - ref).max() < 1e-5


def test_ahe_greyscale_and_range(ihc):
    grey = ihc[..., 0]
    out = pp.ahe(grey)
    assert out.shape == grey.shape
    assert 0.0 <= out.min() and out.max() <= 1.0
    np.testing.assert_allclose(out, exposure.equalize_adapthist(grey))


def test_gaussian_is_skimage_and_smooths(ihc):
    out = pp.gaussian(ihc, sigma=1.0)
    assert out.shape == ihc.shape and out.dtype == np.float64
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert out.std() < (ihc / 255.0).std()  # a low-pass filter lowers the variance
    with pytest.raises(ValueError, match="sigma"):
        pp.gaussian(ihc, sigma=0)


@pytest.mark.parametrize("method", pp.METHODS)
def test_preprocess_shape_dtype(ihc, method):
    out = pp.preprocess(ihc, method)
    assert out.shape == ihc.shape and out.dtype == np.uint8
    if method == "none":
        np.testing.assert_array_equal(out, ihc)
    else:
        # the chain works in float32: at most one grey level from the float64 reference
        expected = np.clip(np.rint(pp.gaussian(pp.ahe(ihc)) * 255), 0, 255)
        assert np.abs(out.astype(int) - expected).max() <= 1
        assert (out == expected).mean() > 0.99


def test_preprocess_float_input_and_bad_input(ihc):
    assert pp.preprocess(ihc / 255.0).dtype == np.uint8
    with pytest.raises(ValueError, match="method"):
        pp.preprocess(ihc, "bogus")
    with pytest.raises(ValueError, match="RGB"):
        pp.preprocess(np.zeros((4, 4, 2), np.uint8))


# ----------------------------------------------------------------------------- restoration
def test_motion_psf_normalised():
    psf = pp.motion_psf(21, 11)
    assert psf.shape == (21, 21)
    assert psf.sum() == pytest.approx(1.0)
    h = pp.motion_psf(5, 0)
    np.testing.assert_allclose(h[2], 0.2)  # horizontal line through the centre row
    assert h.sum() == pytest.approx(1.0) and np.count_nonzero(h) == 5
    with pytest.raises(ValueError, match="length"):
        pp.motion_psf(0)


def test_blur_preserves_mean_and_inverse_is_exact_without_noise(ihc):
    f = ihc / 255.0
    psf = pp.motion_psf(9, 30)
    b = pp.blur(f, psf)
    assert b.shape == f.shape
    assert b.mean() == pytest.approx(f.mean(), abs=1e-9)
    rec = pp.inverse_filter(b, psf)
    assert metrics.peak_signal_noise_ratio(f, rec, data_range=1) > 35


def test_wiener_beats_blurred_on_psnr(ihc):
    f = ihc / 255.0
    psf = pp.motion_psf(9, 30)
    b = np.clip(pp.blur(f, psf), 0, 1)
    psnr_blur = metrics.peak_signal_noise_ratio(f, b, data_range=1)
    for balance in (None, 0.01):
        w = pp.wiener_filter(b, psf, balance, seed=0)
        assert w.shape == f.shape and 0 <= w.min() and w.max() <= 1
        assert metrics.peak_signal_noise_ratio(f, w, data_range=1) > psnr_blur + 3


def test_noise_is_seeded(ihc):
    a = pp.add_noise(ihc, 1e-3, seed=1)
    assert np.array_equal(a, pp.add_noise(ihc, 1e-3, seed=1))
    assert not np.array_equal(a, pp.add_noise(ihc, 1e-3, seed=2))
    assert 0 <= a.min() and a.max() <= 1


def test_restoration_table(ihc):
    panels = pp.restoration_panels(ihc, length=9, angle=30, seed=0)
    assert list(panels) == list(pp.RESTORATION_PANELS)
    tab = pp.restoration_table({"a": ihc}, panels_by_class={"a": panels})
    assert list(tab.columns) == ["class", "treatment", "PSNR_dB", "SSIM"]
    assert len(tab) == len(pp.RESTORATION_PANELS) - 1
    s = tab.set_index("treatment")
    assert s.loc["Wiener filter", "PSNR_dB"] > s.loc["Motion blur", "PSNR_dB"]
    # noise wrecks the plain inverse filter; Wiener copes
    assert s.loc["Inverse filter (noisy)", "PSNR_dB"] < s.loc["Wiener filter (noisy)", "PSNR_dB"]
    assert tab["SSIM"].between(-1, 1).all()
    again = pp.restoration_table({"a": ihc}, length=9, angle=30, seed=0)
    pd.testing.assert_frame_equal(tab, again)  # deterministic


# ----------------------------------------------------------------------------- prepare
@dataclass
class _Dataset:
    """The part of liverfuse.data.Dataset that ``prepare`` uses."""

    table: pd.DataFrame
    name: str = "tiny"
    reads: list = field(default_factory=list)

    def image(self, i):
        self.reads.append(i)
        return io.imread(self.table["path"].iloc[i])


@pytest.fixture()
def tiny(tmp_path, ihc) -> _Dataset:
    rng = np.random.default_rng(0)
    rows = []
    for k in range(3):
        img = np.roll(ihc, 7 * k, axis=1)
        img[rng.integers(0, 96), :] = 255
        path = tmp_path / "img" / f"im{k}.png"
        path.parent.mkdir(exist_ok=True)
        io.imsave(path, img, check_contrast=False)
        rows.append({"image_id": f"c/p{k}/im{k}.png", "path": str(path)})
    return _Dataset(pd.DataFrame(rows))


def test_prepare_shape_and_cache_hit(tiny, tmp_path):
    cache = tmp_path / "cache"
    a = pp.prepare(tiny, method="paper", input_size=32, cache_dir=cache, progress=False)
    assert a.shape == (3, 32, 32, 3) and a.dtype == np.uint8
    assert len(tiny.reads) == 3
    files = list((cache / "prepared").glob("*.npz"))
    assert len(files) == 1
    assert not [p for p in (cache / "prepared").iterdir() if p.suffix == ".tmp"]  # no temp leftovers
    b = pp.prepare(tiny, method="paper", input_size=32, cache_dir=cache, progress=False)
    assert len(tiny.reads) == 3  # cache hit: nothing re-read
    np.testing.assert_array_equal(a, b)
    # a different method or size is a different entry
    c = pp.prepare(tiny, method="none", input_size=32, cache_dir=cache, progress=False)
    assert not np.array_equal(a, c)
    assert len(list((cache / "prepared").glob("*.npz"))) == 2


def test_prepare_row_order_and_matches_preprocess(tiny, tmp_path):
    a = pp.prepare(tiny, method="none", input_size=24, cache_dir=tmp_path / "c", progress=False)
    for i in range(3):
        expected = np.clip(np.rint(pp.resize(io.imread(tiny.table["path"].iloc[i]), 24) * 255), 0, 255)
        assert np.abs(a[i].astype(int) - expected).max() <= 1  # float32 chain vs float64 reference
        assert (a[i] == expected).mean() > 0.99


def test_prepare_damaged_cache_is_recomputed(tiny, tmp_path):
    cache = tmp_path / "cache"
    a = pp.prepare(tiny, method="paper", input_size=16, cache_dir=cache, progress=False)
    (path,) = (cache / "prepared").glob("*.npz")
    path.write_bytes(path.read_bytes()[:100])  # truncated, as by a killed writer without atomic rename
    b = pp.prepare(tiny, method="paper", input_size=16, cache_dir=cache, progress=False)
    assert len(tiny.reads) == 6
    np.testing.assert_array_equal(a, b)


def test_prepare_interrupted_write_leaves_no_entry(tiny, tmp_path, monkeypatch):
    """A writer killed half-way through leaves neither a cache entry nor a temp file."""
    cache = tmp_path / "cache"

    def half_then_die(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", half_then_die)
    with pytest.raises(KeyboardInterrupt):
        pp.prepare(tiny, method="paper", input_size=16, cache_dir=cache, progress=False)
    assert list((cache / "prepared").iterdir()) == []
    monkeypatch.undo()
    out = pp.prepare(tiny, method="paper", input_size=16, cache_dir=cache, progress=False)
    assert out.shape == (3, 16, 16, 3)
    assert len(list((cache / "prepared").glob("*.npz"))) == 1


def test_prepare_changed_file_is_a_miss(tiny, tmp_path):
    cache = tmp_path / "cache"
    pp.prepare(tiny, method="none", input_size=16, cache_dir=cache, progress=False)
    path = Path(tiny.table["path"].iloc[0])
    io.imsave(path, np.zeros((96, 120, 3), np.uint8), check_contrast=False)
    b = pp.prepare(tiny, method="none", input_size=16, cache_dir=cache, progress=False)
    assert b[0].max() == 0
    assert len(list((cache / "prepared").glob("*.npz"))) == 2


def test_prepare_parallel_equals_serial(tiny, tmp_path):
    a = pp.prepare(tiny, method="paper", input_size=16, cache_dir=tmp_path / "a", progress=False)
    b = pp.prepare(tiny, method="paper", input_size=16, cache_dir=tmp_path / "b", progress=False, n_jobs=2)
    np.testing.assert_array_equal(a, b)


def test_prepare_bad_arguments(tiny, tmp_path):
    with pytest.raises(ValueError, match="method"):
        pp.prepare(tiny, method="clahe", input_size=16, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="input_size"):
        pp.prepare(tiny, method="paper", input_size=0, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="no images"):
        pp.prepare(_Dataset(tiny.table.iloc[:0]), method="paper", input_size=16, cache_dir=tmp_path)
