"""``python -m weights.publish``: the folder it writes is fetched back by ``weights.download`` over HTTP on 127.0.0.1.

A temporary weights root holds three generated models: one committed (``<root>/bnn/toy``, a file in a sub-folder),
one downloaded (``<root>/cache/vae/toy``) and one absent. The real committed models of ``weights/manifest.json``
are published and fetched back too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil

import numpy as np
import pytest

import weights
from tests import local_server
from weights import WeightsError, download, publish

PAYLOADS = {name: np.random.default_rng(i).bytes(size) for i, (name, size) in
            enumerate((("samples.npz", 200_000), ("model.weights.h5", 120_000), ("lost.bin", 1000)))}


@pytest.fixture()
def serve():
    """``serve(folder)`` -> the base url of a static HTTP server on 127.0.0.1 for ``folder`` (until the test ends)."""
    with contextlib.ExitStack() as stack:
        yield lambda folder: stack.enter_context(local_server.serve(folder))


def _entry(name, path, committed, files):
    return {"name": name, "kind": "bnn_posterior", "path": path, "committed": committed, "seed": 0,
            "command": f"python -m toy.train --out {name}", "description": f"toy model {name}", "metrics": {"x": 1},
            "files": [{"file": f, "sha256": hashlib.sha256(c).hexdigest(), "bytes": len(c), "url": f"{path}/{f}"}
                      for f, c in files.items()]}


@pytest.fixture()
def toy_root(tmp_path, monkeypatch):
    """A weights root with a committed, a downloaded and an absent model; returns its manifest path."""
    monkeypatch.delenv(weights.ENV_URL, raising=False)
    root = tmp_path / "src"
    committed = {"config.json": b'{"a": 1}\n', "data/samples.npz": PAYLOADS["samples.npz"]}
    cached = {"model.weights.h5": PAYLOADS["model.weights.h5"], "model_config.json": b"{}\n"}
    for folder, files in ((root / "bnn" / "toy", committed), (root / "cache" / "vae" / "toy", cached)):
        for name, content in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(content)
    raw = {"format": weights.FORMAT, "base_url": None, "models": [
        _entry("toy_committed", "bnn/toy", True, committed), _entry("toy_cached", "vae/toy", False, cached),
        _entry("toy_absent", "bnn/absent", False, {"lost.bin": PAYLOADS["lost.bin"]})]}
    (root / "manifest.json").write_text(json.dumps(raw, indent=2))
    return root / "manifest.json"


def _fresh_root(tmp_path, manifest_path, name="dst"):
    """An empty weights root holding only a copy of ``manifest_path``: downloads land in its folders."""
    root = tmp_path / name
    root.mkdir()
    shutil.copy(manifest_path, root / "manifest.json")
    return weights.read_manifest(root / "manifest.json")


def _assert_verified(manifest, name):
    folder = manifest.local_dir(name)
    for f in manifest.entry(name).files:
        assert weights.sha256_of(folder / f.file) == f.sha256, f.file
    assert weights.available(name, manifest)


def test_published_tree_downloads_back_over_http(toy_root, tmp_path, serve, monkeypatch):
    out = tmp_path / "pub"
    assert publish.main(["--out", str(out), "--manifest", str(toy_root)]) == 0
    published = json.loads((out / "manifest.json").read_text())
    assert [m["name"] for m in published["models"]] == ["toy_committed", "toy_cached"]  # the absent one left out
    assert published["format"] == weights.FORMAT and published["layout"] == "tree"
    source = {m["name"]: m for m in json.loads(toy_root.read_text())["models"]}
    for model in published["models"]:
        assert model == source[model["name"]]  # the manifest entries as they are, every field
    assert (out / "bnn/toy/data/samples.npz").read_bytes() == PAYLOADS["samples.npz"]
    sums = dict(line.split("  ")[::-1] for line in (out / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == {"bnn/toy/config.json", "bnn/toy/data/samples.npz", "vae/toy/model.weights.h5",
                         "vae/toy/model_config.json"}
    for rel, digest in sums.items():
        assert weights.sha256_of(out / rel) == digest

    # `CLUE_WEIGHTS_URL=<base> python -m weights.download NAME` into a fresh root (its cache, its committed folder).
    manifest = _fresh_root(tmp_path, toy_root)
    monkeypatch.setenv(weights.ENV_URL, serve(out))
    status = download.main(["toy_committed", "toy_cached", "--manifest", str(manifest.root / "manifest.json"),
                            "--no-progress"])
    assert status == 0
    assert manifest.local_dir("toy_cached") == manifest.root / weights.CACHE / "vae" / "toy"
    for name in ("toy_committed", "toy_cached"):
        _assert_verified(manifest, name)
    # The published manifest.json is itself a manifest the downloader takes.
    from_published = _fresh_root(tmp_path, out / "manifest.json", "dst2")
    download.download("toy_cached", from_published, progress=False)
    _assert_verified(from_published, "toy_cached")


def test_published_flat_names_download_back_through_a_flat_base(toy_root, tmp_path, serve):
    out = tmp_path / "release"
    publish.publish(out, manifest_path=toy_root, flat=True, base_url="https://example.org/download/v1/{flat}")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["SHA256SUMS", "bnn--toy--config.json", "bnn--toy--data--samples.npz", "manifest.json",
                     "vae--toy--model.weights.h5", "vae--toy--model_config.json"]
    assert json.loads((out / "manifest.json").read_text())["base_url"] == "https://example.org/download/v1/{flat}"
    manifest = _fresh_root(tmp_path, toy_root)
    for name in ("toy_committed", "toy_cached"):
        download.download(name, manifest, base=serve(out) + "/{flat}", progress=False)
        _assert_verified(manifest, name)
    with pytest.raises(WeightsError, match="flat"):
        publish.publish(tmp_path / "other", manifest_path=toy_root, flat=True, base_url="https://example.org/v1")


def test_the_committed_models_publish_and_download_back(tmp_path, serve):
    manifest = weights.read_manifest()
    committed = [name for name, entry in manifest.entries.items() if entry.committed]
    if not committed or not all(weights.available(n, manifest) for n in committed):
        pytest.skip("the committed weights are not all present in this checkout")
    out = tmp_path / "pub"
    published = publish.publish(out, committed)
    assert [m["name"] for m in published["models"]] == committed
    fresh = _fresh_root(tmp_path, weights.MANIFEST)
    base = serve(out)
    for name in committed:
        download.download(name, fresh, base=base, progress=False)
        _assert_verified(fresh, name)


def test_a_file_that_differs_stops_the_run_and_leaves_no_folder(toy_root, tmp_path):
    src = toy_root.parent / "cache" / "vae" / "toy" / "model.weights.h5"
    data = bytearray(src.read_bytes())
    data[1000] ^= 1  # same size, other sha256
    src.write_bytes(bytes(data))
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(WeightsError, match=r"model\.weights\.h5.*sha256"):
        publish.publish(tmp_path / "pub", manifest_path=toy_root)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no pub/, no temporary folder beside it


def test_existing_out_named_models_and_out_inside_weights(toy_root, tmp_path):
    out = tmp_path / "pub"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(WeightsError, match="--force"):
        publish.publish(out, manifest_path=toy_root)
    assert (out / "keep.txt").exists()
    publish.publish(out, ["toy_cached"], manifest_path=toy_root, force=True)
    assert not (out / "keep.txt").exists() and (out / "vae/toy/model.weights.h5").exists()
    assert [m["name"] for m in json.loads((out / "manifest.json").read_text())["models"]] == ["toy_cached"]
    with pytest.raises(WeightsError, match="toy_absent"):
        publish.publish(tmp_path / "pub2", ["toy_absent"], manifest_path=toy_root)
    with pytest.raises(WeightsError, match="toy_nope"):
        publish.publish(tmp_path / "pub3", ["toy_nope"], manifest_path=toy_root)
    with pytest.raises(WeightsError, match="inside the weights folder"):
        publish.publish(toy_root.parent / "upload", manifest_path=toy_root)
    assert not (tmp_path / "pub2").exists() and not (toy_root.parent / "upload").exists()


def test_manifest_writers_take_turns_on_the_lock(tmp_path):
    """Two writers of the manifest at once (study runs publishing stages, ``python -m weights.manifest``) take turns
    on ``weights.manifest.lock`` instead of losing each other's entry."""
    import threading

    from weights.manifest import lock

    manifest = tmp_path / "manifest.json"
    manifest.write_text("{}")
    entered = threading.Event()

    def other_writer():
        with lock(manifest):
            entered.set()

    with lock(manifest):
        thread = threading.Thread(target=other_writer)
        thread.start()
        assert not entered.wait(0.5), "a second holder got the manifest lock while the first held it"
    thread.join(5)
    assert entered.is_set()
