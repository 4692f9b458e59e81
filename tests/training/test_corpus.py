"""The real-image corpus: preparation steps of tools/build_corpus.py (synthetic inputs, no
network) and the reader napari_mprnet.training.corpus."""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        spec = importlib.util.spec_from_file_location(f"{name}_under_test",
                                                      ROOT / "tools" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "tools"))


prep = _load("corpus_prep")


def _texture(seed: int, shape=(300, 300)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    from scipy import ndimage

    return np.clip(ndimage.gaussian_filter(rng.random(shape), 2) * 4 - 1.5, 0, 1).astype(
        np.float32)


def _scene(seed: int, shape=(400, 600)) -> np.ndarray:
    """Large-scale structure (what a photograph's thumbnail shows) plus fine texture."""
    from scipy import ndimage

    coarse = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 30)
    coarse = (coarse - coarse.min()) / (coarse.max() - coarse.min())
    return (0.8 * coarse + 0.2 * _texture(seed + 100, shape)).astype(np.float32)


def _image(image_id, scene, kind="photo", img=None, **info):
    return prep.PreparedImage(image_id, scene, kind, _texture(len(image_id)) if img is None
                              else img, {"source": image_id.split("/")[0], **info})


def test_box_downscale_means_blocks_and_drops_the_remainder():
    img = np.arange(7 * 5, dtype=np.float32).reshape(7, 5)
    out = prep.box_downscale(img, 2)
    assert out.shape == (3, 2)
    assert out[0, 0] == pytest.approx(img[:2, :2].mean())
    assert out[2, 1] == pytest.approx(img[4:6, 2:4].mean())
    colour = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    assert prep.box_downscale(colour, 4).shape == (2, 2, 3)
    # white noise loses variance by the block size: artefacts and sensor noise shrink
    noise = np.random.default_rng(1).standard_normal((400, 400)).astype(np.float32)
    assert prep.box_downscale(noise, 2).std() == pytest.approx(0.5, rel=0.05)
    with pytest.raises(ValueError, match="factor"):
        prep.box_downscale(img, 0)


def test_gradient_rejection_drops_flat_and_blurred_photo_crops_keeps_dark_fields():
    from scipy import ndimage

    sharp = _texture(0, (128, 128))
    flat = np.full((128, 128), 0.6, np.float32)
    blurred = ndimage.gaussian_filter(sharp, 8)
    assert prep.keep_crop(sharp, "photo")
    assert not prep.keep_crop(flat, "photo")
    assert not prep.keep_crop(blurred, "photo")
    # a dark microscopy field with a few cells is kept, an empty one is not
    field = np.zeros((128, 128), np.float32)
    field[60:70, 60:70] = 0.8
    assert prep.keep_crop(field, "microscopy")
    assert not prep.keep_crop(np.zeros((128, 128), np.float32), "microscopy")


def test_tile_crops_cover_the_image_and_leave_out_flat_parts():
    img = np.full((300, 520), 0.5, np.float32)
    img[:, :256] = _texture(3, (300, 256))
    crops = prep.tile_crops(_image("a/x", "x", img=img), 256)
    boxes = [c.box for c in crops]
    assert all(h == 256 and w == 256 for _, _, h, w in boxes)
    assert all(left < 256 for _, left, _, _ in boxes)  # the flat right half is rejected
    assert {top for top, *_ in boxes} == {0, 44}  # evenly spaced to the bottom edge
    assert prep.tile_crops(_image("a/y", "y", img=_texture(1, (100, 100))), 256) == []


def test_dedupe_drops_the_same_photo_at_another_size_only():
    base = _scene(5)
    small = prep.box_downscale(base, 2)
    other = _scene(6)
    images = [_image("a/big", "big", img=base), _image("b/small", "small", img=small),
              _image("c/other", "other", img=other)]
    kept, dropped = prep.dedupe(images)
    assert [i.image_id for i in kept] == ["a/big", "c/other"]
    assert dropped == ["b/small"]
    # images of one scene (stack planes, stereo pairs) are never dropped
    same = [_image("a/z0", "s", img=base), _image("a/z1", "s", img=small)]
    assert len(prep.dedupe(same)[0]) == 2


