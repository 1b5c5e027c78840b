"""Validation protocols, test accuracy with a bootstrap interval, per-class P/R/F1 and ROC data.

The paper (Dong et al. 2022, "Experimental conditions") divides the *augmented* training set
into training and validation parts and reports validation accuracy beside the accuracy on an
independent test set. Its validation part therefore holds rotated or flipped copies of images
whose other copies were trained on. This module computes both readings:

``paper``
    One random stratified hold-out of :data:`PAPER_VAL_FRACTION` of the augmented training
    samples (the paper does not state the ratio). Copies of one image, and images of one
    patient, fall on both sides: this is the paper's protocol, and it leaks.
``patient``
    ``StratifiedGroupKFold`` over the training samples with ``P.profile.cv_folds`` folds and
    the patient (``group``) as the group: every augmented copy stays with its source image
    and every image with its patient. Validation accuracy is the mean over folds.

In both cases the reported model is then fitted on *all* training samples and scored once on
the un-augmented test images. Nothing learned ever sees a test row: the pipelines (scaler,
PCA, classifier) are fitted on training rows only, and a learned feature stage (FuNet) can be
passed as a callable that is refitted on each fold's training rows (see :func:`evaluate`).

Test-accuracy interval
----------------------
A percentile bootstrap (``P.profile.n_bootstrap`` resamples, seeded with ``P.seed``) that
resamples *patients* (the test rows' ``group``) with replacement, not single images: the six
images of one patient are not independent draws, and resampling them one by one would give
intervals that are too narrow. Pass ``unit="image"`` to :func:`bootstrap_ci` for the naive one.

Threads: the fits of one evaluation (each validation fold's classifiers, and the final fits on all
training rows) run as tasks on a thread pool of :func:`n_jobs` threads, each with BLAS limited to
one thread (``threadpoolctl``): libsvm, tree building and LAPACK release the GIL, so the tasks use
every core, and the numbers do not depend on the core count. ``fit_seconds`` and
``predict_seconds`` are CPU seconds of the fitting thread, comparable between classifiers whatever
else runs at the same time.
"""
from __future__ import annotations

import os
import pickle
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import (
    accuracy_score,
    auc,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_curve,
)
from sklearn.model_selection import StratifiedGroupKFold, StratifiedShuffleSplit
from sklearn.preprocessing import label_binarize
from threadpoolctl import threadpool_limits

from . import classifiers as _classifiers
from .cache import atomic_write, digest

__all__ = [
    "SAMPLE_COLUMNS",
    "METRIC_COLUMNS",
    "PAPER_VAL_FRACTION",
    "Result",
    "check_samples",
    "classes_of",
    "validation_splits",
    "bootstrap_ci",
    "evaluate",
    "evaluate_detailed",
    "metrics_table",
    "prf_table",
    "confusion",
    "one_vs_rest",
    "roc_data",
    "roc_table",
    "extraction_seconds",
    "n_jobs",
]

#: Columns the ``samples`` table must have (from :func:`liverfuse.augmentation.expand`).
SAMPLE_COLUMNS = ("sample_id", "image_id", "op", "split", "label", "y", "group")
#: Columns of ``metrics.csv`` (the first nine are the contract every notebook writes).
METRIC_COLUMNS = (
    "strategy",
    "classifier",
    "backbones",
    "weights",
    "protocol",
    "val_accuracy",
    "test_accuracy",
    "test_accuracy_ci_low",
    "test_accuracy_ci_high",
    "fit_seconds",
    "predict_seconds",
    "n_features",
    "n_train",
    "n_test",
    "val_folds",
    "data",
    "profile",
    "seed",
)
#: Fraction of the augmented training samples held out for validation under ``paper``.
PAPER_VAL_FRACTION = 0.2
#: Part of every result-cache key; bump when the evaluation procedure changes.
EVAL_VERSION = 2

