"""Start-up flags a careless user gets wrong, each one line naming the flag and exit status 2 before any work:

- `serve --device` a device this machine lacks: told after `--create` had written an empty library, as a model
  that did not load ("check the --model value"); `serve --host` a name that does not resolve: told as a port
  taken ("is another server using the port?");
- `--store milvus://HOST:99999/C`: pymilvus's "Port out of range 0-65535", naming no flag;
- `train --recipe missing.json`: "unknown recipe", as if the file name were a packaged recipe's.
"""

from __future__ import annotations

import pytest

from clipforge.cli.main import main


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1]


def test_serve_with_an_unknown_device_creates_no_library(tmp_path, capsys):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    library = tmp_path / "new-library"
    assert main(["serve", "--library", str(library), "--create", "--no-ui", "--port", "0", "--device", "gpu"]) == 2
    assert _error(capsys) == "error: unknown device 'gpu': expected cpu, cuda, cuda:N or mps"
    assert not library.exists()


def test_serve_with_a_host_that_does_not_resolve_names_the_host_not_the_port(tmp_path, capsys):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    library = tmp_path / "new-library"
    assert main(["serve", "--library", str(library), "--create", "--no-ui", "--port", "0", "--host",
                 "no-such-host.invalid"]) == 2
    line = _error(capsys)
    assert line.startswith("error: --host no-such-host.invalid: not an address this machine can listen on (")
    assert "port" not in line and not library.exists()


@pytest.mark.parametrize("port", ["99999", "0"])
def test_a_milvus_store_port_out_of_range_names_store(tmp_path, capsys, monkeypatch, port):
    monkeypatch.chdir(tmp_path)
    assert main(["search", "a cat", "--store", f"milvus://localhost:{port}/photos", "--model", "test-vit-tiny"]) == 2
    assert _error(capsys) == (f"error: --store 'milvus://localhost:{port}/photos': port {port} is not a TCP port "
                              "(1-65535; Milvus listens on 19530 unless told otherwise) (expected "
                              "milvus://HOST:PORT/COLLECTION or milvus-lite:PATH.db)")


def test_a_recipe_file_that_is_not_there_is_named_as_a_file(tmp_path, capsys):
    missing = tmp_path / "my-recipe.json"
    assert main(["train", "--recipe", str(missing), "--out", str(tmp_path / "run")]) == 2
    assert _error(capsys).startswith(f"error: --recipe {missing}: no such file; expected a JSON recipe file or a "
                                     "packaged recipe (")
