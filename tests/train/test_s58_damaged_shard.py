"""A truncated WebDataset shard: said in one line naming the shard and the samples read from it, and counted in the
summary's `damaged_shards`, apart from the skipped images (audit 58 #4: webdataset's `warn_and_continue` printed
`warning: ReadError('unexpected end of data', <_io.BufferedReader ...>, ...)` once per epoch, and the summary said
0 skipped while a fifth of the samples were gone)."""

from __future__ import annotations

import io
import tarfile
import warnings

import numpy as np
from PIL import Image

from clipforge.data.webdata import WebDatasetImageText
from clipforge.train.config import TrainConfig
from clipforge.train.trainer import Trainer


def _shard(path, prefix: str, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with tarfile.open(path, "w") as tar:
        for k in range(count):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(buf, format="JPEG")
            for ext, data in (("jpg", buf.getvalue()), ("txt", f"{prefix} photo {k}".encode())):
                info = tarfile.TarInfo(f"{prefix}{k}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _truncated(folder) -> tuple[str, int]:
    """bad.tar: 8 samples cut inside the 6th one's image; (its path, the whole samples before the cut)."""
    _shard(folder / "whole.tar", "b", 8, 1)
    with tarfile.open(folder / "whole.tar") as tar:
        cut = next(m for m in tar.getmembers() if m.name == "b5.jpg").offset_data + 100
    (folder / "bad.tar").write_bytes((folder / "whole.tar").read_bytes()[:cut])
    (folder / "whole.tar").unlink()
    return str(folder / "bad.tar"), 5


def test_the_stream_ends_a_damaged_shard_with_one_record_of_it(tmp_path):
    from clipforge.data.webdata import DamagedShard

    bad, whole = _truncated(tmp_path)
    _shard(tmp_path / "good.tar", "g", 4, 2)
    dataset = WebDatasetImageText([bad, str(tmp_path / "good.tar")], shuffle_buffer=1, shuffle_shards=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no raw ReadError warning any more
        items = list(dataset)
    damaged = [item for item in items if isinstance(item, DamagedShard)]
    assert damaged == [DamagedShard(bad, "damaged shard (ReadError: unexpected end of data)", samples_read=whole,
                                    error="ReadError: unexpected end of data")]
    assert len(items) - 1 == whole + 4  # every readable sample of both shards, the good shard after the bad one


def test_a_run_over_a_damaged_shard_says_it_once_and_counts_it(tmp_path, capsys):
    bad, whole = _truncated(tmp_path)
    _shard(tmp_path / "a.tar", "a", 8, 3)
    config = TrainConfig(model="test-vit-tiny", data="webdataset", root=f"{tmp_path}/{{a,bad}}.tar", batch_size=4,
                         steps=6, lr=1e-3, warmup_steps=0, precision="fp32", log_every=1, workers=0, seed=0,
                         device="cpu", tensorboard=False, out_dir=str(tmp_path / "run"))
    result = Trainer(config).fit()
    train = result["skipped_images"]["train"]
    assert train["skipped"] == 0 and train["examples"] == []  # no image is claimed: the rest's count is unknown
    assert train["damaged_shards"] == [{"shard": bad, "samples_read": whole,
                                        "error": "ReadError: unexpected end of data"}]
    err = capsys.readouterr().err.replace("\r", "\n")
    lines = [line for line in err.splitlines() if "damaged" in line or "ReadError" in line]
    assert lines == [f"training data: shard {bad} is damaged (ReadError: unexpected end of data): {whole} samples "
                     "were read from it, the rest could not be (see log.jsonl)"]  # once, though 2 epochs read it
    assert result["steps"] == 6  # (8 + 5) // 4 = 3 batches an epoch: two epochs
    assert result["trimmed_images"] == 0  # one process: no batch is cut to another rank's size
