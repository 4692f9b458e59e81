"""Training batches prepared ahead, in a worker thread, so that the step loop never waits.

:class:`BatchPrefetcher` draws batches from a :class:`~napari_mprnet.training.data.PatchSampler`
(crops, flips, rotations and whatever the objective adds, e.g. a blind-spot mask) in a
background thread, a few batches ahead of the step that uses them. Each batch comes with the
sampler's random state *after* drawing it, so a checkpoint records the state of the batches
actually consumed and a resumed run repeats the same batches as an uninterrupted one.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["BatchPrefetcher"]

_STOP_POLL_S = 0.1


class BatchPrefetcher:
    """Batches drawn ahead from ``draw`` in one daemon thread.

    Parameters
    ----------
    draw : callable
        Returns the next batch (called only from the worker thread).
    state : callable
        Returns the random state after the last ``draw`` (called right after it).
    depth : int
        Batches kept ready (the worker waits when the queue is full).

    Notes
    -----
    Call :meth:`close` when done (e.g. through ``contextlib.closing``): the thread stops.
    An exception raised by ``draw`` is raised again by :meth:`next`.
    """

    def __init__(self, draw: Callable[[], Any], state: Callable[[], Any], depth: int = 2) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth!r}")
        self._draw = draw
        self._state = state
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="napari-mprnet-batches",
                                        daemon=True)
        self._thread.start()

    def _put(self, item: tuple) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_STOP_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                item: tuple = (self._draw(), self._state(), None)
            except BaseException as err:  # noqa: BLE001 - handed to the consumer
                self._put((None, None, err))
                return
            if not self._put(item):
                return

    def next(self) -> tuple[Any, Any]:
        """Return ``(batch, state_after_batch)``; blocks until the worker has one."""
        while True:
            try:
                batch, state, err = self._queue.get(timeout=_STOP_POLL_S)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("the batch worker stopped unexpectedly") from None
        if err is not None:
            raise err
        return batch, state

    def close(self) -> None:
        """Stop the worker and drop the batches it prepared."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5.0)
