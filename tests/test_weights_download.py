"""Pretrained weights: real downloads from an HTTP server on 127.0.0.1, the manifest tool, and the shipped models.

The download tests use a temporary manifest with one generated two-file model (``toy``), served as an exact copy
(``/good``), with one byte flipped (``/bad``) and cut short mid-body (``/truncated``: the server announces the full
Content-Length, sends half of ``data.bin`` and closes the connection).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

import weights
from tests.local_server import QuietHandler, serve
from weights import WeightsError, download, manifest

PAYLOAD = np.random.default_rng(0).bytes(300_000)
CONFIG = b'{"toy": true}\n'


class _Handler(QuietHandler):
    def do_GET(self):
        if self.path.startswith("/truncated/") and self.path.endswith("data.bin"):
            return self.send_cut_short(PAYLOAD[: len(PAYLOAD) // 2], len(PAYLOAD))
        if self.path.startswith("/truncated/"):
            self.path = "/good/" + self.path[len("/truncated/"):]
        super().do_GET()


@pytest.fixture()
def server(tmp_path):
    """Base urls ``{server}/good``, ``/bad`` and ``/truncated``, each mirroring the layout ``toy/a/<file>``."""
    www = tmp_path / "www"
    for sub, payload in (("good", PAYLOAD), ("bad", PAYLOAD[:100] + bytes([PAYLOAD[100] ^ 1]) + PAYLOAD[101:])):
        (www / sub / "toy" / "a").mkdir(parents=True)
        (www / sub / "toy" / "a" / "data.bin").write_bytes(payload)
        (www / sub / "toy" / "a" / "config.json").write_bytes(CONFIG)
    with serve(www, _Handler) as url:
        yield url


def _file(name: str, content: bytes) -> dict:
    return {"file": name, "sha256": _sha(content), "bytes": len(content), "url": f"toy/a/{name}"}


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@pytest.fixture()
def toy(tmp_path, monkeypatch):
    """A temporary manifest (no base_url) listing the not-committed model ``toy``; returns the parsed manifest."""
    monkeypatch.delenv(weights.ENV_URL, raising=False)
    root = tmp_path / "weights"
    root.mkdir()
    raw = {"format": weights.FORMAT, "base_url": None, "models": [
        {"name": "toy", "kind": "bnn_posterior", "path": "toy/a", "committed": False, "command": "python -m toy.train",
         "seed": 3, "files": [_file("config.json", CONFIG), _file("data.bin", PAYLOAD)], "metrics": {}}]}
    (root / "manifest.json").write_text(json.dumps(raw))
    return weights.read_manifest(root / "manifest.json")


def _leftovers(m: weights.Manifest) -> list[str]:
    """Everything under the manifest's folder except the manifest itself."""
    return sorted(str(p.relative_to(m.root)) for p in m.root.rglob("*") if p.name != "manifest.json")


def test_good_file_is_accepted_verified_and_moved_into_place(toy, server):
    folder = download.download("toy", toy, base=f"{server}/good", progress=False)
    assert folder == toy.root / "cache" / "toy" / "a"
    assert (folder / "data.bin").read_bytes() == PAYLOAD
    assert weights.available("toy", toy)
    assert _leftovers(toy) == ["cache", "cache/toy", "cache/toy/a", "cache/toy/a/config.json", "cache/toy/a/data.bin"]
    assert weights.path("toy", download=False, manifest=toy) == folder  # now local: no base url needed


def test_corrupted_file_is_refused_naming_file_url_and_sha256(toy, server):
    with pytest.raises(WeightsError) as err:
        download.download("toy", toy, base=f"{server}/bad", progress=False)
    message = str(err.value)
    assert "data.bin" in message and f"{server}/bad/toy/a/data.bin" in message
    assert toy.entry("toy").files[1].sha256 in message and "sha256 mismatch" in message
    assert _leftovers(toy) == []  # not even config.json, which was good, nor the empty folders


def test_interrupted_download_leaves_nothing_behind(toy, server):
    with pytest.raises(WeightsError, match="refusing data.bin") as err:
        download.download("toy", toy, base=f"{server}/truncated", progress=False)
    assert f"{server}/truncated/toy/a/data.bin" in str(err.value)
    assert f"cut short: the connection closed after {len(PAYLOAD) // 2} of {len(PAYLOAD)} bytes" in str(err.value)
    assert _leftovers(toy) == []
    assert not weights.available("toy", toy)


@pytest.mark.parametrize("scheme", ["http", "file", "folder"])
def test_env_override_of_the_base_url(toy, server, tmp_path, monkeypatch, scheme):
    good = tmp_path / "www" / "good"
    base = {"http": f"{server}/good", "file": good.as_uri(), "folder": str(good)}[scheme]
    monkeypatch.setenv(weights.ENV_URL, base)
    assert download.main(["toy", "--manifest", str(toy.root / "manifest.json"), "--no-progress"]) == 0
    assert weights.available("toy", toy)


