"""lielib: Lie derivatives for measuring learned equivariance.

The public API::

    from lielib import get_action, list_actions, lie_derivative, lee, Layout
"""

from .actions import Action, get_action, list_actions
from .layout import Layout, from_nchw, to_nchw
from .lie import lee, lie_derivative, lie_derivative_double_backward, measuring

__all__ = [
    "Action",
    "Layout",
    "from_nchw",
    "get_action",
    "lee",
    "lie_derivative",
    "lie_derivative_double_backward",
    "list_actions",
    "measuring",
    "to_nchw",
]

__version__ = "0.1.0"
