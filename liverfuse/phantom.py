"""A synthetic H&E phantom with the structure of the paper's (private) dataset.

Dong et al. 2022 graded 73 patients with primary liver cancer (24 poorly, 27
moderately, 22 well differentiated), six 1665 x 1393 px H&E images each. That
data is not public, so this module draws a stand-in with the same structure:
same classes, patients and images per patient, H&E-like colour and the
morphology a pathologist grades on. **It is not evidence about liver cancer**;
it exists so that every section of the companion runs anywhere.

How an image is drawn
---------------------
Each patient gets a latent *dedifferentiation score* ``d`` (about 0.15 for well,
0.5 for moderately and 0.85 for poorly differentiated, with a patient spread wide
enough that neighbouring grades overlap) plus a patient "baseline": stain shade
and strength, cell size and a preferred plate orientation. Each image jitters
``d`` a little and then, at a pixel scale proportional to the image width:

* **architecture**: hepatocyte plates separated by pale sinusoids, drawn as the
  level lines of a warped stripe field. Plates thicken with ``d`` (well: regular
  plates 1-2 cells thick; moderately: thick trabeculae; poorly: solid sheets with
  only scattered slit-like vessels);
* **cells**: centres on a jittered hexagonal grid (disorder grows with ``d``); the
  cell a pixel belongs to is its nearest centre (a Voronoi tessellation computed
  with one Euclidean distance transform), so all drawing is vectorised;
* **nuclei**: ellipses with a harmonic contour perturbation, drawn per pixel in
  each cell's own frame. Nuclear size, pleomorphism (size spread, elongation,
  contour irregularity), hyperchromasia, nucleoli and the nuclear-cytoplasmic
  ratio all increase with ``d``;
* **colour**: haematoxylin and eosin densities combined with a per-patient
  perturbed stain matrix (Beer-Lambert, as :func:`skimage.color.combine_stains`),
  then a slight optical blur (:func:`skimage.filters.gaussian`) and sensor noise.

Sinusoids hold red blood cells and flattened endothelial nuclei. Everything is
drawn from :class:`numpy.random.SeedSequence` ``(seed, class, patient, image)``,
so output is bit-identical for a given seed and size.

References
----------
.. [1] Dong X, Li M, Zhou P, et al. Fusing pre-trained convolutional neural
       networks features for multi-differentiated subtypes of liver cancer on
       histopathological images. BMC Med Inform Decis Mak 22, 122 (2022).
.. [2] Ruifrok AC, Johnston DA. Quantification of histochemical staining by
       color deconvolution. Anal Quant Cytol Histol 23(4):291-299 (2001).
.. [3] Macenko M, Niethammer M, Marron JS, et al. A method for normalizing
       histology slides for quantitative analysis. ISBI 2009, 1107-1110.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage as ndi
from skimage.color import rgb_from_hed
from skimage.filters import gaussian
from skimage.segmentation import find_boundaries

from .cache import atomic_write, digest

CLASSES = ("poorly", "moderately", "well")
PATIENTS = {"poorly": 24, "moderately": 27, "well": 22}
IMAGES_PER_PATIENT = 6
DEFAULT_SIZE = (333, 278)  # (width, height) = the paper's 1665 x 1393 / 5
PAPER_SIZE = (1665, 1393)
#: Bump when the drawing changes, so cached phantoms are regenerated.
VERSION = 2

#: Mean latent dedifferentiation score per grade (0 = normal-like plates, 1 = solid anaplastic sheets).
GRADE_SCORE = {"well": 0.15, "moderately": 0.5, "poorly": 0.85}
PATIENT_SD = 0.16  # between-patient spread of the score: makes neighbouring grades overlap
IMAGE_SD = 0.05  # within-patient (between-image) spread

#: Haematoxylin and eosin optical-density vectors (R, G, B) typical of scanned slides
#: (Macenko et al. 2009 reference); DAB row of skimage's matrix kept as the third.
_HE_REF = np.array([[0.5626, 0.7201, 0.4062], [0.2159, 0.8012, 0.5581]])
_CELLS_ACROSS = 15.0  # hepatocytes across the image width (about 40x, 1665 px wide)


@dataclass(frozen=True)
class PatientLook:
    """Latent parameters of one phantom patient (the ground truth behind its images)."""

    grade: str
    patient: str
    score: float  # dedifferentiation score, see GRADE_SCORE
    cell_scale: float  # baseline cell size (1 = typical)
    hema_strength: float  # haematoxylin uptake (stain batch / thickness)
    eosin_strength: float
    hema_hue: float  # -1 bluish .. +1 purplish haematoxylin
    eosin_hue: float  # -1 orange .. +1 magenta eosin
    orientation: float  # preferred plate direction, radians


def patient_id(grade: str, k: int) -> str:
    """Patient identifier, unique across classes: ``poorly-p01``."""
    return f"{grade}-p{k + 1:02d}"


def _patient_look(seed: int, ci: int, k: int) -> PatientLook:
    grade = CLASSES[ci]
    rng = np.random.default_rng(np.random.SeedSequence([seed, ci, k, 0xC0FFEE]))
    score = float(np.clip(GRADE_SCORE[grade] + rng.normal(0, PATIENT_SD), -0.1, 1.1))
    return PatientLook(
        grade=grade,
        patient=patient_id(grade, k),
        score=score,
        cell_scale=float(np.exp(rng.normal(0, 0.08))),
        hema_strength=float(np.exp(rng.normal(0, 0.15))),
        eosin_strength=float(np.exp(rng.normal(0, 0.18))),
        hema_hue=float(rng.uniform(-1, 1)),
        eosin_hue=float(rng.uniform(-1, 1)),
        orientation=float(rng.uniform(0, np.pi)),
    )


def patients(seed: int = 0) -> pd.DataFrame:
    """The latent parameters of every phantom patient for ``seed`` (one row per patient)."""
    rows = [
        asdict(_patient_look(seed, ci, k)) for ci, g in enumerate(CLASSES) for k in range(PATIENTS[g])
    ]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- drawing helpers


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, unit-sd random field (float32) with correlation length about ``scale`` pixels.

    Fine textures (``scale < 8``) are Gaussian-filtered white noise; coarse fields are a
    sum of Gaussian bumps with random weights on a grid of spacing ``scale``, evaluated
    separably (two small matrix products), so the cost barely grows with the image size.
    """
    h, w = shape
    if scale < 8:
        out = gaussian(rng.standard_normal(shape).astype(np.float32), sigma=scale / 2, preserve_range=True)
    else:

        def basis(n: int) -> np.ndarray:
            nodes = np.arange(-2 * scale, n + 2 * scale, scale, dtype=np.float32)
            t = (np.arange(n, dtype=np.float32)[:, None] - nodes[None, :]) / np.float32(0.8 * scale)
            k = np.exp(-0.5 * t * t)
            k[k < 1e-4] = 0.0  # truncate the tails (denormals make matrix products crawl)
            return k

        ay, ax = basis(h), basis(w)
        coarse = rng.standard_normal((ay.shape[1], ax.shape[1])).astype(np.float32)
        out = ay @ coarse @ ax.T
    out = out - out.mean()
    return (out / (out.std() + 1e-6)).astype(np.float32, copy=False)


