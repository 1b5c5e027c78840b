"""Image preprocessing (paper section "Image preprocessing", Figs. 1-4).

Two groups of functions:

* the **pipeline chain** every later stage uses: adaptive histogram equalisation (the paper's AHE,
  implemented as CLAHE by :func:`skimage.exposure.equalize_adapthist`) followed by a Gaussian filter
  (:func:`skimage.filters.gaussian`); :func:`preprocess` applies it to one image and :func:`prepare`
  turns a whole dataset into the cached, network-ready ``uint8`` stack ``(N, S, S, 3)``;
* the **restoration demonstration** of Figs. 2-4: a simulated motion blur with a known point-spread
  function (:func:`motion_psf`, :func:`blur`), inverse filtering (:func:`inverse_filter`), Wiener
  filtering (:func:`wiener_filter`, scikit-image), added Gaussian noise (:func:`add_noise`), and inverse
  and Wiener filtering of the noisy blurred image; :func:`restoration_table` scores every panel against
  the original with PSNR and SSIM (:mod:`skimage.metrics`), which the paper only shows visually.

Conventions: float images are RGB in ``[0, 1]`` (``float64`` unless a ``dtype`` says otherwise; the
pipeline chain works in ``float32``, which halves its memory traffic and is ample for a ``uint8``
result), ``uint8`` images are RGB in ``[0, 255]``; greyscale 2-D arrays are accepted by the filters.
Conversion to ``uint8`` rounds to nearest.

Speed. :func:`skimage.exposure.equalize_adapthist` equalises a colour image by converting it to HSV,
equalising V and converting back; at the paper's 1665 x 1393 pixels that colour round trip costs about
2.5 s per image (the CLAHE itself about 0.1 s). :func:`ahe` computes *the same result* without the round
trip: HSV -> RGB is linear in V for fixed hue and saturation, so replacing V by CLAHE(V) multiplies each
pixel's RGB by ``CLAHE(V) / V`` (and black pixels, whose hue and saturation are 0, become grey
``CLAHE(V)``). The unit tests check agreement with scikit-image's colour path to 1e-12. AHE therefore
runs at the native size, as the paper describes, about ten times faster (see
``benchmarks/bench_preprocessing.py``).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from skimage import draw, exposure, filters, metrics, restoration, transform, util

from .cache import digest, file_digest, load_npz, save_npz

__all__ = [
    "METHODS",
    "SIGMA",
    "ahe",
    "gaussian",
    "preprocess",
    "resize",
    "prepare",
    "motion_psf",
    "transfer_function",
    "blur",
    "add_noise",
    "inverse_filter",
    "wiener_filter",
    "RESTORATION_PANELS",
    "restoration_panels",
    "restoration_table",
]

METHODS = ("paper", "none")
"""``paper``: AHE then Gaussian filter (the paper's chain); ``none``: the image as read."""

SIGMA = 1.0
"""Gaussian filter standard deviation in pixels at the native image size (the paper gives none)."""

CLIP_LIMIT = 0.01
"""CLAHE clip limit (scikit-image's default; the paper gives none). Tiles: 1/8 of height and width."""

_PREPARE_VERSION = 1  # bump when the preprocessing or resizing arithmetic changes (invalidates caches)


# --------------------------------------------------------------------------- helpers
def _as_float(img: np.ndarray, name: str = "img", dtype=np.float64) -> np.ndarray:
    """Validate an image (2-D grey, or RGB/RGBA) and return a new float array in [0, 1] (alpha dropped)."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[-1] == 3)):
        raise ValueError(
            f"{name} must be a greyscale (H, W) or RGB (H, W, 3) image, got shape {img.shape}; "
            "read images with liverfuse.data.read_rgb, which converts grey/RGBA to RGB."
        )
    if img.size == 0:
        raise ValueError(f"{name} is empty (shape {img.shape}).")
    if img.dtype == np.uint8:
        out = img.astype(dtype)
        out /= 255
        return out
    if img.dtype.kind == "f":
        if not np.all(np.isfinite(img)):
            raise ValueError(f"{name} contains NaN or infinite values.")
        return np.clip(img, 0.0, 1.0).astype(dtype, copy=False)
    return util.img_as_float64(img).astype(dtype, copy=False)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] -> uint8, rounding to nearest."""
    return np.clip(np.rint(np.asarray(img) * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- the pipeline chain
def ahe(img: np.ndarray, *, clip_limit: float = CLIP_LIMIT, kernel_size=None, dtype=np.float64) -> np.ndarray:
    """Adaptive histogram equalisation (CLAHE), exactly as :func:`skimage.exposure.equalize_adapthist`.

    For RGB input the value channel ``V = max(R, G, B)`` is equalised with
    :func:`~skimage.exposure.equalize_adapthist` and each pixel's colour is scaled by
    ``CLAHE(V) / V``, which equals scikit-image's HSV round trip (see the module docstring) at a
    tenth of the cost.

    Parameters
    ----------
    img : ndarray
        ``(H, W)`` or ``(H, W, 3)`` image, ``uint8`` or float in ``[0, 1]``.
    clip_limit : float
        CLAHE clip limit (0.01 = scikit-image's default).
    kernel_size : int or tuple, optional
        Contextual region size; default 1/8 of the image's height and width.
    dtype : {numpy.float64, numpy.float32}
        Working and output precision (the pipeline uses float32: half the memory traffic).

    Returns
    -------
    ndarray
        ``dtype`` in ``[0, 1]``, same shape as ``img``.

    References
    ----------
    K. Zuiderveld, "Contrast Limited Adaptive Histogram Equalization", Graphics Gems IV, 1994.
    """
    f = _as_float(img, dtype=dtype)  # a fresh array: modified in place below
    if f.ndim == 2:
        return exposure.equalize_adapthist(f, kernel_size=kernel_size, clip_limit=clip_limit).astype(dtype, copy=False)
    v = f.max(axis=-1)
    v_eq = exposure.equalize_adapthist(v, kernel_size=kernel_size, clip_limit=clip_limit).astype(dtype, copy=False)
    lit = v > 0
    ratio = np.divide(v_eq, v, out=np.zeros_like(v), where=lit)
    f *= ratio[..., None]
    if not lit.all():  # black pixels have hue = saturation = 0 in HSV: they come back grey at the new value
        f[~lit] = v_eq[~lit, None]
    return np.clip(f, 0.0, 1.0, out=f)


def gaussian(img: np.ndarray, sigma: float = SIGMA, *, dtype=np.float64) -> np.ndarray:
    """Gaussian low-pass filter (:func:`skimage.filters.gaussian`), each colour channel separately.

    Parameters
    ----------
    img : ndarray
        ``(H, W)`` or ``(H, W, 3)``, ``uint8`` or float in ``[0, 1]``.
    sigma : float
        Standard deviation in pixels (must be positive).
    dtype : {numpy.float64, numpy.float32}
        Working and output precision.

    Returns
    -------
    ndarray
        ``dtype`` in ``[0, 1]``, same shape.
    """
    if not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a positive number of pixels, got {sigma!r}.")
    f = _as_float(img, dtype=dtype)
    return filters.gaussian(f, sigma=sigma, channel_axis=-1 if f.ndim == 3 else None)


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"Unknown preprocessing method={method!r}. Allowed values: {', '.join(METHODS)}.")
    return method


_WORK = np.float32  # precision of the pipeline chain: outputs are uint8, float32 is ample and faster


def _preprocess_float(img: np.ndarray, method: str, sigma: float = SIGMA) -> np.ndarray:
    _check_method(method)
    if method == "none":
        return _as_float(img, dtype=_WORK)
    return gaussian(ahe(img, dtype=_WORK), sigma=sigma, dtype=_WORK)


def preprocess(img: np.ndarray, method: str = "paper", *, sigma: float = SIGMA) -> np.ndarray:
    """The pipeline's preprocessing chain at the image's own size.

    Parameters
    ----------
    img : ndarray
        RGB image ``(H, W, 3)`` (``uint8`` or float in ``[0, 1]``).
    method : {'paper', 'none'}
        ``paper`` = :func:`ahe` then :func:`gaussian` (as in the paper's Fig. 1); ``none`` = unchanged.
    sigma : float
        Gaussian standard deviation in pixels.

    Returns
    -------
    ndarray
        ``uint8`` ``(H, W, 3)``.
    """
    out = _to_uint8(_preprocess_float(img, method, sigma))
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=-1)
    return out


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """Resize to ``size x size`` (anti-aliased, bilinear; the aspect ratio is not kept, as for a
    224 x 224 network input from 1665 x 1393 images). Returns float in ``[0, 1]`` (float32 input stays
    float32, anything else becomes float64)."""
    f = _as_float(img, dtype=np.float32 if np.asarray(img).dtype == np.float32 else np.float64)
    return transform.resize(f, (size, size) + f.shape[2:], order=1, anti_aliasing=True, mode="reflect")


def _prepare_one(dataset, i: int, method: str, input_size: int, sigma: float) -> np.ndarray:
    img = _preprocess_float(dataset.image(i), method, sigma)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return _to_uint8(resize(img, input_size))


PARALLEL_PIXELS = 100 * 1665 * 1393
"""Above this many native pixels in a ``prepare`` call, the default is to use two worker processes."""


def _native_pixels(dataset) -> int:
    """Pixels of the first image (read from its header when PIL can, else decoded)."""
    try:
        from PIL import Image

        with Image.open(dataset.table["path"].iloc[0]) as im:
            w, h = im.size
        return int(w) * int(h)
    except Exception:
        return int(np.prod(np.asarray(dataset.image(0)).shape[:2]))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name))[:40] or "data"


