"""The classifier pipelines: every name builds, fits and scores; stacking folds respect groups."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from sklearn.pipeline import Pipeline

from liverfuse import classifiers
from liverfuse.params import CLASSIFIERS


@pytest.fixture(scope="module")
def data():
    rs = np.random.default_rng(0)
    n = 120
    y = np.arange(n) % 3
    X = rs.normal(size=(n, 30))
    X[np.arange(n), y] += 3.0
    groups = np.repeat(np.arange(n // 4), 4)  # 30 "patients" of 4 rows
    return X, y, groups


def test_descriptions_cover_every_name():
    assert set(classifiers.DESCRIPTIONS) == set(CLASSIFIERS)
    table = classifiers.describe()
    assert list(table["classifier"]) == list(CLASSIFIERS)
    assert set(classifiers.STACKING_BASE) <= set(CLASSIFIERS)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_classifier_fits_predicts_and_scores(name, data):
    X, y, groups = data
    model = classifiers.make(name, seed=0, pca_components=0.95)
    assert isinstance(model, Pipeline)
    assert [s for s, _ in model.steps] == ["scale", "pca", "clf"]
    classifiers.use_groups(model, y[:90], groups[:90], seed=0)
    model.fit(X[:90], y[:90])
    pred = model.predict(X[90:])
    assert pred.shape == (30,)
    assert (pred == y[90:]).mean() > 0.5  # an easy problem: every classifier beats chance (1/3)
    s = classifiers.scores(model, X[90:])
    assert s.shape == (30, 3) and np.isfinite(s).all()


def test_same_seed_same_predictions(data):
    X, y, _ = data
    a = classifiers.make("random_forest", seed=3).fit(X[:90], y[:90]).predict_proba(X[90:])
    b = classifiers.make("random_forest", seed=3).fit(X[:90], y[:90]).predict_proba(X[90:])
    assert np.array_equal(a, b)


def test_pca_settings():
    model = classifiers.make("knn", seed=5, pca_components=0.9)
    pca = model.named_steps["pca"]
    assert pca.n_components == 0.9 and pca.random_state == 5 and pca.whiten is False
    assert "pca" not in classifiers.make("knn", pca_components=0).named_steps
    with pytest.raises(ValueError, match="pca_components"):
        classifiers.make("knn", pca_components=1.5)


def test_unknown_name_lists_allowed():
    with pytest.raises(ValueError, match="Allowed values: linear_svm, rbf_svm"):
        classifiers.make("bogus")


def test_stacking_internal_folds_keep_groups_apart(data):
    X, y, groups = data
    model = classifiers.make("stacking")
    classifiers.use_groups(model, y, groups, seed=0)
    cv = model.named_steps["clf"].cv
    assert isinstance(cv, list) and len(cv) == classifiers.STACKING_FOLDS
    covered = np.concatenate([te for _, te in cv])
    assert np.array_equal(np.sort(covered), np.arange(len(y)))  # a partition, as cross_val_predict needs
    for tr, te in cv:
        assert not set(groups[tr]) & set(groups[te])
    # other pipelines are untouched
    svm = classifiers.make("rbf_svm")
    assert classifiers.use_groups(svm, y, groups) is svm


def test_stacking_folds_follow_the_rarest_class():
    y = np.repeat([0, 1, 2], [4, 12, 12])
    groups = np.array([f"a{i // 2}" for i in range(4)] + [f"b{i // 2}" for i in range(12)]
                      + [f"c{i // 2}" for i in range(12)])
    model = classifiers.make("stacking")
    classifiers.use_groups(model, y, groups, seed=0)  # class 0 has 2 patients: 2 folds
    cv = model.named_steps["clf"].cv
    assert len(cv) == 2 and all(set(y[tr]) == {0, 1, 2} for tr, _ in cv)
    with pytest.raises(ValueError, match="at least 2 patients of every class.*class 0: 1"):
        classifiers.use_groups(classifiers.make("stacking"), y, np.where(y == 0, "a0", groups), seed=0)


def test_no_heavy_imports():
    code = (
        "import sys, liverfuse.classifiers, liverfuse.evaluation; "
        "bad = [m for m in ('tensorflow', 'keras', 'torch') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