def test_unhosted_model_says_so_and_gives_the_training_command(toy):
    with pytest.raises(WeightsError, match="not hosted yet") as err:
        weights.path("toy", manifest=toy)
    assert "python -m toy.train" in str(err.value) and weights.ENV_URL in str(err.value)
    with pytest.raises(WeightsError, match="not available locally"):
        weights.path("toy", download=False, manifest=toy)
    assert _leftovers(toy) == []


def test_all_verifies_committed_models_and_downloads_the_rest(toy, server, tmp_path):
    raw = json.loads((toy.root / "manifest.json").read_text())
    for folder in (toy.root / "kept", tmp_path / "www" / "good" / "kept"):
        folder.mkdir()
        (folder / "w.bin").write_bytes(b"committed")
    raw["models"].append({"name": "kept", "kind": "vae", "path": "kept", "committed": True, "command": "-", "seed": 0,
                          "files": [{"file": "w.bin", "sha256": _sha(b"committed"), "bytes": 9, "url": "kept/w.bin"}]})
    (toy.root / "manifest.json").write_text(json.dumps(raw))
    args = ["--all", "--manifest", str(toy.root / "manifest.json"), "--no-progress", "--base-url"]
    assert download.main([*args, f"{server}/bad"]) == 1  # toy refused; kept needs no download
    (toy.root / "kept" / "w.bin").unlink()
    with pytest.raises(WeightsError, match="git checkout"):  # committed, missing, and no base url
        download.download("kept", weights.read_manifest(toy.root / "manifest.json"))
    assert download.main([*args, f"{server}/good"]) == 0  # restores kept/w.bin from the mirror too
    assert weights.available("toy", toy)
    assert weights.available("kept", weights.read_manifest(toy.root / "manifest.json"))


def test_a_local_file_that_differs_is_refused_unless_forced(toy, server):
    folder = download.download("toy", toy, base=f"{server}/good", progress=False)
    (folder / "data.bin").write_bytes(PAYLOAD[::-1])
    with pytest.raises(WeightsError, match="differ from the manifest"):
        weights.path("toy", manifest=toy)
    with pytest.raises(WeightsError, match="differ from the manifest"):
        download.download("toy", toy, base=f"{server}/good", progress=False)
    download.download("toy", toy, base=f"{server}/good", force=True, progress=False)
    assert (folder / "data.bin").read_bytes() == PAYLOAD


def test_list_labels_each_entry_truthfully(toy, server, tmp_path, capsys, monkeypatch):
    path = str(toy.root / "manifest.json")
    assert download.main(["--list", "--manifest", path]) == 0
    assert "not hosted: train it with python -m toy.train" in capsys.readouterr().out
    assert download.main(["--list", "--manifest", path, "--base-url", f"{server}/good"]) == 0
    assert f"downloadable from {server}/good" in capsys.readouterr().out
    monkeypatch.setenv(weights.ENV_URL, f"{server}/good")
    assert download.main(["--list", "--manifest", path]) == 0
    assert f"downloadable from {server}/good" in capsys.readouterr().out
    download.download("toy", toy, progress=False)
    monkeypatch.delenv(weights.ENV_URL)
    assert download.main(["--list", "--manifest", path]) == 0
    assert f"in cache ({toy.local_dir('toy')})" in capsys.readouterr().out
    (toy.local_dir("toy") / "data.bin").write_bytes(PAYLOAD[::-1])
    assert download.status("toy", toy).startswith("differs from the manifest")
    assert download.status("bnn_lsat", weights.read_manifest()) == "committed"


def test_manifest_tool_detects_and_fixes_a_stale_entry(toy, monkeypatch):
    path = toy.root / "manifest.json"
    raw = json.loads(path.read_text())
    raw["models"][0]["committed"] = True
    path.write_text(json.dumps(raw))
    (toy.root / "toy" / "a").mkdir(parents=True)
    (toy.root / "toy" / "a" / "config.json").write_bytes(CONFIG)
    (toy.root / "toy" / "a" / "data.bin").write_bytes(PAYLOAD[:-1])  # retrained: differs from the recorded file
    (toy.root / "toy" / "a" / "metrics.json").write_text('{"test/rmse": 0.5}')
    assert manifest.main(["--check", "--manifest", str(path)]) == 1
    assert manifest.main(["--manifest", str(path)]) == 0
    assert manifest.main(["--check", "--manifest", str(path)]) == 0
    fixed = weights.read_manifest(path)
    assert weights.available("toy", fixed) and fixed.entry("toy").metrics == {"test/rmse": 0.5}
    assert [f.file for f in fixed.entry("toy").files] == ["config.json", "data.bin", "metrics.json"]
    monkeypatch.setattr(manifest, "MAX_FILE_BYTES", 1000)
    assert manifest.main(["--check", "--manifest", str(path)]) == 1  # data.bin is now too big to commit


