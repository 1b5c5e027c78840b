"""FuNet: channel and spatial attention over cached feature maps, pooled and serially fused.

Reading of the paper (Dong et al. 2022, Figs. 8-9)
---------------------------------------------------
The paper shows FuNet as a diagram only: a channel attention block and a spatial attention
block (Fig. 8, after CBAM, its refs. [49, 50]) applied to features extracted from several
levels of the pre-trained networks, whose outputs are fused (Fig. 9); the fused vector is
then reduced by PCA and classified by the classical classifiers (Table 12). This module
implements that reading:

1. Every level's cached map ``(N, g, g, C)`` (``g <= 4`` after the feature stage's max
   pooling) is divided by its per-channel root-mean-square over the *training* maps, so that
   levels of different networks enter on one scale (a fixed rescaling, learned from the
   fitting rows only).
2. **Channel attention** (CBAM): the average- and max-pooled channel descriptors pass through
   one shared two-layer MLP (``C -> C/reduction -> C``, ReLU); their sum through a sigmoid
   gives a weight in [0, 1] per channel, which multiplies the map.
3. **Spatial attention** (CBAM): the channel-average and channel-max maps ``(g, g, 2)`` pass
   through one ``kernel_size x kernel_size`` convolution and a sigmoid, giving a weight in
   [0, 1] per position, which multiplies the channel-refined map. CBAM uses a 7x7 kernel on
   large maps; on maps of at most 4x4 a 3x3 kernel already sees the whole map.
4. Each attended map is global-max-pooled (the paper's level vectors are max-pooled, Fig. 7)
   and the level vectors are concatenated in order (serial fusion, Fig. 9). This fused
   attended vector, of the same size as the plain serial fusion of the same levels, is the
   **FuNet feature** handed to PCA and the classifiers.
5. The attention weights are learned through a small head (dropout + softmax dense layer)
   trained on the *training* samples only, on the cached maps (the backbones stay frozen and
   are not run again), with early stopping (validation loss, patience 6, best weights
   restored) on a validation split *grouped by patient* (``GroupShuffleSplit``) of those
   training samples. Seeded with ``keras.utils.set_random_seed``; batches (shuffled each epoch
   from a seeded generator, the last incomplete one dropped) are cut from the cached float16 maps
   and scaled as they are needed, so no float32 copy of every map is made.

Keras is imported lazily (inside functions), so ``import liverfuse.funet`` is cheap.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .cache import digest, file_digest, load_npz, save_npz

__all__ = [
    "FUNET_VERSION",
    "FUNET_LEVELS",
    "funet_parts",
    "key_parts",
    "FuNet",
    "level_name",
    "funet_features",
    "funet_provider",
    "maps_digest",
    "load",
]

#: Bumped whenever the architecture or training changes (it is part of every cache key).
FUNET_VERSION = 3
_EPS = 1e-6


#: Which levels FuNet attends over (the notebooks' ``funet_levels`` parameter).
FUNET_LEVELS = {
    "all": "every level of every backbone (bottom, middle and full base: Fig. 9's 'different layers')",
    "full": "the full convolutional base of every backbone only (Table 12's 'full convolutional basis')",
}


def funet_parts(backbones: Sequence[str], which: str = "all") -> list[tuple[str, str]]:
    """The ``(backbone, level)`` maps FuNet fuses, bottom to top within each backbone.

    Parameters
    ----------
    backbones : backbone names (``P.backbones``).
    which : one of :data:`FUNET_LEVELS`.
    """
    from . import backbones as bb_mod

    which = str(which).strip() or "all"
    if which not in FUNET_LEVELS:
        raise ValueError(f"Unknown funet_levels={which!r}. Allowed values: {', '.join(FUNET_LEVELS)}.")
    if not backbones:
        raise ValueError("backbones is empty: FuNet needs at least one backbone.")
    parts = []
    for b in backbones:
        levels = list(bb_mod.LEVELS[bb_mod.check_backbone(b)])
        parts += [(b, lv) for lv in (levels if which == "all" else ["full"])]
    return parts


def key_parts(P, parts: Sequence[tuple[str, str]], weights_of: Mapping[str, str]) -> dict:
    """What identifies FuNet's input maps, for :func:`funet_features` / :func:`funet_provider`.

    Notebooks 06-08 and the reproduction page build it the same way, so they share one trained
    FuNet (and one set of cached classifier results) per configuration.
    """
    return {
        "data": P.data_label,
        "protocol": P.protocol,
        "preprocessing": P.preprocessing,
        "input_size": P.profile.input_size,
        "augment_factor": P.profile.augment_factor,
        "weights": {b: weights_of[b] for b in dict.fromkeys(b for b, _ in parts)},
        "parts": [list(p) for p in parts],
    }


def level_name(key) -> str:
    """``('resnet50', 'full') -> 'resnet50/full'``; strings are returned unchanged."""
    if isinstance(key, tuple):
        return "/".join(str(k) for k in key)
    return str(key)


def _keras():
    """Import Keras (TensorFlow backend) on first use.

    TensorFlow 2.21 writes start-up INFO lines (oneDNN, absl) straight to file descriptor 2 at
    import, whatever ``TF_CPP_MIN_LOG_LEVEL`` says, and so into notebook outputs. The first import
    therefore runs with fd 2 pointed at ``/dev/null``; import errors still raise in Python.
    """
    import sys

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "keras" in sys.modules:
        return sys.modules["keras"]
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            try:
                import keras
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)
    return keras


@lru_cache(maxsize=1)
def _layers():
    """Define the two attention layers once, after importing Keras."""
    keras = _keras()
    ops = keras.ops

    class ChannelAttention(keras.layers.Layer):
        """CBAM channel attention: returns ``(x * w, w)`` with ``w`` of shape (batch, C) in [0, 1]."""

        def __init__(self, reduction: int = 8, **kwargs):
            super().__init__(**kwargs)
            self.reduction = int(reduction)

        def build(self, input_shape):
            c = int(input_shape[-1])
            hidden = max(1, c // self.reduction)
            self.fc1 = keras.layers.Dense(hidden, activation="relu", name="mlp_hidden")
            self.fc2 = keras.layers.Dense(c, name="mlp_out")
            self.fc1.build((None, c))
            self.fc2.build((None, hidden))

        def call(self, x):
            avg = ops.mean(x, axis=(1, 2))
            mx = ops.max(x, axis=(1, 2))
            w = ops.sigmoid(self.fc2(self.fc1(avg)) + self.fc2(self.fc1(mx)))
            return x * w[:, None, None, :], w

        def compute_output_shape(self, input_shape):
            return input_shape, (input_shape[0], input_shape[-1])

        def get_config(self):
            return {**super().get_config(), "reduction": self.reduction}

    class SpatialAttention(keras.layers.Layer):
        """CBAM spatial attention: returns ``(x * w, w)`` with ``w`` of shape (batch, h, w) in [0, 1]."""

        def __init__(self, kernel_size: int = 3, **kwargs):
            super().__init__(**kwargs)
            self.kernel_size = int(kernel_size)

        def build(self, input_shape):
            self.conv = keras.layers.Conv2D(
                1, self.kernel_size, padding="same", activation="sigmoid", name="conv"
            )
            self.conv.build((None, input_shape[1], input_shape[2], 2))

        def call(self, x):
            desc = ops.concatenate(
                [ops.mean(x, axis=-1, keepdims=True), ops.max(x, axis=-1, keepdims=True)], axis=-1
            )
            w = self.conv(desc)
            return x * w, w[..., 0]

        def compute_output_shape(self, input_shape):
            return input_shape, tuple(input_shape[:3])

        def get_config(self):
            return {**super().get_config(), "kernel_size": self.kernel_size}

    return ChannelAttention, SpatialAttention


@lru_cache(maxsize=1)
def _batches_class():
    keras = _keras()

    class Batches(keras.utils.PyDataset):
        """Batches of scaled float32 maps cut from the cached float16 maps on demand.

        No float32 copy of the whole training set is made. With a ``seed`` the rows are shuffled
        every epoch and the last incomplete batch is dropped (one batch shape, traced once).
        """

        def __init__(self, net, maps, y, rows, batch_size, seed=None):
            super().__init__(workers=2)  # the next batch is cut while this one trains (same order)
            self.net, self.maps, self.y = net, maps, y
            self.rows = np.asarray(rows)
            self.batch_size = int(batch_size)
            self.rng = None if seed is None else np.random.default_rng(seed)
            self.order = self.rows.copy()
            if self.rng is not None:
                self.rng.shuffle(self.order)

        def __len__(self):
            n = len(self.order)
            return max(1, n // self.batch_size) if self.rng is not None else -(-n // self.batch_size)

        def __getitem__(self, i):
            idx = np.sort(self.order[i * self.batch_size : (i + 1) * self.batch_size])
            return tuple(self.net._scaled(self.maps, idx)), self.y[idx]

        def on_epoch_end(self):
            if self.rng is not None:
                self.rng.shuffle(self.order)

    return Batches


def _Batches(*args, **kwargs):
    return _batches_class()(*args, **kwargs)


def channel_attention_layer(reduction: int = 8):
    """A Keras CBAM channel-attention layer (see the module docstring)."""
    return _layers()[0](reduction)


def spatial_attention_layer(kernel_size: int = 3):
    """A Keras CBAM spatial-attention layer (see the module docstring)."""
    return _layers()[1](kernel_size)


def _as_maps(maps: Mapping, levels: Sequence[str]) -> dict[str, np.ndarray]:
    by_name = {level_name(k): v for k, v in maps.items()}
    missing = [lv for lv in levels if lv not in by_name]
    if missing:
        raise ValueError(
            f"feature maps for levels {missing} are missing (got {sorted(by_name)}); pass the "
            "maps FuNet was built for."
        )
    out = {}
    n = None
    for lv in levels:
        a = np.asarray(by_name[lv])
        if a.ndim != 4:
            raise ValueError(f"maps[{lv!r}] must have shape (N, h, w, C), got {a.shape}.")
        if n is not None and len(a) != n:
            raise ValueError(f"maps disagree in sample count: {lv!r} has {len(a)} rows, expected {n}.")
        n = len(a)
        out[lv] = a
    return out


class FuNet:
    """Channel + spatial attention fusion of several feature levels (see the module docstring).

    Parameters
    ----------
    levels : list of str
        Level names (keys of the ``maps`` dicts; ``(backbone, level)`` tuples are accepted
        as keys and named ``'backbone/level'``). Their order is the fusion order.
    reduction : int
        Channel-attention MLP reduction ratio.
    seed : int
        Seeds the weights, the validation split and the batch order.
    epochs : int
        Maximum training epochs (early stopping on the grouped validation split decides).
    kernel_size : int
        Spatial-attention convolution size.
    dropout : float
        Dropout before the softmax head.
    patience : int
        Early-stopping patience (epochs without a lower validation loss). On held-out patients
        the loss typically starts rising after 1-6 epochs (the softmax grows over-confident)
        while the head's accuracy still creeps up; stopping on the accuracy instead trains the
        attention 2-3x longer but gave *lower* grouped validation accuracy for every classifier
        on the resulting FuNet features (lc25000, EfficientNet-Lite0: Stacking 0.772 vs 0.783),
        so the loss is monitored.
    val_fraction : float
        Fraction of the training *patients* held out for early stopping.
    batch_size, learning_rate : training settings (Adam).

    Attributes
    ----------
    history_ : dict[str, list[float]]
        Keras training history (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``).
    best_epoch_ : int
        Epoch (1-based) whose weights were kept.
    scales_ : dict[str, ndarray]
        Per-level, per-channel RMS of the fitting maps (the inputs are divided by it).
    n_classes_ : int
    shapes_ : dict[str, tuple]
        ``(h, w, C)`` of every level.
    """

    def __init__(
        self,
        levels: Sequence,
        reduction: int = 8,
        seed: int = 0,
        *,
        epochs: int = 40,
        kernel_size: int = 3,
        dropout: float = 0.3,
        patience: int = 6,
        val_fraction: float = 0.2,
        batch_size: int = 64,
        learning_rate: float = 1e-4,
    ):
        self.levels = [level_name(lv) for lv in levels]
        if not self.levels:
            raise ValueError("FuNet needs at least one feature level.")
        if len(set(self.levels)) != len(self.levels):
            raise ValueError(f"FuNet levels must be distinct, got {self.levels}.")
        self.reduction = int(reduction)
        self.seed = int(seed)
        self.epochs = int(epochs)
        self.kernel_size = int(kernel_size)
        self.dropout = float(dropout)
        self.patience = int(patience)
        self.val_fraction = float(val_fraction)
        self.batch_size = int(batch_size)
        self.learning_rate = float(learning_rate)

    # ------------------------------------------------------------------ config
    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (for cache keys and saving)."""
        return {
            "levels": list(self.levels),
            "reduction": self.reduction,
            "seed": self.seed,
            "epochs": self.epochs,
            "kernel_size": self.kernel_size,
            "dropout": self.dropout,
            "patience": self.patience,
            "val_fraction": self.val_fraction,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
        }

    def _build(self, shapes: Mapping[str, tuple], n_classes: int) -> None:
        keras = _keras()
        keras.utils.set_random_seed(self.seed)
        CA, SA = _layers()
        inputs, pooled, ca_w, sa_w = [], [], [], []
        for i, lv in enumerate(self.levels):
            x = keras.Input(shape=tuple(int(s) for s in shapes[lv]), name=f"level{i}")
            z, cw = CA(self.reduction, name=f"channel_attention{i}")(x)
            z, sw = SA(self.kernel_size, name=f"spatial_attention{i}")(z)
            inputs.append(x)
            pooled.append(keras.layers.GlobalMaxPooling2D(name=f"pool{i}")(z))
            ca_w.append(cw)
            sa_w.append(sw)
        fused = pooled[0] if len(pooled) == 1 else keras.layers.Concatenate(name="fused")(pooled)
        h = keras.layers.Dropout(self.dropout, seed=self.seed, name="dropout")(fused)
        out = keras.layers.Dense(n_classes, activation="softmax", name="head")(h)
        self.model_ = keras.Model(inputs, out, name="funet")
        self._feature_model = keras.Model(inputs, fused, name="funet_features")
        self._attention_model = keras.Model(inputs, ca_w + sa_w, name="funet_attention")
        self.shapes_ = {lv: tuple(int(s) for s in shapes[lv]) for lv in self.levels}
        self.n_classes_ = int(n_classes)

    def _scaled(self, maps: Mapping, idx) -> list[np.ndarray]:
        """Rows ``idx`` of every level, as float32 divided by the level's channel RMS."""
        return [maps[lv][idx].astype(np.float32) / self.scales_[lv] for lv in self.levels]

    def _inputs(self, maps: Mapping, start: int = 0, stop: int | None = None) -> list[np.ndarray]:
        m = _as_maps(maps, self.levels)
        xs = []
        for lv in self.levels:
            a = m[lv][start:stop]
            if tuple(a.shape[1:]) != self.shapes_[lv]:
                raise ValueError(
                    f"maps[{lv!r}] has shape {a.shape[1:]}, FuNet was fitted on {self.shapes_[lv]}."
                )
            xs.append(a.astype(np.float32) / self.scales_[lv])
        return xs

    # ------------------------------------------------------------------ sklearn-like API
    def fit(self, maps: Mapping, y: np.ndarray, groups: np.ndarray | None = None) -> "FuNet":
        """Learn the attention weights on training maps.

        Parameters
        ----------
        maps : dict level -> ndarray (N, h, w, C)
            Training samples only (float16 is accepted and cast to float32).
        y : ndarray (N,)
            Integer labels ``0..K-1``.
        groups : ndarray (N,), optional
            Patient of each row: the early-stopping validation split holds out whole
            patients. Without groups (or with fewer than 2) no early stopping is done and
            all ``epochs`` are trained.
        """
        from sklearn.model_selection import GroupShuffleSplit

        from .params import tune_allocator

        tune_allocator()  # ~1.6x faster training on glibc (page faults of per-step tensors)
        keras = _keras()
        m = _as_maps(maps, self.levels)
        y = np.asarray(y).astype(int)
        n = len(y)
        if any(len(a) != n for a in m.values()):
            raise ValueError("maps and y differ in the number of rows.")
        if n < 2 or len(np.unique(y)) < 2:
            raise ValueError("FuNet.fit needs at least two samples of two classes.")
        n_classes = int(y.max()) + 1
        self.scales_ = {}
        for lv in self.levels:
            a = m[lv]
            ms = np.zeros(a.shape[-1], dtype=np.float64)
            for s in range(0, n, 1024):  # chunked: maps may be large float16 arrays
                ms += np.square(a[s : s + 1024], dtype=np.float32).sum(axis=(0, 1, 2), dtype=np.float64)
            self.scales_[lv] = (np.sqrt(ms / (n * a.shape[1] * a.shape[2])) + _EPS).astype(np.float32)
        self._build({lv: m[lv].shape[1:] for lv in self.levels}, n_classes)

        fit_idx, val_idx = np.arange(n), np.array([], dtype=int)
        if groups is not None and len(np.unique(np.asarray(groups).astype(str))) >= 2:
            gss = GroupShuffleSplit(n_splits=1, test_size=self.val_fraction, random_state=self.seed)
            fit_idx, val_idx = next(gss.split(np.zeros(n), y, np.asarray(groups).astype(str)))
        callbacks = []
        val = None
        if len(val_idx):
            val = _Batches(self, m, y, val_idx, 256, seed=None)
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=self.patience, restore_best_weights=True
                )
            )
        self.model_.compile(
            optimizer=keras.optimizers.Adam(self.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        keras.utils.set_random_seed(self.seed)
        hist = self.model_.fit(
            _Batches(self, m, y, fit_idx, self.batch_size, seed=self.seed),
            validation_data=val,
            epochs=self.epochs,
            callbacks=callbacks,
            verbose=0,
        )
        self.history_ = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
        if val is not None and self.history_.get("val_loss"):
            self.best_epoch_ = int(np.argmin(self.history_["val_loss"])) + 1
        else:
            self.best_epoch_ = len(self.history_.get("loss", []))
        self.n_fit_, self.n_val_ = int(len(fit_idx)), int(len(val_idx))
        return self

    def _check_fitted(self):
        if not hasattr(self, "model_"):
            raise ValueError("this FuNet is not fitted yet: call fit(maps, y, groups) or FuNet.load(path).")

    def _predict(self, which: str, maps: Mapping, batch_size: int = 256):
        self._check_fitted()
        keras = _keras()
        model = {"head": self.model_, "features": self._feature_model, "attention": self._attention_model}[which]
        n = len(next(iter(_as_maps(maps, self.levels).values())))
        outs = None
        for s in range(0, n, batch_size):
            # a compiled inference step (traced once per batch shape): ~1.3x faster than calling the
            # model eagerly, with identical values
            res = model.predict_on_batch(self._inputs(maps, s, s + batch_size))
            res = [keras.ops.convert_to_numpy(r) for r in (res if isinstance(res, (list, tuple)) else [res])]
            outs = [[r] for r in res] if outs is None else [o + [r] for o, r in zip(outs, res)]
        if outs is None:
            return []
        return [np.concatenate(o, axis=0) for o in outs]

    def transform(self, maps: Mapping) -> np.ndarray:
        """The FuNet feature ``(N, sum of C)``: attended maps, max-pooled, concatenated."""
        return self._predict("features", maps)[0].astype(np.float32)

    def predict_proba(self, maps: Mapping) -> np.ndarray:
        """Softmax output of the training head ``(N, K)`` (diagnostic; the notebooks classify
        the FuNet feature with the classical classifiers)."""
        return self._predict("head", maps)[0]

    def channel_attention(self, maps: Mapping) -> dict[str, np.ndarray]:
        """Channel weights per level, ``{level: (N, C)}`` in [0, 1]."""
        res = self._predict("attention", maps)
        return {lv: res[i] for i, lv in enumerate(self.levels)}

    def spatial_attention(self, maps: Mapping) -> dict[str, np.ndarray]:
        """Spatial weights per level, ``{level: (N, h, w)}`` in [0, 1]."""
        res = self._predict("attention", maps)
        k = len(self.levels)
        return {lv: res[k + i] for i, lv in enumerate(self.levels)}

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``config.json``, ``scales.npz`` and ``funet.weights.h5`` into folder ``path``."""
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = {
            "version": FUNET_VERSION,
            "params": self.get_params(),
            "shapes": {lv: list(s) for lv, s in self.shapes_.items()},
            "n_classes": self.n_classes_,
            "history": self.history_,
            "best_epoch": self.best_epoch_,
            "n_fit": getattr(self, "n_fit_", None),
            "n_val": getattr(self, "n_val_", None),
        }
        (path / "config.json").write_text(json.dumps(config, indent=1))
        save_npz(path / "scales.npz", **{f"level{i}": self.scales_[lv] for i, lv in enumerate(self.levels)})
        self.model_.save_weights(str(path / "funet.weights.h5"))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FuNet":
        """Rebuild a fitted FuNet saved by :meth:`save`."""
        path = Path(path)
        try:
            config = json.loads((path / "config.json").read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not a saved FuNet (config.json unreadable: {e}).") from None
        scales = load_npz(path / "scales.npz")
        if scales is None or not (path / "funet.weights.h5").exists():
            raise ValueError(f"{path}: saved FuNet is incomplete (scales.npz or funet.weights.h5 missing).")
        self = cls(**config["params"])
        self._build({lv: tuple(s) for lv, s in config["shapes"].items()}, config["n_classes"])
        self.model_.load_weights(str(path / "funet.weights.h5"))
        self.scales_ = {lv: scales[f"level{i}"] for i, lv in enumerate(self.levels)}
        self.history_ = config["history"]
        self.best_epoch_ = config["best_epoch"]
        self.n_fit_, self.n_val_ = config.get("n_fit"), config.get("n_val")
        return self


load = FuNet.load


# ---------------------------------------------------------------------- cached use
def maps_digest(maps: Mapping[str, np.ndarray]) -> dict:
    """Content digest of every level's maps (all values: any changed image changes it)."""
    return {lv: [list(a.shape[1:]), digest(a)] for lv, a in maps.items()}


def _load_entry(folder: Path, n: int) -> tuple[np.ndarray, dict] | None:
    """A complete, undamaged cache entry's ``(X, config)``; anything else is removed (recomputed)."""
    if not folder.exists():
        return None
    try:
        cached = load_npz(folder / "features.npz", keys=("X",))
        config = json.loads((folder / "config.json").read_text())
        meta = json.loads((folder / "meta.json").read_text())
        if cached is None or cached["X"].shape[0] != n or load_npz(folder / "scales.npz") is None:
            raise ValueError("features.npz or scales.npz missing or damaged")
        if file_digest(folder / "funet.weights.h5") != meta["weights_sha256"]:
            raise ValueError("funet.weights.h5 does not match the digest written with it")
        return cached["X"], config
    except (OSError, ValueError, KeyError, TypeError):
        shutil.rmtree(folder, ignore_errors=True)
        return None


def funet_features(
    P,
    maps_by_level: Mapping,
    samples: pd.DataFrame,
    key_parts: Any,
    *,
    levels: Sequence | None = None,
    fit_mask: np.ndarray | None = None,
    reduction: int = 8,
    progress: bool = False,
    content: dict | None = None,
) -> tuple[np.ndarray, dict]:
    """FuNet features for every sample, training (or loading) one FuNet per configuration.

    Parameters
    ----------
    P : Params
        ``P.seed``, ``P.profile.funet_epochs`` and ``P.cache_dir`` are used.
    maps_by_level : dict level -> ndarray (N, h, w, C)
        Cached feature maps aligned with ``samples`` rows (keys may be ``(backbone, level)``).
    samples : DataFrame
        The samples table (``split``, ``y``, ``group``, ``sample_id``).
    key_parts : any JSON-serialisable
        What identifies the maps (data, protocol, backbones, weights, preprocessing, input
        size, ...): part of the cache key, with the levels, the fitting rows, the seed and
        the epochs.
    levels : sequence, optional
        Levels to fuse (default: all keys of ``maps_by_level`` in order).
    fit_mask : bool ndarray (N,), optional
        Rows FuNet may learn from; default the training rows. Test rows are refused.
    content : dict, optional
        :func:`maps_digest` of the maps, if already computed (:func:`funet_provider` passes it).

    Returns
    -------
    X : ndarray (N, D) float32
        The FuNet feature of every sample (fitted rows and the rest).
    info : dict
        ``key``, ``dir`` (folder with the saved weights: :func:`load` it to redraw attention),
        ``levels``, ``seconds`` (training + transform, 0.0 when loaded from cache),
        ``train_seconds`` (training + transform when it was computed), ``cached``,
        ``best_epoch``, ``epochs_run``, ``n_features``.
    """
    levels = [level_name(lv) for lv in (levels if levels is not None else list(maps_by_level))]
    maps = _as_maps(maps_by_level, levels)
    samples = samples.reset_index(drop=True)
    n = len(samples)
    if any(len(a) != n for a in maps.values()):
        raise ValueError("feature maps and samples table differ in the number of rows.")
    is_test = (samples["split"] == "test").to_numpy()
    fit_mask = (~is_test) if fit_mask is None else np.asarray(fit_mask, dtype=bool)
    if fit_mask.shape != (n,):
        raise ValueError(f"fit_mask must be a boolean array of length {n}.")
    if (fit_mask & is_test).any():
        raise ValueError("fit_mask selects test rows: FuNet may only learn from training rows.")
    fit_ids = samples["sample_id"].to_numpy()[fit_mask]
    net = FuNet(levels, reduction=reduction, seed=P.seed, epochs=P.profile.funet_epochs)
    key = digest(
        FUNET_VERSION,
        key_parts,
        net.get_params(),
        content or maps_digest(maps),
        digest(list(map(str, fit_ids))),
        digest(samples["y"].to_numpy()[fit_mask].astype(int).tolist()),
    )
    folder = Path(P.cache_dir) / "funet" / key
    entry = _load_entry(folder, n)
    if entry is not None:
        X, config = entry
        return X, _info(key, folder, levels, 0.0, True, config, X)
    t0 = time.perf_counter()
    y = samples["y"].to_numpy().astype(int)
    groups = samples["group"].astype(str).to_numpy()
    fit_maps = {lv: a[fit_mask] for lv, a in maps.items()}
    net.fit(fit_maps, y[fit_mask], groups[fit_mask])
    del fit_maps
    X = net.transform(maps)
    seconds = time.perf_counter() - t0
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{key}."))
    try:
        net.save(tmp)
        save_npz(tmp / "features.npz", X=X, sample_id=samples["sample_id"].to_numpy().astype(str))
        meta = {"seconds": seconds, "key_parts": key_parts,
                "weights_sha256": file_digest(tmp / "funet.weights.h5")}
        (tmp / "meta.json").write_text(json.dumps(meta, default=str))
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except OSError:
        if not (folder / "features.npz").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    config = json.loads((folder / "config.json").read_text())
    return X, _info(key, folder, levels, seconds, False, config, X)


def _info(key, folder, levels, seconds, cached, config, X) -> dict:
    hist = config.get("history", {})
    try:
        train_seconds = float(json.loads((Path(folder) / "meta.json").read_text())["seconds"])
    except (OSError, ValueError, KeyError):
        train_seconds = float(seconds)
    return {
        "train_seconds": train_seconds,
        "key": key,
        "dir": folder,
        "levels": list(levels),
        "seconds": float(seconds),
        "cached": bool(cached),
        "best_epoch": config.get("best_epoch"),
        "epochs_run": len(hist.get("loss", [])),
        "history": hist,
        "n_features": int(X.shape[1]),
    }


def funet_provider(
    P, maps_by_level: Mapping, samples: pd.DataFrame, key_parts: Any, **kwargs
) -> Callable[[np.ndarray], np.ndarray]:
    """A feature provider for :func:`liverfuse.evaluation.evaluate`: ``provider(fit_mask) -> X``.

    Each call trains (or loads from cache) a FuNet on the rows of ``fit_mask`` only, so that
    under cross-validation the validation rows never shaped the attention weights. The
    ``info`` dict of every call is appended to ``provider.infos``; ``provider.key`` identifies
    the configuration (:func:`liverfuse.evaluation.evaluate` caches results by it).
    """
    infos: list[dict] = []
    levels = [level_name(lv) for lv in (kwargs.get("levels") or list(maps_by_level))]
    maps = _as_maps(maps_by_level, levels)
    net = FuNet(levels, reduction=kwargs.get("reduction", 8), seed=P.seed, epochs=P.profile.funet_epochs)

    content = maps_digest(maps)  # once for every call

    def provider(fit_mask: np.ndarray) -> np.ndarray:
        X, info = funet_features(P, maps_by_level, samples, key_parts, fit_mask=fit_mask, content=content,
                                 **kwargs)
        infos.append(info)
        return X

    provider.infos = infos  # type: ignore[attr-defined]
    # identifies the features the provider gives for any mask (evaluation caches results by it)
    provider.key = digest(  # type: ignore[attr-defined]
        "funet-provider",
        FUNET_VERSION,
        key_parts,
        net.get_params(),
        content,
    )
    return provider
