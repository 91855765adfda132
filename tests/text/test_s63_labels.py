"""Labels as Arabic and Japanese typists write them, and labels that are one label in two Unicode spellings
(audit 63 i18n #11, #6).

Before: `--labels "قطة،كلب"` was one label at 100% (the Arabic comma U+060C separated nothing), and NFC `café` with
NFD `café`, or `ｃａｔ` with `cat` (the same token ids: ftfy normalises them) stayed two labels that split one class's
probability 50/50, with a notice blaming the context's cut; REST /api/classify split them without a word.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipforge.text.labels import LABEL_SEPARATORS, LabelsError, split_labels

NFC, NFD = "caf\u00e9", "cafe\u0301"


def test_the_arabic_comma_and_the_halfwidth_ideographic_comma_separate_labels() -> None:
    assert LABEL_SEPARATORS == (",", "\uff0c", "\u3001", "\uff64", "\u060c")
    assert split_labels("قطة،كلب، سيارة") == ["قطة", "كلب", "سيارة"]
    assert split_labels("ねこ､いぬ") == ["ねこ", "いぬ"]  # a half-width input method's 、
    assert split_labels(["قطة،كلب"]) == ["قطة،كلب"]  # an item of a list is one label, whatever commas it holds
    with pytest.raises(LabelsError) as raised:
        split_labels(" ، ", "--labels")
    assert str(raised.value) == ("--labels ' ، ': no label in it; expected comma-separated labels (',', '，', '、', "
                                 "'､' or '،' between them), e.g. 'cat,dog,car' or '猫，狗，汽车'")


def test_labels_equal_after_nfkc_are_one_label_first_spelling_kept() -> None:
    assert split_labels(f"café,{NFD},dog") == ["café", "dog"]
    assert split_labels(f"{NFD},café") == [NFD]
    assert split_labels("ｃａｔ,cat,dog") == ["ｃａｔ", "dog"]
    assert split_labels(["cat", "ｃａｔ", " cat "]) == ["cat"]
    assert split_labels("Cat,cat") == ["Cat", "cat"]  # case is no Unicode form: some tokenizers keep it


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "p.png"
    Image.new("RGB", (32, 32), (200, 120, 40)).save(path)
    return path


def test_classify_scores_one_label_for_two_spellings(photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from clipforge.cli.main import main

    assert main(["classify", str(photo), "--labels", f"café,{NFD},dog", "--model", "clipforge-tiny", "--device",
                 "cpu", "--json"]) == 0
    captured = capsys.readouterr()
    assert sorted(json.loads(captured.out)["results"][0]["labels"]) == [NFC, "dog"]
    assert "cannot tell these labels apart" not in captured.err
    assert main(["classify", str(photo), "--labels", "قطة،كلب", "--model", "clipforge-tiny", "--device", "cpu",
                 "--json"]) == 0
    assert sorted(json.loads(capsys.readouterr().out)["results"][0]["labels"]) == ["قطة", "كلب"]


def test_rest_classify_uses_the_same_rule(photo: Path, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    import torch
    from fastapi.testclient import TestClient

    from clipforge.image import build_preprocess
    from clipforge.library import Encoder, Library
    from clipforge.models import create_model_from_config, get_config
    from clipforge.server import create_app

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model_from_config(get_config("test-vit-tiny")).eval()
    library = Library(tmp_path / "lib", Encoder(model, build_preprocess(32), name="test-vit-tiny"))
    image = photo.read_bytes()
    try:
        with TestClient(create_app(library)) as client:
            import base64

            answer = client.post("/api/classify", json={"image": base64.b64encode(image).decode(),
                                                        "labels": ["café", NFD, "dog"]}).json()
            assert sorted(x["label"] for x in answer["labels"]) == [NFC, "dog"]
            answer = client.post("/api/classify", files={"image": ("p.png", image, "image/png")},
                                 data={"labels": "ｃａｔ,cat,قطة،كلب"}).json()
            assert sorted(x["label"] for x in answer["labels"]) == sorted(["ｃａｔ", "قطة", "كلب"])
    finally:
        library.close()
