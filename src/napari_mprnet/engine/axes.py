"""Axis handling: turn any supported image into a stack of 2-D planes and back.

Axis letters follow tifffile: T (time), Z (depth), C (channel, processed channel by
channel), Y and X (the plane), S (RGB/RGBA samples, processed jointly). :func:`to_planes`
moves every axis other than Y, X and S to the front and flattens it, giving planes of shape
``(P, H, W, c)`` with ``c`` 1 (grey) or 3 (RGB; alpha dropped); :func:`from_planes` undoes
this exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AXIS_LETTERS", "PlaneLayout", "from_planes", "infer_axes", "parse_axes", "to_planes"]

AXIS_LETTERS = "TZCYXS"
#: Default axes for non-RGB data by number of dimensions.
_DEFAULT_AXES = {2: "YX", 3: "ZYX", 4: "TZYX", 5: "TZCYX"}
_RGB_SIZES = (3, 4)


def infer_axes(shape: tuple[int, ...], rgb: bool | None = None) -> str:
    """Guess the axes of data with ``shape``, following napari's RGB rule.

    Parameters
    ----------
    shape : tuple of int
        Shape of the data.
    rgb : bool or None
        None: data with at least 3 dimensions and a last axis of size 3 or 4 is RGB(A).
        True: the last axis must be RGB(A) samples. False: never RGB.

    Returns
    -------
    str
        E.g. "YX", "ZYX", "TZYX", "TZCYX", "YXS", "ZYXS".
    """
    shape = tuple(int(n) for n in shape)
    ndim = len(shape)
    if ndim < 2:
        raise ValueError(f"an image needs at least 2 dimensions (Y, X), got shape {shape}")
    last_is_rgb = ndim >= 3 and shape[-1] in _RGB_SIZES
    if rgb is True and not last_is_rgb:
        raise ValueError(
            f"rgb=True needs at least 3 dimensions with a last axis of size 3 or 4, "
            f"got shape {shape}"
        )
    is_rgb = last_is_rgb if rgb is None else bool(rgb)
    plane_ndim = ndim - 1 if is_rgb else ndim
    if plane_ndim not in _DEFAULT_AXES:
        raise ValueError(
            f"cannot guess the axes of {ndim}-D data with shape {shape}; "
            f"pass axes= explicitly using letters from {AXIS_LETTERS}"
        )
    return _DEFAULT_AXES[plane_ndim] + ("S" if is_rgb else "")


def parse_axes(axes: str, shape: tuple[int, ...]) -> str:
    """Validate a user-supplied axes string for data with ``shape``.

    Letters are case-insensitive and must come from :data:`AXIS_LETTERS`, one per dimension,
    without repeats, including Y and X; an S axis must have size 3 or 4.

    Returns
    -------
    str
        The axes in upper case.
    """
    if not isinstance(axes, str):
        raise TypeError(f"axes must be a string such as 'ZYX', got {type(axes).__name__}")
    shape = tuple(int(n) for n in shape)
    upper = axes.upper()
    if len(upper) != len(shape):
        raise ValueError(
            f"axes {axes!r} has {len(upper)} letters but the data has {len(shape)} "
            f"dimensions (shape {shape}); give one letter per dimension"
        )
    for letter in upper:
        if letter not in AXIS_LETTERS:
            raise ValueError(
                f"axes {axes!r} contains unknown letter {letter!r}; use letters from {AXIS_LETTERS}"
            )
    repeated = sorted({letter for letter in upper if upper.count(letter) > 1})
    if repeated:
        raise ValueError(f"axes {axes!r} repeats {', '.join(repeated)}; use each letter once")
    missing = [letter for letter in "YX" if letter not in upper]
    if missing:
        raise ValueError(f"axes {axes!r} must contain Y and X; missing {', '.join(missing)}")
    if "S" in upper and shape[upper.index("S")] not in _RGB_SIZES:
        raise ValueError(
            f"the S (RGB samples) axis of {axes!r} must have size 3 or 4, got "
            f"{shape[upper.index('S')]}; use C for other channel axes"
        )
    return upper


@dataclass(frozen=True)
class PlaneLayout:
    """How original data maps to planes ``(P, H, W, c)``; made by :func:`to_planes`.

    Parameters
    ----------
    axes : str
        Resolved axes of the original data.
    shape : tuple of int
        Original shape.
    order : tuple of int
        Permutation bringing the data to (leading axes..., Y, X[, S]).
    lead_shape : tuple of int
        Sizes of the leading (flattened) axes, in their original order.
    samples : int
        Size of the S axis (3 or 4), or 0 without one.
    """

    axes: str
    shape: tuple[int, ...]
    order: tuple[int, ...]
    lead_shape: tuple[int, ...]
    samples: int = 0

    @classmethod
    def from_axes(cls, axes: str, shape: tuple[int, ...]) -> PlaneLayout:
        """Build the layout for data with ``shape`` and (validated) ``axes``."""
        shape = tuple(int(n) for n in shape)
        axes = parse_axes(axes, shape)
        lead = tuple(i for i, letter in enumerate(axes) if letter not in "YXS")
        order = lead + (axes.index("Y"), axes.index("X"))
        samples = 0
        if "S" in axes:
            order += (axes.index("S"),)
            samples = shape[axes.index("S")]
        return cls(axes, shape, order, tuple(shape[i] for i in lead), samples)

    @property
    def n_planes(self) -> int:
        """Number of 2-D planes ``P``."""
        return int(np.prod(self.lead_shape, dtype=np.int64))

    @property
    def height(self) -> int:
        """Size of the Y axis."""
        return self.shape[self.axes.index("Y")]

    @property
    def width(self) -> int:
        """Size of the X axis."""
        return self.shape[self.axes.index("X")]

    @property
    def channels(self) -> int:
        """Channels per plane: 3 for RGB(A), otherwise 1."""
        return 3 if self.samples else 1

    @property
    def has_alpha(self) -> bool:
        """Whether the data is RGBA (the alpha channel bypasses processing)."""
        return self.samples == 4

    @property
    def planes_shape(self) -> tuple[int, int, int, int]:
        """Shape ``(P, H, W, c)`` of the planes."""
        return (self.n_planes, self.height, self.width, self.channels)

    def _canonical(self, data: np.ndarray) -> np.ndarray:
        """``data`` (original layout) as ``(P, H, W, samples or 1)``, a view where possible."""
        moved = np.transpose(data, self.order)
        return moved.reshape(self.n_planes, self.height, self.width, self.samples or 1)


def to_planes(data: np.ndarray, axes: str) -> tuple[np.ndarray, PlaneLayout]:
    """Reshape ``data`` with ``axes`` into a stack of 2-D planes.

    Returns
    -------
    planes : numpy.ndarray
        Shape ``(P, H, W, c)``: every axis except Y, X and S flattened into ``P``; ``c`` is 1
        for grey data and 3 for RGB(A) (alpha dropped). A view of ``data`` when possible.
    layout : PlaneLayout
        What :func:`from_planes` needs to undo this.
    """
    data = np.asarray(data)
    layout = PlaneLayout.from_axes(axes, data.shape)
    planes = layout._canonical(data)
    if layout.has_alpha:
        planes = planes[..., :3]
    return planes, layout


def from_planes(
    planes: np.ndarray, layout: PlaneLayout, alpha_source: np.ndarray | None = None
) -> np.ndarray:
    """Undo :func:`to_planes`: ``(P, H, W, c)`` back to the original axes and shape.

    Parameters
    ----------
    planes : numpy.ndarray
        Processed planes of shape ``layout.planes_shape`` (any dtype).
    layout : PlaneLayout
        From :func:`to_planes`.
    alpha_source : numpy.ndarray, optional
        For RGBA data, the original data; its alpha channel is cast to ``planes.dtype`` and
        re-attached unchanged. Required for RGBA, ignored otherwise.

    Returns
    -------
    numpy.ndarray
        Array of shape ``layout.shape`` with ``planes.dtype``.
    """
    planes = np.asarray(planes)
    if planes.shape != layout.planes_shape:
        raise ValueError(
            f"planes have shape {planes.shape} but this layout expects {layout.planes_shape}"
        )
    if layout.has_alpha:
        if alpha_source is None:
            raise ValueError("RGBA data needs alpha_source (the original data) to restore alpha")
        alpha_source = np.asarray(alpha_source)
        if alpha_source.shape != layout.shape:
            raise ValueError(
                f"alpha_source has shape {alpha_source.shape}, expected the original shape "
                f"{layout.shape}"
            )
        alpha = layout._canonical(alpha_source)[..., 3:].astype(planes.dtype)
        planes = np.concatenate([planes, alpha], axis=-1)
    canonical_shape = layout.lead_shape + (layout.height, layout.width)
    if layout.samples:
        canonical_shape += (layout.samples,)
    restored = planes.reshape(canonical_shape)
    return np.transpose(restored, np.argsort(layout.order))
