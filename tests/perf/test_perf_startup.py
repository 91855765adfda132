"""Start-up cost guards (issue 20.4): loading a model builds no meta-device model and imports no torch._dynamo."""

from __future__ import annotations

import subprocess
import sys

import torch

from clipforge.models import CLIP, create_model_from_config, get_config
from clipforge.models.skeleton import skeleton
from clipforge.weights.layout import canonical_order, model_key_order


def test_loading_the_shipped_model_does_not_import_dynamo() -> None:
    # The meta device ran Python meta kernels that imported torch._dynamo and sympy: >1 s per command.
    code = ("import sys; from clipforge.api import load_model; load_model('clipforge-tiny', 'cpu'); "
            "bad = [m for m in ('torch._dynamo', 'sympy') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]


def test_skeleton_has_the_model_names_shapes_and_deterministic_values() -> None:
    config = get_config("test-vit-tiny")
    torch.manual_seed(0)
    real = create_model_from_config(config)
    rng = torch.random.get_rng_state()
    bare = skeleton(CLIP, **config)
    assert torch.equal(torch.random.get_rng_state(), rng)  # no random draws
    want = real.state_dict()
    got = bare.state_dict()
    assert list(got) == list(want)
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in want.items()}
    assert all(v.device.type == "cpu" and not v.is_meta for v in got.values())
    # deterministic fills are kept (a buffer no state dict carries must keep its value)
    assert torch.equal(bare.ln_final.weight, torch.ones_like(bare.ln_final.weight))
    # the no-op initialisers end with the call
    t = torch.zeros(1000)
    torch.nn.init.normal_(t)
    assert t.std() > 0.5


def test_canonical_order_is_the_model_order_without_building_on_meta() -> None:
    config = get_config("test-rn-tiny")
    want = list(create_model_from_config(config).state_dict())
    assert list(model_key_order(config)) == want
    scrambled = {k: torch.zeros(1) for k in sorted(want, reverse=True)} | {"extra.b": torch.zeros(1),
                                                                            "extra.a": torch.zeros(1)}
    assert list(canonical_order(scrambled, config)) == [*want, "extra.b", "extra.a"]


def test_a_text_search_imports_neither_ftfy_nor_pillows_plugins(tmp_path, shared_data) -> None:
    """A one-query text search is mostly start-up: ftfy (only non-ASCII text needs it) and
    `Image.init()` (every Pillow plugin, needed only to list openable extensions) are paid when used,
    not by importing clipforge. Indexing in the same process still finds the photos (the extension
    set fills itself on first use) and a non-ASCII query still goes through ftfy. The two searches run one after
    the other in one process (one start-up fewer), each followed by the list of heavy modules imported so far: none
    after the ASCII query, ftfy after the accented one."""
    import shutil

    images = tmp_path / "images"
    images.mkdir()
    for name in sorted(p.name for p in (shared_data / "imagenet_sample" / "images").iterdir())[:3]:
        shutil.copyfile(shared_data / "imagenet_sample" / "images" / name, images / name)
    library = tmp_path / "library"
    code = (
        "import sys\n"
        "from clipforge.cli.main import main\n"
        "argv = ['--library', sys.argv[1], '--model', 'clipforge-tiny']\n"
        "heavy = ('ftfy', 'PIL.TiffImagePlugin', 'PIL.PdfImagePlugin')\n"
        "if sys.argv[2] == 'add':\n"
        "    assert main(['index', 'add', sys.argv[3], *argv, '--quiet', '--workers', '0']) == 0\n"
        "    print('heavy:', [m for m in heavy if m in sys.modules])\n"
        "else:\n"
        "    for query in sys.argv[3:]:\n"
        "        assert main(['search', query, *argv, '--top-k', '2', '--json']) == 0\n"
        "        print('heavy:', [m for m in heavy if m in sys.modules], flush=True)\n"
    )
    run = [sys.executable, "-c", code, str(library)]
    added = subprocess.run([*run, "add", str(images)], capture_output=True, text=True, timeout=300)
    assert added.returncode == 0, added.stderr[-2000:]
    assert "added 3 " in added.stderr + added.stdout
    assert "'PIL.TiffImagePlugin'" in added.stdout  # indexing did list the extensions (the control)
    searched = subprocess.run([*run, "search", "a photo of a fish", "a photo of a café"], capture_output=True,
                              text=True, timeout=300)
    assert searched.returncode == 0, searched.stderr[-2000:]
    assert [line for line in searched.stdout.splitlines() if line.startswith("heavy:")] == [
        "heavy: []", "heavy: ['ftfy']"]  # after the ASCII query, then after the accented one
    ascii_query = searched.stdout.split("heavy: []")[0]
    assert ascii_query.count('"path"') == 2
