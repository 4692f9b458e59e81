"""Training patches and validation crops cut from paired planes (:class:`PairSet`)."""

from __future__ import annotations

import copy

import numpy as np
import torch

from .data import PairSet

__all__ = ["PatchSampler", "center_crops"]



def _check_channels(pairs: PairSet, channels: int) -> None:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if channels == 1:
        for name, plane in zip(pairs.names, pairs.inputs):
            if plane.shape[-1] != 1:
                raise ValueError(
                    f"{name!r} is RGB but the network takes 1 channel; use a 3-channel "
                    "network or convert the images to grey"
                )


def _to_chw(plane: np.ndarray, channels: int) -> np.ndarray:
    """(H, W, c) -> contiguous (channels, H, W); grey copies are identical."""
    chw = plane.transpose(2, 0, 1)
    if chw.shape[0] == 1 and channels == 3:
        chw = np.repeat(chw, 3, axis=0)
    return np.ascontiguousarray(chw, dtype=np.float32)


class PatchSampler:
    """Random aligned patches from paired planes.

    Parameters
    ----------
    pairs : PairSet
        Training planes.
    patch_size : int
        Square patch side, >= 16 and a multiple of 8.
    batch_size : int
        Patches per batch.
    augment : bool
        Apply the same random flips and 90-degree rotation to input and target.
    seed : int
        Seed of the sampler's random generator.
    channels : int
        Network channels (1 or 3); grey planes are replicated to 3 identical channels.
    """

    def __init__(
        self,
        pairs: PairSet,
        patch_size: int,
        batch_size: int,
        *,
        augment: bool = True,
        seed: int = 0,
        channels: int = 3,
    ) -> None:
        if len(pairs) == 0:
            raise ValueError("no training planes to sample from")
        if int(patch_size) != patch_size or patch_size < 16 or patch_size % 8:
            raise ValueError(f"patch_size must be a multiple of 8 and >= 16, got {patch_size!r}")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        _check_channels(pairs, channels)
        for name, plane in zip(pairs.names, pairs.inputs):
            if plane.shape[0] < patch_size or plane.shape[1] < patch_size:
                fits = min(plane.shape[:2]) // 8 * 8
                advice = (f"pass patch_size={fits} (CLI --patch-size {fits}) or less, or drop "
                          "the image" if fits >= 16 else
                          "drop the image (patches are at least 16 pixels)")
                raise ValueError(
                    f"{name!r} ({plane.shape[0]}x{plane.shape[1]}) is smaller than the "
                    f"patch size {patch_size}; {advice}"
                )
        self.pairs = pairs
        self.patch_size = int(patch_size)
        self.batch_size = int(batch_size)
        self.augment = bool(augment)
        self.channels = int(channels)
        areas = np.array([p.shape[0] * p.shape[1] for p in pairs.inputs], dtype=np.float64)
        self._weights = areas / areas.sum()
        self._rng = np.random.default_rng(seed)

    @property
    def generator(self) -> np.random.Generator:
        """The sampler's random generator (its state is :meth:`state_dict`)."""
        return self._rng

    def _patch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        size = self.patch_size
        index = int(rng.choice(len(self.pairs), p=self._weights))
        inp, tgt = self.pairs.inputs[index], self.pairs.targets[index]
        top = int(rng.integers(0, inp.shape[0] - size + 1))
        left = int(rng.integers(0, inp.shape[1] - size + 1))
        a = inp[top : top + size, left : left + size]
        b = tgt[top : top + size, left : left + size]
        if self.augment:
            flip_v, flip_h = rng.random(2) < 0.5
            turns = int(rng.integers(0, 4))
            if flip_v:
                a, b = a[::-1], b[::-1]
            if flip_h:
                a, b = a[:, ::-1], b[:, ::-1]
            a, b = np.rot90(a, turns, axes=(0, 1)), np.rot90(b, turns, axes=(0, 1))
        return _to_chw(a, self.channels), _to_chw(b, self.channels)

    def sample(self, rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw a batch.

        Parameters
        ----------
        rng : numpy.random.Generator, optional
            Generator to draw from; default: the sampler's own (seeded, resumable).

        Returns
        -------
        (torch.Tensor, torch.Tensor)
            Input and target batches, (B, channels, P, P) float32.
        """
        rng = self._rng if rng is None else rng
        patches = [self._patch(rng) for _ in range(self.batch_size)]
        inputs = torch.from_numpy(np.stack([p[0] for p in patches]))
        targets = torch.from_numpy(np.stack([p[1] for p in patches]))
        return inputs, targets

    def state_dict(self) -> dict:
        """The random generator's state (``bit_generator.state``), for resuming."""
        return copy.deepcopy(self._rng.bit_generator.state)

    def load_state_dict(self, state: dict) -> None:
        """Restore a state from :meth:`state_dict`, so later batches repeat exactly."""
        expected = type(self._rng.bit_generator).__name__
        if not isinstance(state, dict) or state.get("bit_generator") != expected:
            raise ValueError(f"not a {expected} generator state: {state!r:.200}")
        self._rng.bit_generator.state = copy.deepcopy(state)


def center_crops(
    pairs: PairSet, size: int | None = None, channels: int = 3
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Validation tensors: whole planes, or centre crops of at most ``size``.

    Height and width are cut down to multiples of 8 (centred), as the network requires.

    Parameters
    ----------
    pairs : PairSet
        Validation planes.
    size : int, optional
        Largest crop side; default: the whole plane.
    channels : int
        Network channels (1 or 3); grey planes are replicated to 3 identical channels.

    Returns
    -------
    list of (torch.Tensor, torch.Tensor)
        One (input, target) pair per plane, each (1, channels, h, w) float32.
    """
    if size is not None and (int(size) != size or size < 8):
        raise ValueError(f"size must be an integer >= 8 or None, got {size!r}")
    _check_channels(pairs, channels)
    out = []
    for name, inp, tgt in zip(pairs.names, pairs.inputs, pairs.targets):
        height, width = inp.shape[:2]
        if size is not None:
            height, width = min(height, int(size)), min(width, int(size))
        height, width = height // 8 * 8, width // 8 * 8
        if height == 0 or width == 0:
            raise ValueError(f"{name!r} ({inp.shape[0]}x{inp.shape[1]}) is smaller than 8x8")
        top = (inp.shape[0] - height) // 2
        left = (inp.shape[1] - width) // 2
        window = (slice(top, top + height), slice(left, left + width))
        out.append(
            (
                torch.from_numpy(_to_chw(inp[window], channels))[None],
                torch.from_numpy(_to_chw(tgt[window], channels))[None],
            )
        )
    return out
