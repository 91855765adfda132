"""`split_batch`: a batch split across cores, one single-threaded slice each, computes what the slices do."""

from __future__ import annotations

import torch

from clipforge.inference import prepare
from clipforge.inference._threads import split_batch
from clipforge.models import create_model_from_config, get_config


def _with_threads(n: int):
    class _Threads:
        def __enter__(self) -> None:
            self.old = torch.get_num_threads()
            torch.set_num_threads(n)

        def __exit__(self, *exc: object) -> None:
            torch.set_num_threads(self.old)

    return _Threads()


def test_split_batch_concatenates_slices_in_order_and_keeps_the_thread_count() -> None:
    seen: list[tuple[int, int]] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        seen.append((x.shape[0], torch.get_num_threads()))
        return x * 2

    x = torch.arange(10.0).view(10, 1)
    with _with_threads(2), torch.inference_mode():
        out = split_batch(fn, x)
        assert torch.get_num_threads() == 2
    assert torch.equal(out, x * 2)
    assert sorted(seen) == [(5, 1), (5, 1)]  # two slices, each on a one-thread team
    seen.clear()
    with _with_threads(2):
        split_batch(fn, x[:3])  # fewer than two rows per thread: not split
    assert seen == [(3, 2)]


def test_vit_tower_split_equals_its_slices() -> None:
    torch.manual_seed(0)
    model = prepare(create_model_from_config(get_config("test-vit-tiny")), "fp32")
    res = model.visual.input_resolution
    images = torch.randn(8, 3, res, res)
    with _with_threads(2), torch.inference_mode():
        whole = model.encode_image(images)
        with _with_threads(1):  # what each worker computes: its half, on one thread
            halves = torch.cat([model.encode_image(images[:4]), model.encode_image(images[4:])])
            single = model.encode_image(images)
    assert torch.equal(whole, halves)
    torch.testing.assert_close(whole, single, rtol=1e-5, atol=1e-5)


def test_a_forked_child_splits_with_its_own_threads() -> None:
    import multiprocessing

    x = torch.arange(8.0).view(8, 1)
    with _with_threads(2):
        split_batch(lambda t: t + 1, x)  # the parent's pool exists before the fork
        context = multiprocessing.get_context("fork")
        with context.Pool(1) as pool:
            out = pool.apply_async(_child_split, (x,)).get(timeout=60)
    assert torch.equal(out, x + 1)


def _child_split(x: torch.Tensor) -> torch.Tensor:
    torch.set_num_threads(2)
    return split_batch(lambda t: t + 1, x)


def test_attention_pool_tower_is_split_across_cores_and_equals_its_slices() -> None:
    """SigLIP's image tower (`InferenceMapVisionTransformer`): each half on its own one-thread worker."""
    import threading

    torch.manual_seed(0)
    model = prepare(create_model_from_config(get_config("test-siglip-tiny")), "fp32")
    assert type(model.visual).__name__ == "InferenceMapVisionTransformer"
    res = model.visual.input_resolution
    images = torch.randn(8, 3, res, res)
    ran_on: list[tuple[str, int]] = []
    hook = model.visual.transformer.resblocks[0].register_forward_hook(
        lambda module, args, out: ran_on.append((threading.current_thread().name, args[0].shape[0])))
    with _with_threads(2), torch.inference_mode():
        whole = model.encode_image(images)
        split = sorted(ran_on)
        ran_on.clear()
        with _with_threads(1):
            halves = torch.cat([model.encode_image(images[:4]), model.encode_image(images[4:])])
    hook.remove()
    assert [size for _, size in split] == [4, 4] and all(name.startswith("clipforge-slice") for name, _ in split)
    assert [size for _, size in ran_on] == [4, 4]
    assert torch.equal(whole, halves)


