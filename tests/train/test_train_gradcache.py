"""GradCache accumulation gives the full-batch gradients; precision and schedule choices."""

from __future__ import annotations

import math

import pytest
import torch

from clipforge.train.loss import ClipLoss
from clipforge.train.precision import resolve_precision
from clipforge.train.schedule import cosine_with_warmup, warmup_cosine
from clipforge.train.selfcheck import fixed_batch, tiny_model
from clipforge.train.step import ContrastiveModel, gradcache_step, plain_step


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("micro_batch", [2, 3])
def test_gradcache_matches_the_full_batch(micro_batch):
    images, texts = fixed_batch(8)
    fp32 = resolve_precision("fp32", "cpu")
    full = ContrastiveModel(tiny_model())
    loss_full = plain_step(full, images, texts, ClipLoss(), fp32)
    cached = ContrastiveModel(tiny_model())
    loss_cached = gradcache_step(cached, images, texts, ClipLoss(), fp32, micro_batch=micro_batch)
    torch.testing.assert_close(loss_cached, loss_full, rtol=0, atol=1e-12)
    a, b = _grads(full), _grads(cached)
    assert a.keys() == b.keys() and len(a) > 20
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)  # LayerNorm runs in fp32
    assert float(a["clip.logit_scale"].abs()) > 0


def test_gradcache_with_gradient_checkpointing_still_matches():
    images, texts = fixed_batch(8)
    fp32 = resolve_precision("fp32", "cpu")
    full = ContrastiveModel(tiny_model())
    plain_step(full, images, texts, ClipLoss(), fp32)
    model = tiny_model().train()
    model.transformer.grad_checkpointing = model.visual.transformer.grad_checkpointing = True
    cached = ContrastiveModel(model)
    gradcache_step(cached, images, texts, ClipLoss(), fp32, micro_batch=4)
    for name, grad in _grads(full).items():
        torch.testing.assert_close(_grads(cached)[name], grad, rtol=0, atol=1e-6, msg=name)


def test_precision_choices_on_cpu(monkeypatch):
    import clipforge.inference.cpu as cpu

    monkeypatch.setattr(cpu, "bf16_supported", lambda: False)  # emulated bf16 is slower than fp32
    assert resolve_precision("amp", "cpu").dtype is None
    monkeypatch.setattr(cpu, "bf16_supported", lambda: True)
    amp = resolve_precision("amp", "cpu")
    assert amp.dtype == torch.bfloat16 and amp.scaler is None
    assert resolve_precision("fp32", "cpu").dtype is None
    with pytest.raises(ValueError, match="fp16"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("fp8", "cpu")
    model = tiny_model().float()
    with amp.autocast():
        out = model.encode_image(torch.randn(2, 3, 32, 32))
    assert out.dtype == torch.bfloat16 and model.visual.conv1.weight.dtype == torch.float32  # fp32 master weights


def test_warmup_then_cosine():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = cosine_with_warmup(opt, total_steps=10, warmup_steps=2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[2] == pytest.approx(1.0)
    assert lrs[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:], strict=False))
    assert warmup_cosine(0.05, 0.1) == pytest.approx(0.5) and warmup_cosine(1.0, 0.1) == pytest.approx(0.0)
