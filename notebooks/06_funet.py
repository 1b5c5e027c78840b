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
# # 6. FuNet and performance analysis with different fusion strategies
#
# **What the paper does.** Besides serial fusion (section 5), Dong et al. (2022) propose *FuNet*: features
# taken from several layers of the pre-trained networks pass through a **channel attention** block and a
# **spatial attention** block (their Fig. 8) before being fused (Fig. 9); the fused vector is reduced by
# PCA and classified by the classical classifiers. Their Table 12 compares fusion strategies 1-4 with FuNet
# under several classifiers (validation accuracy, test accuracy, time); FuNet with the Stacking ensemble
# is best, **72.46% test accuracy and 94.33% validation accuracy**. Figs. 12-13 compare per-grade
# precision, recall and F1 of the four strategies and FuNet for the RBF-SVM, polynomial SVM, random forest
# and Stacking; Fig. 14 compares the time each feature extraction strategy takes.
#
# **What this section reproduces.** FuNet as read below (`liverfuse.funet`), the Table 12 analogue
# (strategies 1-4 and FuNet under the `classifiers` and `classifier` parameters, validation and test
# accuracy), Figs. 12-13 (precision, recall, F1 per class on the test set), Fig. 14 (measured extraction
# time per strategy), the learned spatial attention over test images, and a plain **baseline** on the same
# split, the backbones' full-base pooled features with logistic regression, so that what FuNet adds is
# visible. Every row of `metrics.csv` (in `output_dir`) carries the data, weights and protocol it came from.
#
# **Our reading of FuNet.** The paper gives a diagram, not code. We implement CBAM (its refs. 49-50):
#
# 1. every level's cached map (max-pooled to at most 4 x 4 positions by the feature stage) is divided by its
#    per-channel RMS over the *training* maps, so levels of different networks enter on one scale;
# 2. **channel attention**: the average- and max-pooled channel descriptors go through one shared MLP
#    (C → C/8 → C), are summed and passed through a sigmoid: one weight in [0, 1] per channel;
# 3. **spatial attention**: the channel-average and channel-max maps go through a 3 x 3 convolution and a
#    sigmoid: one weight in [0, 1] per position (CBAM's 7 x 7 kernel is larger than these maps);
# 4. each attended map is global-max-pooled (as the paper's level vectors) and the level vectors are
#    concatenated (serial fusion, Fig. 9): this **FuNet feature** goes to PCA and the classifiers;
# 5. the attention weights are learned through a small head (dropout + softmax) trained on the *training*
#    samples only, on the cached maps (the backbones stay frozen), with early stopping on a validation split
#    that holds out whole patients. Under cross-validation FuNet is retrained on each fold's training part,
#    so validation images never shaped the attention that scores them.
#
# By default (`funet_levels = "all"`) FuNet attends over *every* level of every backbone: Fig. 9 shows
# features "extracted from the different layers" of the networks, as in strategy 4. `funet_levels = "full"`
# restricts it to the full bases (Table 12 is titled "full convolutional basis").

# %% tags=["parameters"]
data_dir = ""
profile = "quick"
protocol = "patient"
seed = 0
cache_dir = ""
output_dir = ""
preprocessing = "paper"
backbones = "vgg16,resnet50,densenet201,inception_resnet_v2"
weights = "auto"
classifier = "stacking"
classifiers = "rbf_svm,poly_svm,random_forest"
funet_levels = "all"

# %%
import liverfuse

P = liverfuse.setup(
    "06_funet",
    data_dir=data_dir,
    profile=profile,
    protocol=protocol,
    seed=seed,
    cache_dir=cache_dir,
    output_dir=output_dir,
    preprocessing=preprocessing,
    backbones=backbones or "vgg16,resnet50,densenet201,inception_resnet_v2",
    weights=weights,
    classifier=classifier or "stacking",
    classifiers=classifiers or "rbf_svm,poly_svm,random_forest",
)
if not P.backbones:
    raise ValueError("backbones must name at least one backbone.")

