"""``napari-mprnet restore`` on zarr stores and dask clusters (``--scheduler``/``--workers``).

Kept apart from :mod:`.restore` so that plain TIFF batches never import dask.distributed.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._batch import Job, parse_output_dtype, write_outputs

__all__ = ["add_scale_arguments", "cluster_client", "parse_chunk_size", "restore_lazily"]


def add_scale_arguments(parser: argparse.ArgumentParser) -> None:
    """Options for zarr input and cluster runs."""
    group = parser.add_argument_group(
        "scale-out", "zarr stores (INPUT may be a .zarr folder; the result is a .zarr folder "
        "written chunk by chunk) and dask.distributed clusters")
    where = group.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", default=None,
                       help="run on the running dask scheduler at ADDRESS "
                       "(e.g. tcp://node01:8786)")
    where.add_argument("--workers", metavar="N", type=int, default=None,
                       help="start a local dask cluster of N single-threaded worker "
                       "processes (one per GPU with dask-cuda)")
    group.add_argument("--chunk-size", default="auto",
                       help="Y/X chunk edge in pixels for zarr and cluster runs, rounded to a "
                       "multiple of the tile stride; 'auto' (default) chunks planes above "
                       "~4096 px; 'none' keeps planes whole")


def parse_chunk_size(value: str) -> int | str | None:
    if value in ("auto", None):
        return "auto"
    if str(value).lower() == "none":
        return None
    try:
        size = int(value)
    except ValueError:
        raise ValueError(f"--chunk-size must be 'auto', 'none' or an integer, "
                         f"got {value!r}") from None
    if size < 1:
        raise ValueError(f"--chunk-size must be positive, got {size}")
    return size


@contextlib.contextmanager
def cluster_client(args: argparse.Namespace) -> Iterator[Any]:
    """A distributed client for ``--scheduler``/``--workers`` (None without them)."""
    if args.scheduler is None and args.workers is None:
        yield None
        return
    try:
        from distributed import Client
    except ImportError:
        raise ValueError("--scheduler/--workers need dask.distributed: "
                         "pip install 'napari-mprnet[dask]'") from None
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    cluster = None
    if args.scheduler is not None:
        client = Client(args.scheduler)
    else:
        from ..scale.distributed import local_cluster

        gpus = None if str(args.device).startswith(("auto", "cuda")) else False
        cluster = local_cluster(args.workers, gpus=gpus)
        client = Client(cluster)
    try:
        if not args.quiet:
            print(f"dask cluster: {client.dashboard_link or client.scheduler.address} "
                  f"({len(client.scheduler_info()['workers'])} workers)", file=sys.stderr)
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _read_zarr(path: Path):
    from ..io.image import UnreadableImageError
    from ..io.zarr import read_zarr

    try:
        return read_zarr(path)
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of the reader is "unreadable"
        raise UnreadableImageError(f"cannot read {path.name} as a zarr store "
                                   f"({type(err).__name__}: {err})") from None


def restore_lazily(job: Job, targets: list[Path], args: argparse.Namespace,
                   options: dict) -> None:
    """Restore one input through the lazy path: zarr in -> zarr out (streamed), or an image
    file on the cluster in ``args.client`` -> TIFF. Writes the ``targets`` of ``job``."""
    import dask
    import dask.array as da

    from ..io.image import read_image
    from ..io.zarr import is_zarr_path, write_zarr
    from ..scale.lazy import restore_dask

    client = getattr(args, "client", None)
    zarr_input = is_zarr_path(job.source)
    if zarr_input:
        image = _read_zarr(job.source)
        data, file_axes = image.data, image.axes
    else:
        image = read_image(job.source)
        array, file_axes = image.data, image.axes
        known = (args.axes or file_axes or "").upper()
        if len(known) != array.ndim:
            from ..engine.axes import infer_axes

            known = infer_axes(array.shape)
        # one plane per block along T/Z/C, so that planes spread over the workers
        data = da.from_array(array, chunks=tuple(
            1 if letter not in "YXS" else size for letter, size in zip(known, array.shape)))
    axes = args.axes or file_axes
    results = restore_dask(
        data, task=args.task, model=args.weights, stages=args.stages, axes=axes,
        output_dtype=parse_output_dtype(args.output_dtype, data.dtype), clip=args.clip,
        chunk_size=parse_chunk_size(args.chunk_size),
        client=client, **options,
    )
    results = results if args.stages else [results]
    if axes is None:
        from ..engine.axes import infer_axes

        axes = infer_axes(data.shape)
    progress = contextlib.nullcontext()
    if client is None and not args.quiet:
        from dask.diagnostics import ProgressBar

        progress = ProgressBar(out=sys.stderr)
    with progress:
        if zarr_input:
            from ..engine.noise_level import noise_record

            meta = {"napari_mprnet": {"task": args.task, "source": str(job.source),
                                      **noise_record(options.get("noise"),
                                                     options.get("strength", "auto"),
                                                     args.task)}}
            chosen = [(t, r) for t, r in zip(job.targets, results) if t in targets]
            write_zarr([r for _, r in chosen], [t for t, _ in chosen], axes,
                       overwrite=args.overwrite, attrs=meta, like=image)
            return
        computed = dask.compute(*results)
    write_outputs(job, targets, list(computed), image, axes, args.overwrite)