#: A learned feature stage: called with a boolean mask of the rows it may learn from, it
#: returns features for *all* rows of ``samples`` (the FuNet provider in :mod:`liverfuse.funet`).
FeatureProvider = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------- inputs
def check_samples(samples: pd.DataFrame, X: np.ndarray | None = None) -> pd.DataFrame:
    """Validate a samples table (and its alignment with ``X``); return it with a fresh index.

    Raises
    ------
    ValueError
        Missing columns, a ``split`` other than train/test, test rows that are augmented
        copies, a training or test set that is empty, or ``X`` with a different row count.
    """
    missing = [c for c in SAMPLE_COLUMNS if c not in samples.columns]
    if missing:
        raise ValueError(
            f"samples table lacks columns {missing}; build it with "
            "liverfuse.augmentation.expand(...) (columns: " + ", ".join(SAMPLE_COLUMNS) + ")."
        )
    samples = samples.reset_index(drop=True)
    bad = sorted(set(samples["split"]) - {"train", "test"})
    if bad:
        raise ValueError(f"samples['split'] must be 'train' or 'test', found {bad}.")
    test = samples["split"] == "test"
    if not test.any() or test.all():
        raise ValueError("samples need both 'train' and 'test' rows; check the split step.")
    if (samples.loc[test, "op"] != "original").any():
        raise ValueError(
            "test rows must be un-augmented (op == 'original'): the test set is scored on "
            "the original images only; only training rows are augmented."
        )
    if samples["sample_id"].duplicated().any():
        raise ValueError("samples['sample_id'] has duplicates; every row must be one sample.")
    if X is not None and len(X) != len(samples):
        raise ValueError(
            f"feature matrix has {len(X)} rows but the samples table has {len(samples)}: "
            "pass the features and the samples table they were extracted for."
        )
    return samples


def classes_of(samples: pd.DataFrame) -> tuple[str, ...]:
    """Class names in label order (``classes[y] == label``)."""
    pairs = samples[["y", "label"]].drop_duplicates().sort_values("y")
    if pairs["y"].duplicated().any():
        raise ValueError("samples map one y value to several labels; y and label disagree.")
    ys = pairs["y"].to_numpy()
    if not np.array_equal(ys, np.arange(len(ys))):
        raise ValueError(f"samples['y'] must be 0..K-1 with every class present, found {ys.tolist()}.")
    return tuple(pairs["label"])


