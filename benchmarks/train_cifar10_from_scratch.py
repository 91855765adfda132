"""Train a small CLIP from scratch on CIFAR-10 captions on a CPU, in a fixed wall-clock budget.

    .venv/bin/python benchmarks/train_cifar10_from_scratch.py --minutes 15 --save-model

What it does and why:
- decodes the 50,000 train JPEGs once into one uint8 tensor (150 MB) and augments on that
  tensor in torch (random crop with 2-pixel reflect padding, horizontal flip): no DataLoader,
  no PIL in the loop, so both cores stay on the model;
- captions are class names in templates (`--train-templates`); every batch draws ONE template
  for all its images (`--templates-per-batch`, default 1), so a batch holds at most 10
  distinct captions. The text tower runs once per distinct caption (10 sequences instead of
  128) and the loss (`clipforge.train.loss.unique_caption_loss`) scores each image against
  the distinct captions, with every image of a caption a positive for it. (With exact
  duplicate captions the plain CLIP loss has the same image-side gradient: identical copies
  get identical probabilities; duplicates raise the loss floor and waste text compute);
- the learning-rate schedule is a function of *elapsed training time* (linear warmup, then
  cosine to zero at the budget), so the run anneals properly however busy the shared machine
  is; evaluation pauses the clock;
- bf16 autocast (the CPU has avx512_bf16) and channels_last, fp32 master weights;
- at the end: zero-shot top-1 on the 10,000 test images with the class embeddings averaged
  over the 18 CIFAR-10 templates of the CLIP paper, and a logistic-regression linear probe on
  the image features; JSON + curve PNG to benchmarks/results/, and with --save-model the
  model (fp16 safetensors + config + recipe) to src/clipforge/pretrained/clipforge-tiny/.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "cifar10_jpeg"
RESULTS = REPO / "benchmarks" / "results"
PRETRAINED = REPO / "src" / "clipforge" / "pretrained" / "clipforge-tiny"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def load_split(zip_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of one zip as uint8 [N, 3, 32, 32] plus int64 labels (folder = class)."""
    if not zip_path.is_file():
        sys.exit(f"{zip_path} not found: this benchmark needs ../shared/data/cifar10_jpeg (see its README)")
    images, labels, bad = [], [], 0
    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(n for n in zf.namelist() if n.lower().endswith(".jpg"))
        for name in names:
            cls = name.split("/")[-2]
            try:
                img = Image.open(io.BytesIO(zf.read(name))).convert("RGB")
                if img.size != (32, 32):
                    raise ValueError(f"size {img.size}, expected (32, 32)")
            except Exception as err:  # count and skip a bad member, never stop the run for one
                bad += 1
                print(f"skipping {zip_path.name}:{name}: {err}", file=sys.stderr)
                continue
            images.append(np.asarray(img))
            labels.append(CLASSES.index(cls))
    if bad:
        print(f"{zip_path.name}: skipped {bad} unreadable images", file=sys.stderr)
    array = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return array, torch.tensor(labels)


