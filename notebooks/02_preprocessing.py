# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. Image preprocessing
#
# **What the paper does.** Dong et al. equalise every H&E image with *adaptive histogram equalisation*
# (AHE), to even out colour and brightness differences between slides while keeping local detail, and
# then smooth it with a *Gaussian filter* to suppress noise (their Fig. 1: original, after AHE, after the
# Gaussian filter, one row per differentiation grade). They also show, without numbers, what other
# classical treatments do to the images (their Figs. 2-4, one figure per grade): a simulated motion
# blur, its inverse filtering and Wiener filtering, the blurred image with added noise, and inverse and
# Wiener filtering of that noisy image.
#
# **What this section reproduces.**
#
# * Fig. 1 with the chain every later section uses (`preprocessing="paper"`): CLAHE by
#   `skimage.exposure.equalize_adapthist` on the HSV value channel, then `skimage.filters.gaussian`
#   (sigma 1 px), both at the image's native size; the image is only then resized to the network input.
# * Figs. 2-4 as one grid, one row per grade, with a known motion point-spread function (21 px at
#   11 degrees), the textbook inverse filter, scikit-image's (unsupervised) Wiener filter and Gaussian noise.
# * What the paper leaves to the eye, measured: **PSNR and SSIM** of every treatment against the original.
# * The cached, network-ready image stack shared with every later section.
#
# The paper gives no parameters for AHE or the Gaussian filter: scikit-image's defaults are used
# (clip limit 0.01, tiles of 1/8 of the image) and sigma = 1 pixel. On the embedded phantom the
# images are synthetic (see section 1); the figures show the method, not liver histology.

# %% tags=["parameters"]
data_dir = ""
profile = "quick"
protocol = "patient"
seed = 0
cache_dir = ""
output_dir = ""
preprocessing = "paper"
blur_length = 21  # motion blur length, pixels
blur_angle = 11.0  # motion direction, degrees counter-clockwise from horizontal
noise_var = 0.001  # variance of the added Gaussian noise (image in [0, 1])

# %%
import liverfuse

P = liverfuse.setup(
    "02_preprocessing",
    data_dir=data_dir,
    profile=profile,
    protocol=protocol,
    seed=seed,
    cache_dir=cache_dir,
    output_dir=output_dir,
    preprocessing=preprocessing,
)

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from liverfuse import data
from liverfuse import preprocessing as pp
from liverfuse.report import notebook_style, save_figure, save_table

# H&E images compress poorly as PNG: show figures as JPEG at a modest resolution (files stay PNG)
notebook_style()

try:
    psf = pp.motion_psf(blur_length, float(blur_angle))
except (TypeError, ValueError):
    raise ValueError(
        f"blur_length must be a positive whole number of pixels and blur_angle a number of degrees; "
        f"got blur_length={blur_length!r}, blur_angle={blur_angle!r}."
    ) from None
if not float(noise_var) >= 0:
    raise ValueError(f"noise_var must be a variance >= 0 (image in [0, 1]), got {noise_var!r}.")
print(f"data: {P.data_label}, profile: {P.profile.name}, seed: {P.seed}")

# %% [markdown]
# ## The data and one image per grade
#
# One image per class, drawn with the run's seed; the same images serve every figure below.

# %% tags=["nbval-ignore-output"]
ds = data.load(P)  # the first run generates the phantom (progress bar); later runs read the cache

# %%
pick = (
    ds.table.groupby("label", sort=False)
    .sample(1, random_state=P.seed)
    .set_index("label")
    .loc[list(ds.classes)]
)
originals = {cls: ds.image(image_id) for cls, image_id in pick["image_id"].items()}
height, width = next(iter(originals.values())).shape[:2]
print(f"{len(ds.table)} images, classes: {', '.join(ds.classes)}; native size {width} x {height} px")
pick[["image_id", "group"]]

# %% [markdown]
# ## Fig. 1: original, after AHE, after the Gaussian filter
#
# Columns as in the paper's Fig. 1 (a, b, c); one row per grade. Below, the same panels cropped to
# the central quarter, where the Gaussian filter's smoothing is visible at screen resolution.

# %%
steps = {}
for cls, img in originals.items():
    a = pp.ahe(img)
    steps[cls] = {"a. original": img / 255.0, "b. after AHE": a, "c. after Gaussian filter": pp.gaussian(a)}


def grid(rows: dict, crop: bool = False, size: float = 2.6):
    ncols = len(next(iter(rows.values())))
    fig, axes = plt.subplots(len(rows), ncols, figsize=(size * ncols, size * len(rows) * height / width + 0.3))
    axes = np.atleast_2d(axes)
    for r, (cls, panels) in enumerate(rows.items()):
        for c, (title, im) in enumerate(panels.items()):
            if crop:
                h, w = im.shape[:2]
                im = im[3 * h // 8 : 5 * h // 8, 3 * w // 8 : 5 * w // 8]
            ax = axes[r, c]
            ax.imshow(np.clip(im, 0, 1), interpolation="nearest" if crop else "antialiased")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=9)
            if c == 0:
                ax.set_ylabel(cls, fontsize=10)
    fig.tight_layout()
    return fig


fig = grid(steps)
save_figure(fig, P, "fig1_ahe_gaussian", dpi=90)
plt.show()

# %%
fig = grid(steps, crop=True)
save_figure(fig, P, "fig1_ahe_gaussian_crop", dpi=90)
plt.show()

# %% [markdown]
# What AHE does to the colour statistics: the spread of mean brightness between the three images
# (a proxy for the slide-to-slide differences the paper wants to reduce) and the local contrast
# (mean absolute difference between neighbouring pixels).