def _stain_matrix(look: PatientLook) -> np.ndarray:
    """Ruifrok-Johnston H&E(+DAB) matrix with the patient's stain hue shifts, rows normalised."""
    m = np.array(rgb_from_hed, dtype=float)
    m[:2] = _HE_REF
    m[0] = m[0] + look.hema_hue * np.array([0.08, -0.04, -0.06])  # + = more red, purplish
    m[1] = m[1] + look.eosin_hue * np.array([-0.03, 0.0, 0.12])  # + = more blue, magenta
    m[:2] /= np.linalg.norm(m[:2], axis=1, keepdims=True)
    return m


def _hex_centres(rng, shape, spacing, jitter):
    h, w = shape
    dy = spacing * np.sqrt(3) / 2
    ys = np.arange(-spacing, h + spacing, dy)
    pts = []
    for i, y in enumerate(ys):
        x0 = (spacing / 2) * (i % 2) - spacing
        xs = np.arange(x0, w + spacing, spacing)
        pts.append(np.stack([np.full_like(xs, y), xs], axis=1))
    p = np.concatenate(pts) + rng.normal(0, jitter, (sum(len(q) for q in pts), 2))
    keep = (p[:, 0] >= 0) & (p[:, 0] < h - 0.5) & (p[:, 1] >= 0) & (p[:, 1] < w - 0.5)
    return p[keep]