from liverfuse import funet

FUNET_PARTS = funet.funet_parts(P.backbones, funet_levels)  # validates funet_levels
CLASSIFIER_NAMES = list(dict.fromkeys([*P.classifiers, P.classifier]))

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display
from skimage.transform import resize
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from liverfuse import classifiers, evaluation, features, fusion
from liverfuse.report import notebook_style, save_figure, save_table

notebook_style()
print(
    f"data: {P.data_label}, profile: {P.profile.name} ({P.profile.input_size} px input), "
    f"protocol: {P.protocol}, seed: {P.seed}, backbones: {', '.join(P.backbones)}\n"
    f"classifiers: {', '.join(CLASSIFIER_NAMES)}; FuNet levels: {funet_levels or 'all'} "
    f"({len(FUNET_PARTS)} maps)"
)

# %% [markdown]
# ## Which weights each backbone uses

# %%
provenance = features.weights_provenance(P)
weights_of = dict(zip(provenance["backbone"], provenance["weights"]))
WEIGHTS = ", ".join(dict.fromkeys(weights_of[b] for b in P.backbones))
BACKBONES = "+".join(P.backbones)
save_table(provenance, P, "weights")
display(Markdown(features.weights_markdown(provenance, P)))
provenance

# %% [markdown]
# ## The feature sets compared
#
# Strategies 1-4 exactly as in section 5 (serial fusion of max-pooled level vectors), FuNet over the maps
# listed last, and the baseline (the full bases, i.e. strategy 1's features, with logistic regression).

# %%
strategies = {f"strategy {n}": fusion.strategy_parts(n, P.backbones) for n in fusion.STRATEGIES}
sets = {**strategies, "FuNet": FUNET_PARTS}
overview = pd.DataFrame(
    [
        {
            "feature set": name,
            "parts": fusion.label(parts),
            "fused size": fusion.fused_size(parts, P.profile.input_size),
        }
        for name, parts in sets.items()
    ]
)
save_table(overview, P, "feature_sets")
overview

# %% tags=["nbval-ignore-output"]
# every map comes from the feature cache shared with sections 4-5 (computed here on a cold cache)
data = features.prepared_samples(P)
dataset, prepared, _ = data
needed = list(dict.fromkeys(p for parts in sets.values() for p in parts))
samples, maps, extraction = features.features_for(P, needed, data=data)
extraction[["backbone", "weights", "cache_hits", "computed"]]

# %%
assert dict(zip(extraction["backbone"], extraction["weights"])) == weights_of
counts = samples.groupby("split").size()
print(
    f"{len(samples)} samples: {counts.get('train', 0)} training (augmented x{P.profile.augment_factor}), "
    f"{counts.get('test', 0)} test images"
)

# %% [markdown]
# ## Baseline: full-base pooled features + logistic regression
#
# `StandardScaler → LogisticRegression` (scikit-learn defaults, no PCA) on strategy 1's features, validated
# and tested exactly like every other row.

# %% tags=["nbval-ignore-output"]
base_parts = strategies["strategy 1"]
baseline_model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
res_baseline = evaluation.evaluate_detailed(
    fusion.fuse(maps, base_parts),
    samples,
    [("logistic_regression", baseline_model)],
    P,
    label={"strategy": "baseline", "backbones": BACKBONES, "weights": WEIGHTS, "parts": fusion.label(base_parts)},
)
COLS = ["strategy", "classifier", "n_features", "val_accuracy", "test_accuracy", "test_accuracy_ci_low",
        "test_accuracy_ci_high"]
evaluation.metrics_table(res_baseline)[COLS].round(3)

# %% [markdown]
# ## Strategies 1-4 under the same classifiers

# %% tags=["nbval-ignore-output"]
res_strategies = []
for name, parts in strategies.items():
    res_strategies += evaluation.evaluate_detailed(
        fusion.fuse(maps, parts),
        samples,
        CLASSIFIER_NAMES,
        P,
        label={"strategy": name, "backbones": BACKBONES, "weights": WEIGHTS, "parts": fusion.label(parts)},
    )