def test_split_by_scene_never_leaks_and_holds_out_enough():
    photos = [_image(f"p{i % 7}/img{i}_{v}", f"p{i % 7}/scene{i}", img=np.zeros((300, 300)))
              for i in range(40) for v in range(2)]
    dark = np.zeros((256, 256), np.float32)
    dark[100:120, 100:120] = 1
    fields = [_image(f"bbbc/f{i}", f"bbbc/f{i}", "microscopy", dark, bit_depth=8)
              for i in range(8)]
    fields += [_image(f"spots/f{i}", f"spots/f{i}", "microscopy", dark + 0.5, bit_depth=12)
               for i in range(4)]
    fields += [_image("single/only", "single/only", "microscopy", dark, bit_depth=16)]
    images = photos + fields
    splits = prep.split_scenes(images, benchmark_photos=20, val_photos=5, benchmark_fields=4,
                               val_fields=2)
    assert set(splits.values()) <= {"train", "val", "benchmark"}
    by_split = {s: [i for i in images if splits[i.scene] == s] for s in prep.SPLITS}
    photo_scenes = {s: {i.scene for i in by_split[s] if i.kind == "photo"} for s in prep.SPLITS}
    assert len(photo_scenes["benchmark"]) == 20 and len(photo_scenes["val"]) == 5
    field_scenes = {s: {i.scene for i in by_split[s] if i.kind == "microscopy"}
                    for s in prep.SPLITS}
    assert len(field_scenes["benchmark"]) == 4 and len(field_scenes["val"]) == 2
    # the benchmark has an 8-bit dark field and so has the training pool
    for split in ("benchmark", "train"):
        assert any(prep.is_dark_8bit_field(i) for i in by_split[split])
    assert splits["single/only"] == "train"  # a source with one scene is never held out
    # deterministic and independent of the listing order
    assert prep.split_scenes(images[::-1], benchmark_photos=20, val_photos=5,
                             benchmark_fields=4, val_fields=2) == splits


def test_manifest_and_reader_round_trip(tmp_path):
    from napari_mprnet.training import corpus

    images = [_image("p/a", "p/a", img=_texture(1, (300, 300)), licence="CC0"),
              _image("p/b", "p/b", img=_texture(2, (300, 300)), licence="CC0"),
              _image("m/c", "m/c", "microscopy", _texture(3, (256, 256)), bit_depth=8)]
    splits = {"p/a": "train", "p/b": "benchmark", "m/c": "train"}
    crops = [c for img in images for c in prep.tile_crops(img, 256)]
    manifest = prep.write_corpus(tmp_path, crops, splits, ["p/dup"])
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    assert on_disk["dropped_duplicates"] == ["p/dup"]
    assert on_disk["counts"]["train"]["photo"] == {"crops": 4, "scenes": 1}
    for entry in on_disk["entries"]:
        assert entry["split"] == splits[entry["scene"]]
        assert entry["file"].startswith(f"crops/{entry['split']}/{entry['kind']}/")
    train = corpus.corpus_images(tmp_path, "train", "photo")
    assert len(train) == 4 and all(e["scene"] == "p/a" for _, e in train)
    arr, entry = train[0]
    top, left, h, w = entry["box"]
    assert np.abs(arr - images[0].image[top : top + h, left : left + w]).max() < 1e-4
    assert entry["licence"] == "CC0"
    with pytest.raises(ValueError, match="no microscopy crops"):
        corpus.corpus_images(tmp_path, "val", "microscopy")
    with pytest.raises(ValueError, match="build_corpus"):
        corpus.read_manifest(tmp_path / "missing")


def test_clean_image_pool_draws_real_families_from_the_train_split_only(tmp_path):
    from napari_mprnet.training.synthetic import clean_image_pool

    images = [_image("p/a", "p/a", img=_texture(1, (256, 256))),
              _image("p/b", "p/b", img=_texture(2, (256, 256)) * 0.5)]
    crops = [c for img in images for c in prep.tile_crops(img, 256)]
    prep.write_corpus(tmp_path, crops, {"p/a": "train", "p/b": "val"})
    pool, info = clean_image_pool("train", 64, 6, 0, families={"photo": 1.0},
                                  corpus=str(tmp_path), return_info=True)
    assert len(pool) == 6 and all(i["source"].startswith("p/a@") for i in info)
    _val, val_info = clean_image_pool("val", 64, 3, 0, families={"photo": 1.0},
                                     corpus=str(tmp_path), return_info=True)
    assert all(i["source"].startswith("p/b@") for i in val_info)
    with pytest.raises(ValueError, match="families"):
        clean_image_pool("train", 64, 2, 0, families={"photo": 1.0})  # no corpus given