# %%
def stats(im):
    grey = im.mean(axis=-1)
    return {
        "mean brightness": grey.mean(),
        "local contrast": np.abs(np.diff(grey, axis=1)).mean(),
    }


fig1_stats = pd.DataFrame(
    [{"class": cls, "step": step, **stats(im)} for cls, panels in steps.items() for step, im in panels.items()]
)
fig1_stats = fig1_stats.pivot(index="step", columns="class").round(3)
fig1_stats.columns = [f"{a} ({b})" for a, b in fig1_stats.columns]
save_table(fig1_stats.reset_index(), P, "fig1_statistics")
fig1_stats

# %% [markdown]
# ## Figs. 2-4: motion blur, inverse and Wiener filtering, noise
#
# The paper shows one figure per grade (Fig. 2 poorly, Fig. 3 moderately, Fig. 4 well differentiated);
# here they are one grid with one row per class. The image model is a circular convolution with a known
# motion point-spread function; the blurred image is kept in floating point, so without noise the
# inverse filter is nearly exact. The *inverse filter* is the textbook `G / H` in the Fourier domain
# (scikit-image has none; the transfer function's magnitude is only floored at 1e-3 to avoid division
# by zero). The *Wiener filter* is `skimage.restoration.unsupervised_wiener`, which estimates the
# noise-to-signal balance from the image itself (seeded). The noise is zero-mean Gaussian of variance
# `noise_var`, added after the blur.

# %%
panels = {
    cls: pp.restoration_panels(img, length=blur_length, angle=blur_angle, noise_var=noise_var, seed=P.seed)
    for cls, img in originals.items()
}

fig, axes = plt.subplots(
    len(panels), len(pp.RESTORATION_PANELS), figsize=(1.8 * len(pp.RESTORATION_PANELS), 1.8 * len(panels) * height / width + 0.5)
)
axes = np.atleast_2d(axes)
for r, (cls, p) in enumerate(panels.items()):
    for c, (key, title) in enumerate(pp.RESTORATION_PANELS.items()):
        ax = axes[r, c]
        ax.imshow(p[key])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=8)
        if c == 0:
            ax.set_ylabel(cls, fontsize=9)
fig.tight_layout()
save_figure(fig, P, "fig2_4_restoration", dpi=90)
plt.show()

# %%
fig, ax = plt.subplots(figsize=(2.2, 2.2))
ax.imshow(psf, cmap="gray")
ax.set_title(f"motion PSF: {blur_length} px, {blur_angle:g} deg", fontsize=8)
ax.set_xticks([])
ax.set_yticks([])
save_figure(fig, P, "motion_psf", dpi=90)
plt.show()

# %% [markdown]
# ## PSNR and SSIM against the original
#
# Peak signal-to-noise ratio (dB, higher is better) and structural similarity (1 = identical) of every
# panel against the original image (`skimage.metrics`, data range 1).

# %%
scores = pp.restoration_table(originals, panels_by_class=panels)
save_table(scores, P, "restoration_psnr_ssim")
order = list(pp.RESTORATION_PANELS.values())[1:]
wide = scores.pivot(index="treatment", columns="class", values=["PSNR_dB", "SSIM"]).loc[order, :]
wide = wide.reindex(columns=list(ds.classes), level=1).round(2)
wide

# %%
s = scores.set_index(["class", "treatment"])
for cls in ds.classes:
    blurred = s.loc[(cls, "Motion blur"), "PSNR_dB"]
    print(
        f"{cls}: Wiener beats the blurred image: {s.loc[(cls, 'Wiener filter'), 'PSNR_dB'] > blurred}; "
        f"after noise, Wiener beats the inverse filter: "
        f"{s.loc[(cls, 'Wiener filter (noisy)'), 'PSNR_dB'] > s.loc[(cls, 'Inverse filter (noisy)'), 'PSNR_dB']}"
    )

# %% [markdown]
# Reading the numbers: without noise the inverse filter undoes a known blur almost exactly; a little
# noise is enough to ruin it (division by the small values of the transfer function amplifies the noise
# at exactly the frequencies the blur removed), while the Wiener filter, which weighs restoration against
# noise, degrades gracefully. None of these restorations is part of the paper's pipeline: its images are
# not motion-blurred, and the chain it uses, and this project uses, is AHE followed by the Gaussian filter.

# %% [markdown]
# ## The network-ready images
#
# `liverfuse.preprocessing.prepare` applies the chain (`preprocessing` parameter: `paper` or `none`) to
# every image at its native size, then resizes it to the profile's square network input, and caches the
# `uint8` stack (keyed by the SHA-256 of every file, the method and the size, written atomically) under
# the cache folder, where every later section finds it. At the paper's 1665 x 1393 pixels the AHE step is
# computed on the HSV value channel directly, which gives exactly scikit-image's colour result about ten
# times faster (`benchmarks/bench_preprocessing.py` prints the throughput at both sizes).

# %% tags=["nbval-ignore-output"]
prepared = pp.prepare(ds, method=P.preprocessing, input_size=P.profile.input_size, cache_dir=P.cache_dir)

# %%
print(f"prepared stack: {prepared.shape}, {prepared.dtype}, values {prepared.min()}..{prepared.max()}")

positions = {cls: int(np.flatnonzero(ds.table["image_id"].to_numpy() == iid)[0]) for cls, iid in pick["image_id"].items()}
fig, axes = plt.subplots(1, len(positions), figsize=(2.2 * len(positions), 2.4))
for ax, (cls, i) in zip(np.atleast_1d(axes), positions.items()):
    ax.imshow(prepared[i])
    ax.set_title(f"{cls}\n{P.profile.input_size} x {P.profile.input_size}", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()
save_figure(fig, P, "prepared_examples", dpi=90)
plt.show()
