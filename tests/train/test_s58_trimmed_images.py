"""Under torchrun every rank's batch is cut to the smallest rank's size (all_gather needs batches of one size), so an
unreadable image on one rank cost the other ranks as many readable ones, silently (audit 58 #5). They are counted
now: the summary's `trimmed_images`, a log.jsonl record and one stderr line. (Counted, not avoided: a padded
all_gather with a mask would also need the loss and DDP's gradient average weighted by each rank's count.)"""

from __future__ import annotations

import numpy as np
from PIL import Image

from clipforge.data.imagetext import FolderCaptionImageText
from clipforge.train.data import ResumableSampler
from clipforge.train.logs import read_log


def _folder(root) -> None:
    rng = np.random.default_rng(4)
    for c in range(4):
        (root / f"caption_{c}").mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / f"caption_{c}" / f"{i}.png")
    (root / "caption_1" / "1.png").write_bytes(b"not an image")


def _expected_trim(root, batch: int, world: int, seed: int) -> int:
    """The readable images the trim drops: per step, each rank's readable count minus the smallest rank's."""
    sources = FolderCaptionImageText(root).sources
    bad = {i for i, path in enumerate(sources) if path.endswith("caption_1/1.png")}
    orders = []
    for rank in range(world):
        sampler = ResumableSampler(len(sources), batch, seed, rank, world)
        sampler.set_epoch(0)
        orders.append(list(sampler))
    trimmed = 0
    for step in range(len(orders[0]) // batch):
        good = [sum(i not in bad for i in order[step * batch:(step + 1) * batch]) for order in orders]
        trimmed += sum(g - min(good) for g in good)
    return trimmed


def test_images_trimmed_to_the_smallest_ranks_batch_are_counted(tmp_path):
    import torch.multiprocessing as mp

    from clipforge.train.selfcheck import free_port, trainer_worker

    root = tmp_path / "data"
    _folder(root)
    expected = _expected_trim(root, batch=2, world=2, seed=0)
    assert expected == 1  # one unreadable image: the other rank drops one readable image at that step
    config = dict(model="test-vit-tiny", data="folder", root=str(root), steps=3, batch_size=2, lr=1e-3,
                  warmup_steps=0, precision="fp32", log_every=1, seed=0, device="cpu", tensorboard=False,
                  out_dir=str(tmp_path / "ddp"))
    mp.spawn(trainer_worker, args=(2, free_port(), config), nprocs=2, join=True)
    notes = [r for r in read_log(tmp_path / "ddp") if r["kind"] == "trimmed"]
    assert [r["trimmed_images"] for r in notes] == [expected]
    skipped = [r for r in read_log(tmp_path / "ddp") if r["kind"] == "skipped"]
    assert [r["skipped"] for r in skipped] == [1]  # the unreadable image itself, counted once as before

