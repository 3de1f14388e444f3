"""Raw pixels: the paper's "no preprocessing" front end."""

from __future__ import annotations

import numpy as np

from kernelfit.data.preprocess import per_image_whiten
from kernelfit.features.base import FeatureMap


class RawPixels(FeatureMap):
    """Flatten the images, optionally after per-image whitening.

    Parameters
    ----------
    whiten : bool
        Subtract each image's mean and divide by max(std, 1/sqrt(#values))
        before flattening (TensorFlow's ``per_image_standardization``).
    seed : int
        Unused (nothing is random); kept so every map takes the same arguments.
    """

    name = "raw"
    _param_names = ("whiten",)
    any_shape = True

    def __init__(self, *, whiten: bool = False, seed: int = 0, batch_size: int = 8192):
        super().__init__(seed=seed, batch_size=batch_size)
        self.whiten = bool(whiten)

    @property
    def preprocessing(self) -> list[str]:
        return (["per_image_whiten"] if self.whiten else []) + ["flatten"]

    def _dim_for_shape(self, shape) -> int:
        return int(np.prod(shape))

    def _memory(self, n: int, shape) -> tuple[int, int, int]:
        if not self.whiten:
            return 0, 0, 0                  # rows are reshaped views of the images
        # per_image_whiten: two float64 copies of a batch at once, then its float32 result
        return 0, 0, 16 * min(n, self.batch_size) * int(np.prod(shape))

    def _transform_batch(self, images: np.ndarray) -> np.ndarray:
        if self.whiten:
            images = per_image_whiten(images)
        return images.reshape(len(images), -1)
