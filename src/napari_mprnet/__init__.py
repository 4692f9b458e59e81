"""napari-mprnet: MPRNet image restoration for napari, Python and the command line."""

from .model import MPRNet, MPRNetConfig

__version__ = "0.1.0"

__all__ = ["MPRNet", "MPRNetConfig", "__version__"]
