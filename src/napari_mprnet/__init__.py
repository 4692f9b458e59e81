"""napari-mprnet: MPRNet image restoration for napari, Python and the command line."""

from . import losses
from .api import iter_restore, restore
from .model import MPRNet, MPRNetConfig
from .training.trainer import finetune
from .weights import load_model, save_model

__version__ = "0.1.0"

__all__ = ["MPRNet", "MPRNetConfig", "__version__", "finetune", "iter_restore", "load_model",
           "losses", "restore", "save_model"]
