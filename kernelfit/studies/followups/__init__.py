"""The studies that took Zhang et al.'s Section 5 further, one preset each over the sweeps.

``interpolation-noise`` (Belkin, Ma & Mandal 2018), ``double-descent``
(Belkin, Hsu, Ma & Mandal 2019) and ``learning-curves`` (Spigler, Geiger &
Wyart 2019): see each module's docstring for the paper's setup and how
kernelfit computes it. :data:`STUDIES` maps a study's command-line name to
its module; every module has a config class with ``small()`` and ``full()``
presets and ``run_study(config, out_dir)``.
"""

from __future__ import annotations

from importlib import import_module

#: Command-line name -> (module, config class).
STUDIES = {
    "interpolation-noise": ("kernelfit.studies.followups.noise", "NoiseStudy"),
    "double-descent": ("kernelfit.studies.followups.double_descent",
                       "DoubleDescentStudy"),
    "learning-curves": ("kernelfit.studies.followups.learning_curves",
                        "LearningCurveStudy"),
}


def study_module(name: str):
    """(module, config class) of the study called ``name``."""
    from kernelfit.errors import InputError

    if name not in STUDIES:
        raise InputError(f"unknown study {name!r}; choose one of {', '.join(STUDIES)}")
    module, cls = STUDIES[name]
    mod = import_module(module)
    return mod, getattr(mod, cls)