def _nearest(shape, centres):
    """Index of the nearest centre for each pixel, and the (dy, dx) offset to it."""
    h, w = shape
    iy = np.clip(np.round(centres[:, 0]).astype(int), 0, h - 1)
    ix = np.clip(np.round(centres[:, 1]).astype(int), 0, w - 1)
    ids = np.full(shape, -1, dtype=np.int32)
    ids[iy, ix] = np.arange(len(centres), dtype=np.int32)
    _, (ny, nx) = ndi.distance_transform_edt(ids < 0, return_indices=True)
    label = ids[ny, nx]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return label, yy - centres[label, 0].astype(np.float32), xx - centres[label, 1].astype(np.float32)


def _blobs(label, dy, dx, a, b, angle, irregular=None, phases=None):
    """Soft (0..1) ellipse-like blob per cell, drawn in each cell's own frame.

    ``label``/``dy``/``dx`` come from :func:`_nearest`; ``a``, ``b``, ``angle`` are per-cell
    semi-axes and orientation; ``irregular`` (n, 2) are amplitudes of 2nd and 3rd harmonic
    contour perturbations (pleomorphic outlines) with ``phases``. Returns the mask and the
    radial coordinate normalised so that the (perturbed) contour is at 1.
    """
    f32 = np.float32
    ca, sa = np.cos(angle).astype(f32)[label], np.sin(angle).astype(f32)[label]
    xr = dx * ca + dy * sa
    yr = dy * ca - dx * sa
    bb = b.astype(f32)[label]
    rho = np.sqrt((xr / a.astype(f32)[label]) ** 2 + (yr / bb) ** 2)
    if irregular is None or not np.any(irregular):
        return np.clip((1 - rho) * bb / f32(0.7) + f32(0.5), 0, 1), rho
    # the contour perturbation only matters near the contour: evaluate it there
    near = np.flatnonzero(rho.ravel() < 1.0 + irregular.sum(1).max() + 0.5)
    lab = label.ravel()[near]
    phi = np.arctan2(yr.ravel()[near], xr.ravel()[near])
    irr, ph = irregular.astype(f32), phases.astype(f32)
    edge = np.ones(rho.shape, f32)
    edge.ravel()[near] = 1 + irr[lab, 0] * np.cos(2 * phi + ph[lab, 0]) + irr[lab, 1] * np.cos(3 * phi + ph[lab, 1])
    mask = np.clip((edge - rho) * bb / f32(0.7) + f32(0.5), 0, 1)  # anti-aliased edge about 0.7 px wide
    return mask, rho / np.maximum(edge, f32(0.2))


def _ellipses(shape, cy, cx, a, b=None, angle=None) -> np.ndarray:
    """Union of soft (anti-aliased) ellipses, each evaluated only inside its bounding box.

    For the few, small objects of an image (fat vacuoles, lumina, red cells,
    endothelial nuclei) this is much cheaper than a per-pixel pass over the image.
    """
    h, w = shape
    n = len(cy)
    b = a if b is None else b
    angle = np.zeros(n) if angle is None else np.broadcast_to(angle, (n,))
    out = np.zeros(shape, np.float32)
    for y0, x0, a0, b0, t0 in zip(cy, cx, a, b, angle):
        y1, y2 = max(0, int(y0 - a0 - 1)), min(h, int(y0 + a0 + 2))
        x1, x2 = max(0, int(x0 - a0 - 1)), min(w, int(x0 + a0 + 2))
        if y1 >= y2 or x1 >= x2:
            continue
        yy, xx = np.ogrid[y1:y2, x1:x2]
        dy, dx = yy - y0, xx - x0
        u = dx * np.cos(t0) + dy * np.sin(t0)
        v = dy * np.cos(t0) - dx * np.sin(t0)
        rho = np.sqrt((u / a0) ** 2 + (v / b0) ** 2)
        blob = np.clip((1 - rho) * b0 / 0.7 + 0.5, 0, 1)
        np.maximum(out[y1:y2, x1:x2], blob, out=out[y1:y2, x1:x2])
    return out


# --------------------------------------------------------------------------- one image


