"""Experiments built from many runs: Table 3, sweeps and their reports, the
comparison with SGD-trained networks (:mod:`.compare`, :mod:`.sgd`), Figure 1,
the expressivity study and the benchmarks behind ``kernelfit bench``."""
