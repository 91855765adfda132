"""A run resumed after steps skipped for an empty batch continues where it stopped.

A batch whose every image fails to decode is skipped (no step), and the epoch's place in the data
(`batch_in_epoch`, what a checkpoint records and a resume seeks to) counted steps only: each skipped batch
put the resumed run one batch behind the data it had already read, so it trained some batches twice and the
weights differed from the uninterrupted run's. The place now counts batches read, skipped ones included.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from clipforge.train.config import TrainConfig
from clipforge.train.logs import read_log
from clipforge.train.trainer import Trainer
from clipforge.weights import load_state_dict

IMAGES, BATCH, SEED = 9, 3, 1


def _csv(tmp_path: Path) -> Path:
    """9 photos whose first batch of the first epoch (the trainer's own sampler order) is all undecodable."""
    from clipforge.train.data import ResumableSampler

    root, rng = tmp_path / "data", np.random.default_rng(5)
    root.mkdir()
    for i in range(IMAGES):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / f"{i}.png")
    for i in list(ResumableSampler(IMAGES, BATCH, seed=SEED))[:BATCH]:
        (root / f"{i}.png").write_text("not an image")
    csv = root / "captions.csv"
    csv.write_text("image,caption\n" + "".join(f"{i}.png,a photo number {i}\n" for i in range(IMAGES)))
    return csv


def _config(csv: Path, out: Path, **kw) -> TrainConfig:
    base = dict(model="test-vit-tiny", data="csv", root=str(csv), batch_size=BATCH, steps=3, lr=1e-3,
                precision="fp32", log_every=1, out_dir=str(out), seed=SEED, device="cpu", tensorboard=False,
                save_every_steps=0, workers=0)
    return TrainConfig(**{**base, **kw})


def test_a_run_resumed_after_skipped_batches_ends_with_the_uninterrupted_weights(tmp_path: Path) -> None:
    csv = _csv(tmp_path)
    full, parted = tmp_path / "full", tmp_path / "parted"
    Trainer(_config(csv, full)).fit()
    stopped = Trainer(_config(csv, parted, stop_after_steps=1))
    stopped.fit()
    assert (stopped.batch_in_epoch, stopped.step) == (2, 1)  # the empty first batch, then one step  # the stop came after an empty batch had been skipped
    Trainer(_config(csv, parted, resume="latest")).fit()
    losses = [[r["loss"] for r in read_log(out) if r["kind"] == "train"] for out in (full, parted)]
    assert len(losses[0]) == 3 and np.allclose(losses[1], losses[0], rtol=1e-6, atol=0), losses
    a, b = (load_state_dict(_last_checkpoint(out)) for out in (full, parted))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(b[key].numpy(), a[key].numpy(), rtol=0, atol=1e-6, err_msg=key)


def _last_checkpoint(out: Path) -> Path:
    """The weights file of the run's last step (the two runs name it differently: one ends an epoch there)."""
    import torch

    states = {p: torch.load(p, weights_only=True)["step"] for p in (out / "checkpoints").glob("*.state.pt")}
    last = max(states, key=states.get)
    return last.with_name(last.name[: -len(".state.pt")] + ".safetensors")
