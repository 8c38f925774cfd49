"""lielib: Lie derivatives for measuring learned equivariance.

The public API::

    from lielib import get_action, list_actions, lie_derivative, lee, layerwise_lee, Layout

Models, data, sweeps and plotting live in their own modules (``lielib.book.models``,
``lielib.book.data``, ``lielib.metrics``, ``lielib.book.sweep``, ...), so that the core imports
neither timm nor datasets.
"""

from .actions import Action, get_action, list_actions
from .layers import layerwise_contributions, layerwise_lee, layerwise_shift_error
from .layout import Layout, from_nchw, to_nchw
from .lie import fold_batchnorm, lee, lie_derivative, lie_derivative_double_backward, measuring

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
    "to_nchw",
]

__version__ = "0.1.0"