def prepare(
    dataset,
    *,
    method: str,
    input_size: int,
    cache_dir: str | Path,
    sigma: float = SIGMA,
    n_jobs: int | None = None,
    progress: bool = True,
) -> np.ndarray:
    """The network-ready image stack: preprocess every image at its native size, then resize.

    Parameters
    ----------
    dataset : liverfuse.data.Dataset
        Its ``table`` (columns ``image_id``, ``path``) fixes the row order; ``dataset.image(i)``
        reads image ``i``.
    method : {'paper', 'none'}
        Preprocessing chain (see :func:`preprocess`).
    input_size : int
        Side ``S`` of the square network input.
    cache_dir : path
        Cache root (``P.cache_dir``); the stack is stored under ``cache_dir/prepared/``, keyed by the
        SHA-256 of every image file, the method, ``sigma``, ``input_size`` and the code version, and
        written atomically (:func:`liverfuse.cache.save_npz`); a damaged or mismatching file is a miss.
    sigma : float
        Gaussian standard deviation (pixels at native size).
    n_jobs : int, optional
        Worker processes (:mod:`joblib`) on a cache miss; 1 = in process. Default: 2 (or the CPU count
        if smaller) when more than :data:`PARALLEL_PIXELS` pixels are to be processed (e.g. the paper's
        438 images at 1665 x 1393), else 1 (starting workers would cost more than it saves).
    progress : bool
        Show a tqdm progress bar on a cache miss, on a terminal only (``disable=None``): never inside a
        notebook, whose outputs must not depend on whether the cache was warm.

    Returns
    -------
    ndarray
        ``uint8`` ``(N, S, S, 3)`` in the order of ``dataset.table``.
    """
    import warnings

    with warnings.catch_warnings():  # tqdm.auto warns once when ipywidgets is absent: keep notebook stderr clean
        warnings.simplefilter("ignore")
        from tqdm.auto import tqdm

    _check_method(method)
    try:
        size = int(input_size)
    except (TypeError, ValueError):
        raise ValueError(f"input_size must be a positive integer, got {input_size!r}.") from None
    if size < 8 or size != input_size:
        raise ValueError(f"input_size must be an integer of at least 8 pixels, got {input_size!r}.")
    table = dataset.table
    missing = {"image_id", "path"} - set(table.columns)
    if missing:
        raise ValueError(f"dataset.table lacks column(s) {sorted(missing)}; load it with liverfuse.data.load.")
    ids = table["image_id"].astype(str).tolist()
    n = len(ids)
    if n == 0:
        raise ValueError("dataset.table has no images; check data_dir (liverfuse.data.load lists what it found).")
    files = [(iid, file_digest(p)) for iid, p in zip(ids, table["path"])]
    key = digest("prepare", _PREPARE_VERSION, method, float(sigma), size, files)
    path = Path(cache_dir) / "prepared" / f"{_safe(getattr(dataset, 'name', 'data'))}-{method}-{size}px-{key}.npz"

    hit = load_npz(path, keys=("images", "image_id"))
    if hit is not None:
        images = hit["images"]
        if images.shape == (n, size, size, 3) and images.dtype == np.uint8 and hit["image_id"].tolist() == ids:
            return images

    if n_jobs is None:
        pixels = n * _native_pixels(dataset)
        n_jobs = min(2, os.cpu_count() or 1) if pixels > PARALLEL_PIXELS else 1
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    desc = f"prepare ({method}, {size} px)"
    if n_jobs == 1 or n < 2:
        for i in tqdm(range(n), desc=desc, disable=None if progress and n >= 20 else True):
            out[i] = _prepare_one(dataset, i, method, size, sigma)
    else:
        from joblib import Parallel, delayed

        jobs = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(_prepare_one)(dataset, i, method, size, sigma) for i in range(n)
        )
        for i, img in enumerate(tqdm(jobs, total=n, desc=desc, disable=None if progress and n >= 20 else True)):
            out[i] = img
    save_npz(path, images=out, image_id=np.asarray(ids, dtype=str))
    return out


