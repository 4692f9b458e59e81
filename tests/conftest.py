"""Shared fixtures: tiny networks keep the suite fast on 2 CPU cores."""

from __future__ import annotations

import pytest
import torch

from napari_mprnet.model import MPRNet, MPRNetConfig

TINY = MPRNetConfig(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1, reduction=4)


@pytest.fixture
def tiny_config() -> MPRNetConfig:
    return TINY


@pytest.fixture
def tiny_model() -> MPRNet:
    torch.manual_seed(0)
    return MPRNet(TINY).eval()


@pytest.fixture
def local_tiny_model(tiny_model) -> MPRNet:
    """The tiny network with every channel attention a constant gate (squeeze weights zero):
    strictly local, a pixel's output depends on the pixels ~25 px around it only."""
    from napari_mprnet.model.arch import ChannelAttention

    with torch.no_grad():
        for module in tiny_model.modules():
            if isinstance(module, ChannelAttention):
                module.conv_du[0].weight.zero_()
    return tiny_model


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: far faster than 2 when the 2 cores are shared with other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def _eager_default_backend_and_private_cache(tmp_path_factory):
    """The suite runs with the eager backend as the default (``$NAPARI_MPRNET_BACKEND``):
    OpenVINO, the CPU default where it is installed, converts every new network once (seconds
    each), which the hundreds of tiny networks here do not need. Its own tests
    (tests/engine/test_openvino.py) lift this. On-disk caches go to a private folder."""
    import os

    saved = {name: os.environ.get(name) for name in ("NAPARI_MPRNET_BACKEND",
                                                     "NAPARI_MPRNET_CACHE")}
    os.environ["NAPARI_MPRNET_BACKEND"] = "eager"
    os.environ["NAPARI_MPRNET_CACHE"] = str(tmp_path_factory.mktemp("napari-mprnet-cache"))
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
