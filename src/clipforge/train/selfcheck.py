"""Check that distributed training computes what one process on the full batch computes.

    python -m clipforge.train.selfcheck          # 2 gloo processes on 127.0.0.1, prints the gaps

The workers live in the library (not in a test file) so `torch.multiprocessing.spawn` can
import them by name; the test suite runs the same check. Each worker joins a gloo group the
way torchrun would (RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT in the environment), wraps
the tiny test model in DDP, computes the loss on its half of a fixed batch and backpropagates;
rank 0 saves the rank-averaged loss and the DDP-averaged gradients for comparison with
`reference_gradients` on the whole batch.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

MODES = {"local_loss": (True, True), "global_loss": (False, True)}  # (local_loss, gather_with_grad)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fixed_batch(size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [size, 3, 32, 32] (float64) and distinct captions' tokens for the tiny test model."""
    from clipforge.text import tokenize

    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(size, 3, 32, 32, generator=generator, dtype=torch.float64)
    words = ["cat", "dog", "ship", "truck", "bird", "frog", "horse", "deer", "plane", "car", "boat", "tree"]
    captions = [f"a photo of a {words[i % len(words)]} number {i}" for i in range(size)]
    return images, tokenize(captions)


def tiny_model(seed: int = 0) -> torch.nn.Module:
    """The tiny test ViT in float64: the equivalence is an identity, so float64 shows it to ~1e-15
    instead of drowning it in fp32 summation-order noise."""
    from clipforge.models import create_model_from_config, get_config

    torch.manual_seed(seed)
    return create_model_from_config(get_config("test-vit-tiny")).double()


def reference_gradients(local_loss: bool = False) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and parameter gradients of one process on the full batch (local_loss is moot here)."""
    from clipforge.train.loss import ClipLoss
    from clipforge.train.step import ContrastiveModel

    model = ContrastiveModel(tiny_model())
    images, texts = fixed_batch()
    loss = ClipLoss(local_loss=local_loss)(*model(images, texts))
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _environment(rank: int, world: int, port: int) -> None:
    """What torchrun sets for each process it starts (one thread each: the ranks share the test's cores)."""
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)


def _join(rank: int, world: int, port: int) -> None:
    _environment(rank, world, port)
    from clipforge.train.distributed import init_distributed

    init_distributed("cpu")


def gradient_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from clipforge.train.distributed import all_reduce_mean
    from clipforge.train.loss import ClipLoss
    from clipforge.train.step import ContrastiveModel

    _join(rank, world, port)
    try:
        images, texts = fixed_batch()
        n = len(images) // world
        for mode, (local_loss, gather_with_grad) in MODES.items():
            model = DistributedDataParallel(ContrastiveModel(tiny_model()))
            features = model(images[rank * n:(rank + 1) * n], texts[rank * n:(rank + 1) * n])
            loss = ClipLoss(local_loss=local_loss, gather_with_grad=gather_with_grad)(*features)
            loss.backward()
            global_loss = all_reduce_mean(float(loss.detach()))
            if rank == 0:
                grads = {n_: p.grad.clone() for n_, p in model.module.named_parameters() if p.grad is not None}
                torch.save({"loss": global_loss, "grads": grads}, Path(out_dir) / f"{mode}.pt")
    finally:
        dist.destroy_process_group()


def trainer_worker(rank: int, world: int, port: int, config: dict[str, Any]) -> None:
    """Run one rank as `torchrun -m clipforge train` does: the environment names the group, `train` joins it
    and destroys it when it ends; a group left behind is an error here (left to the interpreter's exit, gloo can
    abort the process there)."""
    import torch.distributed as dist

    from clipforge.train.config import TrainConfig
    from clipforge.train.trainer import train

    _environment(rank, world, port)
    failure: BaseException | None = None
    try:
        train(TrainConfig(**config))
    except BaseException as exc:  # a refused run is judged on the group it leaves as well
        failure = exc
    left = dist.is_initialized()
    if left:
        dist.destroy_process_group()
        raise RuntimeError(f"rank {rank}: train() ended with its process group still initialized") from failure
    if failure is not None:
        raise failure


def run_gradient_check(world: int = 2) -> dict[str, dict[str, float]]:
    """Spawn `world` gloo workers; returns per mode the loss gap and the largest gradient gap."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(gradient_worker, args=(world, free_port(), tmp), nprocs=world, join=True)
        report = {}
        for mode, (local_loss, _) in MODES.items():
            got = torch.load(Path(tmp) / f"{mode}.pt", weights_only=True)
            ref_loss, ref_grads = reference_gradients(local_loss)
            gaps = [float((got["grads"][k] - g).abs().max()) for k, g in ref_grads.items()]
            missing = sorted(set(ref_grads) ^ set(got["grads"]))
            report[mode] = {"loss": got["loss"], "reference_loss": ref_loss, "loss_gap": abs(got["loss"] - ref_loss),
                            "max_grad_gap": max(gaps), "params_compared": len(gaps), "missing": len(missing)}
    return report


if __name__ == "__main__":
    results = run_gradient_check()
    for name, row in results.items():
        print(f"{name}: loss {row['loss']:.8f} vs {row['reference_loss']:.8f} (gap {row['loss_gap']:.2e}), "
              f"max gradient gap {row['max_grad_gap']:.2e} over {row['params_compared']} parameters")
    sys.exit(0 if all(r["loss_gap"] < 1e-6 and r["max_grad_gap"] < 1e-6 and not r["missing"]
                      for r in results.values()) else 1)