# --------------------------------------------------------------------------- restoration demo
def motion_psf(length: int = 21, angle: float = 11.0) -> np.ndarray:
    """Point-spread function of linear camera motion (like MATLAB's ``fspecial('motion')``).

    An anti-aliased line (:func:`skimage.draw.line_aa`) of ``length`` pixels through the centre of an
    odd-sized square kernel, at ``angle`` degrees counter-clockwise from the horizontal, normalised to
    sum 1. The defaults (21 px, 11 deg) are those of the classic MATLAB Wiener deblurring example.
    """
    if int(length) != length or length < 1:
        raise ValueError(f"length must be a positive whole number of pixels, got {length!r}.")
    length = int(length)
    n = length if length % 2 else length + 1
    c = n // 2
    r = (length - 1) / 2.0
    t = np.deg2rad(angle)
    dc, dr = r * np.cos(t), -r * np.sin(t)  # image rows grow downwards
    psf = np.zeros((n, n))
    rr, cc, val = draw.line_aa(
        int(round(c - dr)), int(round(c - dc)), int(round(c + dr)), int(round(c + dc))
    )
    np.maximum.at(psf, (rr, cc), val)
    return psf / psf.sum()


def transfer_function(psf: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Optical transfer function: the FFT of ``psf`` zero-padded to ``shape`` with its centre at (0, 0).

    Same convention as scikit-image's Wiener filters, so :func:`blur`, :func:`inverse_filter` and
    :func:`wiener_filter` share one (circular-convolution) image model.
    """
    psf = np.asarray(psf, dtype=np.float64)
    if psf.ndim != 2 or psf.shape[0] > shape[0] or psf.shape[1] > shape[1]:
        raise ValueError(f"psf must be a 2-D kernel no larger than the image {tuple(shape[:2])}, got {psf.shape}.")
    pad = np.zeros(tuple(shape[:2]))
    pad[: psf.shape[0], : psf.shape[1]] = psf
    pad = np.roll(pad, (-(psf.shape[0] // 2), -(psf.shape[1] // 2)), axis=(0, 1))
    return np.fft.fft2(pad)


def _per_channel(f: np.ndarray, fn) -> np.ndarray:
    if f.ndim == 2:
        return fn(f)
    return np.stack([fn(f[..., c]) for c in range(f.shape[-1])], axis=-1)


def blur(img: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """Blur with ``psf`` by circular convolution (FFT), each channel; float64, not clipped."""
    f = _as_float(img)
    H = transfer_function(psf, f.shape)
    return _per_channel(f, lambda ch: np.real(np.fft.ifft2(np.fft.fft2(ch) * H)))


def add_noise(img: np.ndarray, var: float = 1e-3, seed: int = 0) -> np.ndarray:
    """Additive zero-mean Gaussian noise of variance ``var`` (:func:`skimage.util.random_noise`,
    seeded, clipped to ``[0, 1]``)."""
    if not var >= 0:
        raise ValueError(f"noise variance var must be >= 0, got {var!r}.")
    return util.random_noise(_as_float(img), mode="gaussian", var=var, rng=seed, clip=True)


def inverse_filter(img: np.ndarray, psf: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """Textbook inverse filter ``F = G / H`` in the Fourier domain, with a small regulariser.

    scikit-image has no plain inverse filter, so it is written here with numpy's FFT. Where the
    transfer function's magnitude ``|H|`` falls below ``eps`` it is raised to ``eps`` (phase kept),
    which only avoids division by (near) zero; otherwise this is the unregularised inverse, exact
    on a noise-free blurred image and, as the paper's Figs. 2-4 show, ruinous once noise is added.

    Returns
    -------
    ndarray
        float64, clipped to ``[0, 1]``.
    """
    if not eps > 0:
        raise ValueError(f"eps must be a small positive number, got {eps!r}.")
    f = np.asarray(img, dtype=np.float64)
    if f.ndim not in (2, 3):
        raise ValueError(f"img must be (H, W) or (H, W, 3), got shape {f.shape}.")
    H = transfer_function(psf, f.shape)
    mag = np.abs(H)
    H = np.where(mag < eps, eps * np.exp(1j * np.angle(H)), H)
    out = _per_channel(f, lambda ch: np.real(np.fft.ifft2(np.fft.fft2(ch) / H)))
    return np.clip(out, 0.0, 1.0)


def wiener_filter(
    img: np.ndarray, psf: np.ndarray, balance: float | None = None, *, seed: int = 0
) -> np.ndarray:
    """Wiener deconvolution with scikit-image, each channel.

    Parameters
    ----------
    img : ndarray
        Blurred (and possibly noisy) float image (may lie slightly outside ``[0, 1]``).
    psf : ndarray
        The blur's point-spread function.
    balance : float, optional
        ``None`` (default): :func:`skimage.restoration.unsupervised_wiener`, which estimates the
        noise-to-signal balance itself (Gibbs sampler, seeded with ``seed``); a number: the classical
        :func:`skimage.restoration.wiener` with that fixed balance.

    Returns
    -------
    ndarray
        float64, clipped to ``[0, 1]``.
    """
    f = np.asarray(img, dtype=np.float64)
    if f.ndim not in (2, 3):
        raise ValueError(f"img must be (H, W) or (H, W, 3), got shape {f.shape}.")
    psf = np.asarray(psf, dtype=np.float64)
    if balance is None:
        rng = np.random.default_rng(seed)
        fn = lambda ch: restoration.unsupervised_wiener(ch, psf, clip=False, rng=rng)[0]  # noqa: E731
    else:
        if not balance > 0:
            raise ValueError(f"balance must be positive (or None for the unsupervised filter), got {balance!r}.")
        fn = lambda ch: restoration.wiener(ch, psf, balance, clip=False)  # noqa: E731
    return np.clip(_per_channel(f, fn), 0.0, 1.0)


RESTORATION_PANELS = {
    "original": "Original",
    "blurred": "Motion blur",
    "inverse": "Inverse filter",
    "wiener": "Wiener filter",
    "noisy": "Blur + noise",
    "inverse_noisy": "Inverse filter (noisy)",
    "wiener_noisy": "Wiener filter (noisy)",
}
"""Panel key -> title, in the order of the paper's Figs. 2-4."""


def restoration_panels(
    img: np.ndarray,
    *,
    length: int = 21,
    angle: float = 11.0,
    noise_var: float = 1e-3,
    eps: float = 1e-3,
    balance: float | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Every panel of Figs. 2-4 for one image, keyed as :data:`RESTORATION_PANELS` (float, [0, 1]).

    The blurred image is kept in floating point (not quantised), so the noise-free inverse filter is
    nearly exact and the difference made by ``noise_var`` is the whole story.
    """
    f = _as_float(img)
    psf = motion_psf(length, angle)
    blurred = blur(f, psf)
    noisy = add_noise(np.clip(blurred, 0.0, 1.0), noise_var, seed=seed)
    return {
        "original": f,
        "blurred": np.clip(blurred, 0.0, 1.0),
        "inverse": inverse_filter(blurred, psf, eps),
        "wiener": wiener_filter(blurred, psf, balance, seed=seed),
        "noisy": noisy,
        "inverse_noisy": inverse_filter(noisy, psf, eps),
        "wiener_noisy": wiener_filter(noisy, psf, balance, seed=seed),
    }


def restoration_table(
    images_by_class: Mapping[str, np.ndarray],
    *,
    panels_by_class: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    **kwargs,
) -> pd.DataFrame:
    """PSNR (dB) and SSIM of every treatment of Figs. 2-4 against the original image.

    Parameters
    ----------
    images_by_class : mapping
        Class name -> original image.
    panels_by_class : mapping, optional
        Precomputed :func:`restoration_panels` per class (to avoid computing them twice).
    **kwargs
        Passed to :func:`restoration_panels` (``length``, ``angle``, ``noise_var``, ``seed`` ...).

    Returns
    -------
    DataFrame
        Columns ``class``, ``treatment``, ``PSNR_dB``, ``SSIM``; one row per class and treatment
        (the original itself is omitted: its PSNR is infinite and SSIM 1).
    """
    rows = []
    for cls, img in images_by_class.items():
        panels = panels_by_class[cls] if panels_by_class is not None else restoration_panels(img, **kwargs)
        ref = panels["original"]
        for key, title in RESTORATION_PANELS.items():
            if key == "original":
                continue
            x = panels[key]
            rows.append(
                {
                    "class": cls,
                    "treatment": title,
                    "PSNR_dB": metrics.peak_signal_noise_ratio(ref, x, data_range=1.0),
                    "SSIM": metrics.structural_similarity(
                        ref, x, data_range=1.0, channel_axis=-1 if ref.ndim == 3 else None
                    ),
                }
            )
    return pd.DataFrame(rows, columns=["class", "treatment", "PSNR_dB", "SSIM"])
