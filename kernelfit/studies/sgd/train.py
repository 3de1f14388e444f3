"""Training one network by SGD as in the paper's appendix A, with a resumable record.

Data: the project's split, randomization test and preprocessing
(``kernelfit.pipeline.run.prepare``: pixels / 255), then a centre crop to 28 x 28
and per-image whitening (``data.preprocess``). With ``augment`` each
training batch is instead a random 28 x 28 crop of the 32 x 32 image,
flipped left-right with probability 1/2, then whitened: the paper's "crop"
setting. Optimizer: SGD with momentum 0.9, learning rate 0.1 (Inception) or
0.01 (the others) times 0.95 per epoch, no weight decay unless asked.

Training stops at 100% training accuracy (measured on the whole training set
in eval mode after each epoch) or at ``max_epochs``. Every epoch appends
loss, train and test error, learning rate, steps and seconds to the record's
history and writes a checkpoint (:mod:`.checkpoint`: tensors and plain values
only, keyed like the record, read with ``weights_only=True``), so a killed run
resumes at its last epoch; the finished run is one JSON record in a
:class:`ResultStore` and is not rerun with the same result-changing settings,
data and kernelfit version.

Same seed, same bits on the CPU: torch's generator is seeded before the
model is built, and every epoch's batch order and augmentation come from a
NumPy generator seeded by ``(seed, epoch)``, so a resumed run draws what an
uninterrupted one would.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from kernelfit.data.preprocess import Preprocessing, per_image_whiten
from kernelfit.errors import BackendError, InputError
from kernelfit.params import one_of, real, whole
from kernelfit.pipeline.report import pct
from kernelfit.pipeline.results import ResultStore, result_settings, settings_key, with_data
from kernelfit.studies.sgd.checkpoint import load_checkpoint, remove_checkpoint, save_checkpoint
from kernelfit.studies.sgd.nets import (
    MODELS,
    PAPER_PARAMS,
    build_model,
    count_parameters,
    default_lr,
    import_torch,
)

CROP = 28                 # appendix A: centre crop 32 -> 28
EVAL_BATCH = 1000         # images per no-grad forward pass when measuring errors
# Where a run's resources go, never its numbers: left out of the record key.
_NOT_KEY = ("device", "threads", "quiet", "data_home")


@dataclass
class NetConfig:
    """One SGD run of a network; every field has the `kernelfit sgd net` default."""

    model: str = "mlp1x512"
    dataset: str = "cifar10"
    n_train: int | None = None
    n_test: int | None = None
    seed: int = 0
    randomize: str = "none"
    lr: float | None = None          # None: the paper's (0.1 Inception, 0.01 others)
    lr_decay: float = 0.95           # multiplies the learning rate after every epoch
    momentum: float = 0.9
    batch_size: int = 128
    weight_decay: float = 0.0
    augment: bool = False
    max_epochs: int = 100
    crop: int | None = None          # None: 28, or the image size if smaller
    data_home: str | None = None
    device: str = "cpu"
    threads: int | None = None
    quiet: bool = False

    def resolved(self) -> NetConfig:
        """A validated copy with ``lr`` filled in (the record stores what was used)."""
        validate(self)
        from kernelfit.data.randomize import parse_randomization

        out = NetConfig(**asdict(self))
        # "labels:0" and "none" are one run; the canonical spec keys the record.
        out.randomize = parse_randomization(out.randomize).describe()
        if out.lr is None:
            out.lr = default_lr(out.model)
        return out

    def settings(self) -> dict:
        """The settings that change the result and the data's fingerprint: the record's key."""
        d = {k: v for k, v in asdict(self.resolved()).items() if k not in _NOT_KEY}
        return with_data(result_settings(d), self.dataset, self.data_home)

    def name(self) -> str:
        """The record's file name in the store."""
        return f"{self.model}-{self.dataset}-{settings_key(self.settings())}"