def validation_splits(
    train: pd.DataFrame, protocol: str, *, folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Validation (fit, val) index pairs, positions into ``train`` (the training rows only).

    Parameters
    ----------
    train : DataFrame
        The training rows of the samples table (augmented copies included).
    protocol : {'paper', 'patient'}
        See the module docstring.
    folds : int
        Number of grouped folds under ``patient`` (``P.profile.cv_folds``).
    seed : int
        Seeds the random assignment.
    """
    y = train["y"].to_numpy()
    if protocol == "paper":
        sss = StratifiedShuffleSplit(n_splits=1, test_size=PAPER_VAL_FRACTION, random_state=seed)
        return [(np.sort(a), np.sort(b)) for a, b in sss.split(np.zeros(len(y)), y)]
    if protocol == "patient":
        groups = train["group"].astype(str).to_numpy()
        # every class must keep a patient on the fitting side of every fold: at most as many folds
        # as the rarest class has training patients
        per_class = train.groupby("label")["group"].nunique()
        k = min(int(folds), int(per_class.min()))
        if k < 2:
            raise ValueError(
                "grouped validation needs at least 2 training patients in every class; "
                + ", ".join(f"{c} has {n}" for c, n in per_class.items() if n < 2)
                + ". Add patients to that class."
            )
        cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        return [(a, b) for a, b in cv.split(np.zeros(len(y)), y, groups)]
    raise ValueError(f"Unknown protocol={protocol!r}. Allowed values: patient, paper.")


def bootstrap_ci(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    unit: str = "group",
) -> tuple[float, float]:
    """Percentile bootstrap interval of the accuracy.

    Parameters
    ----------
    y_true, y_pred : array-like
        Test labels and predictions.
    groups : array-like, optional
        Patient of each test row; required for ``unit='group'``.
    n : int
        Number of resamples.
    seed : int
        Seeds the resampling.
    level : float
        Coverage of the interval.
    unit : {'group', 'image'}
        ``group`` resamples whole patients (a cluster bootstrap: accuracy over all images of
        the drawn patients), ``image`` single test images.
    """
    correct = (np.asarray(y_true) == np.asarray(y_pred)).astype(float)
    if len(correct) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    if unit == "group":
        if groups is None:
            raise ValueError("bootstrap_ci(unit='group') needs the groups (patients) of the test rows.")
        _, inv = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        hits = np.bincount(inv, weights=correct)
        sizes = np.bincount(inv).astype(float)
        draw = rng.integers(0, len(sizes), size=(int(n), len(sizes)))
        acc = hits[draw].sum(axis=1) / sizes[draw].sum(axis=1)
    elif unit == "image":
        draw = rng.integers(0, len(correct), size=(int(n), len(correct)))
        acc = correct[draw].mean(axis=1)
    else:
        raise ValueError(f"Unknown unit={unit!r}. Allowed values: group, image.")
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(acc, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


# --------------------------------------------------------------------------- results
@dataclass
class Result:
    """Everything one (features, classifier) evaluation produced."""

    row: dict  #: one metrics.csv row (keys :data:`METRIC_COLUMNS`)
    classes: tuple[str, ...]  #: class names, index = y
    test_ids: np.ndarray  #: sample_id of each test row
    y_test: np.ndarray  #: true labels (ints) of the test rows
    pred_test: np.ndarray  #: predicted labels of the test rows
    scores_test: np.ndarray  #: (n_test, n_classes) ranking scores, see classifiers.scores
    model: Any = field(repr=False, default=None)  #: the pipeline fitted on all training rows
    val_accuracies: tuple[float, ...] = ()  #: per validation fold

    @property
    def classifier(self) -> str:
        return self.row["classifier"]


def _spec(item) -> tuple[str, Any]:
    """A classifier given as a name, or as ``(name, unfitted estimator)``."""
    if isinstance(item, str):
        return item, None
    name, est = item
    return str(name), est


def _build(name: str, est, P) -> Any:
    if est is not None:
        return clone(est)
    return _classifiers.make(name, seed=P.seed, pca_components=P.profile.pca_components)


def _fit(model, X: np.ndarray, y: np.ndarray, groups: np.ndarray, protocol: str, seed: int):
    if protocol == "patient" and hasattr(model, "steps"):
        _classifiers.use_groups(model, y, groups, seed=seed)
    return model.fit(X, y)


def _full_scores(model, X: np.ndarray, n_classes: int) -> np.ndarray:
    """Scores with one column per class even if a class was absent from the fitting rows."""
    s = _classifiers.scores(model, X) if hasattr(model, "steps") else _generic_scores(model, X)
    present = np.asarray(getattr(model, "classes_", np.arange(s.shape[1])), dtype=int)
    if s.shape[1] == n_classes and np.array_equal(present, np.arange(n_classes)):
        return s
    full = np.full((len(X), n_classes), np.min(s) - 1.0 if s.size else 0.0)
    full[:, present] = s
    return full


def _generic_scores(model, X):
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(X))
    return np.asarray(model.decision_function(X))


def evaluate_detailed(
    X: np.ndarray | FeatureProvider,
    samples: pd.DataFrame,
    classifier_names: Sequence[str | tuple[str, Any]],
    P,
    *,
    label: Mapping[str, Any] | None = None,
    protocol: str | None = None,
    cache: bool = True,
) -> list[Result]:
    """Validate, fit on all training rows and test every classifier on one feature set.

    Parameters
    ----------
    X : ndarray (n_samples, n_features) or callable
        Features aligned with ``samples`` rows. A callable ``X(fit_mask) -> ndarray`` is a
        learned feature stage: it receives a boolean mask of the rows it may learn from
        (one validation fold's fitting rows, then all training rows) and returns features for
        every row. It is called once per fold, shared by all classifiers.
    samples : DataFrame
        Columns :data:`SAMPLE_COLUMNS` (``split`` in train/test; test rows un-augmented).
    classifier_names : sequence
        Names from :data:`liverfuse.classifiers.CLASSIFIERS`, or ``(name, estimator)`` pairs
        (cloned before each fit).
    P : Params
        Supplies ``protocol``, ``seed``, ``profile.cv_folds``, ``profile.n_bootstrap``,
        ``profile.pca_components`` and ``data_label``.
    label : mapping, optional
        Extra row values, usually ``strategy``, ``backbones``, ``weights``.
    protocol : str, optional
        Overrides ``P.protocol`` (to compare both on the same features).
    cache : bool
        Reuse results of named classifiers from ``P.cache_dir/evaluation`` (keyed by the
        features' content or the provider's ``key``, the samples, the classifier settings,
        protocol, seed and profile), so notebooks 06-08 share work. Cached results carry no
        fitted ``model``; their ``fit_seconds``/``predict_seconds`` are those of the run that
        computed them.

    Returns
    -------
    list of Result
        In the order of ``classifier_names``.
    """
    protocol = protocol or P.protocol
    samples = check_samples(samples, None if callable(X) else X)
    classes = classes_of(samples)
    n_classes = len(classes)
    specs = [_spec(c) for c in classifier_names]
    if not specs:
        raise ValueError("classifier_names is empty: pass at least one classifier name.")
    for name, est in specs:
        if est is None and name not in _classifiers.CLASSIFIERS:
            raise ValueError(
                f"Unknown classifier={name!r}. Allowed values: {', '.join(_classifiers.CLASSIFIERS)}."
            )

    is_train = (samples["split"] == "train").to_numpy()
    train_pos = np.flatnonzero(is_train)
    test_pos = np.flatnonzero(~is_train)
    if protocol == "patient":
        shared = set(samples.loc[is_train, "group"].astype(str)) & set(
            samples.loc[~is_train, "group"].astype(str)
        )
        if shared:
            raise ValueError(
                f"protocol 'patient' but {len(shared)} patients have rows in both train and test "
                f"(e.g. {sorted(shared)[:3]}): split the data with liverfuse.splits.split(..., 'patient')."
            )
    y_all = samples["y"].to_numpy().astype(int)
    g_all = samples["group"].astype(str).to_numpy()
    train = samples.iloc[train_pos]
    splits = validation_splits(train, protocol, folds=P.profile.cv_folds, seed=P.seed)
    if protocol == "patient":  # fail before any fitting if stacking's grouped folds cannot be made
        for name, est in specs:
            if est is None and name == "stacking":
                for fit_rel, _ in [*splits, (np.arange(len(train_pos)), None)]:
                    _classifiers.use_groups(_build(name, None, P), y_all[train_pos][fit_rel],
                                            g_all[train_pos][fit_rel], seed=P.seed)

    def features(fit_pos: np.ndarray) -> np.ndarray:
        if not callable(X):
            return np.asarray(X)
        mask = np.zeros(len(samples), dtype=bool)
        mask[fit_pos] = True
        assert not mask[test_pos].any()
        F = np.asarray(X(mask))
        if len(F) != len(samples):
            raise ValueError(f"feature provider returned {len(F)} rows for {len(samples)} samples.")
        return F

    base = dict(label or {})
    paths = _cache_paths(X, samples, specs, P, protocol) if cache else {}
    done: dict[str, Result] = {}
    for name, path in paths.items():
        hit = _load(path)
        if hit is not None:
            hit.row.update({k: v for k, v in base.items()})
            hit.row.setdefault("strategy", "")
            done[name] = hit
    todo = [(name, est) for name, est in specs if name not in done]

    # Features of every training part first: a learned stage (FuNet) trains here, on all cores.
    # Then every fit (each validation fold's classifiers, and the final fits on all training rows)
    # runs as one task on a thread pool; libsvm, tree building and LAPACK release the GIL, and BLAS
    # is limited to one thread, so the tasks scale with the cores and give the same numbers as a
    # sequential run (every fit is seeded and independent).
    val_acc: dict[str, list[float]] = {name: [] for name, _ in todo}
    if todo:
        fold_F = [features(train_pos[fit_rel]) for fit_rel, _ in splits]
        final_F = features(train_pos)

        def fold(i: int) -> dict[str, float]:
            fit_rel, val_rel = splits[i]
            fit_pos, val_pos = train_pos[fit_rel], train_pos[val_rel]
            F = fold_F[i]
            shared = _SharedSteps()  # the named pipelines of one fold share their scaler + PCA fit
            acc = {}
            for name, est in todo:
                model = _build(name, est, P)
                if est is None:
                    model.set_params(memory=shared)
                _fit(model, F[fit_pos], y_all[fit_pos], g_all[fit_pos], protocol, P.seed)
                acc[name] = float(accuracy_score(y_all[val_pos], model.predict(F[val_pos])))
            return acc

        with threadpool_limits(1, "blas"), ThreadPoolExecutor(n_jobs()) as pool:  # see the module docstring
            final = pool.submit(_final_fits, todo, final_F, train_pos, test_pos, y_all, g_all, n_classes, P,
                                protocol)  # the largest task first
            folds = [pool.submit(fold, i) for i in range(len(splits))]
            for f in folds:
                for name, a in f.result().items():
                    val_acc[name].append(a)
            fitted = final.result()
        del fold_F
        for name, est in todo:
            model, pred, sc, fit_s, predict_s = fitted[name]
            y_test = y_all[test_pos]
            lo, hi = bootstrap_ci(
                y_test, pred, g_all[test_pos], n=P.profile.n_bootstrap, seed=P.seed, unit="group"
            )
            row = {
                "strategy": base.get("strategy", ""),
                "classifier": name,
                "backbones": base.get("backbones", ""),
                "weights": base.get("weights", ""),
                "protocol": protocol,
                "val_accuracy": float(np.mean(val_acc[name])),
                "test_accuracy": float(accuracy_score(y_test, pred)),
                "test_accuracy_ci_low": lo,
                "test_accuracy_ci_high": hi,
                "fit_seconds": fit_s,
                "predict_seconds": predict_s,
                "n_features": int(final_F.shape[1]),
                "n_train": int(len(train_pos)),
                "n_test": int(len(test_pos)),
                "val_folds": len(splits),
                "data": P.data_label,
                "profile": P.profile.name,
                "seed": P.seed,
            }
            for k, v in base.items():
                row.setdefault(k, v)
            done[name] = Result(
                row=row,
                classes=classes,
                test_ids=samples["sample_id"].to_numpy()[test_pos],
                y_test=y_test,
                pred_test=pred,
                scores_test=sc,
                model=model,
                val_accuracies=tuple(val_acc[name]),
            )
            if name in paths:
                _store(paths[name], done[name])
    return [done[name] for name, _ in specs]


def n_jobs() -> int:
    """Threads for classifier fits: ``$LIVERFUSE_N_JOBS``, else the cores this process may use."""
    env = os.environ.get("LIVERFUSE_N_JOBS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"LIVERFUSE_N_JOBS={env!r} must be a positive integer.") from None
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _final_fits(todo, F, train_pos, test_pos, y_all, g_all, n_classes, P, protocol) -> dict:
    """Fit every pending classifier on all training rows and score the test rows once.

    Returns ``{name: (model, predictions, scores, fit_seconds, predict_seconds)}``. Times are CPU
    seconds of the fitting thread (BLAS runs in it, limited to one thread), so they do not depend
    on what runs on the other cores.
    """
    shared = _SharedSteps()
    out = {}
    for name, est in todo:
        model = _build(name, est, P)
        if est is None:
            model.set_params(memory=shared)
        replayed = shared.replayed
        t0 = time.thread_time()
        _fit(model, F[train_pos], y_all[train_pos], g_all[train_pos], protocol, P.seed)
        # a shared scaler + PCA fit counts for every classifier that uses it
        fit_s = time.thread_time() - t0 + (shared.replayed - replayed)
        if est is None:
            model.set_params(memory=None)  # keep the fitted steps, drop the shared store
        t0 = time.thread_time()
        pred = np.asarray(model.predict(F[test_pos])).astype(int)
        predict_s = time.thread_time() - t0
        out[name] = (model, pred, _full_scores(model, F[test_pos], n_classes), fit_s, predict_s)
    return out


class _SharedSteps:
    """In-memory ``Pipeline(memory=...)`` backend: identical transformer fits are done once.

    Keyed like :class:`joblib.Memory` (``joblib.hash`` of the call's arguments: the unfitted
    transformer with its parameters and the exact data), so results equal uncached fits.
    """

    def __init__(self) -> None:
        self._store: dict[str, tuple[Any, float]] = {}
        #: seconds the cache hits would have cost (so fit times stay comparable across classifiers)
        self.replayed = 0.0

    def cache(self, func, ignore=None, **_):
        import functools
        import inspect

        import joblib

        sig = inspect.signature(func)
        skip = set(ignore or ())

        @functools.wraps(func)
        def wrapped(*args, **kwargs):
            bound = sig.bind(*args, **kwargs)
            key = joblib.hash({k: v for k, v in bound.arguments.items() if k not in skip})
            if key in self._store:
                result, seconds = self._store[key]
                self.replayed += seconds
                return result
            t0 = time.thread_time()
            result = func(*args, **kwargs)
            self._store[key] = (result, time.thread_time() - t0)
            return result

        return wrapped


def _cache_paths(X, samples: pd.DataFrame, specs, P, protocol: str) -> dict[str, Path]:
    """Result-cache files of the named classifiers (none for custom estimators or keyless providers)."""
    if callable(X):
        fkey = getattr(X, "key", None)
        if fkey is None:
            return {}
    else:
        fkey = digest(np.ascontiguousarray(X))
    import sklearn

    common = digest(
        EVAL_VERSION,
        fkey,
        samples[["sample_id", "split", "y", "group"]].astype(str).to_numpy().tolist(),
        protocol,
        P.seed,
        P.profile.cv_folds,
        P.profile.n_bootstrap,
        P.profile.pca_components,
        PAPER_VAL_FRACTION,
        sklearn.__version__,
        _classifiers.STACKING_BASE,
    )
    folder = Path(P.cache_dir) / "evaluation"
    return {
        name: folder / f"{name}-{digest(common, name, _pipeline_params(name, P))}.pkl"
        for name, est in specs
        if est is None
    }


def _pipeline_params(name: str, P) -> dict[str, str]:
    """Every parameter of the pipeline ``name`` builds (so any change to it changes the cache key)."""
    model = _classifiers.make(name, seed=P.seed, pca_components=P.profile.pca_components)
    return {k: repr(v) for k, v in model.get_params(deep=True).items()}


def _load(path: Path) -> Result | None:
    try:
        with open(path, "rb") as f:
            res = pickle.load(f)
        return res if isinstance(res, Result) else None
    except FileNotFoundError:
        return None
    except Exception:  # damaged or from an incompatible version: recompute
        path.unlink(missing_ok=True)
        return None


def _store(path: Path, result: Result) -> None:
    with atomic_write(path) as f:
        pickle.dump(replace(result, model=None, row=dict(result.row)), f)


def evaluate(
    X: np.ndarray | FeatureProvider,
    samples: pd.DataFrame,
    classifier_names: Sequence[str | tuple[str, Any]],
    P,
    *,
    label: Mapping[str, Any] | None = None,
    protocol: str | None = None,
    cache: bool = True,
) -> pd.DataFrame:
    """One metrics row per classifier (columns :data:`METRIC_COLUMNS`); see :func:`evaluate_detailed`."""
    return metrics_table(
        evaluate_detailed(X, samples, classifier_names, P, label=label, protocol=protocol, cache=cache)
    )


def metrics_table(results: Sequence[Result]) -> pd.DataFrame:
    """The metrics.csv rows of ``results`` (contract columns first, then any extra label columns)."""
    df = pd.DataFrame([r.row for r in results])
    extra = [c for c in df.columns if c not in METRIC_COLUMNS]
    return df.reindex(columns=list(METRIC_COLUMNS) + extra)


def prf_table(results: Sequence[Result]) -> pd.DataFrame:
    """Per-class precision, recall, F1 and support on the test set, one row per (result, class).

    Columns: ``strategy``, ``classifier``, ``protocol``, ``class``, ``precision``, ``recall``,
    ``f1``, ``support`` (``sklearn.metrics.precision_recall_fscore_support``; a class never
    predicted gets precision 0).
    """
    rows = []
    for r in results:
        labels = np.arange(len(r.classes))
        p, rc, f, s = precision_recall_fscore_support(r.y_test, r.pred_test, labels=labels, zero_division=0)
        for i, c in enumerate(r.classes):
            rows.append(
                {
                    "strategy": r.row.get("strategy", ""),
                    "classifier": r.row["classifier"],
                    "protocol": r.row["protocol"],
                    "class": c,
                    "precision": float(p[i]),
                    "recall": float(rc[i]),
                    "f1": float(f[i]),
                    "support": int(s[i]),
                }
            )
    return pd.DataFrame(rows)


def confusion(result: Result) -> pd.DataFrame:
    """Test confusion matrix (rows: true class, columns: predicted class)."""
    m = confusion_matrix(result.y_test, result.pred_test, labels=np.arange(len(result.classes)))
    return pd.DataFrame(m, index=pd.Index(result.classes, name="true"), columns=pd.Index(result.classes, name="predicted"))


# --------------------------------------------------------------------------- ROC
def one_vs_rest(y: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n, n_classes)`` 0/1 indicator of each row's class, two columns for two classes too.

    (``label_binarize`` gives a single column for a binary problem, which does not line up with
    per-class score columns.)
    """
    Y = label_binarize(np.asarray(y), classes=np.arange(n_classes))
    if n_classes == 2:
        Y = np.column_stack([1 - Y[:, 0], Y[:, 0]])
    return Y


def roc_data(y_true: np.ndarray, scores: np.ndarray, classes: Sequence[str]) -> dict[str, dict]:
    """One-vs-rest ROC curves: per class, ``micro`` and ``macro`` average.

    ``micro`` pools every (image, class) decision (``label_binarize`` + ``ravel``);
    ``macro`` averages the per-class TPR over a common FPR grid (as scikit-learn's
    multiclass ROC example) for the curve, and its AUC is the mean of the per-class AUCs
    (``roc_auc_score(..., average='macro')``; integrating the averaged curve would
    misread the vertical steps of tied scores). Returns ``{key: {'fpr', 'tpr', 'auc'}}``; a class absent from
    ``y_true`` is skipped (its curve is undefined).
    """
    y_true = np.asarray(y_true)
    scores = np.asarray(scores, dtype=float)
    k = len(classes)
    Y = one_vs_rest(y_true, k)
    out: dict[str, dict] = {}
    for i, c in enumerate(classes):
        if Y[:, i].min() == Y[:, i].max():
            continue
        fpr, tpr, _ = roc_curve(Y[:, i], scores[:, i])
        out[c] = {"fpr": fpr, "tpr": tpr, "auc": float(auc(fpr, tpr))}
    fpr, tpr, _ = roc_curve(Y.ravel(), scores.ravel())
    out["micro"] = {"fpr": fpr, "tpr": tpr, "auc": float(auc(fpr, tpr))}
    per = [out[c] for c in classes if c in out]
    grid = np.unique(np.concatenate([d["fpr"] for d in per]))
    mean_tpr = np.mean([np.interp(grid, d["fpr"], d["tpr"]) for d in per], axis=0)
    out["macro"] = {"fpr": grid, "tpr": mean_tpr, "auc": float(np.mean([d["auc"] for d in per]))}
    return out


def roc_table(results: Sequence[Result]) -> pd.DataFrame:
    """AUC per (classifier, curve) for ``results``: per class, micro and macro average."""
    rows = []
    for r in results:
        for key, d in roc_data(r.y_test, r.scores_test, r.classes).items():
            rows.append(
                {
                    "strategy": r.row.get("strategy", ""),
                    "classifier": r.row["classifier"],
                    "curve": key,
                    "auc": d["auc"],
                }
            )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- Fig. 14
def extraction_seconds(
    P,
    sets: Mapping[str, Sequence[tuple[str, str]]],
    images: np.ndarray,
    n_samples: int,
    *,
    repeats: int = 3,
) -> pd.DataFrame:
    """Measured feature-extraction time of each feature set, scaled to ``n_samples`` images.

    Feature caching makes the time a notebook spends meaningless as a measure of a strategy's
    cost, so the cost is measured directly: for every backbone of a set, a model truncated at the
    set's highest level of that backbone (Keras builds only the layers the requested outputs
    need; lower levels come out of the same forward pass at no extra cost) runs on ``images``;
    the best of ``repeats`` timed passes (after one warm-up) gives seconds per image, summed over
    the set's backbones and multiplied by ``n_samples``. One measurement per (backbone, highest
    level) is shared by all sets, so sets that run the same truncated networks get the same time.

    Parameters
    ----------
    P : Params (weights, seed, profile.input_size).
    sets : ``{name: [(backbone, level), ...]}``.
    images : uint8 (B, S, S, 3) network-ready images (a small batch, e.g. 16).
    n_samples : number of samples the estimate is scaled to (e.g. ``len(samples)``).
    repeats : timed passes per model.

    Returns
    -------
    DataFrame with columns ``strategy``, ``backbones``, ``seconds_per_image``, ``seconds``.
    """
    import logging

    from . import backbones as bb_mod

    tf_log = logging.getLogger("tensorflow")  # retracing warnings from building several models
    level = tf_log.level
    tf_log.setLevel(logging.ERROR)
    try:
        return _extraction_seconds(bb_mod, P, sets, images, n_samples, repeats)
    finally:
        tf_log.setLevel(level)


def _extraction_seconds(bb_mod, P, sets, images, n_samples, repeats) -> pd.DataFrame:
    per: dict[tuple, float] = {}
    rows = []
    for name, parts in sets.items():
        total = 0.0
        bbs = list(dict.fromkeys(b for b, _ in parts))
        for b in bbs:
            top = bb_mod.check_levels(b, [lv for bb, lv in parts if bb == b])[-1]  # bottom-to-top order
            key = (b, top)
            if key not in per:
                ex = bb_mod.build(b, levels=[top], weights=P.weights, input_size=P.profile.input_size, seed=P.seed)
                ex.predict(images)  # warm-up (graph tracing, same batch shape as the timed passes)
                best = float("inf")
                for _ in range(max(1, int(repeats))):
                    t0 = time.perf_counter()
                    ex.predict(images)
                    best = min(best, time.perf_counter() - t0)
                per[key] = best / len(images)
            total += per[key]
        rows.append(
            {"strategy": name, "backbones": "+".join(bbs), "seconds_per_image": total, "seconds": total * n_samples}
        )
    return pd.DataFrame(rows)
