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
# # 8. ROC curve analysis
#
# **What the paper does.** Dong et al. (2022) judge their best models by one-vs-rest ROC curves and the
# area under them (AUC), computed with scikit-learn as **micro-average** (every image-grade decision pooled)
# and **macro-average** (the mean over the three grades), together with confusion matrices (their Eqs. 1-2
# define the false and true positive rates). Fig. 15 shows them for the polynomial SVM, Stacking and Bagging
# on the FuNet features: every AUC is above 0.8; Stacking recognises the poorly and well differentiated
# grades better than the polynomial SVM, and Bagging the moderately differentiated grade.
#
# **What this section reproduces.** Fig. 15 for the `classifiers` parameter (default: the paper's three) on
# the FuNet features of section 6: micro- and macro-average ROC curves with AUC, per-grade curves, and test
# confusion matrices, with scikit-learn's `RocCurveDisplay` and `ConfusionMatrixDisplay`. The fitted models
# and their test scores are those of sections 6-7 (read from the cache).
#
# **Scores.** ROC curves need a score per image and grade, not just a predicted grade. Stacking and Bagging
# give class probabilities (`predict_proba`); the SVMs give their one-vs-rest `decision_function` values
# (Platt-scaled probabilities would cost five more fits per model and add randomness). Both rank the images
# for each grade, which is all a one-vs-rest ROC curve uses; the micro-average pools the scores of all grades,
# which assumes they share a scale, as probabilities do and SVM decision values roughly do.

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
classifiers = "poly_svm,stacking,bagging"
funet_levels = "all"

# %%
import liverfuse

P = liverfuse.setup(
    "08_roc",
    data_dir=data_dir,
    profile=profile,
    protocol=protocol,
    seed=seed,
    cache_dir=cache_dir,
    output_dir=output_dir,
    preprocessing=preprocessing,
    backbones=backbones or "vgg16,resnet50,densenet201,inception_resnet_v2",
    weights=weights,
    classifiers=classifiers or "poly_svm,stacking,bagging",
)
if not P.backbones or not P.classifiers:
    raise ValueError("backbones and classifiers must each name at least one item.")

from liverfuse import funet

FUNET_PARTS = funet.funet_parts(P.backbones, funet_levels)  # validates funet_levels

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

from liverfuse import evaluation, features, fusion
from liverfuse.report import notebook_style, save_figure, save_table

notebook_style()
print(
    f"data: {P.data_label}, profile: {P.profile.name} ({P.profile.input_size} px input), "
    f"protocol: {P.protocol}, seed: {P.seed}, backbones: {', '.join(P.backbones)}\n"
    f"classifiers: {', '.join(P.classifiers)}; FuNet levels: {funet_levels or 'all'} ({len(FUNET_PARTS)} maps)"
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
# ## Test scores of the classifiers on the FuNet features

# %% tags=["nbval-ignore-output"]
samples, maps, extraction = features.features_for(P, FUNET_PARTS)
funet_maps = {p: maps[p] for p in FUNET_PARTS}
provider = funet.funet_provider(P, funet_maps, samples, funet.key_parts(P, FUNET_PARTS, weights_of))
results = evaluation.evaluate_detailed(
    provider,
    samples,
    list(P.classifiers),
    P,
    label={"strategy": "FuNet", "backbones": BACKBONES, "weights": WEIGHTS, "parts": fusion.label(FUNET_PARTS)},
)

# %% tags=["nbval-ignore-output"]
metrics = evaluation.metrics_table(results)
save_table(metrics, P, "metrics")
classes = results[0].classes
print(f"{len(results[0].y_test)} test images; grades: " + ", ".join(f"{i} = {c}" for i, c in enumerate(classes)))
metrics[["classifier", "val_accuracy", "test_accuracy", "test_accuracy_ci_low", "test_accuracy_ci_high"]].round(3)

# %% [markdown]
# ## Fig. 15 analogue: ROC curves (one-vs-rest) and AUC

# %% tags=["nbval-ignore-output"]
auc = evaluation.roc_table(results)
save_table(auc, P, "roc_auc")
auc_wide = auc.pivot(index="classifier", columns="curve", values="auc").loc[list(P.classifiers)]
auc_wide = auc_wide[["micro", "macro", *classes]]
auc_wide.columns.name = None
auc_wide.round(3)

# %%
n = len(results)
fig, axes = plt.subplots(2, n, figsize=(3.4 * n, 6.4), squeeze=False)
for j, r in enumerate(results):
    ax = axes[0, j]
    curves = evaluation.roc_data(r.y_test, r.scores_test, r.classes)
    Y = evaluation.one_vs_rest(r.y_test, len(r.classes))  # two columns for two classes too
    micro = RocCurveDisplay.from_predictions(Y.ravel(), r.scores_test.ravel(), ax=ax, name="micro-average")
    micro.line_.set(color="deeppink", linestyle=":", linewidth=2)
    ax.plot(curves["macro"]["fpr"], curves["macro"]["tpr"], color="navy", linestyle=":", linewidth=2,
            label=f"macro-average (AUC = {curves['macro']['auc']:.2f})")
    for i, c in enumerate(r.classes):
        if c in curves:
            d = RocCurveDisplay.from_predictions(Y[:, i], r.scores_test[:, i], ax=ax, name=f"{i}: {c}")
            d.line_.set(linewidth=1)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_title(r.classifier, fontsize=10)
    ax.legend(fontsize=6.5, loc="lower right")
    ax.set_xlabel("false positive rate", fontsize=8)
    ax.set_ylabel("true positive rate", fontsize=8)
    ConfusionMatrixDisplay.from_predictions(
        r.y_test, r.pred_test, labels=np.arange(len(r.classes)), ax=axes[1, j], colorbar=False, cmap="Blues"
    )
    axes[1, j].set_title(f"{r.classifier}: test accuracy {r.row['test_accuracy']:.3f}", fontsize=9)
fig.suptitle(f"FuNet features, {P.data_label}, {P.protocol} protocol; weights: {WEIGHTS}", fontsize=9)
fig.tight_layout()
save_figure(fig, P, "fig15_roc_confusion", dpi=90)
plt.show()

# %% [markdown]
# ## Confusion matrices as tables
#
# Rows: true grade; columns: predicted grade (test images).

# %% tags=["nbval-ignore-output"]
for r in results:
    cm = evaluation.confusion(r)
    save_table(cm.reset_index(), P, f"confusion_{r.classifier}")
    print(r.classifier)
    display(cm)

# %% [markdown]
# ## Reading the results

# %% tags=["nbval-ignore-output"]
recall = {r.classifier: evaluation.confusion(r).pipe(lambda m: np.diag(m) / m.sum(axis=1).clip(lower=1)) for r in results}
for name in P.classifiers:
    row = auc_wide.loc[name]
    per = ", ".join(f"{c} {v:.2f}" for c, v in zip(classes, recall[name]))
    print(f"{name}: AUC micro {row['micro']:.3f}, macro {row['macro']:.3f}; recall per grade: {per}")
print(f"every AUC above 0.8: {bool((auc['auc'] > 0.8).all())} (paper: yes, for Poly-SVM, Stacking and Bagging)")

# %% [markdown]
# The micro- and macro-averages differ little when the grades are balanced, as here and in the paper. AUC
# measures ranking, not the decision: a classifier can have a high AUC and still confuse two grades at its
# default threshold, which is what the confusion matrices show. On the embedded phantom, and with random
# weights, these curves check the pipeline only.