def test_text_tower_is_split_across_cores_each_slice_to_its_own_longest_prompt(monkeypatch) -> None:
    """OpenAI's causal text tower: each half of the batch on its own one-thread worker, each stopping at
    its own longest prompt; the features equal the halves computed alone (and the whole batch on one
    thread within the truncation's 1e-5). The tiny tower's slices are far below `SPLIT_MIN_MACS`: the
    threshold is lowered so the split itself is what is tested."""
    import threading

    import clipforge.inference._threads as threads_module

    monkeypatch.setattr(threads_module, "SPLIT_MIN_MACS", {torch.float32: 0.0, torch.bfloat16: 0.0})
    torch.manual_seed(0)
    model = prepare(create_model_from_config(get_config("test-vit-tiny")), "fp32")
    context, eot = int(model.context_length), int(model.vocab_size) - 1
    tokens = torch.zeros(8, context, dtype=torch.long)
    for row, length in enumerate([3, 5, 4, 2, 9, 6, 7, 8]):
        tokens[row, :length] = torch.randint(1, eot - 1, (length,))
        tokens[row, length] = eot
    ran_on: list[tuple[str, int, int]] = []
    hook = model.transformer.resblocks[0].register_forward_hook(
        lambda module, args, out: ran_on.append((threading.current_thread().name, *args[0].shape[:2])))
    with _with_threads(2), torch.inference_mode():
        whole = model.encode_text(tokens)
        split = sorted(ran_on, key=lambda r: r[2])
        with _with_threads(1):
            halves = torch.cat([model.encode_text(tokens[:4]), model.encode_text(tokens[4:])])
            single = model.encode_text(tokens)
    hook.remove()
    assert [(size, length) for _, size, length in split] == [(4, 6), (4, 10)]  # longest prompt + EOT per half
    assert all(name.startswith("clipforge-slice") for name, _, _ in split)
    assert torch.equal(whole, halves)
    torch.testing.assert_close(whole, single, rtol=1e-5, atol=1e-5)


def test_a_text_batch_is_split_only_when_a_slice_has_enough_work(monkeypatch) -> None:
    """`worth_splitting`: a slice's rows x width^2 against `SPLIT_MIN_MACS` (short prompts on a narrow tower
    ran faster whole on the machine measured); the features are the same either way."""
    import threading

    import clipforge.inference._threads as threads_module
    from clipforge.inference._threads import SPLIT_MIN_MACS, worth_splitting

    with _with_threads(2):  # 32 prompts of 15 tokens, ViT-B/32's width 512: 16 x 15 x 512^2 = 63 M a slice
        monkeypatch.setattr(threads_module, "amx_supported", lambda: False)
        assert not worth_splitting(32, 15, 512, torch.bfloat16) and worth_splitting(32, 25, 512, torch.bfloat16)
        assert worth_splitting(32, 15, 512, torch.float32) and not worth_splitting(32, 8, 512, torch.float32)
        assert worth_splitting(32, 15, 768, torch.bfloat16)  # XLM-R's and ViT-L's width
        monkeypatch.setattr(threads_module, "amx_supported", lambda: True)  # AMX: bf16 splits from 50 M a slice
        assert worth_splitting(32, 15, 512, torch.bfloat16) and worth_splitting(32, 13, 512, torch.bfloat16)
        assert not worth_splitting(32, 11, 512, torch.bfloat16)
        assert worth_splitting(32, 15, 512, torch.float32) and not worth_splitting(32, 8, 512, torch.float32)
    torch.manual_seed(0)
    model = prepare(create_model_from_config(get_config("test-vit-tiny")), "fp32")
    eot = int(model.vocab_size) - 1
    tokens = torch.zeros(8, int(model.context_length), dtype=torch.long)
    for row in range(8):
        tokens[row, : 3 + row] = torch.randint(1, eot - 1, (3 + row,))
        tokens[row, 3 + row] = eot
    work = 4 * 11 * int(model.transformer.width) ** 2  # the longest prompt and its EOT: 11 rows, 4 prompts a slice
    threads_seen: list[str] = []
    hook = model.transformer.resblocks[0].register_forward_hook(
        lambda module, args, out: threads_seen.append(threading.current_thread().name))
    runs = {}
    with _with_threads(2), torch.inference_mode():
        for label, threshold in (("whole", work + 1.0), ("split", float(work))):
            monkeypatch.setattr(threads_module, "SPLIT_MIN_MACS", {**SPLIT_MIN_MACS, torch.float32: threshold})
            threads_seen.clear()
            runs[label] = (model.encode_text(tokens), list(threads_seen))
    hook.remove()
    assert runs["whole"][1] == [threading.current_thread().name]
    assert len(runs["split"][1]) == 2 and all(n.startswith("clipforge-slice") for n in runs["split"][1])
    torch.testing.assert_close(runs["whole"][0], runs["split"][0], rtol=1e-5, atol=1e-5)