def validate(config: NetConfig) -> None:
    """Raise :class:`InputError` for any setting that cannot run, saying what to pass."""
    from kernelfit.data.randomize import parse_randomization

    one_of("model", config.model, MODELS)
    for name in ("n_train", "n_test", "crop", "threads"):
        whole(name, getattr(config, name), 1, allow_none=True)
    whole("batch_size", config.batch_size, 1)
    whole("max_epochs", config.max_epochs, 1)
    whole("seed", config.seed, 0)
    real("lr", config.lr, 0, lo_open=True, allow_none=True)
    real("lr_decay", config.lr_decay, 0, 1, lo_open=True)
    real("momentum", config.momentum, 0, 1, hi_open=True)
    real("weight_decay", config.weight_decay, 0)
    if not isinstance(config.augment, bool):
        raise InputError(f"augment must be True or False, got {config.augment!r}")
    parse_randomization(config.randomize)
    if not isinstance(config.device, str) or not (
            config.device == "cpu" or config.device == "cuda" or
            (config.device.startswith("cuda:") and config.device[5:].isdigit())):
        raise InputError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {config.device!r}")


def _device(torch, name: str):
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError(f"device={name!r} was asked for, but this PyTorch sees no CUDA "
                           "device; use --device cpu")
    return torch.device(name)


@dataclass
class NetData:
    """Preprocessed arrays, NHWC float32; ``train_raw`` is the uncropped scaled images."""

    train: np.ndarray
    train_labels: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray
    train_raw: np.ndarray | None
    n_classes: int
    crop: int
    preprocessing: list
    randomization: str


def prepare_net_data(config: NetConfig) -> NetData:
    """Split, randomization and pixels / 255 (``run.prepare``), then crop and whitening."""
    from kernelfit.data import DATASETS
    from kernelfit.pipeline import run as runmod

    if config.dataset not in DATASETS:
        raise InputError(f"unknown dataset {config.dataset!r}; valid: {', '.join(DATASETS)}")
    scaled = runmod.prepare(runmod.RunConfig(
        dataset=config.dataset, n_train=config.n_train, n_test=config.n_test, seed=config.seed,
        preprocessing="scale", randomize=config.randomize, data_home=config.data_home))
    train, test = (_channels_last(scaled.train_images), _channels_last(scaled.test_images))
    size = min(train.shape[1:3])
    crop = min(CROP, size) if config.crop is None else config.crop
    if crop > size:
        raise InputError(f"crop {crop} does not fit {config.dataset}'s {size} x {size} images; "
                         f"pass crop <= {size}")
    pipeline = Preprocessing.parse(f"crop:{crop},whiten")
    return NetData(pipeline.apply(train, 1.0), scaled.train_labels.astype(np.int64),
                   pipeline.apply(test, 1.0), scaled.test_labels.astype(np.int64),
                   train if config.augment else None,
                   len(DATASETS[config.dataset].classes), crop,
                   scaled.preprocessing + pipeline.describe()
                   + (["augment: random crop + left-right flip per batch (train only)"]
                      if config.augment else []),
                   scaled.randomization)


def _channels_last(images: np.ndarray) -> np.ndarray:
    return images[..., None] if images.ndim == 3 else images


def augment_batch(raw: np.ndarray, crop: int, rng) -> np.ndarray:
    """Random ``crop x crop`` windows, each flipped left-right with probability 1/2, whitened."""
    n, h, w = raw.shape[:3]
    tops = rng.integers(0, h - crop + 1, n)
    lefts = rng.integers(0, w - crop + 1, n)
    flips = rng.random(n) < 0.5
    out = np.empty((n, crop, crop, raw.shape[3]), dtype=np.float32)
    for i in range(n):
        window = raw[i, tops[i]:tops[i] + crop, lefts[i]:lefts[i] + crop]
        out[i] = window[:, ::-1] if flips[i] else window
    return per_image_whiten(out)


def _nchw(torch, x: np.ndarray, device):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)


