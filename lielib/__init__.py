"""lielib: Lie derivatives for measuring learned equivariance.

The public API::

    from lielib import get_action, list_actions, lie_derivative, lee, sensitivity_ratio, layerwise_lee, Layout

The core imports torch, numpy and pandas only; one concept per module:

* :mod:`lielib.layout`: ``Layout`` (NCHW, NHWC, tokens) and the NCHW view of a tensor.
* :mod:`lielib.sampling`: the bilinear sampler and its ``paper``/``central`` stencils.
* :mod:`lielib.actions`: one-parameter groups acting on images, and their registry.
* :mod:`lielib.tangents`: tangent images, batched over actions and layouts.
* :mod:`lielib.prepare`: ``measuring`` (eval mode, unfused attention, restored), input
  checks, BatchNorm folding.
* :mod:`lielib.lie`: ``lie_derivative``, ``lee``, the batched JVP they share.
* :mod:`lielib.sensitivity`: ``sensitivity_ratio``, the scale-free companion of LEE
  (sensitivity along a transformation over that along phase-randomised references).
* :mod:`lielib.selection`, :mod:`lielib.sites`, :mod:`lielib.decompose`: the layer-wise
  decomposition (which modules, their recorded calls, their contributions);
  :mod:`lielib.budget` its signed shares, :mod:`lielib.shifts` the integer-shift baseline.
* :mod:`lielib.metrics`, :mod:`lielib.fourier`: sample-based metrics, band-limited
  resampling.

Models, data, sweeps and plotting live in :mod:`lielib.book`, which imports the core and
never the other way round.
"""

from .actions import Action, get_action, list_actions
from .decompose import layerwise_contributions, layerwise_lee
from .layout import Layout, from_nchw, to_nchw
from .lie import fold_batchnorm, lee, lie_derivative, lie_derivative_double_backward, measuring
from .sensitivity import sensitivity_ratio
from .shifts import layerwise_shift_error

__all__ = [
    "Action",
    "Layout",
    "fold_batchnorm",
    "from_nchw",
    "get_action",
    "layerwise_contributions",
    "layerwise_lee",
    "layerwise_shift_error",
    "lee",
    "lie_derivative",
    "lie_derivative_double_backward",
    "list_actions",
    "measuring",
    "sensitivity_ratio",
    "to_nchw",
]

__version__ = "0.1.0"
