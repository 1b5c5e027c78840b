"""liverfuse: an executable companion to Dong et al. 2022 (BMC Med Inform Decis Mak 22:122).

One module per stage of the method:

===================  ==========================================================
``params``           the parameter contract shared by all notebooks (:func:`setup`)
``phantom``          the embedded synthetic H&E phantom (default data)
``data``             loading and validating ``<class>/<patient>/<image>`` folders
``splits``           ``patient`` and ``paper`` train/test protocols
``preprocessing``    AHE + Gaussian, blur / inverse / Wiener restoration
``augmentation``     the paper's rotations, flips and shifts (training set x10)
``backbones``        Keras backbones and EfficientNet-Lite with named levels
``features``         batched, cached feature extraction
``fusion``           serial fusion and strategies 1-4
``funet``            channel + spatial attention fusion (FuNet)
``classifiers``      scikit-learn pipelines (scaling, PCA, classifier)
``evaluation``       validation protocols, test accuracy with CI, P/R/F1
``report``           saving tables and figures under ``output_dir``
===================  ==========================================================

Heavy modules (TensorFlow, PyTorch) are imported only when used.
"""
from .params import setup, Params, PROFILES

__version__ = "0.1.0"
__all__ = ["setup", "Params", "PROFILES", "__version__"]