def render(look: PatientLook, rng: np.random.Generator, size: tuple[int, int] = DEFAULT_SIZE) -> np.ndarray:
    """Draw one H&E phantom image for a patient.

    Parameters
    ----------
    look : PatientLook
        The patient's latent parameters.
    rng : numpy.random.Generator
        Source of this image's randomness.
    size : (width, height)
        Image size in pixels.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape ``(height, width, 3)``.
    """
    w, h = int(size[0]), int(size[1])
    if w < 32 or h < 32:
        raise ValueError(f"phantom size must be at least 32 x 32 pixels, got {size}.")
    shape = (h, w)
    aspect = (h / w) / (DEFAULT_SIZE[1] / DEFAULT_SIZE[0])  # field of view relative to the paper's
    d = float(np.clip(look.score + rng.normal(0, IMAGE_SD), 0.0, 1.0))
    cell = w / _CELLS_ACROSS * look.cell_scale * np.exp(rng.normal(0, 0.04))  # cell spacing, px

    # ---- architecture: plates (trabeculae) separated by sinusoids
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = look.orientation + rng.normal(0, 0.35)
    warp = _smooth_field(rng, shape, 3.0 * cell) * cell * (1.3 + 0.8 * d)
    u = xx * np.cos(theta) + yy * np.sin(theta) + warp
    plate_cells = 1.5 + 7.0 * d**2 + rng.normal(0, 0.15)  # cells per plate thickness
    sinus_w = cell * (0.42 - 0.2 * d)  # mean sinusoid width, px
    period = plate_cells * cell + sinus_w
    g = np.mod(u, period)
    sinus_w = sinus_w * np.exp(0.35 * _smooth_field(rng, shape, 1.5 * cell))  # dilated / collapsed
    sinus = np.clip((sinus_w - g) / 1.0 + 0.5, 0, 1) * np.clip(g + 0.5, 0, 1)  # soft stripe
    # anastomoses: short cross-connecting sinusoids from a second, roughly perpendicular system
    theta2 = theta + np.pi / 2 + rng.normal(0, 0.3)
    u2 = xx * np.cos(theta2) + yy * np.sin(theta2) + _smooth_field(rng, shape, 3.0 * cell) * cell
    g2 = np.mod(u2, period * rng.uniform(1.3, 2.2))
    cross = np.clip((0.8 * sinus_w - g2) / 1.0 + 0.5, 0, 1) * np.clip(g2 + 0.5, 0, 1)
    cross *= np.clip((_smooth_field(rng, shape, 1.2 * cell) - 0.3) / 0.3, 0, 1)
    sinus = np.maximum(sinus, cross)
    # sinusoids break up as the tumour dedifferentiates (solid sheets)
    keep = _smooth_field(rng, shape, 2.5 * cell)
    continuity = np.clip((keep - (-1.8 + 3.4 * d)) / 0.4, 0, 1)
    sinus = sinus * continuity
    # pseudoglandular (acinar) lumina in moderately differentiated tumours
    n_acini = rng.poisson(6.0 * max(0.0, 1 - abs(d - 0.5) / 0.3) * aspect)
    if n_acini:
        lum = _ellipses(shape, rng.uniform(0, h, n_acini), rng.uniform(0, w, n_acini),
                     cell * rng.uniform(0.25, 0.5, n_acini))
        sinus = np.maximum(sinus, lum)
    plate = 1.0 - sinus

    # ---- hepatocytes: jittered hexagonal grid, Voronoi cells
    centres = _hex_centres(rng, shape, cell, cell * (0.06 + 0.22 * d))
    cy = np.clip(np.round(centres[:, 0]).astype(int), 0, h - 1)
    cx = np.clip(np.round(centres[:, 1]).astype(int), 0, w - 1)
    centres = centres[plate[cy, cx] > 0.5]
    n = len(centres)
    label, dy, dx = _nearest(shape, centres)
    border = find_boundaries(label, mode="inner")
    px = w / DEFAULT_SIZE[0]  # pixels per pixel of the default size: keeps membranes equally thick
    if px > 1.5:
        border = ndi.maximum_filter(border, size=int(round(px)))
    border = border.astype(np.float32)

    # ---- nuclei: size, pleomorphism, irregular contours, hyperchromasia
    r_mean = cell * (0.16 + 0.16 * d)
    r = r_mean * np.exp(rng.normal(0, 0.05 + 0.22 * d, n))
    r = np.minimum(r, cell * 0.62)
    elong = rng.uniform(0, 0.08 + 0.28 * d, n)
    a, b = r * (1 + elong), r * (1 - elong)
    irregular = rng.uniform(0, 0.02 + 0.16 * d, (n, 2))
    phases = rng.uniform(0, 2 * np.pi, (n, 2))
    angle = rng.uniform(0, np.pi, n)
    off = rng.normal(0, 0.06 * cell, (n, 2))
    present = rng.random(n) > 0.08  # some cells are cut above/below the nucleus
    binuc = rng.random(n) < 0.10 * max(0.0, 1 - 1.5 * d)  # binucleate hepatocytes (well differentiated)
    scale = np.where(binuc, 0.72, 1.0)
    shift = np.where(binuc, 0.85 * a, 0.0)  # along the nucleus' long axis
    sy, sx = shift * np.sin(angle), shift * np.cos(angle)
    a, b = a * scale, b * scale
    ty, tx = dy - off[label, 0], dx - off[label, 1]
    nuc, rho = _blobs(label, ty - sy[label], tx - sx[label], a, b, angle, irregular, phases)
    if binuc.any():  # the second nucleus, mirrored about the cell centre
        nuc2, rho2 = _blobs(label, ty + sy[label], tx + sx[label], a, b, angle, irregular, phases)
        second = binuc[label]
        nuc = np.where(second, np.maximum(nuc, nuc2), nuc)
        rho = np.where(second, np.minimum(rho, rho2), rho)
    nuc = nuc * present[label] * (plate > 0.5)
    hyper = (1.0 + 0.6 * d) * np.exp(rng.normal(0, 0.06 + 0.15 * d, n))  # nuclear H density
    chrom = _smooth_field(rng, shape, max(0.8, cell * (0.07 + 0.05 * d)))
    chrom_amp = 0.10 + 0.25 * d  # coarse, clumped chromatin when dedifferentiated
    rim = np.clip((rho - 0.7) / 0.3, 0, 1) * (0.35 - 0.2 * d)  # nuclear membrane (vesicular nuclei)
    h_nuc = hyper[label] * np.maximum(1 + chrom_amp * chrom + rim, 0.5)
    nucleolus_p = 0.05 + 0.7 * d
    has_nucleolus = rng.random(n) < nucleolus_p
    nucleolus = np.clip((0.22 + 0.06 * d - rho) * a[label] / 0.7 + 0.5, 0, 1) * has_nucleolus[label] * nuc

    # ---- cytoplasm: eosinophilic, granular; basophilic tint as N:C rises
    grain = _smooth_field(rng, shape, max(0.8, cell * 0.06))
    e_cyto = 0.42 * (1 + 0.12 * grain) * (1 - 0.25 * d)
    h_cyto = 0.02 + 0.10 * d
    border = border * (0.45 - 0.35 * d)  # crisp cell borders in plates, indistinct in sheets
    # steatosis / clear vacuoles (fat droplets), mostly in well and moderately differentiated tissue
    n_fat = rng.poisson(5 * (1 - d) * aspect)
    fat = _ellipses(shape, rng.uniform(0, h, n_fat), rng.uniform(0, w, n_fat), cell * rng.uniform(0.15, 0.35, n_fat))
    fat *= 1 - nuc

    # ---- sinusoid contents: red blood cells and flattened endothelial nuclei
    rbc = np.zeros(shape, np.float32)
    endo = np.zeros(shape, np.float32)
    sin_idx = np.flatnonzero(sinus.ravel() > 0.5)
    if sin_idx.size:
        n_rbc = min(sin_idx.size, rng.poisson(sin_idx.size / (cell * cell) * 0.5) + 1)
        ry, rx = np.unravel_index(rng.choice(sin_idx, n_rbc, replace=False), shape)
        rr = cell * rng.uniform(0.15, 0.2, n_rbc)
        rbc = _ellipses(shape, ry, rx, rr, 0.9 * rr, rng.uniform(0, np.pi, n_rbc)) * sinus
        n_endo = min(sin_idx.size, rng.poisson(sin_idx.size / (cell * cell) * 0.5) + 1)
        ey, ex = np.unravel_index(rng.choice(sin_idx, n_endo, replace=False), shape)
        ea = np.full(n_endo, cell * 0.22)
        endo = _ellipses(shape, ey, ex, ea, 0.3 * ea, theta + np.pi / 2) * sinus * (1 - rbc)

    # ---- stain densities (optical density units) -> RGB
    hs, es = look.hema_strength, look.eosin_strength
    H = plate * ((1 - nuc) * (h_cyto * (1 - fat)) + nuc * h_nuc) + nucleolus * 0.25 + endo * 0.9
    E = plate * ((1 - nuc) * (e_cyto * (1 + border)) * (1 - fat) + nuc * 0.12) + nucleolus * 0.35
    E = E + sinus * (0.04 + 0.9 * rbc)
    H = H * hs + 0.015
    E = E * es + 0.02
    # section thickness varies slowly across the slide; optics blur the densities slightly
    thick = np.exp(np.float32(0.08) * _smooth_field(rng, shape, 6 * cell))
    sigma = 0.45 * w / DEFAULT_SIZE[0]
    H = gaussian(H * thick, sigma=sigma, preserve_range=True)
    E = gaussian(E * thick, sigma=sigma, preserve_range=True)
    # Beer-Lambert: transmitted light = exp(-densities @ stain matrix), exactly what
    # skimage.color.combine_stains computes, done in float32 here because it is the hot path
    m = _stain_matrix(look).astype(np.float32)
    rgb = np.exp(-(H[..., None] * m[0] + E[..., None] * m[1] + np.float32(0.01) * m[2]))
    rgb += rng.random(rgb.shape, dtype=np.float32) * np.float32(0.04) - np.float32(0.02)  # sensor noise
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------- the whole dataset