def test_qres_reader_lists_plain_and_compressed_files():
    sources = _load("corpus_sources")

    def name_entry(name: str) -> bytes:
        return struct.pack(">HI", len(name), 0) + name.encode("utf-16-be")

    names = name_entry("img") + name_entry("a.png") + name_entry("b.png")
    second = len(name_entry("img"))
    third = second + len(name_entry("a.png"))
    payload_plain = b"plain-bytes"
    packed = struct.pack(">I", 99) + zlib.compress(b"z" * 99)
    data_section = (struct.pack(">I", len(payload_plain)) + payload_plain
                    + struct.pack(">I", len(packed)) + packed)

    def node(*f: int) -> bytes:
        return struct.pack(">IH", *f[:2]) + struct.pack(">II", *f[2:]) + b"\0" * 8

    tree = (node(0, 2, 1, 1)  # root: 1 child starting at node 1
            + node(0, 2, 2, 2)  # "img": 2 children from node 2
            + struct.pack(">IHHHI", second, 0, 0, 0, 0) + b"\0" * 8
            + struct.pack(">IHHHI", third, 1, 0, 0, 4 + len(payload_plain)) + b"\0" * 8)
    header_size = 24
    tree_at, data_at = header_size, header_size + len(tree)
    names_at = data_at + len(data_section)
    blob = (b"qres" + struct.pack(">IIIII", 3, tree_at, data_at, names_at, 0) + tree
            + data_section + names)
    files = sources.read_qres(blob)
    assert files == {"/img/a.png": payload_plain, "/img/b.png": b"z" * 99}
    with pytest.raises(ValueError, match="qres"):
        sources.read_qres(b"nope" + b"\0" * 20)


