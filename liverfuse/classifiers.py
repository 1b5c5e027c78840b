"""The paper's classical classifiers, each a scikit-learn pipeline: scaling -> PCA -> classifier.

Dong et al. (2022) compare SVMs with four kernels, KNN, random forest and three ensembles
(bagging, boosting, stacking) on fused CNN features reduced by PCA. The paper names the
classifiers but not their settings, so the settings below are scikit-learn's defaults
except where stated in :data:`DESCRIPTIONS` (every choice is written there, and the
notebooks show that table).

Choices that hold for every pipeline
-------------------------------------
* ``StandardScaler`` then PCA (``whiten=False``, ``random_state=seed``). A float
  ``pca_components`` keeps that fraction of the variance with an exact SVD
  (``svd_solver="full"``; the ``paper`` profile keeps 0.95). An int keeps at most that many
  components (:class:`CappedPCA`: fewer when the data have fewer samples or features),
  computed by scikit-learn's ``svd_solver="auto"``, i.e. a seeded randomized SVD on large
  inputs. The ``quick`` profile keeps 256: on the phantom's random-weight features 95% of the
  variance takes ~1,500 components, which made every classifier 5-10x slower for the same
  grouped validation accuracy (rbf-SVM 0.564 vs 0.552, random forest 0.536 vs 0.567, strategy 1).
  No whitening, so the components keep their variance ordering and the RBF ``gamma="scale"``
  sees it.
* Scores for ROC curves: the SVMs are built with ``probability=False`` (Platt scaling
  would cost five extra fits and is itself randomised); :func:`scores` returns
  ``predict_proba`` where a classifier has it and the one-vs-rest ``decision_function``
  otherwise. Either is a valid ranking score for one-vs-rest ROC analysis.
* ``n_jobs=1`` everywhere: the reference machine has two cores shared with others, and
  results must not depend on the worker count.
* ``stacking`` learns its final estimator from out-of-fold predictions of its base
  learners. With augmented copies in the training set, a plain k-fold would put copies of
  one image on both sides of those internal folds, so that KNN-like base learners look
  perfect and the final estimator trusts them. :func:`use_groups` therefore replaces the
  internal folds with grouped folds (by patient) whenever the caller knows the groups;
  :mod:`liverfuse.evaluation` does so under the ``patient`` protocol.

Nothing here imports TensorFlow or PyTorch.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.ensemble import (
    AdaBoostClassifier,
    BaggingClassifier,
    GradientBoostingClassifier,
    RandomForestClassifier,
    StackingClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC
from sklearn.tree import DecisionTreeClassifier

from .params import CLASSIFIERS

__all__ = [
    "CLASSIFIERS", "DESCRIPTIONS", "STACKING_BASE", "CappedPCA", "make", "describe", "use_groups", "scores",
]

#: Base learners of ``stacking`` (names from :data:`CLASSIFIERS`); final estimator: logistic regression.
#: The paper does not list them. Chosen: the three classifiers the paper singles out as its best
#: (RBF- and polynomial-kernel SVM, random forest, its Figs. 10-13) plus two of a different kind
#: (sigmoid-kernel SVM, KNN) for diversity. Among the variants tried on the lc25000 tiles this set
#: had the best grouped *validation* accuracy (the test set was not used to choose).
STACKING_BASE = ("rbf_svm", "poly_svm", "sigmoid_svm", "random_forest", "knn")
#: Internal folds of ``stacking`` (out-of-fold predictions for its final estimator).
STACKING_FOLDS = 3

#: One line per classifier: what :func:`make` builds, for the notebooks' tables.
DESCRIPTIONS: dict[str, str] = {
    "linear_svm": "LinearSVC(C=1, max_iter=5000): liblinear; libsvm's SVC(kernel='linear') took minutes on non-separable data",
    "rbf_svm": "SVC(kernel='rbf', C=1, gamma='scale')",
    "poly_svm": "SVC(kernel='poly', degree=3, C=1, gamma='scale', coef0=1)",
    "sigmoid_svm": "SVC(kernel='sigmoid', C=1, gamma='scale')",
    "knn": "KNeighborsClassifier(n_neighbors=5)",
    "random_forest": "RandomForestClassifier(n_estimators=100)",
    "bagging": "BaggingClassifier(DecisionTreeClassifier(), n_estimators=10)",
    "adaboost": "AdaBoostClassifier(DecisionTreeClassifier(max_depth=1), n_estimators=50)",
    "gradient_boosting": (
        "GradientBoostingClassifier(n_estimators=100, max_depth=3, max_features='sqrt'); "
        "the square-root feature subset per split makes it ~20x faster on a few hundred PCA components"
    ),
    "stacking": (
        "StackingClassifier(base: rbf_svm, poly_svm, sigmoid_svm, random_forest, knn; final: "
        "LogisticRegression; 3 internal folds, grouped by patient when groups are known)"
    ),
}
assert set(DESCRIPTIONS) == set(CLASSIFIERS)


def _classifier(name: str, seed: int):
    """The bare classifier (no scaling/PCA) called ``name``."""
    if name == "linear_svm":
        return LinearSVC(C=1.0, max_iter=5000, random_state=seed)
    if name == "rbf_svm":
        return SVC(kernel="rbf", C=1.0, gamma="scale", random_state=seed)
    if name == "poly_svm":
        return SVC(kernel="poly", degree=3, C=1.0, gamma="scale", coef0=1.0, random_state=seed)
    if name == "sigmoid_svm":
        return SVC(kernel="sigmoid", C=1.0, gamma="scale", random_state=seed)
    if name == "knn":
        return KNeighborsClassifier(n_neighbors=5)
    if name == "random_forest":
        return RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1)
    if name == "bagging":
        return BaggingClassifier(
            estimator=DecisionTreeClassifier(random_state=seed),
            n_estimators=10,
            random_state=seed,
            n_jobs=1,
        )
    if name == "adaboost":
        return AdaBoostClassifier(
            estimator=DecisionTreeClassifier(max_depth=1, random_state=seed),
            n_estimators=50,
            random_state=seed,
        )
    if name == "gradient_boosting":
        return GradientBoostingClassifier(
            n_estimators=100, max_depth=3, max_features="sqrt", random_state=seed
        )
    if name == "stacking":
        return StackingClassifier(
            estimators=[(b, _classifier(b, seed)) for b in STACKING_BASE],
            final_estimator=LogisticRegression(max_iter=2000),
            cv=StratifiedKFold(STACKING_FOLDS, shuffle=True, random_state=seed),
            n_jobs=1,
        )
    raise ValueError(
        f"Unknown classifier={name!r}. Allowed values: {', '.join(CLASSIFIERS)}."
    )


class CappedPCA(PCA):
    """:class:`~sklearn.decomposition.PCA` whose integer ``n_components`` is an upper bound.

    ``PCA(n_components=256)`` refuses data with fewer than 256 samples or features (a small
    level such as EfficientNet-Lite0's 40-channel ``stage4``); this keeps
    ``min(n_components, n_samples, n_features)`` instead. Float and ``None`` values behave as in
    ``PCA``. The parameter itself is left unchanged (``get_params`` and ``clone`` see 256).
    """

    def _capped(self, X):
        k = self.n_components
        if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
            return min(int(k), *np.shape(X))
        return k

    def fit(self, X, y=None):
        k, self.n_components = self.n_components, self._capped(X)
        try:
            return super().fit(X, y)
        finally:
            self.n_components = k

    def fit_transform(self, X, y=None):
        k, self.n_components = self.n_components, self._capped(X)
        try:
            return super().fit_transform(X, y)
        finally:
            self.n_components = k


def make(name: str, *, seed: int = 0, pca_components: float | int = 0.95) -> Pipeline:
    """Build the pipeline ``StandardScaler -> PCA -> <name>``.

    Parameters
    ----------
    name : str
        One of :data:`CLASSIFIERS` (the notebooks' ``classifier`` parameter).
    seed : int
        Seeds PCA and every randomised classifier.
    pca_components : float or int
        A float in (0, 1] keeps that fraction of the variance (exact SVD); an int keeps at
        most that many components (:class:`CappedPCA`, scikit-learn's automatic solver);
        0 or None skips PCA.

    Returns
    -------
    sklearn.pipeline.Pipeline
        Unfitted; steps ``scale``, ``pca`` (absent when skipped) and ``clf``.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the allowed ones) or a bad ``pca_components``.
    """
    clf = _classifier(str(name), int(seed))
    steps = [("scale", StandardScaler())]
    if pca_components not in (0, None):
        if isinstance(pca_components, float) and not 0.0 < pca_components <= 1.0:
            raise ValueError(
                f"pca_components={pca_components!r}: a float must lie in (0, 1] (fraction of variance kept)."
            )
        if isinstance(pca_components, float):
            k = None if pca_components == 1.0 else pca_components  # None keeps all components
            pca = PCA(n_components=k, whiten=False, svd_solver="full", random_state=int(seed))
        else:
            if int(pca_components) < 1:
                raise ValueError(f"pca_components={pca_components!r}: an int must be at least 1.")
            pca = CappedPCA(n_components=int(pca_components), whiten=False, random_state=int(seed))
        steps.append(("pca", pca))
    steps.append(("clf", clf))
    return Pipeline(steps)


def describe(names: Sequence[str] | None = None) -> pd.DataFrame:
    """Table of classifier names and their settings (for the notebooks)."""
    names = list(names) if names else list(CLASSIFIERS)
    return pd.DataFrame({"classifier": names, "settings": [DESCRIPTIONS[n] for n in names]})


def use_groups(pipeline: Pipeline, y: np.ndarray, groups: np.ndarray, *, seed: int = 0) -> Pipeline:
    """Make the internal folds of a ``stacking`` pipeline respect ``groups`` (in place).

    ``StackingClassifier`` cannot receive groups through ``fit``, so its ``cv`` is replaced by
    the explicit (train, test) index pairs of a ``StratifiedGroupKFold`` over the rows that the
    pipeline is about to be fitted on. Other pipelines are returned unchanged.

    Parameters
    ----------
    pipeline : Pipeline
        From :func:`make`, about to be fitted on rows with labels ``y`` and groups ``groups``.
    y, groups : array-like
        Labels and group ids (patients) of exactly those rows, in order.
    seed : int
        Seeds the fold assignment.
    """
    clf = pipeline.steps[-1][1]
    if not isinstance(clf, StackingClassifier):
        return pipeline
    y = np.asarray(y)
    groups = np.asarray(groups).astype(str)
    # every internal fold must keep each class on its fitting side: at most as many folds as the
    # rarest class has patients in these rows
    per_class = {c: len(np.unique(groups[y == c])) for c in np.unique(y)}
    folds = min(STACKING_FOLDS, min(per_class.values()))
    if folds < 2:
        rare = ", ".join(f"class {c}: {n}" for c, n in per_class.items() if n < 2)
        raise ValueError(
            "stacking's grouped internal folds need at least 2 patients of every class in the rows it is "
            f"fitted on ({rare}); a validation fold's fitting part can have fewer than the training set. "
            "Add patients, or use another classifier or protocol='paper'."
        )
    cv = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    splits = [(tr, te) for tr, te in cv.split(np.zeros(len(y)), y, groups)]
    clf.set_params(cv=splits)
    return pipeline


def scores(model, X: np.ndarray) -> np.ndarray:
    """Per-class ranking scores ``(n, n_classes)`` for ROC analysis.

    ``predict_proba`` where the fitted model has it, else the one-vs-rest
    ``decision_function`` (the SVMs). Columns follow ``model.classes_``.
    """
    clf = model.steps[-1][1] if isinstance(model, Pipeline) else model
    if hasattr(clf, "predict_proba") and not (isinstance(clf, SVC) and not clf.probability):
        return np.asarray(model.predict_proba(X))
    s = np.asarray(model.decision_function(X))
    if s.ndim == 1:  # binary problem: one column for the positive class
        s = np.column_stack([-s, s])
    return s
