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
# # 1. Dataset
#
# **What the paper does.** Dong et al. (2022) collected H&E-stained liver tumour sections of **73 patients**
# with primary liver cancer diagnosed between 2010 and 2020 at the Affiliated Cancer Hospital of Xinjiang
# Medical University: **24 poorly, 27 moderately and 22 well differentiated** tumours, graded by two
# pathologists who also marked the tumour region. Each section was scanned at 40x (PRECICE 500B), and
# **six non-overlapping images** were taken inside the tumour region of each patient: **438 images of
# 1665 x 1393 pixels**. Their Table 2 profiles the patients, Table 5 counts the images per class, and Fig. 1a
# shows one sample per grade. The images were then split **at random, 7:3, into training and test sets**.
# The data is private (available from the authors on request).
#
# **What this section reproduces.** The same accounting on whatever data the notebook is given: the
# per-class table of patients and images with the train/test counts (Tables 2 and 5), a sample grid per
# class (Fig. 1a), and a check of how many patients have images on *both* sides of the split.
#
# **The default data is a synthetic phantom, not evidence about liver cancer.** With `data_dir` empty,
# `liverfuse.phantom` draws a stand-in with the paper's structure (3 grades, 24 / 27 / 22 patients,
# 6 images each, 1665 x 1393 / 5 pixels in the `quick` profile, full size in `paper`). Its H&E-like images
# change with grade in the features pathologists grade on (nuclear size, pleomorphism, hyperchromasia,
# nuclear-cytoplasmic ratio, loss of the trabecular plate architecture), with deliberate overlap between
# grades and per-patient stain and morphology, so that patients differ and an image-level split leaks.
# Every number this book reports on the phantom describes the *method and protocol* on synthetic data,
# never liver histology. To use your own images, pass `data_dir` (layout `<class>/<patient>/<image>`, or
# class folders plus a `manifest.csv` with `path,label,group`).

# %% tags=["parameters"]
data_dir = ""
profile = "quick"
protocol = "patient"
seed = 0
cache_dir = ""
output_dir = ""

# %%
import liverfuse

P = liverfuse.setup(
    "01_data",
    data_dir=data_dir,
    profile=profile,
    protocol=protocol,
    seed=seed,
    cache_dir=cache_dir,
    output_dir=output_dir,
)

import matplotlib.pyplot as plt
import seaborn as sns

from liverfuse import data, phantom, splits
from liverfuse.figures import sample_grid
from liverfuse.report import notebook_style, save_figure, save_table

notebook_style()

ds = data.load(P)
print(ds.summary())
print(f"protocol: {P.protocol}, seed: {P.seed}, profile: {P.profile.name}")
if ds.synthetic:
    w, h = P.profile.phantom_size
    print(f"synthetic H&E phantom, {w} x {h} px images (not real tissue)")
for note in ds.notes:
    print("note:", note)

# %% [markdown]
# ## The dataset table (Tables 2 and 5)
#
# Patients and images per class, and how the chosen protocol splits them 7:3. Under `patient` whole
# patients are assigned to one side (stratified by class), so the image counts follow from the patient
# counts; under `paper` images are assigned at random (stratified by class), as the paper did.

# %%
table = splits.split(ds.table, P.protocol, seed=P.seed)
per_patient = table.groupby("group").size()
print(f"images per patient: {per_patient.min()} to {per_patient.max()} (median {per_patient.median():g})")
save_table(table[["image_id", "label", "group", "split"]], P, "split")
save_table(splits.counts(table), P, "dataset")

# %% [markdown]
# ## Sample images per class (Fig. 1a)
#
# Four images per class, each from a different patient (the panel title is the patient id).

# %%
fig = sample_grid(ds, n_per_class=4, seed=P.seed)
save_figure(fig, P, "sample_grid", dpi=90)
plt.show()

# %% [markdown]
# On the phantom, well-differentiated images show thin regular plates of hepatocyte-like cells with small
# round nuclei separated by pale sinusoids; poorly differentiated ones show solid sheets of large,
# irregular, dark nuclei. Moderately differentiated images lie in between, and some patients of each grade
# look like a neighbouring grade. The figure below shows why: each phantom patient has a latent
# dedifferentiation score drawn around its grade's mean, with overlapping spreads. (This cell only shows
# output for the phantom; real data has no such ground truth.)

# %%
if ds.synthetic:
    latent = phantom.patients(P.seed)
    fig, ax = plt.subplots(figsize=(6.5, 2.2), dpi=90)
    sns.stripplot(data=latent, x="score", y="grade", order=list(phantom.CLASSES), hue="grade",
                  hue_order=list(phantom.CLASSES), legend=False, jitter=0.2, size=5, ax=ax)
    ax.set_xlabel("latent dedifferentiation score of each phantom patient (0 = plates, 1 = solid sheets)")
    ax.set_ylabel("")
    fig.tight_layout()
    save_figure(fig, P, "phantom_patient_scores", dpi=90)
    save_table(latent, P, "phantom_patients")
    plt.show()

# %% [markdown]
# ## Split overlap check
#
# A test set is only independent of training if no patient contributes images to both. Images of one
# patient share staining, section preparation and morphology, so a classifier can recognise the
# *patient* rather than the grade. The check lists every patient with images on both sides of the split.

# %%
both = splits.overlap(table)
n_patients = table["group"].nunique()
print(f"protocol {P.protocol}: {len(both)} of {n_patients} patients have images in both train and test")
save_table(both, P, "overlap")
both.head(10)

# %% [markdown]
# The same check for both protocols, with the same seed. The paper's random image split puts nearly every
# patient on both sides, so almost every test image has a sibling image of the same patient in training:
# its test accuracy measures, in part, recognition of patients seen before. Later sections report both
# protocols; the `patient` protocol is the honest estimate.

# %%
save_table(splits.leakage(ds.table, seed=P.seed), P, "protocol_overlap")
