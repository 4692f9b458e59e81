"""MPRNet's patch split at inference: tiled vs whole-image restore(), and the speed cost.

``restore()`` runs the network without the paper's patch split by default
(``split_patches=False``: stages 1 and 2 see the whole tile instead of its quarters and
halves); ``split_patches=True`` is the paper's inference. For both, on one real image (the
richest ``--size`` crop of the first photo scene of a corpus's benchmark split, or a
photograph file ``--image`` (grey, ``--downscale``, centre crop), with Gaussian noise of
``--sigma``/255; with neither, the plugin's noisy-cells sample):

- **tiled vs whole**: ``restore()`` in one tile (the whole image) against ``restore()`` with
  ``--tile``-px tiles (``--overlap`` px, default 32, blended), fp32, ``strength=1.0``: the
  largest, 99th-percentile and mean absolute difference in % of the whole-image result's
  range, and both PSNRs (photographs only).
- **speed**: the bundled model's forward on one ``--speed-tile``-px tile, split and unsplit
  alternately (``--repeats`` each), the same process and thread count.

    OMP_NUM_THREADS=1 python benchmarks/bench_split_patches.py --image PHOTO.jpg --size 1024
    OMP_NUM_THREADS=1 python benchmarks/bench_split_patches.py --skip-tiled   # speed only

Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _image(corpus: str | None, size: int, sigma: float, path: str | None = None,
           downscale: int = 1) -> tuple[str, np.ndarray, np.ndarray | None]:
    rng = np.random.default_rng(0)
    if path is not None:  # a photograph file: grey, downscaled, centre crop
        import imageio.v3 as iio

        picture = iio.imread(path).astype(np.float32) / 255.0
        grey = picture[..., :3].mean(-1) if picture.ndim == 3 else picture
        d = downscale
        h, w = grey.shape[0] // d * d, grey.shape[1] // d * d
        grey = grey[:h, :w].reshape(h // d, d, w // d, d).mean((1, 3))
        top, left = (grey.shape[0] - size) // 2, (grey.shape[1] - size) // 2
        if min(top, left) < 0:
            raise SystemExit(f"{path} is smaller than {d} x {size} px")
        clean = np.ascontiguousarray(grey[top:top + size, left:left + size])
        noisy = (clean + rng.normal(0, sigma / 255, clean.shape)).astype(np.float32)
        return f"photo {Path(path).name} (grey, /{d}, sigma {sigma:g})", noisy, clean
    if corpus is None:
        from napari_mprnet._sample_data import noisy_cells

        noisy = noisy_cells((size, size))[0].astype(np.float32)
        return "noisy cells (uint16 sample)", noisy, None
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    import bench_quality

    name, clean = bench_quality.real_held_out_images(corpus, size, 1, 0)["photo grey"][0]
    noisy = (clean + rng.normal(0, sigma / 255, clean.shape)).astype(np.float32)
    return f"photo {name} (grey, sigma {sigma:g})", noisy, clean


def _psnr(result: np.ndarray, clean: np.ndarray | None) -> float | None:
    if clean is None:
        return None
    return round(float(10 * np.log10(1 / np.mean((np.clip(result, 0, 1) - clean) ** 2))), 3)


def tiled_vs_whole(label: str, noisy: np.ndarray, clean, tile: int,
                   splits: tuple[bool, ...] = (False, True), overlap: int = 32) -> list[dict]:
    from napari_mprnet import restore

    rows = []
    normalize = "none" if clean is not None else "auto"
    whole_tile = -(-max(noisy.shape) // 8) * 8
    for split in splits:
        runs = {}
        for name, size in (("whole", whole_tile), ("tiled", tile)):
            start = time.perf_counter()
            runs[name] = restore(noisy, "denoise", device="cpu", precision="fp32",
                                 tile_size=size, tile_overlap=overlap, normalize=normalize,
                                 split_patches=split, strength=1.0).astype(np.float64)
            runs[name + "_s"] = time.perf_counter() - start
        span = float(np.ptp(runs["whole"]))
        error = np.abs(runs["tiled"] - runs["whole"]) / span * 100
        row = {"measure": "tiled_vs_whole", "image": label, "size": list(noisy.shape),
               "split_patches": split, "tile": tile, "overlap": overlap,
               "max_pct": round(float(error.max()), 4),
               "p99_pct": round(float(np.percentile(error, 99)), 4),
               "mean_pct": round(float(error.mean()), 5),
               "psnr_whole": _psnr(runs["whole"], clean),
               "psnr_tiled": _psnr(runs["tiled"], clean),
               "whole_s": round(runs["whole_s"], 1), "tiled_s": round(runs["tiled_s"], 1)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def speed(tile: int, repeats: int) -> dict:
    import torch

    from napari_mprnet.api import prepare_model

    model = prepare_model("denoise", "denoise").eval().float()
    x = torch.rand(1, 3, tile, tile)
    times: dict[bool, list[float]] = {True: [], False: []}
    with torch.inference_mode():
        model(x[..., :64, :64])  # warm-up
        for _ in range(repeats):
            for split in (True, False):
                start = time.perf_counter()
                model(x, split_patches=split)
                times[split].append(time.perf_counter() - start)
    row = {"measure": "forward_speed", "tile": tile, "threads": torch.get_num_threads(),
           "split_s": [round(t, 2) for t in times[True]],
           "unsplit_s": [round(t, 2) for t in times[False]],
           "ratio_unsplit_to_split_min": round(min(times[False]) / min(times[True]), 3),
           "ratio_unsplit_to_split_median": round(
               float(np.median(times[False]) / np.median(times[True])), 3)}
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=None, help="real-image corpus folder")
    parser.add_argument("--image", default=None,
                        help="a photograph file instead (grey, downscaled, centre crop)")
    parser.add_argument("--downscale", type=int, default=1, help="--image downscale factor")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--tile", type=int, default=384, help="tile of the tiled run")
    parser.add_argument("--overlap", type=int, default=32, help="its tile overlap")
    parser.add_argument("--speed-tile", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-tiled", action="store_true")
    parser.add_argument("--unsplit-only", action="store_true",
                        help="tiled vs whole without the split only (half the time)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="write every row here")
    args = parser.parse_args(argv)
    rows = []
    if not args.skip_speed:
        rows.append(speed(args.speed_tile, args.repeats))
    if not args.skip_tiled:
        label, noisy, clean = _image(args.corpus, args.size, args.sigma, args.image,
                                     args.downscale)
        rows += tiled_vs_whole(label, noisy, clean, args.tile,
                               (False,) if args.unsplit_only else (False, True), args.overlap)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
