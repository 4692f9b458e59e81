"""napari-mprnet: MPRNet image restoration for napari, Python and the command line."""

from .api import iter_restore, restore
from .model import MPRNet, MPRNetConfig
from .weights import load_model, save_model

__version__ = "0.1.0"

__all__ = ["MPRNet", "MPRNetConfig", "__version__", "iter_restore", "load_model", "restore",
           "save_model"]