def test_shipped_manifest_matches_the_committed_files():
    raw = json.loads(weights.MANIFEST.read_text())
    rebuilt, errors = manifest.rebuild(raw, weights.ROOT)
    assert errors == []
    committed = [(new, old) for new, old in zip(rebuilt["models"], raw["models"]) if old["committed"]]
    models = {old["name"] for _, old in committed if old.get("kind") != "evaluation_stages"}
    assert models == {f"{kind}_{ds}" for kind in ("bnn", "vae") for ds in ("lsat", "compas", "wine", "credit")} | \
        {"vae_mnist"}  # the MNIST BNN (192 MB) is listed for hosting, not committed
    for new, old in committed:
        assert new == old, f"{old['name']}: manifest is stale; run `python -m weights.manifest`"
        assert weights.available(old["name"])
    assert sum(f["bytes"] for _, old in committed for f in old["files"]) < manifest.MAX_COMMITTED_BYTES
    for entry in weights.read_manifest().entries.values():  # every entry can be reproduced or fetched
        assert all(f.url == f"{entry.path}/{f.file}" and len(f.sha256) == 64 for f in entry.files) and entry.files
        if entry.kind == download.PARITY_KIND:  # the original's export: no command here, no summary metrics
            assert entry.path.split("/")[0] == download.PARITY_PATH and not entry.committed
            continue
        assert entry.command.startswith("python -m ") and entry.metrics
    kits = {n for n, e in weights.read_manifest().entries.items() if e.kind == download.PARITY_KIND}
    assert {"parity_lsat", "parity_compas", "parity_wine", "parity_credit", "parity_evaluation"} <= kits


def test_readme_table_is_current():
    assert manifest.table(json.loads(weights.MANIFEST.read_text())) in (weights.ROOT / "README.md").read_text()


def test_shipped_models_reproduce_their_recorded_test_metrics(data_dir):
    import data
    from BNN.posterior import evaluate
    from VAE.train import evaluate_vae

    lsat, compas = data.load("lsat", data_dir=data_dir), data.load("compas", data_dir=data_dir)
    m = weights.read_manifest()
    got = evaluate(weights.load_posterior("bnn_lsat"), lsat.x_test, lsat.y_test, y_std=float(lsat.y_std[0]))
    assert got["rmse"] == pytest.approx(m.entry("bnn_lsat").metrics["test/rmse"], rel=1e-4)
    assert got["loglik"] == pytest.approx(m.entry("bnn_lsat").metrics["test/loglik"], rel=1e-4)
    got = evaluate(weights.load_posterior("bnn_compas"), compas.x_test, compas.y_test)
    assert got["accuracy"] == pytest.approx(m.entry("bnn_compas").metrics["test/accuracy"], abs=1e-6)
    assert got["nll"] == pytest.approx(m.entry("bnn_compas").metrics["test/nll"], rel=1e-4)
    wine, credit = data.load("wine", data_dir=data_dir), data.load("credit", data_dir=data_dir)
    got = evaluate(weights.load_posterior("bnn_wine"), wine.x_test, wine.y_test.reshape(-1, 1),
                   y_std=float(np.ravel(wine.y_std)[0]))
    assert got["rmse"] == pytest.approx(m.entry("bnn_wine").metrics["test/rmse"], rel=1e-4)
    got = evaluate(weights.load_posterior("bnn_credit"), credit.x_test, credit.y_test)
    assert got["accuracy"] == pytest.approx(m.entry("bnn_credit").metrics["test/accuracy"], abs=1e-6)
    for name, ds in (("vae_lsat", lsat), ("vae_compas", compas), ("vae_wine", wine), ("vae_credit", credit)):
        got = evaluate_vae(weights.load_vae(name), ds.x_test.astype(np.float32))
        assert got["elbo"] == pytest.approx(m.entry(name).metrics["test/elbo"], rel=1e-4), name
    mnist = data.load("mnist_t10k", data_dir=data_dir)
    got = evaluate_vae(weights.load_vae("vae_mnist"), mnist.x_test.astype(np.float32))
    assert got["elbo"] == pytest.approx(m.entry("vae_mnist").metrics["test/elbo"], rel=1e-4)
    with pytest.raises(WeightsError, match="not a 'vae'"):
        weights.load_vae("bnn_lsat")


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(WeightsError, match="bnn_lsat"):
        weights.path("no_such_model")
