"""What a run reports as it goes: :class:`Progress` steps, and :func:`drive` to consume them."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from .tiling import Tile

__all__ = ["FollowingWork", "Progress", "Tally", "drive"]


@dataclass(frozen=True)
class Progress:
    """How far a run has got: ``done`` of ``total`` units of work (tile batches, then the
    windows the automatic strength measures, one unit per plane: :class:`FollowingWork`).

    The other fields (not compared) say the same in tiles, in measured planes and in pixels
    of network work (tile pixels with their overlaps, probe windows counted twice as they
    run through the network twice), with the seconds since the run started, so a front end
    can show e.g. "12/36 tiles" and an estimate of the time left from the first unit on.
    ``done == total`` only once all the work is done.
    ``note`` (empty for work steps) says what a step before the first tile is doing, e.g.
    converting the network; such a step has ``total == 0`` (the amount of work is unknown).
    """

    done: int
    total: int
    tiles_done: int = field(default=0, compare=False)
    tiles_total: int = field(default=0, compare=False)
    pixels_done: int = field(default=0, compare=False)
    pixels_total: int = field(default=0, compare=False)
    elapsed_s: float = field(default=0.0, compare=False)
    probes_done: int = field(default=0, compare=False)
    probes_total: int = field(default=0, compare=False)
    note: str = field(default="", compare=False)

    @property
    def fraction(self) -> float:
        if self.pixels_total:
            return self.pixels_done / self.pixels_total
        if not self.total:
            return 0.0 if self.note else 1.0
        return self.done / self.total

    @property
    def eta_s(self) -> float | None:
        """Estimated seconds left (None before the first unit is done)."""
        if not self.pixels_done or not self.pixels_total:
            return None
        return self.elapsed_s * (self.pixels_total - self.pixels_done) / self.pixels_done

    def describe(self) -> str:
        """E.g. ``"12/36 tiles, 1.6 of 4.8 Mpix, 0:35 left"``, or once the tiles are done
        and the strength is being measured ``"36/36 tiles, strength 2/5 planes, ..."``; a
        step with a ``note`` is described by it."""
        if self.note:
            return self.note
        text = f"{self.tiles_done}/{self.tiles_total} tiles" if self.tiles_total else \
            f"{self.done}/{self.total} batches"
        if self.probes_total and self.tiles_done >= self.tiles_total:
            text += f", strength {self.probes_done}/{self.probes_total} planes"
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


class FollowingWork:
    """Work that follows a tile run (the automatic strength's probe passes), counted into
    its progress from the first step on, so that no step says "done" before the end.

    ``units`` steps of ``pixels`` network pixels in all. :meth:`around` passes a run's steps
    on with the totals raised; :meth:`advance` then makes the steps of the following work.
    """

    def __init__(self, units: int, pixels: int) -> None:
        self.units = int(units)
        self.pixels = int(pixels)
        self.last: Progress | None = None
        self._last_at = time.perf_counter()

    def _raised(self, step: Progress) -> Progress:
        return replace(step, total=step.total + self.units,
                       pixels_total=step.pixels_total + self.pixels,
                       probes_total=self.units)

    def around(self, steps: Generator[Progress, None, Any]) -> Generator[Progress, None, Any]:
        """Yield ``steps`` with this work added to their totals; return their return value."""
        while True:
            try:
                step = next(steps)
            except StopIteration as stop:
                return stop.value
            self.last = self._raised(step)
            self._last_at = time.perf_counter()
            yield self.last

    def advance(self, pixels: int) -> Progress:
        """The step after one more unit of ``pixels`` network pixels."""
        last = self.last or self._raised(Progress(0, 0))
        now = time.perf_counter()
        self.last = replace(last, done=last.done + 1, pixels_done=last.pixels_done + pixels,
                            elapsed_s=last.elapsed_s + now - self._last_at,
                            probes_done=last.probes_done + 1)
        self._last_at = now
        return self.last


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