class Normalizer:
    """uint8 batch -> normalised float at the model's resolution (CLIP mean/std, bilinear up)."""

    def __init__(self, resolution: int) -> None:
        from clipforge.image import MEAN, STD

        self.resolution = resolution
        self.mean = torch.tensor(MEAN).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(STD).view(1, 3, 1, 1) * 255

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = ((batch.float() - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        if self.resolution != x.shape[-1]:  # bilinear on channels_last is ~5x cheaper than bicubic here
            x = F.interpolate(x, size=self.resolution, mode="bilinear", align_corners=False)
        return x


def augment(batch: torch.Tensor, generator: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random crop of a reflect-padded uint8 batch plus horizontal flip, as index arithmetic."""
    n, _, h, w = batch.shape
    padded = F.pad(batch.float(), (pad, pad, pad, pad), mode="reflect").to(torch.uint8)
    dy = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=generator)
    rows = (torch.arange(h).view(1, h, 1) + dy).expand(n, h, w)
    cols = torch.arange(w).view(1, 1, w) + dx
    flip = torch.rand(n, generator=generator) < 0.5
    cols = torch.where(flip.view(n, 1, 1), cols.flip(-1), cols).expand(n, h, w)
    batch_idx = torch.arange(n).view(n, 1, 1).expand(n, h, w)
    return padded.permute(0, 2, 3, 1)[batch_idx, rows, cols].permute(0, 3, 1, 2)


class ThreadTuner:
    """Pick 1 or 2 intra-op threads by measured speed, re-checked as the machine's load changes.

    On a shared 2-core machine two OpenMP threads wait on each other whenever one is
    descheduled, so under load one thread can be several times faster; on an idle machine two
    are faster. Every `period` steps the other setting runs for `probe` steps (the first one
    is discarded as warm-up) and is kept if its best step beat the incumbent's median. The
    first probe comes after `first` steps, so a quiet machine does not spend minutes on one.
    """

    def __init__(self, choices: tuple[int, ...] = (1, 2), period: int = 400, probe: int = 2,
                 first: int = 30) -> None:
        self.choices, self.period, self.probe = choices, period, probe
        self.current = choices[0]
        self.recent: list[float] = []
        self.speed: dict[int, float] = {}
        self.steps = max(period - probe - first, 0)
        torch.set_num_threads(self.current)

    def record(self, seconds_per_image: float) -> None:
        if len(self.choices) < 2:
            return
        self.steps += 1
        self.recent = (self.recent + [seconds_per_image])[-9:]
        phase = self.steps % self.period
        if phase == self.period - self.probe:  # measure the incumbent, then probe the other setting
            window = sorted(self.recent)
            self.speed = {self.current: 1.0 / window[len(window) // 2]}
            self.current = next(c for c in self.choices if c != self.current)
        elif phase == 0 and self.speed:  # probe done: keep whichever was faster
            self.speed[self.current] = 1.0 / min(self.recent[-(self.probe - 1):])
            self.current = max(self.speed, key=self.speed.get)
        else:
            return
        torch.set_num_threads(self.current)


def model_config(args: argparse.Namespace) -> dict:
    layers = [int(c) for c in args.layers]
    return {"embed_dim": args.embed_dim, "image_resolution": args.resolution, "vision_layers": layers,
            "vision_width": args.width, "vision_patch_size": None, "context_length": 16, "vocab_size": 49408,
            "transformer_width": args.text_width, "transformer_heads": max(args.text_width // 64, 1),
            "transformer_layers": args.text_layers}


def template_sets(name: str) -> list[str]:
    from clipforge.zeroshot import get_templates

    if name == "imagenet-minus-cifar":
        held_out = set(get_templates("cifar10"))
        return [t for t in get_templates("imagenet") if t not in held_out]
    return get_templates(name)


@torch.no_grad()
def image_features(model: torch.nn.Module, images: torch.Tensor, normalizer: Normalizer,
                   batch_size: int = 1000) -> torch.Tensor:
    out = []
    for i in range(0, len(images), batch_size):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out.append(model.encode_image(normalizer(images[i:i + batch_size])).float())
    return torch.cat(out)


@torch.no_grad()
def zero_shot_accuracy(model: torch.nn.Module, features: torch.Tensor, labels: torch.Tensor,
                       templates: list[str]) -> float:
    from clipforge.zeroshot import build_class_embeddings

    classifier = build_class_embeddings(model, CLASSES, templates, progress=False)
    pred = (F.normalize(features, dim=-1) @ classifier.t()).argmax(dim=-1)
    return float((pred == labels).float().mean())


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float, iters: int = 150) -> torch.Tensor:
    """Multinomial logistic regression (weights incl. bias) by full-batch L-BFGS."""
    xb = torch.cat([x, torch.ones(len(x), 1)], dim=1)
    w = torch.zeros(xb.shape[1], 10, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=iters, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xb @ w, y) + l2 * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def _probe_accuracy(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(((torch.cat([x, torch.ones(len(x), 1)], dim=1) @ w).argmax(1) == y).float().mean())


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                 test_y: torch.Tensor) -> tuple[float, float]:
    """The CLIP paper's probe: L2-regularised logistic regression on standardised features, the
    penalty chosen on a 5,000-image split of the training set, then refit on all of it.
    (torch L-BFGS: seconds, where sklearn took minutes on the shared cores.)"""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    perm = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(0))
    val, fit = perm[:5000], perm[5000:]
    scores = {l2: _probe_accuracy(_fit_logistic(train_x[fit], train_y[fit], l2), train_x[val], train_y[val])
              for l2 in (1e-5, 1e-4, 1e-3, 1e-2)}
    best = max(scores, key=scores.get)
    return _probe_accuracy(_fit_logistic(train_x, train_y, best), test_x, test_y), best


def train(args: argparse.Namespace) -> dict:
    from clipforge.models import CLIP
    from clipforge.text import tokenize
    from clipforge.train.loss import unique_caption_loss
    from clipforge.train.optim import build_optimizer
    from clipforge.train.schedule import warmup_cosine

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    cache = Path(args.decode_cache) if args.decode_cache else None
    if cache is not None and cache.is_file():
        train_x, train_y, test_x, test_y = torch.load(cache, weights_only=True)
    else:
        train_x, train_y = load_split(DATA / "train_jpeg.zip")
        test_x, test_y = load_split(DATA / "test_jpeg.zip")
        if cache is not None:
            torch.save((train_x, train_y, test_x, test_y), cache)
    decode_s = time.perf_counter() - t0
    print(f"decoded {len(train_x)} train + {len(test_x)} test images in {decode_s:.1f}s", flush=True)

    cfg = model_config(args)
    model = CLIP(**cfg).to(memory_format=torch.channels_last).train()
    n_image = sum(p.numel() for p in model.visual.parameters())
    n_text = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("visual."))
    print(f"model: image tower {n_image / 1e6:.2f}M params, text tower {n_text / 1e6:.2f}M", flush=True)
    optimizer = build_optimizer(model, lr=args.lr, weight_decay=args.wd)
    normalizer = Normalizer(args.resolution)

    train_templates = template_sets(args.train_templates)
    eval_templates = template_sets(args.eval_templates)
    captions = [t.format(c) for t in train_templates for c in CLASSES]  # caption id = t * 10 + class
    caption_tokens = tokenize(captions, context_length=cfg["context_length"])
    budget = args.minutes * 60.0
    history: list[dict] = []
    train_s, step, seen, epoch = 0.0, 0, 0, 0
    next_eval = args.eval_every
    loss_ema = None
    perm = torch.randperm(len(train_x), generator=generator)
    cursor = 0
    tuner = ThreadTuner((1, 2) if args.threads == 0 else (args.threads,))
    while train_s < budget:
        started = time.perf_counter()
        lr = args.lr * warmup_cosine(train_s / budget, args.warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if cursor + args.batch > len(perm):
            perm, cursor, epoch = torch.randperm(len(train_x), generator=generator), 0, epoch + 1
        idx = perm[cursor:cursor + args.batch]
        cursor += args.batch
        labels = train_y[idx]
        images = normalizer(augment(train_x[idx], generator, args.pad))
        chosen = torch.randint(0, len(train_templates), (args.templates_per_batch,), generator=generator)
        template = chosen[torch.randint(0, args.templates_per_batch, (len(idx),), generator=generator)]
        caption_ids = template * len(CLASSES) + labels
        unique, inverse = torch.unique(caption_ids, return_inverse=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            img_f = model.encode_image(images)
            txt_f = model.encode_text(caption_tokens[unique])
        loss = unique_caption_loss(F.normalize(img_f.float(), dim=-1), F.normalize(txt_f.float(), dim=-1),
                                   model.logit_scale, inverse)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        step += 1
        seen += len(idx)
        elapsed = time.perf_counter() - started
        train_s += elapsed
        tuner.record(elapsed / len(idx))
        loss_value = float(loss.detach())
        loss_ema = loss_value if loss_ema is None else 0.98 * loss_ema + 0.02 * loss_value
        if step % 20 == 0:
            print(f"step {step} epoch {seen / len(train_x):.2f} loss {loss_ema:.4f} lr {lr:.2e} "
                  f"scale {model.logit_scale.exp().item():.1f} {seen / train_s:.0f} img/s threads {tuner.current} "
                  f"({train_s:.0f}/{budget:.0f}s)", flush=True)
        if seen / len(train_x) >= next_eval or train_s >= budget:
            next_eval += args.eval_every
            model.eval()
            acc = zero_shot_accuracy(model, image_features(model, test_x, normalizer), test_y, eval_templates)
            model.train()
            history.append({"step": step, "epoch": seen / len(train_x), "train_seconds": train_s,
                            "loss": loss_ema, "zero_shot_top1": acc, "lr": lr})
            print(f"  eval at epoch {seen / len(train_x):.2f}: zero-shot top-1 {acc:.4f}", flush=True)

    model.eval()
    test_f = image_features(model, test_x, normalizer)
    zs = zero_shot_accuracy(model, test_f, test_y, eval_templates)
    zs_single = zero_shot_accuracy(model, test_f, test_y, ["a photo of a {}."])
    flip_f = image_features(model, test_x.flip(-1), normalizer)
    zs_tta = zero_shot_accuracy(model, test_f + flip_f, test_y, eval_templates)
    probe = probe_l2 = None
    if not args.no_probe:
        t1 = time.perf_counter()
        probe, probe_l2 = linear_probe(image_features(model, train_x, normalizer), train_y, test_f, test_y)
        print(f"linear probe {probe:.4f} (l2 {probe_l2:g}, {time.perf_counter() - t1:.0f}s)", flush=True)
    result = {
        "benchmark": "train_cifar10_from_scratch", "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "model_config": cfg, "image_params": n_image, "text_params": n_text,
        "train_templates": args.train_templates, "num_train_templates": len(train_templates),
        "eval_templates": args.eval_templates, "num_eval_templates": len(eval_templates),
        "hyperparameters": {k: v for k, v in vars(args).items() if k not in ("save_model",)},
        "train_seconds": train_s, "decode_seconds": decode_s, "steps": step, "epochs": seen / len(train_x),
        "images_per_second": seen / train_s,
        "zero_shot_top1": zs, "zero_shot_top1_single_template": zs_single, "zero_shot_top1_flip_tta": zs_tta,
        "linear_probe_top1": probe, "linear_probe_l2": probe_l2, "final_logit_scale": float(model.logit_scale.exp()),
        "history": history, "torch": torch.__version__, "thread_speed_last_probe": tuner.speed,
        "machine": platform.processor() or platform.machine(), "load_average_at_end": os.getloadavg(),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "history"}, indent=1), flush=True)
    return result, model, cfg


def write_outputs(result: dict, model: torch.nn.Module, cfg: dict, args: argparse.Namespace) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = args.name
    json_path = RESULTS / f"{stem}.json"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, json_path)
    plot_curves(result, RESULTS / f"{stem}.png")
    print(f"wrote {json_path} and {stem}.png", flush=True)
    if args.save_model:
        save_pretrained(model, cfg, result)


def plot_curves(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = result["history"]
    fig, ax1 = plt.subplots(figsize=(7, 4))
    epochs = [h["epoch"] for h in hist]
    ax1.plot(epochs, [h["loss"] for h in hist], "o-", color="tab:blue", label="train loss (EMA)")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(epochs, [100 * h["zero_shot_top1"] for h in hist], "s-", color="tab:red", label="zero-shot top-1")
    ax2.set_ylabel("zero-shot top-1 on CIFAR-10 test (%)", color="tab:red")
    ax2.axhline(80, color="tab:red", ls=":", lw=1)
    ax1.set_title(f"CLIP from scratch on CIFAR-10, {result['train_seconds'] / 60:.1f} min CPU: "
                  f"{100 * result['zero_shot_top1']:.1f}% zero-shot")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def save_pretrained(model: torch.nn.Module, cfg: dict, result: dict) -> None:
    """fp16 weights (the loader returns fp32) so the shipped file stays under 20 MB."""
    from clipforge.weights import save_safetensors

    PRETRAINED.mkdir(parents=True, exist_ok=True)
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    save_safetensors(half, PRETRAINED / "model.safetensors", config=cfg)
    for name, content in (("config.json", cfg), ("recipe.json", {
            "script": "benchmarks/train_cifar10_from_scratch.py", "command": result["command"],
            "hyperparameters": result["hyperparameters"], "train_seconds": result["train_seconds"],
            "epochs": result["epochs"], "zero_shot_top1": result["zero_shot_top1"],
            "linear_probe_top1": result["linear_probe_top1"]})):
        tmp = PRETRAINED / f".{name}.tmp"
        tmp.write_text(json.dumps(content, indent=1) + "\n")
        os.replace(tmp, PRETRAINED / name)
    size = (PRETRAINED / "model.safetensors").stat().st_size
    print(f"saved {PRETRAINED / 'model.safetensors'} ({size / 1e6:.1f} MB)", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=15.0, help="training wall-clock budget (evaluation excluded)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--pad", type=int, default=2, help="random-crop padding in pixels (0: flips only)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--wd", type=float, default=0.1)
    p.add_argument("--warmup", type=float, default=0.03, help="warmup as a fraction of the budget")
    p.add_argument("--resolution", type=int, default=32,
                   help="model input size (32: CIFAR's own pixels; 64: bilinear 2x, 4x the stem FLOPs)")
    p.add_argument("--width", type=int, default=32, help="ModifiedResNet width")
    p.add_argument("--layers", default="1111", help="ModifiedResNet blocks per stage, e.g. 1111 or 1221")
    p.add_argument("--embed-dim", type=int, default=256)
    p.add_argument("--text-width", type=int, default=64,
                   help="text Transformer width (its 49,408-row token embedding dominates the file size)")
    p.add_argument("--text-layers", type=int, default=4)
    p.add_argument("--templates-per-batch", type=int, default=1)
    p.add_argument("--train-templates", default="cifar10", help="template set for captions (or imagenet-minus-cifar)")
    p.add_argument("--eval-templates", default="cifar10")
    p.add_argument("--eval-every", type=float, default=1.0, help="epochs between zero-shot evaluations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: 1 or 2, chosen by measured speed)")
    p.add_argument("--no-probe", action="store_true")
    p.add_argument("--decode-cache", default="", help="optional .pt file keeping the decoded tensors between trials")
    p.add_argument("--name", default="train_cifar10_from_scratch", help="results file stem")
    p.add_argument("--save-model", action="store_true", help="write the model to src/clipforge/pretrained/")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result, model, cfg = train(args)
    write_outputs(result, model, cfg, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
