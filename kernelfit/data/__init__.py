"""Datasets: embedded digits, MNIST (IDX), CIFAR-10; the cache; preprocessing; randomization."""

from kernelfit.data.dataset import DATASETS, Dataset, DatasetInfo, load_dataset, load_split

__all__ = ["DATASETS", "Dataset", "DatasetInfo", "load_dataset", "load_split"]
