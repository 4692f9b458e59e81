"""A default-exported package (no test input, no range) on uint8, uint16 and float32 images,
run by bioimage.io's own predictor, against ``restore(strength=1.0)``.

One package of a bundled model (``--task``), exported with the defaults, is run by
``bioimageio.core.predict`` on the plugin's noisy-cells sample (uint16) in several types and
ranges: as acquired, x4+500, as uint8 (its 0.5..99.8 percentiles stretched to 0..255), as
float32 in 0..1, as float32 photons (/gain, beyond 0..1) and a dim uint16 field whose values
all stay within 0..255 (read as 8-bit by the package: the one case where the type is not
recoverable from the values). Whole-image and blockwise prediction (``blocksize_parameter``
0 and 1) against restore(strength=1.0) in fp32 and one tile (the same network computation),
as the largest, mean and 99th-percentile absolute difference in % of restore()'s range.

    OMP_NUM_THREADS=1 python benchmarks/bench_bioimageio_dtypes.py --size 384
    python benchmarks/bench_bioimageio_dtypes.py --json docs/benchmarks/bioimageio_dtypes.json

Prints one JSON line per image and prediction. The numbers do not depend on speed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def _cases(size: int) -> dict[str, np.ndarray]:
    from napari_mprnet._sample_data import noisy_cells

    raw = noisy_cells((size, size))[0]
    low, high = np.percentile(raw, (0.5, 99.8))
    unit = np.clip((raw.astype(np.float64) - low) / (high - low), 0, 1)
    return {
        "uint16 as acquired": raw,
        "uint16 x4+500": (raw.astype(np.float64) * 4 + 500).astype(np.uint16),
        "uint8 (stretched)": np.rint(unit * 255).astype(np.uint8),
        "float32 0..1": unit.astype(np.float32),
        "float32 photons (/2.2)": (raw / 2.2).astype(np.float32),
        "uint16 dim, all <= 255": np.rint(40 + unit * 200).astype(np.uint16),
    }


def _predict(package: Path, image: np.ndarray, blocks: int | None = None) -> np.ndarray:
    from bioimageio.core import predict

    sample = predict(model=str(package), inputs=image[None, None],
                     **({} if blocks is None else {"blocksize_parameter": blocks}))
    return np.asarray(sample.members["output0"].data, dtype=np.float64)[0, 0]


def _errors(result: np.ndarray, reference: np.ndarray) -> dict:
    span = float(reference.max() - reference.min())
    error = np.abs(result - reference) / span * 100.0
    return {"max_pct": round(float(error.max()), 4), "mean_pct": round(float(error.mean()), 5),
            "p99_pct": round(float(np.percentile(error, 99)), 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("denoise", "deblur"), default="denoise")
    parser.add_argument("--size", type=int, default=384, help="image side (default 384)")
    parser.add_argument("--blocks", type=int, nargs="*", default=[0, 1],
                        help="blocksize_parameter values (default 0 1)")
    parser.add_argument("--json", type=Path, default=None, help="write every row here")
    args = parser.parse_args(argv)

    import torch

    from napari_mprnet import restore
    from napari_mprnet.bioimageio import export_bioimageio

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        package = export_bioimageio(args.task, Path(tmp) / "default.zip",
                                    name=f"Bundled {args.task}", description="benchmark")
        for label, image in _cases(args.size).items():
            started = time.perf_counter()
            ours = restore(image, args.task, device="cpu", strength=1.0, precision="fp32",
                           tile_size=max(image.shape) + 64).astype(np.float64)
            runs = {"whole": _predict(package, image)}
            for n in args.blocks:
                runs[f"blockwise n={n}"] = _predict(package, image, n)
            for how, result in runs.items():
                row = {"task": args.task, "image": label, "dtype": str(image.dtype),
                       "range": [float(image.min()), float(image.max())], "prediction": how,
                       **_errors(result, ours)}
                rows.append(row)
                print(json.dumps(row), flush=True)
            print(f"# {label}: {time.perf_counter() - started:.0f} s", flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
