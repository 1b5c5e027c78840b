"""Validation protocols, the metrics contract, bootstrap intervals, P/R/F1, ROC; test rows never fitted."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from liverfuse import evaluation as E

CONTRACT = [
    "strategy",
    "classifier",
    "backbones",
    "weights",
    "protocol",
    "val_accuracy",
    "test_accuracy",
    "test_accuracy_ci_low",
    "test_accuracy_ci_high",
]


def synth(n_pat=30, imgs=2, factor=3, seed=0, dim=12, overlap=False):
    """Samples table in the augmentation contract + features; column 0 of X is the row number."""
    rs = np.random.default_rng(seed)
    rows, X = [], []
    test_patients = {f"p{i}" for i in range(n_pat) if (i // 3) % 3 == 0}  # 4 patients per class
    for i in range(n_pat):
        p, y = f"p{i}", i % 3
        for j in range(imgs):
            base = rs.normal(size=dim)
            base[1 + y] += 4.0
            split = "test" if p in test_patients else "train"
            if overlap and j == 0:
                split = "train" if split == "test" else split
            ops = ["original"] if split == "test" else ["original"] + [f"op{k}" for k in range(1, factor)]
            for op in ops:
                rows.append(
                    dict(
                        sample_id=f"{p}/{j}::{op}",
                        image_id=f"{p}/{j}",
                        op=op,
                        split=split,
                        label="abc"[y],
                        y=y,
                        group=p,
                    )
                )
                X.append(base + 0.1 * rs.normal(size=dim))
    X = np.array(X)
    X[:, 0] = np.arange(len(X))  # row id, so a recorder can tell which rows it saw
    return X, pd.DataFrame(rows)


class Recorder(BaseEstimator, ClassifierMixin):
    """Logistic regression that records the row ids (column 0) of every fit."""

    seen: list[np.ndarray] = []

    def fit(self, X, y):
        Recorder.seen.append(np.asarray(X[:, 0]).astype(int))
        self.model_ = LogisticRegression(max_iter=500).fit(X[:, 1:], y)
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X):
        return self.model_.predict(X[:, 1:])

    def predict_proba(self, X):
        return self.model_.predict_proba(X[:, 1:])


@pytest.fixture()
def P(params):
    return params("07_classifiers", protocol="patient")


def test_metrics_contract_columns(P):
    X, s = synth()
    df = E.evaluate(X, s, ["rbf_svm", "knn"], P, label={"strategy": "s1", "backbones": "vgg16", "weights": "random"})
    assert list(df.columns[: len(CONTRACT)]) == CONTRACT
    assert list(df.columns) == list(E.METRIC_COLUMNS)
    assert list(df["classifier"]) == ["rbf_svm", "knn"]
    assert (df["strategy"] == "s1").all() and (df["protocol"] == "patient").all()
    assert (df["n_test"] == (s["split"] == "test").sum()).all()
    assert (df["n_train"] == (s["split"] == "train").sum()).all()
    for _, r in df.iterrows():
        assert 0 <= r.test_accuracy_ci_low <= r.test_accuracy <= r.test_accuracy_ci_high <= 1
        assert 0 <= r.val_accuracy <= 1 and r.fit_seconds >= 0 and r.predict_seconds >= 0
    assert df["test_accuracy"].min() > 0.6  # separable synthetic data


def test_same_params_same_table(P):
    X, s = synth()
    cols = CONTRACT + ["n_features"]
    a = E.evaluate(X, s, ["random_forest"], P)[cols]
    b = E.evaluate(X, s, ["random_forest"], P)[cols]
    pd.testing.assert_frame_equal(a, b)


def test_parallel_fits_give_the_sequential_table(P, monkeypatch):
    X, s = synth()
    cols = CONTRACT + ["n_features"]
    monkeypatch.setenv("LIVERFUSE_N_JOBS", "1")
    one = E.evaluate(X, s, ["rbf_svm", "random_forest", "stacking"], P, cache=False)[cols]
    monkeypatch.setenv("LIVERFUSE_N_JOBS", "3")
    assert E.n_jobs() == 3
    three = E.evaluate(X, s, ["rbf_svm", "random_forest", "stacking"], P, cache=False)[cols]
    pd.testing.assert_frame_equal(one, three)
    monkeypatch.setenv("LIVERFUSE_N_JOBS", "many")
    with pytest.raises(ValueError, match="LIVERFUSE_N_JOBS"):
        E.n_jobs()


def test_patient_validation_never_splits_a_patient():
    _, s = synth()
    train = s[s["split"] == "train"].reset_index(drop=True)
    splits = E.validation_splits(train, "patient", folds=3, seed=0)
    assert len(splits) == 3
    for fit, val in splits:
        assert not set(train["group"].iloc[fit]) & set(train["group"].iloc[val])
        assert not set(train["image_id"].iloc[fit]) & set(train["image_id"].iloc[val])
    # the paper's random split leaks copies of one image across the split
    (fit, val), = E.validation_splits(train, "paper", folds=3, seed=0)
    assert set(train["image_id"].iloc[fit]) & set(train["image_id"].iloc[val])
    assert abs(len(val) / len(train) - E.PAPER_VAL_FRACTION) < 0.02


@pytest.mark.parametrize("protocol", ["patient", "paper"])
def test_test_rows_never_fitted(P, protocol):
    X, s = synth()
    test_rows = set(np.flatnonzero(s["split"] == "test"))
    Recorder.seen.clear()
    E.evaluate(X, s, [("recorder", Recorder())], P, protocol=protocol)
    assert len(Recorder.seen) == (P.profile.cv_folds if protocol == "patient" else 1) + 1  # folds + final fit
    for rows in Recorder.seen:
        assert not set(rows.tolist()) & test_rows
    # exactly one fit (the final one; fits run in parallel, in any order) saw all training rows
    train_rows = set(range(len(s))) - test_rows
    assert sum(set(rows.tolist()) == train_rows for rows in Recorder.seen) == 1


def test_feature_provider_only_learns_from_fit_rows(P):
    X, s = synth()
    is_test = (s["split"] == "test").to_numpy()
    masks = []

    def provider(mask):
        masks.append(mask.copy())
        return X

    E.evaluate(provider, s, ["knn", "rbf_svm"], P)
    assert len(masks) == P.profile.cv_folds + 1  # once per fold + final, shared by both classifiers
    assert not any((m & is_test).any() for m in masks)
    assert np.array_equal(masks[-1], ~is_test)


def test_patient_protocol_refuses_shared_patients(P):
    X, s = synth(overlap=True)
    with pytest.raises(ValueError, match="both train and test"):
        E.evaluate(X, s, ["knn"], P)
    assert len(E.evaluate(X, s, ["knn"], P, protocol="paper")) == 1


def test_bad_inputs(P):
    X, s = synth()
    with pytest.raises(ValueError, match="rows"):
        E.evaluate(X[:-1], s, ["knn"], P)
    bad = s.copy()
    bad.loc[bad.index[bad["split"] == "test"][0], "op"] = "flip_h"
    with pytest.raises(ValueError, match="un-augmented"):
        E.evaluate(X, bad, ["knn"], P)
    with pytest.raises(ValueError, match="lacks columns"):
        E.evaluate(X, s.drop(columns=["group"]), ["knn"], P)
    with pytest.raises(ValueError, match="Allowed values"):
        E.evaluate(X, s, ["bogus"], P)


def test_bootstrap_interval():
    y = np.repeat([0, 1, 2], 20)
    pred = y.copy()
    pred[::4] = (pred[::4] + 1) % 3
    groups = np.repeat(np.arange(10), 6)
    acc = (y == pred).mean()
    lo, hi = E.bootstrap_ci(y, pred, groups, n=300, seed=1)
    assert lo <= acc <= hi and hi - lo > 0
    assert (lo, hi) == E.bootstrap_ci(y, pred, groups, n=300, seed=1)
    lo_i, hi_i = E.bootstrap_ci(y, pred, n=300, seed=1, unit="image")
    assert lo_i <= acc <= hi_i
    assert E.bootstrap_ci(y, y, groups, n=50) == (1.0, 1.0)


def test_prf_confusion_and_roc(P):
    X, s = synth()
    res = E.evaluate_detailed(X, s, ["rbf_svm", "random_forest"], P, label={"strategy": "funet"})
    prf = E.prf_table(res)
    assert list(prf.columns) == ["strategy", "classifier", "protocol", "class", "precision", "recall", "f1", "support"]
    assert len(prf) == 2 * 3 and prf["precision"].between(0, 1).all()
    assert prf.groupby("classifier")["support"].sum().eq((s["split"] == "test").sum()).all()
    cm = E.confusion(res[0])
    assert cm.shape == (3, 3) and cm.to_numpy().sum() == (s["split"] == "test").sum()
    assert res[0].scores_test.shape == (len(res[0].y_test), 3)
    roc = E.roc_table(res)
    assert set(roc["curve"]) == {"a", "b", "c", "micro", "macro"}
    assert roc["auc"].between(0, 1).all()


def test_roc_data_perfect_and_macro():
    y = np.array([0, 0, 1, 1, 2, 2])
    scores = np.eye(3)[y]
    d = E.roc_data(y, scores, ("a", "b", "c"))
    assert d["micro"]["auc"] == 1.0 and d["macro"]["auc"] == 1.0
    rs = np.random.default_rng(0)
    y = rs.integers(0, 3, 200)
    scores = rs.random((200, 3))
    d = E.roc_data(y, scores, ("a", "b", "c"))
    assert d["macro"]["auc"] == pytest.approx(np.mean([d[c]["auc"] for c in "abc"]))


def test_two_classes_one_column_per_class(P):
    X, s = synth()
    keep = (s["label"] != "c").to_numpy()
    res = E.evaluate_detailed(X[keep], s[keep].reset_index(drop=True), ["poly_svm", "stacking"], P, cache=False)
    for r in res:
        Y = E.one_vs_rest(r.y_test, 2)
        assert Y.shape == r.scores_test.shape == (len(r.y_test), 2)  # lines up for micro-average curves
        assert np.array_equal(Y.argmax(axis=1), r.y_test)
    assert set(E.roc_table(res)["curve"]) == {"a", "b", "micro", "macro"}


def test_results_are_cached_by_features_and_settings(P):
    X, s = synth()
    first = E.evaluate_detailed(X, s, ["knn"], P, label={"strategy": "a"})
    assert first[0].model is not None
    again = E.evaluate_detailed(X, s, ["knn"], P, label={"strategy": "b"})
    assert again[0].model is None  # read back from P.cache_dir/evaluation
    assert again[0].row["strategy"] == "b"
    assert again[0].row["test_accuracy"] == first[0].row["test_accuracy"]
    assert np.array_equal(again[0].scores_test, first[0].scores_test)
    other = E.evaluate_detailed(X + 1e-3, s, ["knn"], P)  # other features: computed afresh
    assert other[0].model is not None
    paper = E.evaluate_detailed(X, s, ["knn"], P, protocol="paper")
    assert paper[0].model is not None and paper[0].row["protocol"] == "paper"


def test_extraction_seconds_shares_truncated_networks(params):
    pytest.importorskip("torch")
    P = params("06_funet", backbones="efficientnet_lite0", weights="random")
    images = np.random.default_rng(0).integers(0, 255, (4, 96, 96, 3), dtype=np.uint8)
    sets = {
        "low": [("efficientnet_lite0", "stage4")],
        "all": [("efficientnet_lite0", "stage4"), ("efficientnet_lite0", "full")],
        "full": [("efficientnet_lite0", "full")],
    }
    t = E.extraction_seconds(P, sets, images, n_samples=100, repeats=1)
    assert list(t["strategy"]) == ["low", "all", "full"]
    assert (t["seconds"] > 0).all() and np.allclose(t["seconds"], t["seconds_per_image"] * 100)
    # sets that run the same truncated network share one measurement
    assert t.loc[1, "seconds"] == t.loc[2, "seconds"]


def test_rare_class_caps_folds_and_stacking_fails_before_fitting(P):
    X, s = synth()
    train = s[s["split"] == "train"].reset_index(drop=True)
    # keep 2 training patients of class 'a': at most 2 grouped folds, each with 'a' on both sides
    keep_a = sorted(train.loc[train["label"] == "a", "group"].unique())[:2]
    keep = ((s["label"] != "a") | (s["split"] == "test") | s["group"].isin(keep_a)).to_numpy()
    X2, s2 = X[keep], s[keep].reset_index(drop=True)
    train2 = s2[s2["split"] == "train"].reset_index(drop=True)
    splits = E.validation_splits(train2, "patient", folds=3, seed=0)
    assert len(splits) == 2
    for fit, _ in splits:
        assert set(train2["label"].iloc[fit]) == {"a", "b", "c"}
    # with 1 'a' patient per fitting part, stacking's grouped internal folds cannot be made:
    # a clear error, raised before any classifier (here a recorder) is fitted
    Recorder.seen.clear()
    with pytest.raises(ValueError, match="stacking's grouped internal folds"):
        E.evaluate(X2, s2, [("recorder", Recorder()), "stacking"], P, cache=False)
    assert Recorder.seen == []
