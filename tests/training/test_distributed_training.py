"""Multi-process (DDP) fine-tuning on CPU with the gloo backend and 2 processes.

(Named ``test_distributed_training`` because ``tests/scale/test_distributed.py`` exists: two
test modules with one basename cannot be collected together without packages.)
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from napari_mprnet import weights
from napari_mprnet.cli import main
from napari_mprnet.model import MPRNet, MPRNetConfig
from napari_mprnet.training import checkpoints, objectives
from napari_mprnet.training import distributed as ddp
from napari_mprnet.training import sampling as sampling_module
from napari_mprnet.training.trainer import TrainingDiverged, finetune, load_checkpoint
from napari_mprnet.weights import load_model, save_model

TINY = MPRNetConfig(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1)
WORLD = 2
TORCHRUN = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

pytestmark = [
    pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                       reason="needs torch.distributed gloo"),
    pytest.mark.usefixtures("one_torch_thread"),
]


@pytest.fixture
def no_torchrun(monkeypatch):
    for name in TORCHRUN:
        monkeypatch.delenv(name, raising=False)


def _tiny() -> MPRNet:
    torch.manual_seed(0)
    return MPRNet(TINY)


def _pairs(n: int, size: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    clean = np.stack([0.5 + 0.35 * np.sin(2 * np.pi * (yy * (i + 1) + xx * rng.random()))
                      for i in range(n)])
    noisy = np.clip(clean + 0.1 * rng.standard_normal(clean.shape), 0, 1)
    return noisy.astype(np.float32), clean.astype(np.float32)


def _digest(model: torch.nn.Module) -> str:
    sha = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        sha.update(name.encode())
        sha.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- no process group


def test_helpers_outside_a_process_group(no_torchrun):
    assert not ddp.is_distributed()
    assert ddp.is_main_process() and ddp.world_size() == 1 and ddp.rank() == 0
    ddp.barrier()  # a no-op
    assert ddp.all_reduce_mean([1.5, 3.0]) == [1.5, 3.0]
    assert ddp.all_reduce_sum(2.0) == [2.0]
    assert ddp.session(None, "cpu") is None and ddp.session(False, "cpu") is None
    with ddp.process_group(None, "cpu") as active:
        assert active is False


def test_torchrun_env_parsing():
    full = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "node1",
            "MASTER_PORT": "29500"}
    env = ddp.torchrun_env(full)
    assert env == ddp.TorchrunEnv(1, 2, 1, "node1", 29500)
    assert ddp.torchrun_env({k: v for k, v in full.items() if k != "MASTER_PORT"}) is None
    with pytest.raises(ValueError, match="malformed torchrun environment"):
        ddp.torchrun_env({**full, "RANK": "one"})
    with pytest.raises(ValueError, match="inconsistent"):
        ddp.torchrun_env({**full, "RANK": "2"})


def test_distributed_without_torchrun_is_refused(no_torchrun, tmp_path):
    noisy, clean = _pairs(2)
    with pytest.raises(ValueError, match="not started by torchrun; launch it with torchrun"):
        finetune(list(noisy), list(clean), model=_tiny(), steps=2, patch_size=32,
                 device="cpu", distributed=True)
    status = main(["finetune", "--inputs", str(tmp_path), "--targets", str(tmp_path),
                   "--out", str(tmp_path / "m.safetensors"), "--distributed"])
    assert status == 2
    assert not (tmp_path / "m.safetensors").exists()


def test_cli_distributed_without_torchrun_prints_one_line(no_torchrun, tmp_path, capsys):
    status = main(["finetune", "--inputs", str(tmp_path), "--targets", str(tmp_path),
                   "--out", str(tmp_path / "m.safetensors"), "--distributed"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("error: --distributed needs the torchrun")
    assert "torchrun --nproc_per_node=N -m napari_mprnet finetune --distributed" in err


def test_torchrun_environment_is_detected_and_torn_down(monkeypatch, tmp_path):
    """A one-process torchrun environment: distributed=None joins it, trains through DDP and
    destroys the group it created."""
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port())}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    noisy, clean = _pairs(2)
    result = finetune(list(noisy), list(clean), model=_tiny(), steps=2, patch_size=32,
                      batch_size=1, device="cpu", normalize="none", val_fraction=0,
                      checkpoint_path=tmp_path / "c.pt")
    assert not dist.is_initialized()
    assert result.world_size == 1 and result.rank == 0 and result.steps_done == 2
    assert isinstance(result.model, MPRNet)  # the unwrapped module
    assert load_checkpoint(tmp_path / "c.pt")["world_size"] == 1


# --------------------------------------------------------------------------- 2 processes (spawn)


def _join(rank: int, world: int, root: str) -> Path:
    """Join the gloo group of a spawned test (one thread); returns ``root`` as a Path."""
    torch.set_num_threads(1)
    root_path = Path(root)
    dist.init_process_group("gloo", init_method=f"file://{root_path / 'rendezvous'}",
                            rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))  # a hang fails instead
    return root_path


def _worker(rank: int, world: int, root: str) -> None:
    """One rank: several fine-tuning runs in one gloo process group; facts go to JSON."""
    root_path = _join(rank, world, root)
    report: dict = {"rank": rank}
    writes: list[str] = []
    real_ckpt_save, real_model_save = checkpoints.atomic_torch_save, weights.save_model
    real_sample, real_loss = sampling_module.PatchSampler.sample, objectives.mprnet_loss
    first_batches: list[str] = []

    def counting_ckpt_save(obj, path):
        writes.append(f"checkpoint:{Path(path).name}:{obj['step']}")
        return real_ckpt_save(obj, path)

    def counting_model_save(model, path, *args, **kwargs):
        writes.append(f"model:{Path(path).name}")
        return real_model_save(model, path, *args, **kwargs)

    def recording_sample(self, rng=None):
        x, y = real_sample(self, rng)
        if not first_batches:
            first_batches.append(hashlib.sha256(x.numpy().tobytes()).hexdigest())
        return x, y

    checkpoints.atomic_torch_save = counting_ckpt_save
    weights.save_model = counting_model_save
    sampling_module.PatchSampler.sample = recording_sample
    try:
        noisy, clean = _pairs(6, seed=1)
        common = {
            "model": _tiny(), "steps": 6, "patch_size": 32, "batch_size": 1,
            "learning_rate": 1e-3, "device": "cpu", "normalize": "none", "val_every": 2,
            "val_inputs": list(noisy[3:]), "val_targets": list(clean[3:]),
            "checkpoint_every": 2, "distributed": True,
        }
        inputs, targets = list(noisy[:3]), list(clean[:3])
        events: list[dict] = []
        full = finetune(inputs, targets, checkpoint_path=root_path / "full.pt",
                        save_to=root_path / "full.safetensors", callback=events.append,
                        **common)
        report["full"] = {
            "digest": _digest(full.model), "losses": [h["loss"] for h in full.history],
            "val": [h.get("val_psnr") for h in full.history], "steps": full.steps_done,
            "world_size": full.world_size, "saved_to": full.saved_to,
            "events": len([e for e in events if "loss" in e]), "first_batch": first_batches[0],
            "is_mprnet": isinstance(full.model, MPRNet), "training": full.model.training,
            "best_val_psnr": full.best_val_psnr,
        }
        part = finetune(inputs, targets, checkpoint_path=root_path / "part.pt",
                        callback=lambda event: event["step"] < 3, **common)
        report["part"] = {"steps": part.steps_done, "stopped": part.stopped}
        resumed = finetune(inputs, targets, checkpoint_path=root_path / "part.pt",
                           resume_from=root_path / "part.pt", **common)
        report["resumed"] = {
            "digest": _digest(resumed.model), "losses": [h["loss"] for h in resumed.history],
            "steps": resumed.steps_done, "best_val_psnr": resumed.best_val_psnr,
        }
        # a NaN on rank 1 alone stops both ranks at the same step with the same error
        calls = {"n": 0}

        def nan_on_rank1(stages, target, edge_weight=0.05):
            calls["n"] += 1
            loss = real_loss(stages, target, edge_weight)
            return loss * float("nan") if rank == 1 and calls["n"] == 3 else loss

        objectives.mprnet_loss = nan_on_rank1
        try:
            finetune(inputs, targets, checkpoint_path=root_path / "nan.pt", **common)
            report["nan"] = "no error"
        except TrainingDiverged as err:
            report["nan"] = f"{err.step}|{err}"
        finally:
            objectives.mprnet_loss = real_loss
        # a single-process checkpoint cannot continue on 2 processes
        try:
            finetune(inputs, targets, resume_from=root_path / "single.pt",
                     checkpoint_path=root_path / "single.pt", **common)
            report["mismatch"] = "no error"
        except ValueError as err:
            report["mismatch"] = str(err)
    except BaseException:
        report["error"] = traceback.format_exc()
        raise
    finally:
        checkpoints.atomic_torch_save, weights.save_model = real_ckpt_save, real_model_save
        sampling_module.PatchSampler.sample = real_sample
        report["writes"] = writes
        (root_path / f"rank{rank}.json").write_text(json.dumps(report))
        dist.destroy_process_group()


def _spawn(worker, root: Path) -> None:
    """Run ``worker(rank, WORLD, root)`` on WORLD processes; fail after 240 s."""
    context = mp.spawn(worker, args=(WORLD, str(root)), nprocs=WORLD, join=False)
    deadline = time.monotonic() + 240
    while not context.join(timeout=2):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the 2-process run did not finish in 240 s")


def test_ddp_two_processes_sync_checkpoint_stop_resume(tmp_path, no_torchrun):
    noisy, clean = _pairs(6, seed=1)
    # a plain (1-process) checkpoint with the same settings, for the world-size check
    finetune(list(noisy[:3]), list(clean[:3]), model=_tiny(), steps=6, patch_size=32,
             batch_size=1, learning_rate=1e-3, device="cpu", normalize="none",
             val_inputs=list(noisy[3:]), val_targets=list(clean[3:]), val_every=2,
             checkpoint_every=2, checkpoint_path=tmp_path / "single.pt",
             callback=lambda event: False)
    _spawn(_worker, tmp_path)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD))
    assert "error" not in r0 and "error" not in r1

    # both ranks finished with identical parameters and history; batches differed
    for rank in (r0, r1):
        assert rank["full"]["steps"] == 6 and rank["full"]["world_size"] == WORLD
        assert rank["full"]["is_mprnet"] and not rank["full"]["training"]
    assert r0["full"]["digest"] == r1["full"]["digest"]
    assert r0["full"]["losses"] == r1["full"]["losses"]
    assert r0["full"]["val"] == r1["full"]["val"]
    assert [v is not None for v in r0["full"]["val"]] == [False, True] * 3  # every 2 steps
    assert r0["full"]["first_batch"] != r1["full"]["first_batch"]

    # only rank 0 wrote checkpoints and the model, and called the callback
    assert r1["writes"] == [] and r1["full"]["events"] == 0
    assert r0["full"]["events"] == 6
    assert r0["writes"] == [
        "checkpoint:full.pt:2", "checkpoint:full.pt:4", "checkpoint:full.pt:6",
        "model:full.safetensors",
        "checkpoint:part.pt:2", "checkpoint:part.pt:3",  # the stop writes one
        "checkpoint:part.pt:4", "checkpoint:part.pt:6",  # the resumed run
        "checkpoint:nan.pt:2",  # the diverged step 3 writes none
    ]
    assert r0["full"]["saved_to"] == r1["full"]["saved_to"] == str(tmp_path / "full.safetensors")
    loaded = load_model(tmp_path / "full.safetensors")
    assert _digest(loaded) == r0["full"]["digest"]
    prov = loaded.metadata["provenance"]
    assert prov["world_size"] == WORLD and prov["global_batch_size"] == WORLD
    assert prov["steps"] == 6 and prov["batch_size"] == 1

    # rank 0's stop request stopped both ranks; the checkpoint keeps each rank's sampler
    assert r0["part"] == r1["part"] == {"steps": 3, "stopped": True}
    ckpt = load_checkpoint(tmp_path / "part.pt")
    assert ckpt["world_size"] == WORLD and len(ckpt["ranks"]) == WORLD
    assert ckpt["ranks"][0]["sampler"] == ckpt["sampler"]
    assert ckpt["ranks"][0]["sampler"] != ckpt["ranks"][1]["sampler"]

    # resumed on 2 processes from step 3, it repeats the uninterrupted run exactly
    for rank in (r0, r1):
        assert rank["resumed"]["steps"] == 6
        assert rank["resumed"]["losses"] == r0["full"]["losses"]
        assert rank["resumed"]["digest"] == r0["full"]["digest"]
        assert rank["resumed"]["best_val_psnr"] == r0["full"]["best_val_psnr"]

    # a NaN on one rank stops every rank with the same clear error
    assert r0["nan"] == r1["nan"]
    step, message = r0["nan"].split("|", 1)
    assert step == "3" and "training diverged at step 3: loss is nan" in message
    assert load_checkpoint(tmp_path / "nan.pt")["step"] == 2

    # resuming with another number of processes is refused on every rank
    for rank in (r0, r1):
        assert "written by a run on 1 process(es), this one has 2" in rank["mismatch"]


# --------------------------------------------------------------------------- torchrun + CLI


def test_torchrun_cli_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    noisy_dir, clean_dir, out_dir = tmp_path / "noisy", tmp_path / "clean", tmp_path / "out"
    for folder in (noisy_dir, clean_dir, out_dir):
        folder.mkdir()
    yy, xx = np.mgrid[0:48, 0:48] / 48
    for i in range(3):
        clean = 1000 + 800 * np.sin(2 * np.pi * (yy * (i + 1) + xx))
        noisy = clean + 150 * rng.standard_normal(clean.shape)
        tifffile.imwrite(clean_dir / f"img{i}.tif", clean.astype(np.uint16))
        tifffile.imwrite(noisy_dir / f"img{i}.tif", np.clip(noisy, 0, None).astype(np.uint16))
    base = save_model(_tiny(), tmp_path / "base.safetensors", {"task": "denoise"})
    out, ckpt = out_dir / "tuned.safetensors", out_dir / "tuned.pt"
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={WORLD}", "-m", "napari_mprnet", "finetune", "--distributed",
        "--inputs", str(noisy_dir), "--targets", str(clean_dir), "--base", str(base),
        "--steps", "4", "--patch-size", "32", "--batch-size", "1", "--lr", "1e-3",
        "--device", "cpu", "--val-fraction", "0.34", "--out", str(out),
        "--checkpoint", str(ckpt), "--checkpoint-every", "2", "-q",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240,
                          cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count("fine-tuned 4 steps") == 1, done.stdout  # rank 0 reports alone
    assert f"x {WORLD} processes" in done.stdout
    assert sorted(p.name for p in out_dir.iterdir()) == ["tuned.pt", "tuned.safetensors"]
    model = load_model(out)
    assert model.metadata["provenance"]["world_size"] == WORLD
    assert model.metadata["provenance"]["steps"] == 4
    saved = load_checkpoint(ckpt)
    assert saved["step"] == 4 and saved["world_size"] == WORLD and len(saved["ranks"]) == WORLD


# --------------------------------------------------------------------------- self-supervised


def _ssl_worker(rank: int, world: int, root: str) -> None:
    """One rank of a Noise2Void run (no targets) on 2 gloo processes."""
    root_path = _join(rank, world, root)
    report: dict = {"rank": rank}
    try:
        noisy, _ = _pairs(6, seed=2)
        result = finetune(list(noisy), model=_tiny(), steps=4, patch_size=32, batch_size=1,
                          learning_rate=1e-3, device="cpu", normalize="none", val_every=2,
                          val_fraction=0.34, distributed=True)
        report.update(digest=_digest(result.model), base=result.base_val_loss,
                      val=[h.get("val_loss") for h in result.history],
                      objective=result.metadata["provenance"]["objective"]["name"])
    except BaseException:
        report["error"] = traceback.format_exc()
        raise
    finally:
        (root_path / f"ssl{rank}.json").write_text(json.dumps(report))
        dist.destroy_process_group()


def test_ddp_noise2void_ranks_agree_and_validation_is_shared(tmp_path, no_torchrun):
    noisy, _ = _pairs(6, seed=2)
    single = finetune(list(noisy), model=_tiny(), steps=1, patch_size=32, batch_size=1,
                      learning_rate=1e-3, device="cpu", normalize="none", val_fraction=0.34)
    _spawn(_ssl_worker, tmp_path)
    r0, r1 = (json.loads((tmp_path / f"ssl{r}.json").read_text()) for r in range(WORLD))
    assert "error" not in r0 and "error" not in r1
    assert r0["objective"] == "noise2void"
    assert r0["digest"] == r1["digest"] and r0["val"] == r1["val"]
    assert [v is not None for v in r0["val"]] == [False, True, False, True]
    # the 2 validation planes are scored one per rank; the all-reduced mean is the
    # single-process score of the same starting model
    assert r0["base"] == pytest.approx(single.base_val_loss, rel=1e-5)
