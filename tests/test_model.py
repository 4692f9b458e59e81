import json
from pathlib import Path

import pytest
import torch

from napari_mprnet.model import OFFICIAL_PRESETS, MPRNet, MPRNetConfig, official_config
from napari_mprnet.model.forwards import split_forward

#: Parameter names, shapes and counts of the published checkpoints (the project's own record).
REFERENCE = Path(__file__).parent / "data"


def _reference(task):
    return json.loads((REFERENCE / f"mprnet_state_dict_{task}.json").read_text())


@pytest.mark.parametrize("task", ["denoise", "deblur", "derain"])
def test_official_layout_names_and_shapes(task):
    ref = _reference(task)
    model = MPRNet(official_config(task))
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert ours == [(k, s) for k, s in ref["keys"]]
    assert sum(p.numel() for p in model.parameters()) == ref["num_params"]
    assert model.config.to_dict() == ref["config"] | {"in_c": 3, "out_c": 3}


def test_prelu_is_shared_by_all_attention_blocks():
    model = MPRNet(official_config("derain"))
    prelus = {id(m) for m in model.modules() if isinstance(m, torch.nn.PReLU)}
    assert len(prelus) == 1
    names = [k for k, v in model.state_dict().items() if v.shape == (1,)]
    assert len(names) == 55


def test_forward_returns_three_full_size_stages_final_first(tiny_model):
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        outs = tiny_model(x)
        assert [o.shape for o in outs] == [x.shape] * 3
        assert not torch.allclose(outs[0], outs[1])
        # the final output is the stage-3 residual added to the input: zero the tail
        tiny_model.tail.weight.zero_()
        assert torch.equal(tiny_model(x)[0], x)


def test_stage1_sees_only_its_quarter(tiny_model):
    """Multi-patch hierarchy: stage 1 processes the four quarters independently."""
    x = torch.rand(1, 3, 32, 32)
    y = x.clone()
    y[..., 16:, 16:] = torch.rand(1, 3, 16, 16)  # change only the bottom-right quarter
    with torch.no_grad():
        s1_x = tiny_model(x)[2]
        s1_y = tiny_model(y)[2]
        s2_x = tiny_model(x)[1]
        s2_y = tiny_model(y)[1]
    assert torch.equal(s1_x[..., :16, :], s1_y[..., :16, :])  # top half untouched in stage 1
    assert not torch.equal(s1_x[..., 16:, :16], s1_y[..., 16:, :16])  # joined decoder mixes
    assert torch.equal(s1_x[..., :16, :], s1_y[..., :16, :])
    assert not torch.equal(s2_x[..., :16, :], s2_y[..., :16, :])  # stage 2 sees the whole image


def test_top_quarters_are_independent_in_stage1_encoder(tiny_model):
    x = torch.rand(1, 3, 32, 32)
    feats = []
    handle = tiny_model.stage1_encoder.register_forward_hook(lambda m, i, o: feats.append(o[0]))
    with torch.no_grad():
        tiny_model(x)
    handle.remove()
    assert len(feats) == 4 and feats[0].shape[-2:] == (16, 16)


def test_default_forward_is_the_papers_split(tiny_model):
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        default, split = tiny_model(x), tiny_model(x, split_patches=True)
        whole = tiny_model(x, split_patches=False)
        assert MPRNet.split_patches is True
        for a, b, c in zip(default, split, split_forward(tiny_model, x)):
            assert torch.equal(a, b) and torch.equal(a, c)
        assert not torch.allclose(default[0], whole[0], atol=1e-4)
        tiny_model.split_patches = False  # the attribute is the default of forward()
        assert all(torch.equal(a, b) for a, b in zip(tiny_model(x), whole))


def test_unsplit_forward_differs_only_along_the_split_lines(local_tiny_model):
    """Same weights, no split: far from the centre lines (where the paper's patches meet)
    both forwards compute the same thing; on the lines they differ."""
    model = local_tiny_model
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        split, whole = model(x, split_patches=True), model(x, split_patches=False)
    far = torch.ones(128, 128, dtype=torch.bool)
    far[64 - 32:64 + 32] = False
    far[:, 64 - 32:64 + 32] = False
    for a, b in zip(split, whole):  # final, stage 2, stage 1
        diff = (a - b).abs().amax(dim=(0, 1))
        assert diff[far].max() < 1e-5
        assert diff[62:66].max() > 1e-3 and diff[:, 62:66].max() > 1e-3


def test_unsplit_forward_of_a_crop_is_the_crop_of_the_forward(local_tiny_model):
    """What makes tiles and bioimage.io blocks agree with the whole image: without the
    split, a crop restores like the same pixels inside the whole image (away from its
    edges); with the split, the crop's own centre lines show."""
    model = local_tiny_model
    x = torch.rand(1, 3, 160, 160)
    crop = x[..., 24:120, 40:136]  # 96 x 96, offsets multiples of the 4x down-sampling
    with torch.no_grad():
        whole = model(x, split_patches=False)[0][..., 24:120, 40:136]
        part = model(crop, split_patches=False)[0]
        part_split = model(crop, split_patches=True)[0]
    inner = (slice(None), slice(None), slice(32, 64), slice(32, 64))
    assert (whole[inner] - part[inner]).abs().max() < 1e-5
    assert (whole[inner] - part_split[inner]).abs().max() > 1e-3


def test_one_channel_network():
    model = MPRNet(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1, in_c=1, out_c=1)
    with torch.no_grad():
        outs = model(torch.rand(1, 1, 16, 16))
    assert all(o.shape == (1, 1, 16, 16) for o in outs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_feat": 0}, "n_feat"),
        ({"kernel_size": 4}, "odd"),
        ({"in_c": 1, "out_c": 3}, "in_c"),
        ({"n_feat": 2, "reduction": 4}, "reduction"),
        ({"scale_unetfeats": -1}, "scale_unetfeats"),
        ({"num_cab": 1.5}, "num_cab"),
    ],
)
def test_bad_configuration_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MPRNetConfig(**kwargs)


def test_bad_input_shapes(tiny_model):
    with pytest.raises(ValueError, match="multiples of 8"):
        tiny_model(torch.rand(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        tiny_model(torch.rand(1, 1, 32, 32))


def test_presets_cover_three_tasks():
    assert set(OFFICIAL_PRESETS) == {"denoise", "deblur", "derain"}
    with pytest.raises(ValueError, match="unknown task"):
        official_config("sharpen")
