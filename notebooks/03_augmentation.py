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
# # 3. Data augmentation
#
# **What the paper does.** To fight overfitting on 438 images, Dong et al. enlarge the *training set*
# tenfold with three common strategies (their Tables 3-4 survey the augmentation used in 18 earlier
# studies): rotations by 45, 60, 90, 210 and 240 degrees, clockwise and counter-clockwise; horizontal and
# vertical flips; and translations by 10 pixels up, down, left and right. Their Tables 5-6 give the image
# counts before and after augmentation.
#
# **What this section reproduces.**
#
# * The 16 operations exactly (`liverfuse.augmentation.OPERATIONS`), applied to the network-ready
#   images (section 2) after the train/test split.
# * The x10: each training image contributes its original plus 9 distinct operations drawn from the 16
#   by a generator seeded with the run's seed and the image id (so every operation is used about
#   equally often, and the draw does not depend on row order). The paper does not say which 9 of its 16
#   operations make up its x10; drawing per image keeps all 16 in use.
# * The test set is never augmented, and every copy keeps its source image id and patient, so that the
#   grouped validation of later sections keeps all copies of a patient on one side.
#
# **Border handling.** Rotations by angles other than multiples of 90 degrees, and the translations,
# bring in pixels from outside the image. They are filled by mirror reflection about the image edge
# (`mode="reflect"` in `skimage.transform.rotate` and `numpy.pad`, the same convention), never by black,
# so no artificial corners or bands appear that a classifier could learn. Rotations by 90 degrees are
# exact pixel permutations (`numpy.rot90`); the others are bilinear.

# %% tags=["parameters"]
data_dir = ""
profile = "quick"
protocol = "patient"
seed = 0
cache_dir = ""
output_dir = ""
preprocessing = "paper"

# %%
import liverfuse

