"""bioimage.io packages of the bundled models, run by bioimage.io's own predictor.

Two questions, each answered with ``bioimageio.core.predict`` on the plugin's own samples
(noisy cells for the denoiser, blurred cells for the deblurrer, uint16), every package made
by :func:`napari_mprnet.bioimageio.export_bioimageio`:

- **blockwise vs whole-image prediction**: for each declared ``--halos`` and each input block
  side in ``--blocks`` (the halo included, as bioimageio.core counts it), the largest, mean
  and 99th-percentile absolute difference between blockwise and whole-image prediction, in %
  of the whole-image output's range; for two intensity maps: ``per-image`` (the packaged
  network normalises each input, i.e. each block, by its own percentiles: the default) and
  ``fixed`` (one ``scale_linear`` map, restore()'s percentiles of the whole image: the
  network's own block effects alone). Also where the largest difference lies (distance to
  the nearest block seam and to the whole image's centre lines, where MPRNet's stage 1 and
  2 split their input).
- **whole-image prediction vs restore()**: the per-image package on the raw image, the same
  image x4+500 and as uint8 (its own uint8 package), against ``restore()`` in one tile
  (fp32: what whole-image prediction computes) and with its CPU defaults (tiles of at most
  384 px, blended: on larger images restore() itself is tiled; and bf16 where the CPU has
  it).

    python benchmarks/bench_bioimageio_blocks.py                       # denoiser, 384 px
    python benchmarks/bench_bioimageio_blocks.py --task deblur --halos 32 64 --blocks 256 384
    python benchmarks/bench_bioimageio_blocks.py --json docs/benchmarks/bioimageio_blocks.json

Prints one JSON line per measurement; ``--json PATH`` writes them all. Run it with
``OMP_NUM_THREADS=1`` on a shared machine (the numbers do not depend on speed).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def _image(task: str, size: int) -> np.ndarray:
    from napari_mprnet._sample_data import blurred_cells, noisy_cells

    if task == "denoise":
        return noisy_cells((size, size))[0]
    blurred = blurred_cells()[0]
    if size > min(blurred.shape):
        raise SystemExit(f"the blurred-cells sample is {blurred.shape}; use --size <= "
                         f"{min(blurred.shape)}")
    return np.ascontiguousarray(blurred[:size, :size])


def _predict(package: Path, image: np.ndarray, block: int | None = None) -> np.ndarray:
    from bioimageio.core import predict

    shape = None if block is None else {"input0": {"batch": 1, "channel": 1, "y": block,
                                                   "x": block}}
    sample = predict(model=str(package), inputs=image[None, None], input_block_shape=shape)
    return np.asarray(sample.members["output0"].data, dtype=np.float64)[0, 0]


def _errors(result: np.ndarray, reference: np.ndarray) -> dict:
    span = float(reference.max() - reference.min())
    error = np.abs(result - reference) / span * 100.0
    return {"max_pct": round(float(error.max()), 4), "mean_pct": round(float(error.mean()), 5),
            "p99_pct": round(float(np.percentile(error, 99)), 4), "_map": error}


def _inner_starts(size: int, block: int, halo: int) -> list[int]:
    """Where bioimageio.core's inner blocks start (its split, read from its source: inner
    side block - 2 halo, the last block shifted back to end at the edge)."""
    inner = block - 2 * halo
    return sorted({min(p, size - inner) for p in range(0, size, inner)})


def _seams(size: int, block: int, halo: int) -> list[int]:
    """Positions where inner blocks meet."""
    inner, starts = block - 2 * halo, _inner_starts(size, block, halo)
    return sorted({s for s in starts if s > 0} | {s + inner for s in starts if s + inner < size})


def _block_centres(size: int, block: int, halo: int) -> list[int]:
    """The centre line of each block (halo included): where MPRNet splits a block."""
    return [s - halo + block // 2 for s in _inner_starts(size, block, halo)]


def _where(error: np.ndarray, block: int, halo: int) -> dict:
    y, x = np.unravel_index(int(np.argmax(error)), error.shape)
    seams_y, seams_x = (_seams(n, block, halo) for n in error.shape)
    to_seam = min([abs(y - s) for s in seams_y] + [abs(x - s) for s in seams_x] + [10**6])
    to_centre = min(abs(y - error.shape[0] // 2), abs(x - error.shape[1] // 2))
    to_block_centre = [min(abs(v - c) for c in _block_centres(n, block, halo))
                       for v, n in ((y, error.shape[0]), (x, error.shape[1]))]
    band = np.ones_like(error, dtype=bool)  # away from the whole image's centre lines
    for axis, n in enumerate(error.shape):
        index = [slice(None)] * 2
        index[axis] = slice(n // 2 - 8, n // 2 + 8)
        band[tuple(index)] = False
    away = np.ones_like(error, dtype=bool)  # away from every block's centre lines
    for axis, n in enumerate(error.shape):
        for centre in _block_centres(n, block, halo):
            index = [slice(None)] * 2
            index[axis] = slice(max(0, centre - 16), centre + 16)
            away[tuple(index)] = False
    beyond = round(float(error[away].max()), 4) if away.any() else None
    return {"worst_yx": [int(y), int(x)], "worst_to_seam_px": int(to_seam),
            "worst_to_centre_line_px": int(to_centre),
            "worst_to_block_centre_line_px_yx": [int(d) for d in to_block_centre],
            "max_pct_beyond_8px_of_centre_lines": round(float(error[band].max()), 4),
            "max_pct_beyond_16px_of_block_centre_lines": beyond}


def blockwise(task: str, image: np.ndarray, halos: list[int], blocks: list[int],
              mappings: list[str], folder: Path, tile: int) -> list[dict]:
    from napari_mprnet.bioimageio import export_bioimageio
    from napari_mprnet.engine.normalize import choose_normalization

    norm = choose_normalization(image, "percentile")
    rows = []
    for halo in halos:
        for mapping in mappings:
            package = folder / f"{task}_{mapping}_h{halo}.zip"
            export_bioimageio(task, package, name=f"Bundled {task} ({mapping})",
                              description="benchmark package", test_input=image, halo=halo,
                              tile=tile, min_size=16, input_range=None if mapping == "per-image" else
                              (norm.low, norm.high))
            start = time.perf_counter()
            whole = _predict(package, image)
            whole_s = time.perf_counter() - start
            for block in blocks:
                if block - 2 * halo < 16 or block > min(image.shape):
                    continue
                start = time.perf_counter()
                result = _predict(package, image, block)
                errors = _errors(result, whole)
                row = {"measure": "blockwise_vs_whole", "task": task, "size": image.shape[0],
                       "mapping": mapping, "halo": halo, "tile": tile, "block": block,
                       "on_grid": _on_grid(image.shape, block, halo, tile),
                       **{k: v for k, v in errors.items() if not k.startswith("_")},
                       **_where(errors["_map"], block, halo),
                       "whole_s": round(whole_s, 1),
                       "blockwise_s": round(time.perf_counter() - start, 1)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def _on_grid(shape: tuple[int, ...], block: int, halo: int, tile: int) -> bool:
    """Whether every inner block starts and ends on the packaged network's tile grid (then
    blockwise prediction runs the network on the same tile windows as whole-image)."""
    if not tile:  # no grid: the packaged network runs on its whole input
        return False
    return all(s % tile == 0 and (e == n or e % tile == 0)
               for n in shape for s in _inner_starts(n, block, halo)
               for e in [min(s + block - 2 * halo, n)])


def whole_vs_restore(task: str, image: np.ndarray, folder: Path, grid: int,
                     inputs: list[str] | None = None) -> list[dict]:
    from napari_mprnet import restore
    from napari_mprnet.bioimageio import export_bioimageio

    rows = []
    shifted = np.clip(image.astype(np.float64) * 4 + 500, 0, 65535).astype(np.uint16)
    as_uint8 = np.clip(np.rint(image / max(1.0, np.percentile(image, 99.9)) * 255), 0,
                       255).astype(np.uint8)
    packages = {}
    for dtype, reference in (("uint16", image), ("uint8", as_uint8)):
        packages[dtype] = export_bioimageio(
            task, folder / f"{task}_{dtype}.zip", name=f"Bundled {task} {dtype}",
            description="benchmark package", test_input=reference, tile=grid)
    for label, raw in (("raw uint16", image), ("uint16 x4+500", shifted),
                       ("uint8", as_uint8)):
        if inputs is not None and label not in inputs:
            continue
        whole = _predict(packages[raw.dtype.name], raw)
        one_tile = -(-max(raw.shape) // 8) * 8
        for precision, tile in (("fp32", one_tile), ("fp32", "auto"), (None, "auto")):
            ours = restore(raw, task, device="cpu", precision=precision, tile_size=tile,
                           strength=1.0).astype(np.float64)  # the network's output itself
            errors = _errors(whole, ours)
            row = {"measure": "whole_vs_restore", "task": task, "input": label,
                   "size": raw.shape[0], "tile": grid,
                   "restore_precision": precision or "cpu default",
                   "restore_tile": "one tile" if tile == one_tile else "auto (cpu)",
                   **{k: v for k, v in errors.items() if not k.startswith("_")}}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=("denoise", "deblur"), default="denoise")
    parser.add_argument("--size", type=int, nargs="+", default=[384],
                        help="image side(s) (px)")
    parser.add_argument("--halos", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--blocks", type=int, nargs="+", default=[128, 192, 256, 320])
    parser.add_argument("--tile", type=int, default=None,
                        help="the packaged network's tile grid, 0: none (default: export's)")
    parser.add_argument("--mappings", nargs="+", choices=("per-image", "fixed"),
                        default=["per-image", "fixed"])
    parser.add_argument("--skip-restore", action="store_true",
                        help="only the blockwise measurements")
    parser.add_argument("--skip-blockwise", action="store_true",
                        help="only the restore() comparison")
    parser.add_argument("--restore-size", type=int, default=None,
                        help="image side of the restore() comparison (default: the first "
                        "--size)")
    parser.add_argument("--restore-inputs", nargs="+", default=None,
                        choices=("raw uint16", "uint16 x4+500", "uint8"),
                        help="inputs of the restore() comparison (default: all three)")
    parser.add_argument("--json", type=Path, default=None, help="write every row here")
    args = parser.parse_args(argv)

    from napari_mprnet.bioimageio import TILE

    tile = TILE if args.tile is None else args.tile
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in [] if args.skip_blockwise else args.size:
            rows += blockwise(args.task, _image(args.task, size), args.halos, args.blocks,
                              args.mappings, Path(tmp), tile)
        if not args.skip_restore:
            image = _image(args.task, args.restore_size or args.size[0])
            rows += whole_vs_restore(args.task, image, Path(tmp), tile, args.restore_inputs)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
