"""napari front ends: thin Qt widgets and menu commands over :mod:`napari_mprnet.api`.

No numerics live here; everything is delegated to :func:`napari_mprnet.api.iter_restore`.
"""

from .weights_registry import register_weights, registered_weights, unregister_weights

__all__ = ["register_weights", "registered_weights", "unregister_weights"]
