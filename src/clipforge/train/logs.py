"""Training logs people and tools can read: JSONL (every record), CSV, TensorBoard, PNG curves.

JSONL is the source of truth (one JSON object per line, appended and flushed, so a crashed run
still has its history); `train.csv` / `eval.csv` are the same numbers for spreadsheets;
TensorBoard is used when installed. Only rank 0 writes (the trainer passes enabled=False
elsewhere).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

TRAIN_FIELDS = ("step", "epoch", "loss", "lr", "logit_scale", "samples_per_s", "elapsed_s")


class RunLogger:
    def __init__(self, out_dir: str | Path, enabled: bool = True, tensorboard: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self._tb: Any = None
        self._tb_wanted = False
        self._purge_step: int | None = None  # a resumed run's first step: TensorBoard hides later old events
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.out_dir / "log.jsonl"
        if tensorboard:
            try:
                import torch.utils.tensorboard  # noqa: F401 - tensorboard is optional
            except ImportError:
                return
            self._tb_wanted = True

    def _writer(self) -> Any:
        """The TensorBoard writer, made at the first record: SummaryWriter writes an event file as it is
        made, so a run that failed before logging anything left `tensorboard/` with an empty event file,
        and its new `--out` folder could not be recognised as unused and removed (`clipforge.atomic.NewFolders`)."""
        if self._tb is None and self._tb_wanted:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=self._purge_step)
        return self._tb

    def log(self, kind: str, record: dict[str, Any]) -> None:
        """kind: "train" (per log interval) or "eval" (per epoch)."""
        if not self.enabled:
            return
        line = {"kind": kind, **record}
        with open(self.jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        csv_path = self.out_dir / f"{kind}.csv"
        # a sigmoid-loss model's learned bias is a column of its own run (SigLIP starts it at -10)
        extra = [k for k in ("logit_bias",) if k in record]
        fields = [*TRAIN_FIELDS, *extra] if kind == "train" else sorted(record)
        new = not csv_path.exists()
        if not new:
            fields = _widened_header(csv_path, fields)
        with open(csv_path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(record)
        board = self._writer()
        if board is not None:
            step = int(record.get("step", 0))
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    board.add_scalar(f"{kind}/{key}", value, step)
            board.flush()

    def note(self, kind: str, record: dict[str, Any]) -> None:
        """A record for log.jsonl only (no CSV, no curve): e.g. "skipped", the images a data set lost."""
        if not self.enabled:
            return
        with open(self.jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps({"kind": kind, **record}) + "\n")

    def truncate_after(self, step: int) -> int:
        """Drop every record logged after `step` (a resumed run restarts there, so the crashed run's
        later lines would otherwise repeat in log.jsonl and the CSVs). Returns how many went."""
        if not self.enabled:
            return 0
        from clipforge.atomic import write_text_atomic

        records = read_log(self.out_dir)
        kept = [r for r in records if _step_of(r) <= step]
        lines = self.jsonl.read_text(encoding="utf-8", errors="replace").splitlines() if self.jsonl.is_file() else []
        if len(kept) != len([line for line in lines if line.strip()]):  # later records, or a torn line
            text = "".join(json.dumps(r) + "\n" for r in kept)
            write_text_atomic(self.jsonl, text)
        for kind in ("train", "eval"):
            csv_path = self.out_dir / f"{kind}.csv"
            if not csv_path.is_file():
                continue
            with open(csv_path, newline="", encoding="utf-8", errors="replace") as f:
                reader = csv.DictReader(f)
                fields, rows = reader.fieldnames or [], list(reader)
            # a row cut short (fields missing: None) is the torn last line of a killed run
            keep = [row for row in rows if _step_of(row) <= step and None not in row.values()]
            if len(keep) != len(rows):
                out = io.StringIO(newline="")
                writer = csv.DictWriter(out, fieldnames=fields)
                writer.writeheader()
                writer.writerows(keep)
                write_text_atomic(csv_path, out.getvalue())
        # TensorBoard's own way: drop events from step + 1 on (the writer is made with it at the next record)
        self._purge_step = step + 1
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        return len(records) - len(kept)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _step_of(row: dict[str, Any]) -> float:
    try:
        return float(row.get("step") or 0)
    except (TypeError, ValueError):
        return 0.0


def read_log(out_dir: str | Path) -> list[dict[str, Any]]:
    """The records of log.jsonl. A line that is not a JSON object is left out: the torn last line of a run
    killed (or out of disk) while appending it, which made `--resume` fail on json's "Unterminated string"
    and the run impossible to continue; a resumed run's `truncate_after` rewrites the file without it."""
    path = Path(out_dir) / "log.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line) if line.strip() else None
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def plot_curves(out_dir: str | Path) -> list[Path]:
    """loss.png (train loss by step) and accuracy.png (eval metrics by epoch) from log.jsonl."""
    from clipforge.atomic import save_figure
    from clipforge.figures import pyplot

    plt = pyplot()
    out_dir = Path(out_dir)
    records = read_log(out_dir)
    written = []
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    if train:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([r["step"] for r in train], [r["loss"] for r in train])
        ax.set_xlabel("step")
        ax.set_ylabel("contrastive loss")
        ax.set_title("training loss")
        written.append(save_figure(fig, out_dir / "loss.png"))
    metrics = sorted({k for r in evals for k, v in r.items() if k.endswith("top1") and isinstance(v, (int, float))})
    if evals and metrics:
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in metrics:
            points = [(r["epoch"], 100 * r[key]) for r in evals if key in r]
            ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel("top-1 (%)")
        ax.legend()
        ax.set_title("zero-shot accuracy during training")
        written.append(save_figure(fig, out_dir / "accuracy.png"))
    return written


def _widened_header(csv_path: Path, fields: list[str]) -> list[str]:
    """The columns to append a row under: the file's own header, widened (the file rewritten once, the old rows'
    new cells empty) when the record has columns it lacks. A run resumed from a `train.csv` written before its
    `logit_bias` column existed, or an `eval.csv` whose evaluations gained a metric, appended rows one column
    longer than their header: spreadsheets read them shifted."""
    from clipforge.atomic import write_text_atomic

    with open(csv_path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        missing = [name for name in fields if name not in header]
        if not header or not missing:
            return header or fields
        rows = list(reader)
    widened = header + missing
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=widened)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(csv_path, out.getvalue())
    return widened
