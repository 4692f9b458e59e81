"""Export an MPRNet as a bioimage.io model package (a zip holding ``rdf.yaml``).

The package is self-contained: the network's source (:mod:`napari_mprnet.model.arch`, copied
verbatim, plus a small ``MPRNetFinal`` wrapper whose forward returns only the final image and
takes grey input), ``pytorch_state_dict`` weights whose parameter names match that source,
test tensors computed here, pre- and post-processing that reproduce ``restore()``'s intensity
handling (:mod:`.intensity`), a halo and a fixed tile grid for blockwise prediction, a README and a cover.

>>> export_bioimageio(model, "cells.zip", name="Cells denoiser",
...                   description="MPRNet fine-tuned on ...")  # doctest: +SKIP

The package is validated with bioimageio.spec when it is installed; test it with
``bioimageio test cells.zip`` (``pip install bioimageio.core``).
"""

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

__all__ = ["ARCH_CALLABLE", "ARCH_FILE", "FORMAT_VERSION", "HALO", "INPUT_ID", "MIN_BLOCK",
           "MIN_SIZE", "MODEL_FILE", "OUTPUT_ID", "TILE", "IntensityMapping", "choose_mapping",
           "export_bioimageio", "validate_package"]
