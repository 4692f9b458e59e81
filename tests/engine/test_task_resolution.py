"""A model passed without ``task`` is run as the task it declares, never as a denoiser."""

import numpy as np
import pytest

from napari_mprnet import restore, save_model
from napari_mprnet.cli import main
from napari_mprnet.engine.models import resolve_task


@pytest.fixture
def deblur_model(tiny_model):
    tiny_model.metadata = {"task": "deblur"}
    return tiny_model


def test_resolve_task_prefers_the_given_task_then_the_model_then_denoise(tmp_path, tiny_model):
    assert resolve_task("derain", None) == "derain"
    assert resolve_task(None, None) == "denoise"
    assert resolve_task(None, "deblur") == "deblur"  # a bundled task name
    assert resolve_task(None, tiny_model) == "denoise"  # declares nothing
    path = save_model(tiny_model, tmp_path / "mine.safetensors", {"task": "derain"})
    assert resolve_task(None, path) == "derain"
    assert resolve_task("deblur", path) == "deblur"  # a given task wins
    tiny_model.metadata = {"task": "colourise"}  # not a task of ours
    assert resolve_task(None, tiny_model) == "denoise"
    with pytest.raises(ValueError, match="unknown task 'sharpen'"):
        resolve_task("sharpen", None)


def test_a_deblur_model_alone_is_not_blended_as_a_denoiser(deblur_model):
    rng = np.random.default_rng(3)
    image = rng.random((48, 40)).astype(np.float32)
    options = {"model": deblur_model, "device": "cpu", "tile_size": 32, "tile_overlap": 8}
    alone = restore(image, **options)
    np.testing.assert_array_equal(alone, restore(image, task="deblur", **options))
    np.testing.assert_array_equal(alone, restore(image, strength=1.0, **options))
    # as a denoiser, "auto" strength would have moved the output towards the input
    assert not np.array_equal(alone, restore(image, task="denoise", **options))


def test_cli_names_outputs_by_the_task_the_weights_declare(tmp_path, deblur_model):
    import tifffile

    weights = save_model(deblur_model, tmp_path / "mine.safetensors")
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, (np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8))
    out = tmp_path / "out"
    assert main(["restore", str(source), "--weights", str(weights), "-o", str(out), "-q",
                 "--device", "cpu", "--tile-size", "32", "--tile-overlap", "8"]) == 0
    assert [p.name for p in out.iterdir()] == ["in_deblurred.tif"]


def test_a_dask_array_with_a_deblur_model_alone_runs_as_deblur(deblur_model):
    import dask.array as da

    image = np.random.default_rng(4).random((48, 40)).astype(np.float32)
    options = {"model": deblur_model, "device": "cpu", "tile_size": 32, "tile_overlap": 8}
    lazy = restore(da.from_array(image, chunks=(24, 40)), **options).compute()
    np.testing.assert_allclose(lazy, restore(image, strength=1.0, **options), atol=1e-5)
    assert not np.allclose(lazy, restore(image, task="denoise", **options), atol=1e-5)
