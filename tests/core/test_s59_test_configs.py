"""The test configs the "unknown model" error offers all run offline; the others say what they need (audit 59,
newcomer 9).

The error offered nine test configs for random weights, and seven of them failed at the first text in a fresh
install: their tokenizer files (SentencePiece, tokenizers JSON, WordPiece vocab.txt, sized to a 512-token tower)
ship with no install. ``test-clipa-tiny`` even said the file "was not found in ~/.cache/.../google-bert--bert-base-
uncased ...; put it beside the checkpoint" (a test config has no checkpoint, and bert-base-uncased's 30,522-word
vocabulary does not fit its tower: a file put there would have been an IndexError).
"""

from __future__ import annotations

import pytest

from clipforge.api import load_model
from clipforge.cli.main import main
from clipforge.models import ARCH_CONFIGS

NEEDS_A_FILE = {  # test config -> (tokenizer kind, file); each needs a file written beside a saved checkpoint
    "test-siglip-tiny": ("sentencepiece", "spiece.model"), "test-siglip2-tiny": ("hf-json", "tokenizer.json"),
    "test-worldwide-tiny": ("hf-json", "tokenizer.json"), "test-clipa-tiny": ("wordpiece", "vocab.txt"),
    "test-xlmr-tiny": ("hf-transformers", "tokenizer.json"),
    "test-nllb-siglip-tiny": ("hf-transformers", "tokenizer.json"),
    "test-mt5-tiny": ("hf-transformers", "tokenizer.json"),
}
TRANSFORMERS_TOWERS = {"test-xlmr-tiny", "test-nllb-siglip-tiny", "test-mt5-tiny"}


@pytest.fixture()
def image(tmp_path) -> str:
    from PIL import Image

    path = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(path)
    return str(path)


def _classify(image: str, model: str, capsys) -> tuple[int, str, str]:
    code = main(["classify", image, "--labels", "red,green", "--model", model, "-q", "--device", "cpu"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_unknown_model_error_offers_only_the_test_configs_that_run_here(image, capsys) -> None:
    code, _, err = _classify(image, "nonexist.pt", capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.rstrip().endswith("For random weights pass a test config (test-vit-tiny, test-rn-tiny) or "
                                 "random:<arch>, e.g. random:ViT-B/32."), err
    from clipforge.api.sources import offline_test_configs

    offered = offline_test_configs()
    assert offered == ["test-vit-tiny", "test-rn-tiny"]
    assert set(offered) | set(NEEDS_A_FILE) == {n for n in ARCH_CONFIGS if n.startswith("test-")}
    for name in offered:  # each runs offline with nothing beside it (the suite's cache is an empty folder)
        code, out, err = _classify(image, name, capsys)
        assert code == 0 and out.count("%") == 2 and err == "", (name, err)


@pytest.mark.parametrize("name", sorted(NEEDS_A_FILE))
def test_the_others_say_in_one_line_which_file_they_need_and_where(name, image, monkeypatch, tmp_path,
                                                                   capsys) -> None:
    if name in TRANSFORMERS_TOWERS:
        pytest.importorskip("transformers")
    # a cache holding CLIPA's real tokenizer folder is not read for the 512-token test config
    cache = tmp_path / "cache"
    monkeypatch.setenv("CLIPFORGE_CACHE", str(cache))
    bert = cache / "tokenizers" / "google-bert--bert-base-uncased"
    bert.mkdir(parents=True)
    (bert / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(30518)]))
    kind, file = NEEDS_A_FILE[name]
    code, out, err = _classify(image, name, capsys)
    assert (code, out) == (2, "")
    assert err == (f"error: this model's {kind} tokenizer file {file!r} is needed and this model has no checkpoint "
                   "folder to hold it; load the model from a checkpoint with the file beside it\n")


def test_clipa_s_real_configs_still_find_their_downloaded_vocabulary() -> None:
    """Only the test config lost the hub repository: CLIPA-v2's own configs read bert-base-uncased's file from the
    download cache as before."""
    assert ARCH_CONFIGS["ViT-L-14-CLIPA"]["tokenizer"]["hub_repo"] == "google-bert/bert-base-uncased"
    assert "hub_repo" not in ARCH_CONFIGS["test-clipa-tiny"]["tokenizer"]
    assert {k: v for k, v in ARCH_CONFIGS["ViT-L-14-CLIPA"]["tokenizer"].items() if k != "hub_repo"} == \
        ARCH_CONFIGS["test-clipa-tiny"]["tokenizer"]
    assert load_model("random:test-clipa-tiny", "cpu").model.tokenizer_dirs == ()