# %% [markdown]
# ## FuNet
#
# `funet.funet_provider` trains one FuNet per training part (each validation fold, then all training
# samples), caches it with its weights under `cache_dir/funet/`, and returns the FuNet features of every
# sample; the classifiers then see those features exactly as they see a strategy's.

# %% tags=["nbval-ignore-output"]
funet_maps = {p: maps[p] for p in FUNET_PARTS}
key_parts = funet.key_parts(P, FUNET_PARTS, weights_of)
provider = funet.funet_provider(P, funet_maps, samples, key_parts)
res_funet = evaluation.evaluate_detailed(
    provider,
    samples,
    CLASSIFIER_NAMES,
    P,
    label={"strategy": "FuNet", "backbones": BACKBONES, "weights": WEIGHTS, "parts": fusion.label(FUNET_PARTS)},
)
# the FuNet trained on all training samples (from the cache): its features, history and weights
X_funet, funet_info = funet.funet_features(P, funet_maps, samples, key_parts)
net = funet.load(funet_info["dir"])

# %%
print(
    f"FuNet feature: {X_funet.shape[1]} values per sample ({len(FUNET_PARTS)} attended maps); "
    f"head trained on {net.n_fit_} samples, early-stopped on {net.n_val_} samples of held-out patients; "
    f"best epoch {net.best_epoch_} of {len(net.history_['loss'])}"
)
hist = pd.DataFrame(net.history_)
hist.index = hist.index + 1
fig, axes = plt.subplots(1, 2, figsize=(8, 2.4))
hist[["loss", "val_loss"]].plot(ax=axes[0], title="FuNet head: loss")
hist[["accuracy", "val_accuracy"]].plot(ax=axes[1], title="FuNet head: accuracy")
for ax in axes:
    ax.axvline(net.best_epoch_, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("epoch")
fig.tight_layout()
save_figure(fig, P, "funet_training", dpi=90)
plt.show()

# %% [markdown]
# ## Table 12 analogue: validation and test accuracy per feature set and classifier
#
# Validation follows the `protocol` parameter (`patient`: grouped cross-validation, every augmented copy
# with its patient; `paper`: a random split of the augmented training set, as the paper did). Test accuracy
# is measured once, on the un-augmented test images; its 95% interval resamples patients.

# %% tags=["nbval-ignore-output"]
all_results = res_baseline + res_strategies + res_funet
metrics = evaluation.metrics_table(all_results)
save_table(metrics, P, "metrics")
table12 = metrics.pivot_table(
    index="strategy", columns="classifier", values=["val_accuracy", "test_accuracy"], sort=False
)
table12.columns = [f"{c} {m.replace('_accuracy', '')}" for m, c in table12.columns]
table12 = table12[[c for c in table12.columns if c.endswith(" val")] + [c for c in table12.columns if c.endswith(" test")]]
save_table(table12.reset_index(), P, "table12_accuracy")
table12.round(3)

# %% tags=["nbval-ignore-output"]
metrics[COLS].round(3)

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 0.3 * metrics["strategy"].nunique() * 1.6 + 1.2), sharey=True)
for ax, metric in zip(axes, ["val_accuracy", "test_accuracy"]):
    sns.pointplot(data=metrics, y="strategy", x=metric, hue="classifier", linestyle="none", dodge=0.5,
                  ax=ax, markersize=4)
    ax.axvline(1 / samples["y"].nunique(), color="grey", lw=0.8, ls="--")
    ax.set_xlim(0, 1)
    ax.set_ylabel("")
    ax.set_title(metric.replace("_", " "), fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
fig.suptitle(f"{P.data_label}, {P.protocol} protocol; weights: {WEIGHTS}", fontsize=9)
fig.tight_layout()
save_figure(fig, P, "table12_accuracy", dpi=90)
plt.show()

# %% [markdown]
# ## Figs. 12-13 analogue: precision, recall and F1 per grade on the test set

# %%
prf = evaluation.prf_table(res_strategies + res_funet)
save_table(prf, P, "fig12_13_prf")
long = prf.melt(id_vars=["strategy", "classifier", "class"], value_vars=["precision", "recall", "f1"],
                var_name="metric", value_name="value")
g = sns.catplot(data=long, x="class", y="value", hue="strategy", row="metric", col="classifier", kind="bar",
                height=1.8, aspect=1.3, legend_out=True, palette="tab10")
g.set(ylim=(0, 1))
g.set_titles("{row_name} | {col_name}", size=8)
g.set_xlabels("")
for ax in g.axes.flat:
    ax.tick_params(axis="x", labelsize=7)
g.figure.suptitle(f"test set, {P.data_label}, {P.protocol} protocol", y=1.02, fontsize=9)
save_figure(g.figure, P, "fig12_13_prf", dpi=90)
plt.show()

# %% tags=["nbval-ignore-output"]
f1 = prf.groupby(["strategy", "classifier"], sort=False)["f1"].mean().unstack("classifier")
f1.columns.name = None
print("mean F1 over the grades (test set):")
f1.round(3)

# %% [markdown]
# ## Fig. 14 analogue: time spent extracting each strategy's features
#
# The features are cached, so the time a run spends says nothing about a strategy's cost. Instead a batch
# of 16 images is passed through each strategy's backbones, truncated at the highest level it uses, and the
# measured time per image is scaled to the whole sample set. FuNet adds the training and inference of its
# attention on top of the extraction of its maps. Times depend on the machine and its load; they appear in
# figures only (and in `fig14_time.csv`).

# %% tags=["nbval-ignore-output"]
batch_rows = samples["row"].to_numpy()[:16]
timing = evaluation.extraction_seconds(P, sets, prepared[batch_rows], len(samples))
timing["attention_seconds"] = 0.0
timing.loc[timing["strategy"] == "FuNet", "attention_seconds"] = funet_info["train_seconds"]
fit_time = metrics.groupby("strategy", sort=False)[["fit_seconds", "predict_seconds"]].sum()
timing["classifier_seconds"] = timing["strategy"].map(fit_time.sum(axis=1)).fillna(0.0)
save_table(timing, P, "fig14_time")
fig, axes = plt.subplots(1, 2, figsize=(10, 2.6))
timing.set_index("strategy")[["seconds", "attention_seconds"]].rename(
    columns={"seconds": "feature extraction", "attention_seconds": "FuNet attention (train + transform)"}
).plot.barh(stacked=True, ax=axes[0], color=["#4c72b0", "#dd8452"])
axes[0].set_xlabel(f"seconds for {len(samples)} samples (estimated)")
axes[0].invert_yaxis()
axes[0].legend(fontsize=7)
axes[0].set_title("Fig. 14: feature extraction per strategy", fontsize=9)
fits = metrics[metrics["strategy"] != "baseline"]
sns.barplot(data=fits, y="strategy", x="fit_seconds", hue="classifier", ax=axes[1])
axes[1].set_xlabel("seconds to fit on all training samples")
axes[1].set_ylabel("")
axes[1].legend(fontsize=7)
axes[1].set_title("classifier fit time", fontsize=9)
fig.tight_layout()
save_figure(fig, P, "fig14_time", dpi=90)
plt.show()

# %% [markdown]
# ## What FuNet attends to: learned spatial attention over test images
#
# For one test image of each grade, the spatial attention weights of every attended map (a few cells per
# map: the maps were max-pooled to at most 4 x 4), averaged over the levels of each backbone and stretched
# over the image. Bright = weighted up.

# %%
test = samples[samples["split"] == "test"]
picked = test.groupby("y", sort=True).head(1)
idx = picked.index.to_numpy()
sa = net.spatial_attention({p: m[idx] for p, m in funet_maps.items()})
ncols = 1 + len(P.backbones)
fig, axes = plt.subplots(len(idx), ncols, figsize=(1.9 * ncols, 2.0 * len(idx)), squeeze=False)
size = P.profile.input_size
for r, (i, row) in enumerate(zip(idx, picked.itertuples())):
    img = prepared[row.row]
    axes[r, 0].imshow(img)
    axes[r, 0].set_title(f"{row.label}", fontsize=8)
    for c, b in enumerate(P.backbones, start=1):
        levels = [funet.level_name(p) for p in FUNET_PARTS if p[0] == b]
        att = np.mean([resize(sa[lv][r], (size, size), order=1) for lv in levels], axis=0)
        axes[r, c].imshow(img)
        axes[r, c].imshow(att, cmap="magma", alpha=0.55, vmin=0, vmax=1)
        axes[r, c].set_title(b, fontsize=7)
for ax in axes.ravel():
    ax.axis("off")
fig.suptitle("learned spatial attention (mean over each backbone's levels)", fontsize=9)
fig.tight_layout()
save_figure(fig, P, "funet_spatial_attention", dpi=90)
plt.show()

# %% tags=["nbval-ignore-output"]
sa_all = net.spatial_attention({p: m[test.index.to_numpy()] for p, m in funet_maps.items()})
ca_all = net.channel_attention({p: m[test.index.to_numpy()] for p, m in funet_maps.items()})
attention = pd.DataFrame(
    [
        {
            "map": lv,
            "positions": int(np.prod(sa_all[lv].shape[1:])),
            "spatial weight spread (mean max-min per image)": float(np.mean(np.ptp(sa_all[lv].reshape(len(test), -1), axis=1))),
            "channels": ca_all[lv].shape[1],
            "channel weight range": f"{ca_all[lv].min():.2f}-{ca_all[lv].max():.2f}",
        }
        for lv in sa_all
    ]
)
save_table(attention, P, "funet_attention_summary")
attention.round(3)

# %% [markdown]
# ## Reading the results

# %% tags=["nbval-ignore-output"]
best_row = metrics.loc[(metrics["strategy"] == "FuNet") & (metrics["classifier"] == P.classifier)].iloc[0]
base_row = metrics.loc[metrics["strategy"] == "baseline"].iloc[0]
serial = metrics[metrics["strategy"].str.startswith("strategy")]
best_serial = serial.sort_values(["val_accuracy", "test_accuracy"], ascending=False).iloc[0]
print(
    f"FuNet + {P.classifier}: validation {best_row['val_accuracy']:.3f}, test {best_row['test_accuracy']:.3f} "
    f"[{best_row['test_accuracy_ci_low']:.3f}, {best_row['test_accuracy_ci_high']:.3f}]"
)
print(
    f"baseline (full bases + logistic regression): validation {base_row['val_accuracy']:.3f}, "
    f"test {base_row['test_accuracy']:.3f} [{base_row['test_accuracy_ci_low']:.3f}, "
    f"{base_row['test_accuracy_ci_high']:.3f}]"
)
print(
    f"best serial strategy by validation: {best_serial['strategy']} with {best_serial['classifier']}: "
    f"validation {best_serial['val_accuracy']:.3f}, test {best_serial['test_accuracy']:.3f}"
)
print(f"paper (private liver data, ImageNet weights): FuNet + Stacking validation 0.9433, test 0.7246")

# %% [markdown]
# The paper reports that FuNet with Stacking beats every serial strategy. Two things limit what attention
# can add on top of serial fusion here. First, the FuNet feature is standardised before PCA, which undoes
# any *constant* re-weighting of a channel, so only the input-dependent part of the attention changes what
# the classifiers see. Second, the maps have at most 4 x 4 positions, so spatial attention can only
# re-weight coarse image regions. Whether FuNet beats the best serial strategy and the baseline, and by how
# much relative to the test interval, is read from the table above, on the data and weights stated in each
# row: on the embedded phantom and with random weights the numbers check the pipeline only. Section 7
# compares every classifier on the FuNet features, section 8 their ROC curves.
