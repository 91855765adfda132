"""Helpers for the model-family tests: tokenizer files built here (no hub), and small checkpoints
of each family saved as a user would have them (weights + tokenizer file in one folder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

CORPUS = [
    "a photo of a cat", "A Photo of a DOG!", "the_quick brown-fox, jumps: over (the) lazy dog...",
    "一只猫的照片", "海边的日落", "繁體中文的句子與標點：「你好」", "猫の写真です。", "東京タワーと富士山",
    "صورة قطة", "مرحبا بالعالم", "एक बिल्ली की तस्वीर", "नमस्ते दुनिया", "🐱🐶 emoji 😀 test 🎉",
    "mixed 中文 English 日本語 العربية हिन्दी 😀", "numbers 12345 and 3.14", "   leading and trailing   ",
    "", "a " * 100,
]
# Words the command tests use (labels, captions), so the tiny vocabularies cover them.
EXTRA = ["red", "green", "blue", "a photo of a red square", "a photo of a green square", "a photo of a blue square",
         "a red image", "a green image", "a blue image", "cat", "dog", "bird", "airplane", "automobile",
         "deer", "frog", "horse", "ship", "truck", "a photo of a {}", "itap of a", "a bad photo of the"]


def train_spiece(folder: Path, vocab_size: int = 400) -> Path:
    """A SentencePiece unigram model, T5/SigLIP ids (pad 0, eos 1, unk 2), as ``folder/spiece.model``."""
    spm = pytest.importorskip("sentencepiece")
    from clipforge.text.families import clean

    folder.mkdir(parents=True, exist_ok=True)
    lines = [clean(t, "canonicalize") for t in CORPUS + EXTRA if t.strip()] * 20
    (folder / "corpus.txt").write_text("\n".join(lines), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(folder / "corpus.txt"), model_prefix=str(folder / "spiece"), vocab_size=vocab_size,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0,
        hard_vocab_limit=False, minloglevel=2)
    (folder / "corpus.txt").unlink()
    (folder / "spiece.vocab").unlink()
    return folder / "spiece.model"


def build_json_tokenizer(folder: Path, vocab_size: int = 400) -> Path:
    """An XLM-R-style tokenizers JSON (unigram; <s> 0, <pad> 1, </s> 2, <unk> 3; "<s> $A </s>")."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                      unk_token="<unk>")
    tok.train_from_iterator([t for t in CORPUS + EXTRA if t.strip()] * 20, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "pad_token": "<pad>", "unk_token": "<unk>", "model_max_length": 77}))
    return folder / "tokenizer.json"


FAMILY_TINY = {"siglip": "test-siglip-tiny", "siglip2": "test-siglip2-tiny", "worldwide": "test-worldwide-tiny",
               "openai": "test-vit-tiny",
               # open_clip's transformers text towers: XLM-R (mean, MLP) and NLLB on a SigLIP image tower (cls, sigmoid)
               "xlmr": "test-xlmr-tiny", "nllb-siglip": "test-nllb-siglip-tiny"}


def save_family_checkpoint(folder: Path, arch: str, seed: int = 0) -> Path:
    """Random weights of `arch` saved with their config, beside the tokenizer file the config names."""
    from clipforge.api import load_model
    from clipforge.weights import save_safetensors

    folder.mkdir(parents=True, exist_ok=True)
    loaded = load_model(f"random:{arch}", "cpu", seed=seed)
    spec = getattr(loaded.model, "tokenizer_cfg", None) or {}
    if spec.get("kind") == "sentencepiece":
        train_spiece(folder)
    elif spec.get("kind") in ("hf-json", "hf-transformers"):  # (transformers' class reads the same JSON)
        build_json_tokenizer(folder)
    with torch.no_grad():
        if getattr(loaded.model, "logit_bias", None) is not None:  # a sigmoid model that says something
            loaded.model.logit_scale.fill_(2.3)
            loaded.model.logit_bias.fill_(-2.0)
    return save_safetensors(loaded.model, folder / "model.safetensors")


def siglip_loss_worker(rank: int, world: int, port: int, out_dir: str, open_clip_dir: str) -> None:
    """One rank of the 2-process SigLIP loss check: our `SigLipLoss` and open_clip's (ring exchange,
    ``bidir``) on this rank's slice of one fixed global batch; losses and gradients saved."""
    import importlib
    import sys
    import types

    import torch.distributed as dist

    from clipforge.train.loss import SigLipLoss

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        package = types.ModuleType("_oc_ref")
        package.__path__ = [open_clip_dir]
        sys.modules["_oc_ref"] = package
        reference = importlib.import_module("_oc_ref.loss").SigLipLoss(rank=rank, world_size=world, dist_impl="bidir")
        gen = torch.Generator().manual_seed(0)
        img = torch.nn.functional.normalize(torch.randn(4 * world, 16, generator=gen), dim=-1)
        txt = torch.nn.functional.normalize(torch.randn(4 * world, 16, generator=gen), dim=-1)
        rows = slice(4 * rank, 4 * rank + 4)
        results = {}
        for name in ("ours", "open_clip"):
            leaves = [img[rows].clone().requires_grad_(True), txt[rows].clone().requires_grad_(True),
                      torch.tensor(2.3, requires_grad=True), torch.tensor(-4.0, requires_grad=True)]
            if name == "ours":
                loss = SigLipLoss()(leaves[0], leaves[1], torch.stack([leaves[2], leaves[3]]))
            else:
                loss = reference(leaves[0], leaves[1], leaves[2].exp(), leaves[3])
            loss.backward()
            results[name] = {"loss": loss.detach(), "grads": [t.grad for t in leaves]}
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def build_gemma_like_tokenizer(folder: Path, vocab_size: int = 400) -> Path:
    """A Gemma-style tokenizers JSON (BPE with byte fallback; <pad> 0, <eos> 1, <bos> 2, <unk> 3;
    "<bos> $A"), the kind of file SigLIP 2 ships."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split("▁", "merged_with_next")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    bytes_ = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size + 260, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>",
                                                                               *bytes_])
    tok.train_from_iterator([t for t in CORPUS + EXTRA if t.strip()] * 20, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    tok.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json"
