"""The aliasing experiments (chapter 2): layer-wise budgets and the anti-aliased twin.

``python -m lielib.book.aliasing`` writes, under ``results/aliasing/``, the tables of
:mod:`lielib.book.aliasing.cli`; ``--train-twin`` trains the fully blurred ResNet-18
(:mod:`lielib.book.blurpool`) with the zoo's recipe (:mod:`lielib.book.aliasing.twin`).
"""

from ..blurpool import MissingTwinError
from .cli import (
           ACTIONS,
           DEFAULT_IMAGENET,
           DEFAULT_ZOO,
           EXPERIMENTS,
           NothingMeasuredError,
           main,
           run,
)
from .twin import measure_variant, train_twin, twin_ratios

__all__ = ["ACTIONS", "DEFAULT_IMAGENET", "DEFAULT_ZOO", "EXPERIMENTS", "MissingTwinError",
           "NothingMeasuredError", "main", "measure_variant", "run", "train_twin", "twin_ratios"]
