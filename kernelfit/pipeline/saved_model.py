"""A fitted run saved to one file, and loaded back to predict new images.

The file (:mod:`.model_file`: a JSON header and ``.npy`` arrays in one ZIP,
nothing pickled) holds what prediction needs, as numbers and text:

- the estimator: its parameters and :class:`~kernelfit.options.Options`, the
  resolved kernel (name, gamma, degree, coef0), the fit's backend, its
  summary (norm, training error, residual), and the arrays ``estimator.X_fit``
  (training points), ``estimator.dual_coef`` and ``estimator.classes``;
- the feature map: its name, parameters (seed included) and the image shape
  ``fit`` saw, and what ``fit`` learned as ``features.NAME`` arrays
  (:meth:`~kernelfit.features.FeatureMap.state_arrays`; randconv's whitening
  and filters; none for raw, gabor and scattering, whose filters follow
  from the parameters);
- the data settings (dataset, n_train, seed, preprocessing, randomization)
  and the training run's record.

:func:`load_model` rebuilds the estimator and the feature map from these,
checking every field's type and range and that the parts agree (shapes, the
feature dimension, n_train); anything else is a
:class:`~kernelfit.errors.ModelFileError`. Files of format 1 (a pickle) are
refused unread.

A run whose K was streamed from feature chunks (randconv at scale) keeps
neither the training features nor a way to rebuild k(new, train) without
recomputing all of them, so it is refused before the fit, not after.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kernelfit.errors import BackendError, InputError, ModelFileError
from kernelfit.options import BACKENDS, Options
from kernelfit.params import real, whole
from kernelfit.pipeline import model_file as mf
from kernelfit.pipeline.report import stage
from kernelfit.pipeline.run import STREAMED_REFUSAL

_ESTIMATOR = "KernelInterpolantClassifier"
_PARAMS = ("kernel", "gamma", "sigma", "degree", "coef0", "lam", "solver", "depth",
           "weight_std", "bias_std")
#: The nngp / ntk parameters: a file written before they existed lacks them (the defaults).
_NETWORK_PARAMS = ("depth", "weight_std", "bias_std")
_SETTINGS = {"dataset": str, "n_train": int, "seed": int, "preprocessing": str,
             "randomization": str, "features": str, "feature_params": dict}


@dataclass
class SavedModel:
    """What :func:`load_model` returns.

    Attributes
    ----------
    estimator : KernelInterpolantClassifier
        Fitted on features (never on a precomputed K).
    feature_map : FeatureMap
        Fitted; turns preprocessed images into the estimator's inputs.
    settings : dict
        dataset, n_train, seed, preprocessing, randomization, features and
        feature_params of the training run.
    record : dict
        The training run's record (:meth:`RunRecord.to_dict`).
    """

    estimator: object
    feature_map: object
    settings: dict
    record: dict = field(default_factory=dict)


def save_model(path, fitted) -> Path:
    """Write a fitted run (:class:`kernelfit.pipeline.run.FittedRun`) to ``path``.

    Raises
    ------
    InputError
        The run streamed its K (see the module docstring).
    OutputPathError, OSError
        ``path`` cannot be written; nothing is left half-written.
    """
    if fitted.streamed or fitted.estimator.kernel == "precomputed":
        raise InputError(STREAMED_REFUSAL)
    c, clf, fmap = fitted.config, fitted.estimator, fitted.feature_map
    settings = {"dataset": c.dataset, "n_train": fitted.record.n_train, "seed": c.seed,
                "preprocessing": c.preprocessing, "randomization": c.randomize,
                "features": c.features, "feature_params": dict(c.feature_params)}
    backend, device = getattr(clf, "_backend_spec", ("numpy", "cpu"))
    header = {
        "estimator": {
            "class": type(clf).__name__,
            "params": {k: getattr(clf, k) for k in _PARAMS},
            "options": (clf.options or Options()).as_dict(),
            "kernel": clf.kernel_.as_dict(),
            "backend": {"name": backend, "device": device},
            "fitted": {"norm_": clf.norm_, "train_error_": clf.train_error_,
                       "relative_residual_": clf.relative_residual_,
                       "n_iter_": int(clf.n_iter_), "converged_": bool(clf.converged_),
                       "warnings_": list(clf.warnings_)}},
        "features": {"name": fmap.name, "params": fmap.params,
                     "input_shape": list(fmap.input_shape_)},
        "settings": settings,
        "record": fitted.record.to_dict(),
    }
    arrays = {"estimator.X_fit": clf.X_fit_, "estimator.dual_coef": clf.dual_coef_,
              "estimator.classes": clf.classes_,
              **{f"features.{k}": v for k, v in fmap.state_arrays().items()}}
    from kernelfit.formats import jsonable
    return mf.write_model_file(path, jsonable(header), arrays)


def load_model(path) -> SavedModel:
    """Read a model written by :func:`save_model`; nothing in the file is ever executed.

    Raises
    ------
    ModelFileError
        Not a kernelfit model file, format 1 (pickle, refused unread) or
        another format version, a header field of the wrong type or range,
        parts that disagree, or a truncated or damaged file.
    InputError
        No file at ``path``.
    """
    path = Path(path).expanduser()
    header, arrays = mf.read_model_file(path)
    fmap = _feature_map(path, header, arrays)
    clf = _estimator(path, header, arrays, fmap)
    settings = _settings(path, header, fmap, len(clf.X_fit_))
    record = mf.field(path, header, "record", dict)
    return SavedModel(clf, fmap, settings, record)


def _invalid(path, part: str, err: Exception) -> ModelFileError:
    return ModelFileError(path, f"its {part} cannot be rebuilt: {err}")


def _feature_map(path, header: dict, arrays: dict):
    from kernelfit.features import make_features

    spec = mf.field(path, header, "features", dict)
    name = mf.text(path, spec, "name", "features")
    params = mf.field(path, spec, "params", dict, "features")
    shape = mf.field(path, spec, "input_shape", list, "features")
    state = {k[len("features."):]: v for k, v in arrays.items() if k.startswith("features.")}
    try:
        fmap = make_features(name, **params)
        if fmap.params != params:
            # the constructors convert (int("3"), float): a value of another type or one
            # they round would rebuild another map than the one that was fitted
            raise InputError(f"the parameters {params} rebuild a map whose parameters are "
                             f"{fmap.params}; each must be given as its own type and value")
        return fmap.set_state(shape, state)
    except (ValueError, TypeError, BackendError) as err:
        # BackendError: a scattering map saved with kymatio's torch frontend, and no torch here
        raise _invalid(path, "feature map", err) from None


def _estimator(path, header: dict, arrays: dict, fmap):
    from kernelfit.engine.kernels import Kernel, row_sq_norms
    from kernelfit.model import KernelInterpolantClassifier

    spec = mf.field(path, header, "estimator", dict)
    where = "estimator"
    if mf.text(path, spec, "class", where) != _ESTIMATOR:
        raise ModelFileError(path, f"holds a {spec['class']!r}; kernelfit saves and loads "
                                   f"{_ESTIMATOR} models")
    params = mf.field(path, spec, "params", dict, where)
    if set(params) not in (set(_PARAMS), set(_PARAMS) - set(_NETWORK_PARAMS)):
        raise ModelFileError(path, f"header field estimator.params must hold exactly "
                                   f"{', '.join(_PARAMS)}")
    try:
        options = Options(**mf.field(path, spec, "options", dict, where))
        clf = KernelInterpolantClassifier(**params, options=options)
        clf._check_params()
        clf.kernel_ = Kernel(**mf.field(path, spec, "kernel", dict, where))
    except (InputError, TypeError) as err:
        raise _invalid(path, "estimator", err) from None
    if (clf.kernel_.name, clf.kernel_.degree, clf.kernel_.coef0) != \
            (clf.kernel, clf.degree, clf.coef0) or clf.kernel == "precomputed" or (
                clf.kernel_.is_network and clf.kernel_.network_params != {
                    k: getattr(clf, k) for k in _NETWORK_PARAMS}):
        raise ModelFileError(path, f"its fitted kernel {clf.kernel_.as_dict()} is not the "
                                   f"estimator's kernel {clf.kernel!r} (degree {clf.degree}, "
                                   f"coef0 {clf.coef0})")
    X, alpha, classes = (arrays.get(f"estimator.{k}") for k in ("X_fit", "dual_coef", "classes"))
    n = None if X is None or X.ndim != 2 else len(X)
    want = options.dtype if options.dtype != "auto" else X.dtype.name if n else "float64"
    if n is None or X.dtype.name != want or want not in ("float32", "float64") \
            or X.shape[1] != fmap.dim or alpha is None or alpha.dtype != np.float64 \
            or classes is None or classes.ndim != 1 or not len(classes) \
            or alpha.shape != (n, len(classes)):
        raise ModelFileError(path, "its arrays do not agree: estimator.X_fit must be "
                                   f"{want} (n, {fmap.dim}) (the feature dimension), "
                                   "estimator.dual_coef float64 (n, classes) and "
                                   "estimator.classes one value per class; got "
                                   + ", ".join(f"{k} {a.dtype} {a.shape}" for k, a in
                                               arrays.items() if k.startswith("estimator.")))
    fitted = mf.field(path, spec, "fitted", dict, where)
    f = f"{where}.fitted"
    clf.X_fit_, clf.dual_coef_, clf.classes_ = X, alpha, classes
    clf.n_features_in_ = X.shape[1]
    clf._sq_fit = row_sq_norms(X)
    clf.norm_ = mf.number(path, f"{f}.norm_", fitted.get("norm_"), real, 0)
    clf.train_error_ = mf.number(path, f"{f}.train_error_", fitted.get("train_error_"),
                                 real, 0, 1)
    clf.relative_residual_ = mf.number(path, f"{f}.relative_residual_",
                                       fitted.get("relative_residual_"), real, 0)
    clf.n_iter_ = mf.number(path, f"{f}.n_iter_", fitted.get("n_iter_"), whole, 0)
    clf.converged_ = mf.field(path, fitted, "converged_", bool, f)
    clf.warnings_ = mf.field(path, fitted, "warnings_", list, f)
    if not all(isinstance(w, str) for w in clf.warnings_):
        raise ModelFileError(path, f"header field {f}.warnings_ must be a list of text")
    clf._backend_spec = _backend(path, mf.field(path, spec, "backend", dict, where))
    return clf


def _backend(path, spec: dict) -> tuple[str, str]:
    """The fit's backend predicts too; one not usable here falls back to NumPy (the
    same numbers up to rounding in the last bits)."""
    from kernelfit.engine.backend import get_backend

    name = mf.text(path, spec, "name", "estimator.backend")
    device = mf.text(path, spec, "device", "estimator.backend")
    if name not in BACKENDS or name == "auto":
        raise ModelFileError(path, f"header field estimator.backend.name must be one of "
                                   f"{', '.join(b for b in BACKENDS if b != 'auto')}, got "
                                   f"{name!r}")
    try:
        get_backend(name, device)
    except (BackendError, InputError):
        return "numpy", "cpu"
    return name, device


def _settings(path, header: dict, fmap, n: int) -> dict:
    from kernelfit.data.preprocess import Preprocessing
    from kernelfit.data.randomize import parse_randomization

    spec = mf.field(path, header, "settings", dict)
    settings = {k: mf.field(path, spec, k, kind, "settings") for k, kind in _SETTINGS.items()}
    mf.number(path, "settings.n_train", settings["n_train"], whole, 1)
    mf.number(path, "settings.seed", settings["seed"], whole, 0)
    try:
        Preprocessing.parse(settings["preprocessing"])
        parse_randomization(settings["randomization"])
    except InputError as err:
        raise _invalid(path, "data settings", err) from None
    if settings["n_train"] != n or settings["features"] != fmap.name:
        raise ModelFileError(path, f"its settings (n_train {settings['n_train']}, features "
                                   f"{settings['features']}) do not match its arrays ({n} "
                                   f"training points, {fmap.name} features)")
    return settings


def predict_dataset(model: SavedModel, dataset: str, *, n_test=None, data_home=None,
                    progress: bool = False) -> dict:
    """The saved model's test error on a dataset's test split.

    The test images go through the training run's randomization, preprocessing
    and fitted feature map. On the training dataset, the same ``n_test`` and
    seed select the same test points as the run did, so the error is the
    run's own test error.

    Returns
    -------
    dict
        dataset, n_test, test_error, the model's training settings.
    """
    from kernelfit.pipeline.run import RunConfig, prepare

    s = model.settings
    same = dataset == s["dataset"]
    # The training subset matters only to randomizations drawn from it (gaussian
    # noise uses its mean); on another dataset the run's randomization is not applied.
    data = prepare(RunConfig(dataset=dataset, n_train=s["n_train"] if same else None,
                             n_test=n_test, seed=s["seed"], preprocessing=s["preprocessing"],
                             randomize=s["randomization"] if same else "none",
                             data_home=data_home, options=Options(progress=progress)))
    fmap, clf = model.feature_map, model.estimator
    shape = tuple(data.test_images.shape[1:])
    if fmap.input_shape_ is not None and shape != tuple(fmap.input_shape_):
        raise InputError(f"the model was trained on {s['dataset']} images of shape "
                         f"{tuple(fmap.input_shape_)} (after preprocessing), but {dataset}'s "
                         f"are {shape}; predict on data shaped like the training images")
    X = fmap.transform(data.test_images, progress=progress and fmap.name != "raw")
    n, width = clf.dual_coef_.shape[0], clf.dual_coef_.shape[-1]
    flops = 2.0 * len(X) * n * (X.shape[1] + width)
    with stage("predict", flops=flops, dtype=clf.X_fit_.dtype.name, enabled=progress):
        predicted = clf.predict(X)
    return {"dataset": dataset, "n_test": len(data.test_labels),
            "test_error": float(np.mean(predicted != data.test_labels)),
            "trained_on": dict(s)}
