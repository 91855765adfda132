"""A Chinese-writing user, continued: what `test_chinese_user.py`'s round left, each case as it was met.

- A labels, class-name or template file saved by Chinese Windows' Notepad in its default encoding (GBK, i.e.
  GB18030's two-byte part) was refused as "is not UTF-8 text (line 2 has byte 0xb9; save it as UTF-8)": true,
  but it named neither the encoding the file is in nor how to convert it. (Its first line was no help either:
  "猫" in GBK is the bytes c3 a8, which are valid UTF-8 for "è".)
- `eval zeroshot --classnames 类名.txt --model clipforge-tiny` (an English-only model) measured Chinese class
  names without a word, while `classify`, `search` and `similarity` say that such scores are not meaningful.
- `tag --labels 猫，狗` recorded (and printed with --json) the template set as typed, `imagenet`, although the
  labels were prompted with its Chinese twin `zh-imagenet`.
"""

from __future__ import annotations

import json
from pathlib import Path
from shlex import quote

import pytest

from clipforge.cli.main import main
from tests.chinese.chinese_files import folder_dataset, write_photos

# -- 1. GBK / GB18030 files -------------------------------------------------------------------------------------


def test_a_gbk_labels_file_is_named_as_gbk_with_how_to_convert_it(tmp_path: Path, capsys) -> None:
    image = write_photos(tmp_path, ["p.png"])[0]
    labels = tmp_path / "标签.txt"
    labels.write_bytes("猫\r\n狗\r\n小汽车\r\n".encode("gbk"))  # what Chinese Windows' Notepad saves by default
    assert main(["classify", str(image), "--labels-file", str(labels), "--model", "clipforge-tiny-zh"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: labels file {labels} is not UTF-8 text"), err
    assert "looks like GBK/GB18030 (Chinese Windows' default)" in err, err
    assert "Notepad: Save as -> Encoding UTF-8" in err, err
    assert f"iconv -f GB18030 -t UTF-8 {quote(str(labels))} > {quote(str(tmp_path / '标签.utf8.txt'))}" in err, err


def test_gb18030_templates_and_class_names_files_are_named_too(tmp_path: Path) -> None:
    from clipforge.text.labels import TextFileError
    from clipforge.zeroshot.files import read_labels_file
    from clipforge.zeroshot.prompts import get_templates

    templates = tmp_path / "my templates.txt"
    templates.write_bytes("一张{}的照片\n一张{}的图片。\n".encode("gb18030"))
    with pytest.raises(TextFileError, match="looks like GBK/GB18030") as caught:
        get_templates(str(templates))
    message = str(caught.value)
    assert message.startswith(f"template file {templates} ") and "\n" not in message
    converted = tmp_path / "my templates.utf8.txt"  # quoted as a shell needs them
    assert f"iconv -f GB18030 -t UTF-8 '{templates}' > '{converted}'" in message, message
    names = tmp_path / "类名.json"
    names.write_bytes(json.dumps(["鸟", "猫", "狗"], ensure_ascii=False).encode("gb18030"))
    with pytest.raises(TextFileError, match=r"looks like GBK/GB18030.*类名\.utf8\.json"):
        read_labels_file(names)


@pytest.mark.parametrize(("data", "why"), [
    ("Müller\nStraße\nKäse\nBrötchen\n".encode("cp1252"), "German in Windows-1252 (decodes as GBK, few CJK)"),
    ("café\nnaïve\n".encode("latin-1"), "Latin-1 that is not GB18030 at all"),
    (bytes([0x80, 0xFF, 0x00, 0x41]) * 4, "binary"),
    ("丁鲷\n金鱼\n虎鲨\n".encode() + "猫狗\n".encode("gbk"), "UTF-8 Chinese with one GBK line (reads as GB18030 too)"),
    ("猫狗鸟鱼\n".encode("utf-16-le"), "UTF-16 without its byte-order mark"),
])
def test_a_file_that_is_not_gbk_is_not_called_gbk(tmp_path: Path, data: bytes, why: str) -> None:
    from clipforge.text.labels import TextFileError
    from clipforge.zeroshot.files import read_labels_file

    path = tmp_path / "labels.txt"
    path.write_bytes(data)
    with pytest.raises(TextFileError) as caught:
        read_labels_file(path)
    message = str(caught.value)
    assert "is not UTF-8 text" in message and "save it as UTF-8" in message, (why, message)
    assert "GBK" not in message and "GB18030" not in message, (why, message)


# -- 2. `eval zeroshot`'s language notice -----------------------------------------------------------------------


@pytest.fixture()
def chinese_folder_dataset(tmp_path: Path) -> tuple[Path, Path]:
    return folder_dataset(tmp_path)


def _eval(root: Path, out: Path, model: str, *extra: str) -> list[str]:
    return ["eval", "zeroshot", "--model", model, "--dataset", "folder", "--root", str(root), "--out", str(out),
            *extra]


def test_eval_zeroshot_says_when_chinese_class_names_meet_an_english_model(chinese_folder_dataset, tmp_path: Path,
                                                                            capsys) -> None:
    root, names = chinese_folder_dataset
    out = tmp_path / "结果"
    assert main(_eval(root, out, "clipforge-tiny", "--classnames", str(names), "--json")) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # stdout is the report alone
    notice = ("notice: the class names '鸟 猫 狗' are written in zh but model clipforge-tiny was trained for en only; "
              "its scores for them are not meaningful")
    assert captured.err.count("notice: ") == 1 and notice in captured.err, captured.err
    assert report["notice"].startswith(notice), report.get("notice")  # the report keeps it
    assert json.loads(Path(report["files"]["report"]).read_text(encoding="utf-8"))["notice"] == report["notice"]
    assert notice in Path(report["files"]["log"]).read_text(encoding="utf-8")
    assert main(_eval(root, out, "clipforge-tiny", "--classnames", str(names), "-q")) == 0
    assert "notice" not in capsys.readouterr().err  # --quiet: none


def test_eval_zeroshot_says_nothing_when_the_model_reads_chinese(chinese_folder_dataset, tmp_path: Path,
                                                                 capsys) -> None:
    root, names = chinese_folder_dataset
    assert main(_eval(root, tmp_path / "out", "clipforge-tiny-zh", "--classnames", str(names), "--json")) == 0
    captured = capsys.readouterr()
    assert "notice" not in captured.err and "notice" not in json.loads(captured.out), captured.err


def test_eval_zeroshot_says_when_chinese_templates_meet_an_english_model(chinese_folder_dataset,
                                                                              tmp_path: Path, capsys) -> None:
    root, _ = chinese_folder_dataset
    assert main(_eval(root, tmp_path / "out", "clipforge-tiny", "--templates", "一张{}的照片")) == 0
    err = capsys.readouterr().err  # English class names in Chinese templates ("一张bird的照片")
    assert err.count("notice: ") == 1 and "the templates '一张{}的照片' are written in zh but model clipforge-tiny" in err, \
        err


# -- 3. the tag vocabulary names the templates it prompted with --------------------------------------------------


def _spy_templates(monkeypatch) -> list[list[str]]:
    from clipforge.zeroshot import classifier as classifier_module

    used: list[list[str]] = []
    real = classifier_module.ZeroShotClassifier.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        used.append(list(self.templates))

    monkeypatch.setattr(classifier_module.ZeroShotClassifier, "__init__", spy)
    return used


def _tags_by_name(lib: str) -> dict[str, list[tuple[str, float]]]:
    from clipforge.library import Library

    with Library(lib) as library:
        return {Path(r.path).name: library.tags(r.id) for r in library.list_images(limit=100)}


def test_tag_records_the_chinese_twin_it_prompted_with_and_an_add_prompts_the_same(tmp_path: Path, capsys,
                                                                                   monkeypatch) -> None:
    import shutil

    from clipforge.library import Library
    from clipforge.library.tagging import VOCABULARY_KEY, tag_vocabulary
    from clipforge.zeroshot.languages import language_templates

    photos = write_photos(tmp_path / "照片", ["a.png", "b.png"])
    lib = str(tmp_path / "图库")
    assert main(["index", "add", str(tmp_path / "照片"), "--library", lib, "--model", "clipforge-tiny-zh", "-q"]) == 0
    capsys.readouterr()
    used = _spy_templates(monkeypatch)
    # imagenet named (tag's default set; unnamed, clipforge-tiny-zh's 16 tokens take zh-cifar10: test_s56_audit_templates)
    assert main(["tag", "--labels", "猫，狗", "--templates", "imagenet", "--library", lib, "--json", "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    zh_imagenet = language_templates("zh-imagenet")
    assert report["templates"] == "zh-imagenet", report["templates"]  # what it prompted with, not what was typed
    assert used and all(templates == zh_imagenet for templates in used)
    with Library(lib) as library:
        model = library.encoder.fingerprint
        assert tag_vocabulary(library.store, model)["templates"] == "zh-imagenet"

    # round trip: a photo added later is tagged with the recorded vocabulary exactly as `tag` tagged its twin
    (tmp_path / "后来").mkdir()
    shutil.copy(photos[0], tmp_path / "后来" / "a2.png")
    used.clear()
    assert main(["index", "add", str(tmp_path / "后来"), "--library", lib]) == 0
    assert "tagged 1 new image with the library's labels" in capsys.readouterr().out
    assert used and all(templates == zh_imagenet for templates in used), [t[:1] for t in used]
    tags = _tags_by_name(lib)
    assert [label for label, _ in tags["a2.png"]] == [label for label, _ in tags["a.png"]]
    assert [p for _, p in tags["a2.png"]] == pytest.approx([p for _, p in tags["a.png"]], abs=1e-6)

    # a library tagged before the record named the twin ("imagenet" beside Chinese labels) was prompted in English:
    # its later photos are prompted in English too, as its tagged ones were (`vocabulary_templates`)
    from clipforge.zeroshot.prompts import get_templates

    with Library(lib) as library, library.store.transaction() as tx:
        tx.set_meta(VOCABULARY_KEY + model, json.dumps({"labels": ["猫", "狗"], "templates": "imagenet", "top_k": 5}))
    shutil.copy(photos[0], tmp_path / "后来" / "a3.png")
    used.clear()
    assert main(["index", "add", str(tmp_path / "后来"), "--library", lib, "-q"]) == 0
    assert used and all(templates == get_templates("imagenet") for templates in used), [t[:1] for t in used]


def test_a_milvus_library_records_the_chinese_twin_too(tmp_path: Path, capsys) -> None:
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from clipforge.library.milvus_library import MilvusLibrary
    from clipforge.library.milvus_tags import Vocabularies
    from clipforge.library.tagging import tag_vocabulary

    write_photos(tmp_path / "照片", ["a.png", "b.png"])
    base = ["--store", f"milvus-lite:{tmp_path}/m.db", "--library", str(tmp_path / "图库")]
    assert main(["index", "add", str(tmp_path / "照片"), *base, "--model", "clipforge-tiny-zh", "-q"]) == 0
    capsys.readouterr()
    assert main(["tag", "--labels", "猫，狗", "--templates", "imagenet", *base, "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["templates"] == "zh-imagenet"
    with MilvusLibrary(f"milvus-lite:{tmp_path}/m.db", tmp_path / "图库") as library:
        vocabulary = tag_vocabulary(Vocabularies(library.milvus), library.space.fingerprint)
    assert vocabulary is not None and vocabulary["templates"] == "zh-imagenet", vocabulary


# -- 4. `eval suite` keeps Chinese names and texts --------------------------------------------------------------


@pytest.fixture(scope="module")
def chinese_named_checkpoints(tmp_path_factory) -> list[Path]:
    """clipforge-tiny's weights saved twice under Chinese file names, the second with another logit scale."""
    import torch

    from clipforge.api import load_model

    state = load_model("clipforge-tiny", device="cpu").model.state_dict()
    folder = tmp_path_factory.mktemp("模型")
    torch.save(state, folder / "猫模型.pt")
    torch.save({**state, "logit_scale": state["logit_scale"] + 0.5}, folder / "狗模型.pt")
    return [folder / "猫模型.pt", folder / "狗模型.pt"]


def _suite_root(tmp_path: Path) -> Path:
    root = tmp_path / "数据"
    for side in ("negative", "positive"):
        write_photos(root / "rendered-sst2" / "test" / side, ["0.png", "1.png"])
    (root / "dtd" / "images" / "banded").mkdir(parents=True)  # present but broken: no labels/test1.txt
    (root / "dtd" / "labels").mkdir()
    return root


def test_suite_keeps_chinese_model_names_paths_and_errors(chinese_named_checkpoints, tmp_path: Path, capsys,
                                                         recwarn) -> None:
    root, out = _suite_root(tmp_path), tmp_path / "结果"
    models = [str(path) for path in chinese_named_checkpoints]
    assert main(["eval", "suite", "--models", ",".join(models), "--datasets", "rendered_sst2,dtd", "--root", str(root),
                 "--out", str(out), "--device", "cpu", "--workers", "0", "--json"]) == 1  # dtd failed
    text = capsys.readouterr().out
    assert "\\u" not in text, text[:300]
    summary = json.loads(text)
    failed = [row for row in summary["cells"] if row["status"] == "failed"]
    assert {row["model"] for row in summary["cells"]} == set(models)
    assert failed and all(f"{root}/dtd/labels/test1.txt" in row["error"] for row in failed), failed
    table = (out / "table.json").read_text(encoding="utf-8")
    assert "\\u" not in table and {row["model"] for row in json.loads(table)["rows"]} == set(models)
    markdown = (out / "table.md").read_text(encoding="utf-8")
    assert all(model in markdown for model in models) and f"{root}/dtd" in markdown
    # each model's report keeps its name in its file name: both were "zeroshot_.pt_rendered-sst2_test_<second>"
    # (the same file for two models run within one second)
    reports = {json.loads(p.read_text(encoding="utf-8"))["model"]["weights"]: p.name
               for p in (out / "reports").glob("*.json")}
    assert sorted(reports) == sorted(str(path.resolve()) for path in chinese_named_checkpoints), reports
    assert [name for name in reports.values() if "猫模型" in name] and [n for n in reports.values() if "狗模型" in n]
    # the heat map draws the Chinese model names (a CJK font, or "#i" and a notice), never empty boxes
    assert not [str(w.message) for w in recwarn if "missing from font" in str(w.message)]


def test_report_stems_are_normalised_and_bounded() -> None:
    """Letters of any script are kept, so a stem could pass a file system's 255 bytes (80 Chinese characters: 281)
    and one name gave two stems in NFC and NFD (macOS): a long part is cut with a hash, and NFC is used."""
    import unicodedata

    from clipforge.evaluate.report import run_stem

    long = run_stem("zeroshot", "模" * 80 + ".pt", "cifar10", "test")
    other = run_stem("zeroshot", "模" * 79 + "型.pt", "cifar10", "test")
    assert len(long.encode("utf-8")) < 160 and long.startswith("zeroshot_模模") and long[:-16] != other[:-16]
    nfd, nfc = (run_stem("zeroshot", unicodedata.normalize(form, "modèle.pt"), "folder", None) for form in ("NFD", "NFC"))
    assert nfd[:-16] == nfc[:-16] and "modèle.pt" in nfc


def test_report_stems_of_chinese_named_models_differ() -> None:
    from clipforge.evaluate.report import run_stem

    cat, dog = (run_stem("zeroshot", name, "folder", "test") for name in ("猫模型.pt", "狗模型.pt"))
    assert cat != dog and cat.startswith("zeroshot_猫模型.pt_folder_test_"), (cat, dog)
    assert run_stem("zeroshot", "ViT-B/32", "image net", None).startswith("zeroshot_ViT-B-32_image-net_")  # as before


def test_suite_cell_of_chinese_prompts_says_zh_and_keeps_the_notice(tmp_path: Path, capsys) -> None:
    from clipforge.data.classnames import CIFAR10_CLASSES

    root = tmp_path / "数据"
    for name in CIFAR10_CLASSES:
        write_photos(root / "cifar10" / "test" / name, ["0.png"])
    said: list[str] = []
    from clipforge.evaluate.suite import run_suite

    summary = run_suite(["clipforge-tiny"], ["cifar10"], root, tmp_path / "结果", templates="zh-cifar10",
                        workers=0, device="cpu", progress=False, echo=said.append)
    cell = json.loads(Path(summary["cells"][0]["cell_file"]).read_text(encoding="utf-8"))
    assert cell["language"] == "zh", cell["language"]  # CLIP_benchmark's field: the prompts' language
    assert "trained for en only" in cell["clipforge"]["notice"]
    assert [line for line in said if "trained for en only" in line], said


def test_suite_prompts_a_chinese_model_as_eval_zeroshot_does(tmp_path: Path) -> None:
    """`eval suite` prompted clipforge-tiny-zh in English ("a photo of a {}.") where `eval zeroshot` prompts it in
    Chinese (zh-cifar10, with Chinese class names): one model, one dataset, two accuracies."""
    from clipforge.data.classnames import CIFAR10_CLASSES
    from clipforge.evaluate.suite import run_suite

    root = tmp_path / "数据"
    for name in CIFAR10_CLASSES:
        write_photos(root / "cifar10" / "test" / name, ["0.png"])
    summary = run_suite(["clipforge-tiny-zh", "clipforge-tiny"], ["cifar10"], root, tmp_path / "结果", workers=0,
                        device="cpu", progress=False, echo=lambda line: None)
    cells = {row["model"]: json.loads(Path(row["cell_file"]).read_text(encoding="utf-8")) for row in summary["cells"]}
    assert cells["clipforge-tiny-zh"]["language"] == "zh" and cells["clipforge-tiny"]["language"] == "en"
    reports = {model: json.loads(Path(cell["clipforge"]["report"]).read_text(encoding="utf-8"))
               for model, cell in cells.items()}
    assert reports["clipforge-tiny-zh"]["templates"]["spec"] == "zh-cifar10"
    assert reports["clipforge-tiny"]["templates"]["spec"] != "zh-cifar10"


@pytest.mark.parametrize("codec, text", [("shift_jis", "猫\n犬\n鳥\nりんご\n"), ("euc_kr", "고양이\n개\n새\n사과\n"),
                                         ("big5", "貓\n狗\n鳥\n蘋果\n")])
def test_a_japanese_korean_or_taiwanese_file_is_not_told_it_is_gbk_alone(tmp_path: Path, codec: str, text: str):
    """Shift-JIS, EUC-KR and Big5 bytes read as Han text in GB18030 too: "looks like GBK" with only an
    `iconv -f GB18030` line sent a Japanese user to convert their labels into valid UTF-8 nonsense."""
    from clipforge.text.labels import TextFileError
    from clipforge.zeroshot.files import read_labels_file

    path = tmp_path / f"labels-{codec}.txt"
    path.write_bytes(text.encode(codec))
    with pytest.raises(TextFileError) as caught:
        read_labels_file(path)
    message = str(caught.value)
    assert "is not UTF-8 text" in message, message
    if "GB18030" in message:  # named only beside the others, with their iconv names
        assert "or another East Asian encoding (Big5, Shift-JIS, EUC-KR)" in message, message
        assert "-f BIG5, SHIFT_JIS or EUC-KR" in message, message


def test_a_vocabulary_recorded_before_the_twin_mapping_keeps_its_english_prompts() -> None:
    """A library tagged with Chinese labels and `imagenet` before `tag` recorded the Chinese twin was prompted in
    English; photos added later must be prompted alike (they were prompted with zh-imagenet: two prompt sets,
    incomparable probabilities, in one library). Records written since, and `simple`, are prompted as recorded."""
    from clipforge.library.tagging import vocabulary_templates
    from clipforge.zeroshot.prompts import get_templates

    old = {"labels": ["猫", "狗"], "templates": "imagenet", "top_k": 5}
    assert vocabulary_templates(old) == get_templates("imagenet")  # written out: no twin mapping applies to a list
    assert vocabulary_templates({**old, "templates": "zh-imagenet"}) == "zh-imagenet"
    assert vocabulary_templates({**old, "templates": "simple"}) == "simple"  # zh-simple then as now
    assert vocabulary_templates({**old, "labels": ["cat", "dog"]}) == "imagenet"


def test_a_gbk_class_names_file_is_called_a_class_names_file(tmp_path: Path) -> None:
    """`eval zeroshot --classnames` given a GBK file was refused as a "labels file ... (one per line, or a JSON list
    of strings)": the line names the class-names file and its order, before any model or dataset is read."""
    from clipforge.evaluate.zeroshot_eval import evaluate_zeroshot
    from clipforge.text.labels import TextFileError

    names = tmp_path / "类名.txt"
    names.write_bytes("鸟\n猫\n狗\n".encode("gb18030"))
    with pytest.raises(TextFileError) as caught:
        evaluate_zeroshot("no-such-model", "cifar10", root=tmp_path, classnames=names)
    message = str(caught.value)
    assert message.startswith(f"class-names file {names} is not UTF-8 text") and "looks like GBK/GB18030" in message
    assert "one per line in the dataset's class order" in message