def _error(torch, model, x: np.ndarray, y: np.ndarray, device) -> float | None:
    if len(y) == 0:
        return None
    model.eval()
    wrong = 0
    with torch.no_grad():
        for start in range(0, len(y), EVAL_BATCH):
            logits = model(_nchw(torch, x[start:start + EVAL_BATCH], device))
            pred = logits.argmax(dim=1).cpu().numpy()
            wrong += int(np.sum(pred != y[start:start + EVAL_BATCH]))
    return wrong / len(y)


def _build(torch, config: NetConfig, data: NetData, device):
    """The freshly initialized model (torch seeded first: same seed, same weights) and its SGD."""
    torch.manual_seed(config.seed)
    model = build_model(config.model, data.train.shape[1:], data.n_classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    return model, opt


def _resume(torch, ckpt, key: dict, model, opt, say) -> dict | None:
    """The checkpoint's state loaded into ``model`` and ``opt``, or None (said why)."""
    state, why = load_checkpoint(torch, ckpt, key)
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            state, why = None, f"does not fit this model ({err})"
    if why is not None:
        say(f"checkpoint {ckpt}: {why}; training from the first epoch")
    return state


def train_net(config: NetConfig, out_dir, *, force: bool = False,
              log=None) -> tuple[dict, bool]:
    """Train (or reuse) the run ``config`` describes; its record lives in ``out_dir``.

    Parameters
    ----------
    config : NetConfig
    out_dir : str or Path
        The :class:`ResultStore` directory (records and per-epoch checkpoints).
    force : bool
        Retrain even when a record with the same settings exists.
    log : callable, optional
        Receives the line saying why a stored record or checkpoint is not
        reused (default: ``print``, nothing with ``config.quiet``).

    Returns
    -------
    record : dict
        What the store holds (``settings`` included).
    reused : bool
        True when the record was already there.
    """
    config = config.resolved()
    settings, name = config.settings(), config.name()
    store = ResultStore(out_dir)
    if log is None:
        log = (lambda *_: None) if config.quiet else print
    if not force:
        saved = store.load(name, settings, log=log)
        if saved is not None:
            return saved, True
    torch = import_torch()
    device = _device(torch, config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    data = prepare_net_data(config)
    n = len(data.train_labels)
    model, opt = _build(torch, config, data, device)
    n_params = count_parameters(model)
    loss_fn = torch.nn.CrossEntropyLoss()
    history, steps, start_epoch, notes = [], 0, 0, []
    ckpt = store.path(name).with_suffix(".ckpt")
    key = store.key(settings)             # the checkpoint's key is the record's
    state = None
    if not force:
        state = _resume(torch, ckpt, key, model, opt, lambda line: (notes.append(line),
                                                                    log(line)))
        if state is None and ckpt.exists():   # refused, perhaps after a partial load
            model, opt = _build(torch, config, data, device)
    if state is not None:
        history, steps, start_epoch = state["history"], state["steps"], state["epoch"]
        notes.append(f"resumed from the checkpoint of epoch {start_epoch}")
    y_train = torch.from_numpy(data.train_labels).to(device)
    x_train = None if config.augment else _nchw(torch, data.train, device)

    fitted = bool(history) and history[-1]["train_error"] == 0.0
    epochs = range(start_epoch, config.max_epochs)
    bar = None
    if not config.quiet:
        from tqdm.auto import tqdm
        bar = tqdm(total=config.max_epochs, initial=start_epoch, unit="epoch",
                   desc=f"{config.model} {data.randomization}")
    for epoch in epochs:
        if fitted:
            break
        t = time.perf_counter()
        lr = config.lr * config.lr_decay ** epoch
        for group in opt.param_groups:
            group["lr"] = lr
        rng = np.random.default_rng([config.seed, 7, epoch])
        order = rng.permutation(n)
        model.train()
        total, diverged = 0.0, False
        for start in range(0, n, config.batch_size):
            idx = order[start:start + config.batch_size]
            if config.augment:
                xb = _nchw(torch, augment_batch(data.train_raw[idx], data.crop, rng), device)
            else:
                xb = x_train[torch.from_numpy(idx).to(device)]
            loss = loss_fn(model(xb), y_train[torch.from_numpy(idx).to(device)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            value = float(loss.detach())
            if not math.isfinite(value):
                diverged = True
                break
            total += value * len(idx)
        train_error = _error(torch, model, data.train, data.train_labels, device)
        test_error = _error(torch, model, data.test, data.test_labels, device)
        history.append({"epoch": epoch + 1, "lr": lr, "steps": steps,
                        "loss": total / n if not diverged else float("nan"),
                        "train_error": train_error, "test_error": test_error,
                        "seconds": time.perf_counter() - t})
        if diverged:
            notes.append(f"training loss became non-finite in epoch {epoch + 1}: diverged; "
                         "lower --lr")
            warnings.warn(notes[-1], stacklevel=2)
            break
        fitted = train_error == 0.0
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{history[-1]['loss']:.3g}", train_err=f"{train_error:.4f}",
                            test_err=f"{test_error:.4f}" if test_error is not None else "-")
        if not fitted and epoch + 1 < config.max_epochs:
            save_checkpoint(torch, ckpt, key, model, opt, history=history, steps=steps,
                            epoch=epoch + 1)
    if bar is not None:
        bar.close()
    if not fitted and not any("diverged" in s for s in notes):
        notes.append(f"did not reach 100% training accuracy in {config.max_epochs} epochs "
                     f"(train error {history[-1]['train_error']:.4f})")
    last = history[-1]
    record = {
        "kind": "sgd-net", "model": config.model, "n_params": n_params,
        "paper_params": PAPER_PARAMS[config.model],
        "input_shape": list(data.train.shape[1:]), "dataset": config.dataset,
        "n_train": n, "n_test": len(data.test_labels), "n_classes": data.n_classes,
        "randomization": data.randomization,
        "preprocessing": data.preprocessing,
        "optimizer": {"name": "sgd", "lr": config.lr, "lr_decay_per_epoch": config.lr_decay,
                      "momentum": config.momentum, "weight_decay": config.weight_decay,
                      "batch_size": config.batch_size},
        "fitted": fitted, "epochs": len(history), "steps": steps,
        "epochs_to_fit": len(history) if fitted else None,
        "steps_to_fit": steps if fitted else None,
        "train_error": last["train_error"], "test_error": last["test_error"],
        "final_loss": last["loss"], "seconds": sum(h["seconds"] for h in history),
        "history": history, "device": str(device), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "seed": config.seed, "notes": notes,
    }
    store.save(name, settings, record)
    remove_checkpoint(ckpt)
    return store.load(name, settings), False


def summary(record: dict) -> str:
    """A few lines for the terminal: the model, the data, the outcome."""
    gap = (record["n_params"] - record["paper_params"]) / record["paper_params"]
    lines = [
        f"model        {record['model']}: {record['n_params']:,} parameters "
        f"(paper {record['paper_params']:,}; {100 * gap:+.2f}%)",
        f"data         {record['dataset']}, {record['n_train']:,} train / "
        f"{record['n_test']:,} test, randomization {record['randomization']}",
        f"optimizer    SGD lr {record['optimizer']['lr']:g} x "
        f"{record['optimizer']['lr_decay_per_epoch']:g}/epoch, momentum "
        f"{record['optimizer']['momentum']:g}, weight decay "
        f"{record['optimizer']['weight_decay']:g}, batch {record['optimizer']['batch_size']}",
        f"train error  {pct(record['train_error'])} (accuracy "
        f"{100 * (1 - record['train_error']):.2f}%)",
        f"test error   {pct(record['test_error'])}",
        f"fitted       {'yes' if record['fitted'] else 'no'} after {record['epochs']} epochs, "
        f"{record['steps']:,} steps, {record['seconds']:.1f} s, final loss "
        f"{record['final_loss']:.4g}",
    ]
    lines += [f"note         {n}" for n in record.get("notes", [])]
    return "\n".join(lines)
