"""bioimage.io model packages: export an MPRNet as one, and open them again.

A package is self-contained: the network's source (:mod:`napari_mprnet.model.arch`, copied
verbatim, plus a small ``MPRNetFinal`` wrapper whose forward returns only the final image,
takes grey input and maps intensities as ``restore()`` does: :mod:`.wrapper_source`,
:mod:`.intensity`), ``pytorch_state_dict`` weights whose parameter names match that source,
the model as napari-mprnet saves it, test tensors computed here, a halo for blockwise
prediction, a README, sample images and a cover. By default it takes uint8, uint16 and float32
images of any range.

>>> export_bioimageio(model, "cells.zip", name="Cells denoiser",
...                   description="MPRNet fine-tuned on ...")  # doctest: +SKIP
>>> napari_mprnet.load_model("cells.zip")  # doctest: +SKIP

Arguments are checked first (:mod:`.checks`: one line per problem); the package is validated
with bioimageio.spec when it is installed, before it is written; test it with
``bioimageio test cells.zip`` (``pip install bioimageio.core``). :func:`load_model
<napari_mprnet.weights.load_model>` opens packages through :mod:`.importing`.
"""

from .checks import ExportError
from .content import ARCH_CALLABLE, ARCH_FILE, MIN_SIZE, MODEL_FILE
from .export import (
    FORMAT_VERSION,
    HALO,
    INPUT_ID,
    MIN_BLOCK,
    OUTPUT_ID,
    TILE,
    export_bioimageio,
    validate_package,
)
from .intensity import IntensityMapping, choose_mapping

__all__ = [
    "ARCH_CALLABLE",
    "ARCH_FILE",
    "FORMAT_VERSION",
    "HALO",
    "INPUT_ID",
    "MIN_BLOCK",
    "MIN_SIZE",
    "MODEL_FILE",
    "OUTPUT_ID",
    "TILE",
    "ExportError",
    "IntensityMapping",
    "choose_mapping",
    "export_bioimageio",
    "validate_package",
]
