"""*Layers > Filter > Restore > Denoise / Deblur / Derain*: restore the selected Image layer
with the last saved settings of the Restore widget, in a thread worker, with a cancellable
progress bar in napari's activity dock. A layer being restored already is not restored a
second time at once: the command says so (and how to stop the running job).

No type annotations are postponed here: napari injects the viewer into these commands by
resolving the ``napari.viewer.Viewer`` annotation.
"""

from napari.layers import Image
from napari.utils import notifications
from napari.viewer import Viewer

from .._layers import layer_type_name, snapshot
from ._jobs import JOBS, LayerBusyError
from ._requests import build_request
from .settings import load_settings

__all__ = ["restore_deblur", "restore_denoise", "restore_derain", "restore_selected"]


def restore_selected(viewer: Viewer, task: str):
    """Start restoring the active Image layer; return the job, or None if nothing started."""
    layer = viewer.layers.selection.active
    if not isinstance(layer, Image):
        what = "no layer is selected" if layer is None else (
            f"'{layer.name}' is a {layer_type_name(layer)} layer"
        )
        notifications.show_warning(f"MPRNet {task}: select an Image layer first ({what})")
        return None
    try:
        request = build_request(snapshot(layer), load_settings(), task=task,
                                origin="the menu")
        return JOBS.start(viewer, request)
    except LayerBusyError as err:
        notifications.show_warning(f"MPRNet {task}: {err}")
    except (TypeError, ValueError) as err:
        notifications.show_error(f"MPRNet {task}: {err}")
    return None


def restore_denoise(viewer: Viewer):
    """Denoise the selected Image layer."""
    return restore_selected(viewer, "denoise")


def restore_deblur(viewer: Viewer):
    """Deblur the selected Image layer."""
    return restore_selected(viewer, "deblur")


def restore_derain(viewer: Viewer):
    """Derain the selected Image layer."""
    return restore_selected(viewer, "derain")
