"""What is wrong with a model file, in our own words (used by :mod:`.weights`).

Library errors are never passed on as they are: torch's say "weights_only", advise loading
unsafely, carry terminal escape codes and span many lines; safetensors' list every dtype it
knows. Here a file that cannot be read is diagnosed from its own bytes (a zip archive, a
pickle, neither) without running anything, file names are shown with control characters
escaped, and any text quoted is shortened at a word boundary. The metadata keys the package
reads are checked for their type and values, and every tensor for having real, dense data.
"""

from __future__ import annotations

import io
import math
import pickletools
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["check_metadata", "check_tensors", "describe_safetensors_error",
           "describe_torch_error", "plain_text", "shown_path"]

#: Modes a stored normalisation may have (those of ``engine.normalize.Normalization``).
NORMALIZATION_MODES = ("identity", "uint8", "range", "percentile")
#: Globals a PyTorch pickle may name besides tensors (what ``weights_only`` loading allows).
_TORCH_GLOBALS = ("torch.", "collections.OrderedDict", "builtins.set", "builtins.frozenset",
                  "_codecs.encode")
#: Pickles scanned in a legacy (non-zip) PyTorch file: magic number, protocol, system
#: information, then the object itself.
_LEGACY_PICKLES = 4
_MAX_SCAN_BYTES = 64 * 2**20


def shown_path(path: Path | str) -> str:
    """``path`` for a one-line message: newlines, escape codes and other control characters
    shown escaped (``\\n``, ``\\x1b``)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(path))


def plain_text(text: str, limit: int = 120) -> str:
    """Someone else's message on one line: control characters and backquotes removed, at
    most ``limit`` characters, shortened at a word boundary (with an ellipsis)."""
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(text))
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    text = text.replace("`", "")
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(",;:.(")
    return f"{cut}…"


# ------------------------------------------------------------------ unreadable files


def _safe_global(name: str) -> bool:
    return name.startswith(_TORCH_GLOBALS)


def _pickle_globals(data: bytes) -> tuple[list[str], bool]:
    """The globals the pickles at the start of ``data`` name (read with ``pickletools``,
    nothing is run) and whether the first one is readable at all."""
    stream = io.BytesIO(data)
    names: list[str] = []
    for index in range(_LEGACY_PICKLES):
        strings: list[str] = []
        try:
            for opcode, arg, _ in pickletools.genops(stream):
                if opcode.name in ("GLOBAL", "INST"):
                    names.append(str(arg).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
        except Exception:  # noqa: BLE001 - damaged bytes raise anything
            return names, index > 0
        if stream.tell() >= len(data):
            break
    return names, True


def _objects_refused(name: str) -> str:
    return (f"it stores Python objects ({plain_text(name, 60)}) besides tensors; such files "
            "are refused for safety, as loading them could run code: save the weights as a "
            "state dict (torch.save(model.state_dict(), ...)) or a .safetensors file")


def _describe_zip(path: Path) -> str:
    """Why a zip-format checkpoint failed: the globals its pickle names, or damage."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("data.pkl")]
            data = archive.read(pickles[0]) if pickles else b""
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        data = b""
    foreign = [name for name in _pickle_globals(data)[0] if not _safe_global(name)]
    if foreign:
        return _objects_refused(foreign[0])
    return ("the file is truncated or damaged: its zip archive cannot be read completely "
            "(copy or download it again)")