def generate(root: Path, *, seed: int = 0, size: tuple[int, int] = DEFAULT_SIZE, progress: bool = True) -> Path:
    """Write the whole phantom as ``root/<class>/<patient_id>/<patient_id>-<k>.png``.

    Parameters
    ----------
    root : Path
        Output folder (created).
    seed : int
        Every pixel is determined by ``seed`` and ``size``.
    size : (width, height)
        Image size; the default is the paper's 1665 x 1393 divided by 5.
    progress : bool
        Show a progress bar (on a terminal; never inside a notebook, whose outputs
        must not depend on whether the phantom was already cached).

    Returns
    -------
    Path
        ``root``.
    """
    from threadpoolctl import threadpool_limits

    tqdm = _tqdm()

    seed, size = _check(seed, size)
    root = Path(root)
    jobs = [(ci, k, j) for ci, g in enumerate(CLASSES) for k in range(PATIENTS[g]) for j in range(IMAGES_PER_PATIENT)]
    looks = {}
    with threadpool_limits(1):  # small matrix products: BLAS threads only add overhead
        # disable=None: a bar on terminals only, so notebook outputs do not depend on cache state
        for ci, k, j in tqdm(jobs, desc="phantom", disable=None if progress else True, leave=False):
            if (ci, k) not in looks:
                looks[ci, k] = _patient_look(seed, ci, k)
            look = looks[ci, k]
            rng = np.random.default_rng(np.random.SeedSequence([seed, ci, k, j]))
            img = render(look, rng, size)
            path = root / look.grade / look.patient / f"{look.patient}-{j + 1}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(path, format="PNG", compress_level=1)
    meta = {"generator": "liverfuse.phantom", "version": VERSION, "seed": seed, "size": list(size),
            "note": "Synthetic H&E phantom: not evidence about liver cancer."}
    with atomic_write(root / "phantom.json", "w") as f:
        json.dump(meta, f, indent=1)
    return root