P = liverfuse.setup(
    "03_augmentation",
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

from liverfuse import augmentation as aug
from liverfuse import data, splits
from liverfuse import preprocessing as pp
from liverfuse.report import notebook_style, save_figure, save_table

# H&E images compress poorly as PNG: show figures as JPEG at a modest resolution (files stay PNG)
notebook_style()

print(
    f"data: {P.data_label}, profile: {P.profile.name}, protocol: {P.protocol}, seed: {P.seed}, "
    f"training set x{P.profile.augment_factor}"
)

# %% [markdown]
# ## The augmentation methods (Tables 3-4 in spirit)
#
# The paper's Tables 3-4 list what 18 earlier studies did; its text summarises them as rotation (4 of 18
# studies), flipping (4/18), cropping (4/18) and cutting inside the tissue block (6/18), and adopts
# rotation, flipping and translation. The first table restates that summary, the second lists exactly
# what is applied here.

# %%
literature = pd.DataFrame(
    [
        ("rotation", "4/18", "yes: 45, 60, 90, 210, 240 deg, both directions"),
        ("flipping", "4/18", "yes: horizontal and vertical"),
        ("cropping", "4/18", "no"),
        ("cutting inside the tissue block", "6/18", "no"),
        ("translation", "not counted", "yes: 10 px up, down, left, right"),
    ],
    columns=["strategy", "studies using it (paper's text)", "used by the paper and here"],
)
save_table(literature, P, "table3_4_literature")
literature

# %%
ops = aug.operations_table()
save_table(ops, P, "table3_4_operations")
ops

# %% [markdown]
# ## Every operation on one image
#
# One training image (network input size, after preprocessing), and each of the 16 operations applied to it.

# %% tags=["nbval-ignore-output"]
# cached by section 2 (or computed here, with a progress bar, on a cold cache)
ds = data.load(P)
prepared = pp.prepare(ds, method=P.preprocessing, input_size=P.profile.input_size, cache_dir=P.cache_dir)

# %%
table = splits.split(ds.table, P.protocol, P.seed)
print(f"{len(table)} images, prepared stack {prepared.shape}")

rng = np.random.default_rng(P.seed)
train_rows = np.flatnonzero(table["split"].to_numpy() == "train")
example = int(rng.choice(train_rows))
src = prepared[example]
print(f"example image: {table['image_id'].iloc[example]} ({table['label'].iloc[example]})")

names = list(aug.OPERATIONS)
ncols = 6
nrows = int(np.ceil(len(names) / ncols))
fig, axes = plt.subplots(nrows, ncols, figsize=(1.9 * ncols, 2.05 * nrows))
for ax in axes.ravel():
    ax.axis("off")
for ax, name in zip(axes.ravel(), names):
    ax.imshow(aug.apply(name, src))
    ax.set_title(name, fontsize=9)
fig.tight_layout()
save_figure(fig, P, "augmentation_gallery", dpi=90)
plt.show()

# %% [markdown]
# ## The augmented training set
#
# `liverfuse.augmentation.expand` turns the split image table into the *sample* table used by feature
# extraction: one row per (image, operation). Test images appear once, as `original`.

# %%
samples = aug.expand(table, P.profile.augment_factor, P.seed)
samples.head(12)

# %% [markdown]
# ### Counts per class and split before and after augmentation (Tables 5-6)

# %%
counts = aug.counts(table, samples)
save_table(counts, P, "table5_6_counts")
counts

# %%
c = counts.set_index("label").drop(index="total")
f = P.profile.augment_factor
print(f"training images x{f} in every class: {bool((c['train_after'] == f * c['train_before']).all())}")
print(f"test images unchanged in every class: {bool((c['test_after'] == c['test_before']).all())}")
test_ids = set(table.loc[table["split"] == "test", "image_id"])
augmented_test = samples[samples["image_id"].isin(test_ids) & (samples["op"] != "original")]
print(f"augmented copies of test images: {len(augmented_test)}")
src_of = table.set_index("image_id")
same_group = (samples["group"].to_numpy() == src_of.loc[samples["image_id"], "group"].to_numpy()).all()
print(f"every copy keeps its source image's patient: {bool(same_group)}")
overlap = set(samples.loc[samples["split"] == "train", "group"]) & set(samples.loc[samples["split"] == "test", "group"])
print(f"patients with samples on both sides ({P.protocol} protocol): {len(overlap)}")

# %% [markdown]
# ### Which operations make up the x10
#
# How often each operation was drawn among the training copies (each training image gets 9 distinct ones).

# %%
freq = (
    samples.loc[samples["split"] == "train", "op"]
    .value_counts()
    .reindex(names)
    .fillna(0)
    .astype(int)
    .rename_axis("op")
    .reset_index(name="training copies")
)
save_table(freq, P, "operation_frequency")
fig, ax = plt.subplots(figsize=(7.5, 2.6))
ax.bar(freq["op"], freq["training copies"], color="#8a5a9e")
ax.set_ylabel("training copies")
ax.tick_params(axis="x", rotation=60, labelsize=8)
ax.set_title("operations drawn for the augmented training set", fontsize=10)
fig.tight_layout()
save_figure(fig, P, "operation_frequency", dpi=90)
plt.show()

# %% [markdown]
# ### The ten samples of one training image
#
# `liverfuse.augmentation.images` materialises any slice of the sample table in batches, so later
# sections never hold every augmented copy in memory.

# %%
image_id = table["image_id"].iloc[example]
idx = np.flatnonzero(samples["image_id"].to_numpy() == image_id)
batch = aug.images(prepared, samples, idx[0], idx[-1] + 1)
fig, axes = plt.subplots(1, len(batch), figsize=(1.5 * len(batch), 1.9))
for ax, im, op in zip(np.atleast_1d(axes), batch, samples["op"].iloc[idx]):
    ax.imshow(im)
    ax.set_title(op, fontsize=7)
    ax.axis("off")
fig.tight_layout()
save_figure(fig, P, "one_image_samples", dpi=90)
plt.show()