def describe_torch_error(path: Path, error: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in our words."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_SCAN_BYTES)
    except OSError as err:
        return f"it cannot be read ({plain_text(err.strerror or err, 60)})"
    if data.startswith(b"PK"):  # the zip format of torch.save
        return _describe_zip(path)
    if not data.startswith(b"\x80"):
        return ("not a PyTorch checkpoint: the file is neither a zip archive nor a pickle "
                "(is it the right file?)")
    names, readable = _pickle_globals(data)
    if not readable:
        return ("the file is damaged or truncated, or not a PyTorch checkpoint: it starts "
                "like a pickle but its contents cannot be read")
    foreign = [name for name in names if not _safe_global(name)]
    if foreign:
        return _objects_refused(foreign[0])
    if not any(name.startswith("torch.") for name in names):
        return ("it holds no tensors: a plain Python pickle, not a PyTorch checkpoint "
                "(save a model with torch.save(model.state_dict(), ...))")
    return "the file is damaged or truncated: its pickled tensors cannot be read"


def describe_safetensors_error(error: BaseException) -> str:
    """Why a safetensors file could not be read, in our words."""
    text = str(error)
    dtype = re.search(r"unknown variant `([^`]{1,40})`", text)
    if dtype:
        return (f"a tensor has the unknown dtype '{plain_text(dtype.group(1), 40)}' (a damaged "
                "file, or one written by a newer safetensors)")
    if any(word in text for word in ("incomplete metadata", "not fully covered",
                                     "HeaderTooSmall", "too small", "InvalidOffset")):
        return ("the file is truncated or damaged: its header does not match its data (copy "
                "or download it again)")
    return f"not a readable safetensors file ({plain_text(text, 100)})"


# ------------------------------------------------------------------ metadata and tensors


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _normalization_problem(norm: Any) -> str | None:
    if not isinstance(norm, Mapping):
        return f"is a {type(norm).__name__}, expected a JSON object with a 'mode'"
    mode = norm.get("mode")
    if mode not in NORMALIZATION_MODES:
        return (f"has mode {plain_text(repr(mode), 40)}; it must be one of "
                f"{', '.join(NORMALIZATION_MODES)}")
    for key in ("low", "high"):
        if key in norm and not _is_number(norm[key]):
            return f"has {key} {plain_text(repr(norm[key]), 40)}; it must be a finite number"
    if norm.get("percentiles") is not None:
        from .engine.normalize import check_percentiles

        try:
            check_percentiles(norm["percentiles"])
        except (TypeError, ValueError) as err:
            return f"is impossible: {err}"
    return None


def check_metadata(metadata: Mapping) -> str | None:
    """The problem with the metadata keys this package reads (``task``, ``normalization``,
    ``cpu_bf16``, ``trained``, ``summary``), as one phrase naming the key and the allowed
    values, or None. Other keys (provenance...) are free-form; null means "not given"."""
    from .model.tasks import TASKS

    task = metadata.get("task")
    if task is not None and task not in TASKS:
        return (f"its metadata 'task' is {plain_text(repr(task), 40)}; it must be one of "
                f"{', '.join(TASKS)} (exact spelling)")
    norm = metadata.get("normalization")
    if norm is not None:
        problem = _normalization_problem(norm)
        if problem:
            return f"its stored normalisation {problem} (metadata key 'normalization')"
    for key in ("cpu_bf16", "trained"):
        value = metadata.get(key)
        if value is not None and not isinstance(value, bool):
            return f"its metadata '{key}' is {plain_text(repr(value), 40)}; it must be true or false"
    summary = metadata.get("summary")
    if summary is not None and not isinstance(summary, str):
        return f"its metadata 'summary' is a {type(summary).__name__}; it must be a string"
    return None


def check_tensors(state: Mapping[str, Any]) -> str | None:
    """The problem with tensors that hold no readable data (meta tensors, sparse layouts),
    naming the first, or None."""
    meta = [key for key, tensor in state.items() if tensor.is_meta]
    if meta:
        return (f"{len(meta)} tensor(s) hold no data (meta tensors, e.g. "
                f"'{plain_text(meta[0], 60)}'); save the model after loading real weights")
    sparse = [key for key, tensor in state.items() if tensor.layout != torch.strided]
    if sparse:
        layout = str(state[sparse[0]].layout).replace("torch.", "")
        return (f"{len(sparse)} tensor(s) are sparse ({layout}, e.g. "
                f"'{plain_text(sparse[0], 60)}'); save dense weights (tensor.to_dense())")
    return None