def _tqdm():
    """``tqdm.auto.tqdm``, imported without its warning in notebooks that lack ipywidgets (the warning
    would make a notebook's stderr depend on which module imported tqdm first)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from tqdm.auto import tqdm
    return tqdm


def _check(seed, size) -> tuple[int, tuple[int, int]]:
    try:
        seed = int(seed)
        size = (int(size[0]), int(size[1]))
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"phantom seed must be an integer and size a (width, height) pair, got {seed!r}, {size!r}.") from None
    if seed < 0:
        raise ValueError(f"phantom seed must be a non-negative integer, got {seed}.")
    if min(size) < 32:
        raise ValueError(f"phantom size must be at least 32 x 32 pixels, got {size}.")
    return seed, size


def cache_key(seed: int, size: tuple[int, int]) -> str:
    """Cache folder name for a phantom: readable prefix plus a digest of everything that shapes it."""
    seed, size = _check(seed, size)
    return f"s{seed}-{size[0]}x{size[1]}-" + digest("phantom", VERSION, seed, list(size), length=10)


def _complete(path: Path) -> bool:
    n = sum(PATIENTS.values()) * IMAGES_PER_PATIENT
    return (path / "phantom.json").is_file() and sum(1 for _ in path.glob("*/*/*.png")) == n


def ensure(cache_dir: Path, *, seed: int = 0, size: tuple[int, int] = DEFAULT_SIZE) -> Path:
    """Return ``cache_dir/phantom/<key>/``, generating it first if missing or incomplete.

    Generation writes to a temporary folder beside the target and renames it into
    place, so an interrupted run never leaves a half-written phantom behind and two
    concurrent runs do not see each other's partial output.
    """
    base = Path(cache_dir) / "phantom"
    target = base / cache_key(seed, size)
    if _complete(target):
        return target
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=base, prefix=f".{target.name}.", suffix=".tmp"))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
    try:
        generate(tmp, seed=seed, size=size)
        if target.exists() and not _complete(target):
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first
            if not _complete(target):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
