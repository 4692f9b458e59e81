"""What a run reports as it goes: :class:`Progress` steps, and :func:`drive` to consume them."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .tiling import Tile

__all__ = ["Progress", "Tally", "drive"]


@dataclass(frozen=True)
class Progress:
    """How far a run has got: ``done`` of ``total`` tile batches.

    The other fields (not compared) say the same in tiles and in tile pixels (overlaps
    counted: the work done), with the seconds since the run started, so a front end can
    show e.g. "12/36 tiles" and an estimate of the time left from the first unit on.
    """

    done: int
    total: int
    tiles_done: int = field(default=0, compare=False)
    tiles_total: int = field(default=0, compare=False)
    pixels_done: int = field(default=0, compare=False)
    pixels_total: int = field(default=0, compare=False)
    elapsed_s: float = field(default=0.0, compare=False)

    @property
    def fraction(self) -> float:
        if self.pixels_total:
            return self.pixels_done / self.pixels_total
        return self.done / self.total if self.total else 1.0

    @property
    def eta_s(self) -> float | None:
        """Estimated seconds left (None before the first unit is done)."""
        if not self.pixels_done or not self.pixels_total:
            return None
        return self.elapsed_s * (self.pixels_total - self.pixels_done) / self.pixels_done

    def describe(self) -> str:
        """E.g. ``"12/36 tiles, 1.6 of 4.8 Mpix, 0:35 left"``."""
        text = f"{self.tiles_done}/{self.tiles_total} tiles" if self.tiles_total else \
            f"{self.done}/{self.total} batches"
        if self.pixels_total:
            text += f", {self.pixels_done / 1e6:.1f} of {self.pixels_total / 1e6:.1f} Mpix"
        eta = self.eta_s
        if eta is not None:
            minutes, seconds = divmod(round(eta), 60)
            text += f", {minutes}:{seconds:02d} left"
        return text


class Tally:
    """Counts batches, tiles and pixels of a run and makes its :class:`Progress` steps."""

    def __init__(self, work: list[tuple[int, Tile]], batch_size: int) -> None:
        self.work = work
        self.pixels_total = sum(t.height * t.width for _, t in work)
        self.started = time.perf_counter()
        self.batches = 0
        self.tiles = 0
        self.pixels = 0
        self.total = math.ceil(len(work) / batch_size)

    def rebatch(self, batch_size: int) -> None:
        """The remaining tiles now go ``batch_size`` at a time."""
        self.total = self.batches + math.ceil((len(self.work) - self.tiles) / batch_size)

    def advance(self, chunk: list[tuple[int, Tile]]) -> Progress:
        self.batches += 1
        self.tiles += len(chunk)
        self.pixels += sum(t.height * t.width for _, t in chunk)
        return Progress(self.batches, self.total, self.tiles, len(self.work), self.pixels,
                        self.pixels_total, time.perf_counter() - self.started)


def drive(generator: Iterator, progress: Callable | None = None,
          on_step: Callable[[Progress], object] | None = None):
    """Exhaust a progress generator, forwarding ``(done, total)`` to ``progress`` and the
    whole :class:`Progress` to ``on_step``; return the generator's return value."""
    while True:
        try:
            step = next(generator)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(step.done, step.total)
        if on_step is not None:
            on_step(step)
