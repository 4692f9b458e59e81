"""Inference backends: how one padded tile batch goes through the network.

One module per backend (:mod:`.eager`, :mod:`.compile`, :mod:`.tensorrt`) over the shared
parts in :mod:`.base` (the :class:`Backend` protocol, fallbacks, options) and :mod:`.cache`
(in-memory and on-disk caches); :mod:`.selection` turns a name into a backend.

A backend takes a batch ``(B, C, H, W)`` already on the device (H and W multiples of 8)
and returns ``[final]`` or ``[final, stage2, stage1]`` on the device. Four exist:

``eager``
    The model as it is, under autocast (fp16/bf16) and ``torch.inference_mode``; on CUDA
    ``torch.backends.cudnn.benchmark`` is switched on so cuDNN picks the fastest kernels
    for the (fixed) tile shape.
``compile``
    ``torch.compile`` of the model for one fixed input shape (``dynamic=False``). The runner
    keeps every batch of an image the same shape (the last partial batch is padded with
    dummy tiles), so one compilation serves a whole image. Compiled modules are cached per
    model, shape, dtype, precision and device. ``cuda_graphs=True`` compiles with
    ``mode="reduce-overhead"`` (CUDA graphs).
``tensorrt``
    Torch-TensorRT (``ir="dynamo"``) of the fixed tile shape, by default in fp16. Engines are
    saved on disk (:func:`cache_dir`, overridable with ``NAPARI_MPRNET_CACHE``) under a key
    made of the weights' hash, the input shape, the precision, the GPU and the torch /
    torch_tensorrt versions, and loaded from there next time.

``openvino``
    The network converted once to OpenVINO (dynamic batch, height and width, all three
    outputs) and run by its CPU plugin, in bf16 where the CPU computes it natively and the
    run's precision is bf16, f32 otherwise. Conversions are saved on disk beside the
    TensorRT engines (keyed by the weights' SHA-256 and the library versions, checked by
    hash when loaded) and checked against the eager network before use
    (:mod:`.openvino`, :mod:`.openvino_store`).

With no backend given (None) a run uses :func:`default_backend`: ``openvino`` on a CPU where
OpenVINO is installed, ``eager`` elsewhere (``$NAPARI_MPRNET_BACKEND`` overrides it).
``auto`` is ``tensorrt`` on CUDA where ``torch_tensorrt`` can be imported, else ``compile``
on CUDA; ``openvino`` on a CPU where it is installed, else ``eager``; ``eager`` on Apple
MPS. A backend that cannot be built or whose compilation fails warns in one line
(:class:`BackendFallbackWarning`) and hands over to the next one: tensorrt -> compile ->
eager, openvino -> eager. Out-of-memory errors are never swallowed: the runner needs them to
shrink its batches.
"""

from .base import (
    BACKENDS,
    CACHE_ENV,
    OPTION_KEYS,
    Backend,
    BackendFallbackWarning,
    InferenceModule,
    is_out_of_memory,
)
from .cache import cache_dir, clear_compiled_cache, weights_hash
from .compile import CompileBackend
from .eager import EagerBackend
from .openvino import OpenVINOBackend, clear_openvino_cache
from .selection import (
    BACKEND_ENV,
    default_backend,
    make_backend,
    normalize_backend,
    openvino_available,
    resolve_backend,
    tensorrt_available,
)
from .tensorrt import TensorRTBackend, engine_outputs

__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "CACHE_ENV",
    "OPTION_KEYS",
    "Backend",
    "BackendFallbackWarning",
    "CompileBackend",
    "EagerBackend",
    "InferenceModule",
    "OpenVINOBackend",
    "TensorRTBackend",
    "cache_dir",
    "clear_compiled_cache",
    "clear_openvino_cache",
    "default_backend",
    "engine_outputs",
    "is_out_of_memory",
    "make_backend",
    "normalize_backend",
    "openvino_available",
    "resolve_backend",
    "tensorrt_available",
    "weights_hash",
]
