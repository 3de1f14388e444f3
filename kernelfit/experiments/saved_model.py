"""A fitted run saved to one file, and loaded back to predict new images.

The file holds what prediction needs: the fitted estimator (training points
and dual coefficients), the fitted feature map, and the data settings
(preprocessing, randomization, seed) that turned images into its inputs.
Layout::

    KERNELFIT-MODEL\\n
    {"format": 1, "kernelfit": "0.1.0", "bytes": N, "sha256": "..."}\\n
    N bytes of pickle

It is written atomically (a reader never sees half a file). On load the
marker, the format version, the size and the sha256 of the payload are
checked before anything is unpickled, so a truncated, damaged or edited file
is refused with :class:`~kernelfit.errors.ModelFileError`. The digest cannot
stop a forger who rewrites the header too, and unpickling runs code: load
only files you made or trust.

A run whose K was streamed from feature chunks (randconv at scale) keeps
neither the training features nor a way to rebuild k(new, train) without
recomputing all of them, so it is refused before the fit, not after.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import write_bytes_atomic
from ..errors import InputError, ModelFileError
from ..options import Options
from ..report import stage

MAGIC = b"KERNELFIT-MODEL\n"
FORMAT_VERSION = 1
# The header line is short JSON; anything longer is not a header.
_MAX_HEADER = 4096

STREAMED_REFUSAL = ("--save-model needs the training features to predict new images, and a "
                    "streamed K never holds them; add --no-stream (the features are then kept "
                    "in memory) or drop --save-model")


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
        dataset, n_train, seed, preprocessing, randomization of the training run.
    record : dict
        The training run's record (:meth:`RunRecord.to_dict`).
    """

    estimator: object
    feature_map: object
    settings: dict
    record: dict = field(default_factory=dict)


def save_model(path, fitted) -> Path:
    """Write a fitted run (:class:`kernelfit.experiments.run.FittedRun`) to ``path``.

    Raises
    ------
    InputError
        The run streamed its K (see the module docstring).
    OutputPathError, OSError
        ``path`` cannot be written; nothing is left half-written.
    """
    if fitted.streamed:
        raise InputError(STREAMED_REFUSAL)
    c = fitted.config
    settings = {"dataset": c.dataset, "n_train": fitted.record.n_train, "seed": c.seed,
                "preprocessing": c.preprocessing, "randomization": c.randomize,
                "features": c.features, "feature_params": dict(c.feature_params)}
    model = SavedModel(fitted.estimator, fitted.feature_map, settings, fitted.record.to_dict())
    try:
        payload = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as err:
        raise InputError(f"the fitted {c.features} model cannot be saved: part of it does not "
                         f"pickle ({err})") from err
    from .. import __version__
    header = {"format": FORMAT_VERSION, "kernelfit": __version__, "bytes": len(payload),
              "sha256": hashlib.sha256(payload).hexdigest()}
    return write_bytes_atomic(path, MAGIC + json.dumps(header).encode() + b"\n" + payload)


def load_model(path) -> SavedModel:
    """Read a model written by :func:`save_model`, checking it before unpickling.

    Unpickling runs code: load only files you made or trust.

    Raises
    ------
    ModelFileError
        Not a kernelfit model file, another format version, truncated, or
        its payload does not match the recorded sha256.
    FileNotFoundError
        No file at ``path`` (as :class:`~kernelfit.errors.InputError`).
    """
    path = Path(path).expanduser()
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"no model file at {path}; write one with `kernelfit run "
                         "--save-model PATH`") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory; give the model file inside it") from None
    if not blob.startswith(MAGIC):
        raise ModelFileError(path, "is not a kernelfit model file (it does not start with "
                                   "the KERNELFIT-MODEL marker)")
    end = blob.find(b"\n", len(MAGIC), len(MAGIC) + _MAX_HEADER)
    try:
        header = json.loads(blob[len(MAGIC):end]) if end > 0 else None
    except ValueError:
        header = None
    if not isinstance(header, dict) or not {"format", "bytes", "sha256"} <= set(header):
        raise ModelFileError(path, "has a damaged header")
    if header["format"] != FORMAT_VERSION:
        raise ModelFileError(path, f"has model format {header['format']!r}, but this kernelfit "
                                   f"reads format {FORMAT_VERSION}")
    payload = blob[end + 1:]
    if len(payload) != header["bytes"]:
        raise ModelFileError(path, f"holds {len(payload):,} bytes of model where its header "
                                   f"says {header['bytes']:,} (truncated or appended to)")
    if hashlib.sha256(payload).hexdigest() != header["sha256"]:
        raise ModelFileError(path, "does not match its recorded sha256 (damaged or modified); "
                                   "do not load it")
    model = pickle.loads(payload)
    if not isinstance(model, SavedModel):
        raise ModelFileError(path, f"holds a {type(model).__name__}, not a kernelfit model")
    return model


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
    from .run import RunConfig, prepare

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