def test_train_defaults_on_a_corpus_stops_and_resumes_from_its_checkpoint(tmp_path):
    """--corpus feeds the real train/val splits, --stop-file ends the run cleanly with a
    model and a checkpoint, and the same command continues from that checkpoint."""
    pytest.importorskip("torch")
    from napari_mprnet.weights import load_model

    corpus_dir = tmp_path / "corpus"
    images = [_image(f"p/{i}", f"p/{i}", img=_texture(i, (128, 128))) for i in range(3)]
    images += [_image(f"m/{i}", f"m/{i}", "microscopy", _texture(9 + i, (128, 128)))
               for i in range(2)]
    crops = [c for img in images for c in prep.tile_crops(img, 128)]
    prep.write_corpus(corpus_dir, crops, {"p/0": "train", "p/1": "val", "p/2": "benchmark",
                                          "m/0": "train", "m/1": "val"})
    spec = importlib.util.spec_from_file_location("train_defaults_corpus",
                                                  ROOT / "tools" / "train_defaults.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    ckpt, stop, out = tmp_path / "run" / "ckpt.pt", tmp_path / "STOP", tmp_path / "out"
    command = ["--tiny", "--task", "denoise", "--device", "cpu", "--pairs", "4",
               "--val-pairs", "1", "--patch-size", "16", "--val-size", "32", "--batch-size",
               "1", "--steps", "4", "--corpus", str(corpus_dir), "--families",
               "photo=1,microscopy=1", "--checkpoint", str(ckpt), "--checkpoint-every", "2",
               "--stop-file", str(stop), "--out-dir", str(out)]
    stop.touch()
    first = script.main(command)[0]
    assert first["steps"] == 1 and ckpt.exists()
    stop.unlink()
    second = script.main(command)[0]
    assert second["steps"] == 4
    model = load_model(out / "denoise.safetensors")
    prov = model.metadata["provenance"]
    assert prov["data"]["corpus"]["counts"]["benchmark"]["photo"]["crops"] == 1
    assert set(prov["data"]["corpus"]["sources"]) == {"p", "m"}  # benchmark never summarised
    assert prov["data"]["families"] == {"photo": 1.0, "microscopy": 1.0}
    assert "real and synthetic" in model.metadata["summary"]
    with pytest.raises(SystemExit):  # real families need a corpus
        script.main(["--tiny", "--dry-run", "--families", "photo=1"])


def _bench():
    spec = importlib.util.spec_from_file_location("bench_quality_corpus",
                                                  ROOT / "benchmarks" / "bench_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generalised_anscombe_inverse_is_unbiased():
    bench = _bench()
    rng = np.random.default_rng(0)
    for rate in (3.0, 20.0, 300.0):
        counts = rng.poisson(rate, 200000) + 2.0 * rng.standard_normal(200000)
        stabilised = bench.anscombe(counts, 2.0)
        assert stabilised.std() == pytest.approx(1.0, abs=0.08)  # variance stabilised
        assert bench.inverse_anscombe(stabilised.mean(), 2.0) == pytest.approx(rate, rel=0.03)


def test_bench_quality_on_a_corpus_reports_per_image_and_reuses_baselines(tmp_path):
    pytest.importorskip("torch")
    bench = _bench()
    corpus_dir = tmp_path / "corpus"
    images = [_image(f"p/{i}", f"p/{i}", img=_texture(i, (64, 64))) for i in range(2)]
    images.append(_image("m/f", "m/f", "microscopy", _texture(7, (64, 64))))
    crops = [c for img in images for c in prep.tile_crops(img, 64, min_side=64)]
    prep.write_corpus(corpus_dir, crops, {"p/0": "benchmark", "p/1": "benchmark",
                                          "m/f": "benchmark"})
    common = ["--corpus", str(corpus_dir), "--size", "64", "--tile", "0", "--photos", "2",
              "--fields", "1", "--sigmas", "25", "--photons", "30", "--no-bm3d"]
    first = bench.main([*common, "--json", str(tmp_path / "a.json")])
    rows = first["rows"]
    assert [(r["data"], r["level"], r["n"]) for r in rows] == [
        ("photo grey", "sigma 25", 2), ("microscopy", "30 photons", 1)]
    per = rows[0]["results"]["NL-means"]["per_image"]
    assert set(per) == {"p/0", "p/1"}
    assert np.mean(list(per.values())) == pytest.approx(rows[0]["results"]["NL-means"]["psnr"],
                                                       abs=1e-3)
    second = bench.main([*common, "--baselines-from", str(tmp_path / "a.json")])
    again = second["rows"][0]["results"]
    assert again["NL-means"].get("reused") and "reused" not in again["model"]
    assert again["NL-means"]["psnr"] == rows[0]["results"]["NL-means"]["psnr"]
    assert again["model"]["psnr"] == pytest.approx(rows[0]["results"]["model"]["psnr"],
                                                   abs=1e-4)
    with pytest.raises(SystemExit, match="other inputs"):
        bench.main([*common[:-3], "15", "--photons", "30", "--no-bm3d", "--baselines-from",
                    str(tmp_path / "a.json")])
    # the same corpus folder rebuilt with another field: its baselines are not reused
    changed = [*images[:2], _image("m/f", "m/f", "microscopy", _texture(8, (64, 64)))]
    crops = [c for img in changed for c in prep.tile_crops(img, 64, min_side=64)]
    prep.write_corpus(corpus_dir, crops, {"p/0": "benchmark", "p/1": "benchmark",
                                          "m/f": "benchmark"})
    with pytest.raises(SystemExit, match="other inputs"):
        bench.main([*common, "--baselines-from", str(tmp_path / "a.json")])


def _field_with_own_noise(own_sd: float, side: int, seed: int = 3) -> np.ndarray:
    """A smooth dark fluorescence-like field (mean about 0.1) plus white noise of its own."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    blobs = ndimage.gaussian_filter(rng.random((side, side)), 6)
    blobs = (blobs - blobs.min()) / (blobs.max() - blobs.min())
    return (0.02 + 0.2 * blobs ** 3 + rng.normal(0, own_sd, (side, side))).astype(np.float32)


def test_noisy_fields_are_binned_until_their_own_noise_is_small_and_clean_ones_are_kept():
    added = np.sqrt(0.05 / prep.REFERENCE_PHOTONS + (prep.REFERENCE_READ_NOISE
                                                     / prep.REFERENCE_PHOTONS) ** 2)
    clean = _field_with_own_noise(0.0005, 512)
    out, factor, ratio = prep.bin_until_clean(clean)
    assert factor == 1 and out.shape == clean.shape and ratio < prep.MAX_OWN_NOISE_RATIO

    noisy = _field_with_own_noise(1.7 * added, 512)  # own noise well above the added noise
    assert 1.3 < prep.own_noise_ratio(noisy) < 2.3
    out, factor, ratio = prep.bin_until_clean(noisy)
    # each 2x2 bin halves white noise: from 1.3-2.3 it takes two bins to get under 0.6
    assert factor == 4 and out.shape == (128, 128)
    assert ratio <= prep.MAX_OWN_NOISE_RATIO
    np.testing.assert_allclose(out, prep.box_downscale(noisy, 4), atol=1e-6)

    small = _field_with_own_noise(1.7 * added, 200)  # cannot be binned below 128 px
    out, factor, ratio = prep.bin_until_clean(small)
    assert factor == 1 and ratio > prep.MAX_OWN_NOISE_RATIO

    fields = [_image("m/noisy", "m/a", "microscopy", small, own_noise_ratio=ratio),
              _image("m/clean", "m/b", "microscopy", out, own_noise_ratio=0.1),
              _image("p/photo", "p/c")]
    kept, left_out = prep.leave_out_noisy_fields(fields)
    assert [i.image_id for i in kept] == ["m/clean", "p/photo"]
    assert left_out == [f"m/noisy ({ratio:.2f})"]
