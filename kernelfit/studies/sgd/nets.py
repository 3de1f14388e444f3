"""The four networks of the paper's appendix A, in PyTorch, with the paper's parameter counts.

On 28 x 28 x 3 inputs (CIFAR-10 after the centre crop) the counts are
exactly the paper's: small Inception 1,649,402; small AlexNet 1,387,786;
MLP 1x512 1,209,866; MLP 3x512 1,735,178 (``tests/test_sgd_nets.py``).
The layers are those of ``paper.md`` (appendix A, Figure 3). Other input
shapes (MNIST 28 x 28 x 1, digits 8 x 8 x 1) build the same architectures
with the first and flattening layers sized to fit, so their counts differ.

PyTorch is an optional extra: it is imported only when a model is built,
and its absence is a :class:`~kernelfit.errors.MissingDependencyError`.
"""

from __future__ import annotations

from functools import lru_cache

from kernelfit.errors import InputError, MissingDependencyError

PAPER_PARAMS = {"inception-small": 1_649_402, "alexnet-small": 1_387_786,
                "mlp1x512": 1_209_866, "mlp3x512": 1_735_178}
MODELS = tuple(PAPER_PARAMS)
# Appendix A: 0.1 for Inception, 0.01 for AlexNet and the MLPs.
DEFAULT_LR = {"inception-small": 0.1, "alexnet-small": 0.01, "mlp1x512": 0.01, "mlp3x512": 0.01}
# Small Inception after its first conv: ("inc", a, b) or ("down", b).
INCEPTION_LAYERS = (("inc", 32, 32), ("inc", 32, 48), ("down", 80), ("inc", 112, 48),
                    ("inc", 96, 64), ("inc", 80, 80), ("inc", 48, 96), ("down", 96),
                    ("inc", 176, 160), ("inc", 176, 160))


def import_torch(purpose: str = "training networks (kernelfit sgd net)"):
    """``torch``, or :class:`MissingDependencyError` naming the ``torch`` extra."""
    try:
        import torch
    except ImportError as err:
        raise MissingDependencyError("torch", "torch", purpose) from err
    return torch


@lru_cache(maxsize=1)
def _blocks():
    """The building blocks, defined once torch is importable."""
    torch = import_torch()
    nn = torch.nn

    class ConvBN(nn.Module):
        """Conv (k x k, stride s, 'same') -> batch norm without scale, plus a bias -> ReLU.

        The paper's count has one offset per channel and no scale, so the
        batch norm is ``affine=False`` with its own bias.
        """

        def __init__(self, c_in, c_out, k, stride=1):
            super().__init__()
            self.conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False)
            self.bn = nn.BatchNorm2d(c_out, affine=False)
            self.bias = nn.Parameter(torch.zeros(c_out))

        def forward(self, x):
            return torch.relu(self.bn(self.conv(x)) + self.bias[:, None, None])

    class Inception(nn.Module):
        """Conv(a, 1x1) and Conv(b, 3x3) side by side, concatenated."""

        def __init__(self, c_in, a, b):
            super().__init__()
            self.one, self.three = ConvBN(c_in, a, 1), ConvBN(c_in, b, 3)
            self.c_out = a + b

        def forward(self, x):
            return torch.cat([self.one(x), self.three(x)], dim=1)

    class Downsample(nn.Module):
        """Conv(b, 3x3, stride 2) and a 3x3 stride-2 max-pool side by side, concatenated."""

        def __init__(self, c_in, b):
            super().__init__()
            self.conv = ConvBN(c_in, b, 3, stride=2)
            self.pool = nn.MaxPool2d(3, stride=2, padding=1)
            self.c_out = b + c_in

        def forward(self, x):
            return torch.cat([self.conv(x), self.pool(x)], dim=1)

    return nn, ConvBN, Inception, Downsample


def _mlp(nn, d, widths, n_classes):
    layers, prev = [nn.Flatten()], d
    for w in widths:
        layers += [nn.Linear(prev, w), nn.ReLU()]
        prev = w
    return nn.Sequential(*layers, nn.Linear(prev, n_classes))


def _alexnet(nn, c, h, w, n_classes):
    # TF's cifar10 LRN: depth_radius 4, bias 1, alpha 0.001 / 9, beta 0.75. PyTorch
    # divides alpha by the window size (9), so it takes alpha = 0.001.
    def block(c_in):
        return [nn.Conv2d(c_in, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1),
                nn.LocalResponseNorm(9, alpha=0.001, beta=0.75, k=1.0)]

    for _ in range(2):
        h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    return nn.Sequential(*block(c), *block(64), nn.Flatten(), nn.Linear(64 * h * w, 384),
                         nn.ReLU(), nn.Linear(384, 192), nn.ReLU(), nn.Linear(192, n_classes))


def _inception(c, n_classes):
    nn, ConvBN, Inception, Downsample = _blocks()
    layers, prev = [ConvBN(c, 96, 3)], 96
    for spec in INCEPTION_LAYERS:
        layer = Inception(prev, *spec[1:]) if spec[0] == "inc" else Downsample(prev, spec[1])
        layers.append(layer)
        prev = layer.c_out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(prev, n_classes))


def build_model(name: str, input_shape=(28, 28, 3), n_classes: int = 10):
    """One of :data:`MODELS` as a ``torch.nn.Module`` taking NCHW float32 batches.

    Parameters
    ----------
    name : {"mlp1x512", "mlp3x512", "alexnet-small", "inception-small"}
    input_shape : tuple
        ``(H, W)`` or ``(H, W, C)`` of one preprocessed image.
    n_classes : int

    Returns
    -------
    torch.nn.Module
        Initialized from torch's current random state (seed it first).
    """
    if name not in PAPER_PARAMS:
        raise InputError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 2:
        shape += (1,)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"input_shape must be (H, W) or (H, W, C), got {input_shape}")
    if int(n_classes) < 2:
        raise InputError(f"n_classes must be >= 2, got {n_classes}")
    h, w, c = shape
    if name.startswith("inception") or name.startswith("alexnet"):
        if min(h, w) < 4:
            raise InputError(f"{name} downsamples twice and needs images of at least 4 x 4, "
                             f"got {h} x {w}")
    nn = _blocks()[0]
    if name == "mlp1x512":
        return _mlp(nn, h * w * c, (512,), n_classes)
    if name == "mlp3x512":
        return _mlp(nn, h * w * c, (512, 512, 512), n_classes)
    if name == "alexnet-small":
        return _alexnet(nn, c, h, w, n_classes)
    return _inception(c, n_classes)


def count_parameters(model) -> int:
    """Trainable parameters (what the paper counts; batch-norm running stats are not)."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def paper_parameter_gap(name: str, n_params: int) -> float:
    """Relative difference from the paper's count (meaningful for 28 x 28 x 3 inputs)."""
    return abs(n_params - PAPER_PARAMS[name]) / PAPER_PARAMS[name]


def default_lr(name: str) -> float:
    """The paper's initial learning rate for ``name``."""
    if name not in DEFAULT_LR:
        raise InputError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
    return DEFAULT_LR[name]


__all__ = ["MODELS", "PAPER_PARAMS", "build_model", "count_parameters", "default_lr",
           "import_torch", "paper_parameter_gap"]
