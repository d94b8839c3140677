"""common.io (checksums, verified downloads through a real 127.0.0.1 server, atomic placement) and common.export
(the one model format on the committed weights, and each kind's loader)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import weights
from common import export, io
from common.errors import UserError
from tests.local_server import QuietHandler, serve

PAYLOAD = np.random.default_rng(1).bytes(200_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(QuietHandler):
    def do_GET(self):
        if self.path == "/truncated.bin":  # announces every byte, sends a third, closes the connection
            return self.send_cut_short(PAYLOAD[: len(PAYLOAD) // 3], len(PAYLOAD))
        super().do_GET()


@pytest.fixture()
def server(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    (www / "good.bin").write_bytes(PAYLOAD)
    (www / "bad.bin").write_bytes(PAYLOAD[:-1] + bytes([PAYLOAD[-1] ^ 1]))
    with serve(www, _Handler) as url:
        yield url


def _everything(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


# ------------------------------------------------------------------------------------------------------ checksums
def test_sha256_of_and_its_cache(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)
    assert io.sha256_of(path) == SHA and io.sha256_of(path, chunk=1000) == SHA
    assert io.sha256_of(path, algorithm="md5") == hashlib.md5(PAYLOAD).hexdigest()
    import data.sources
    assert data.sources.sha256_of is io.sha256_of and weights.sha256_of is io.sha256_of  # one implementation
    calls = []
    real = io.sha256_of
    monkeypatch.setattr(io, "sha256_of", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert io.cached_sha256(path) == SHA and io.cached_sha256(path) == SHA
    assert len(calls) == 1  # computed once per (path, size, mtime)
    path.write_bytes(PAYLOAD[::-1])
    os.utime(path, ns=(1, 1))
    assert io.cached_sha256(path) == hashlib.sha256(PAYLOAD[::-1]).hexdigest() and len(calls) == 2


# ---------------------------------------------------------------------------------------------- atomic placement
def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    with io.atomic_path(target) as tmp:
        tmp.write_text("one")
    with pytest.raises(RuntimeError), io.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "one" and _everything(tmp_path) == ["sub", "sub/a.txt"]
    folder = tmp_path / "export"
    for content in ("old", "new"):
        with io.atomic_path(folder) as tmp:
            tmp.mkdir()
            (tmp / "w").write_text(content)
    assert _everything(folder) == ["w"] and (folder / "w").read_text() == "new"


def test_making_parents_removes_only_what_it_made_and_left_empty(tmp_path):
    with pytest.raises(KeyError), io.making_parents(tmp_path / "a" / "b" / "c"):
        raise KeyError
    assert _everything(tmp_path) == []
    with io.making_parents(tmp_path / "a" / "b") as folder:
        (folder / "kept").write_text("x")
    assert _everything(tmp_path) == ["a", "a/b", "a/b/kept"]


# --------------------------------------------------------------------------------------------- verified download
def test_good_download_is_verified_and_placed(server, tmp_path):
    target = tmp_path / "cache" / "deep" / "f.bin"
    assert io.download_file(f"{server}/good.bin", target, SHA, size=len(PAYLOAD), progress=False) == target
    assert target.read_bytes() == PAYLOAD and _everything(tmp_path / "cache") == ["deep", "deep/f.bin"]
    url = (tmp_path / "www" / "good.bin").as_uri()  # file:// too
    io.download_file(url, tmp_path / "copy.bin", hashlib.md5(PAYLOAD).hexdigest(), algorithm="md5", progress=False)
    assert (tmp_path / "copy.bin").read_bytes() == PAYLOAD


@pytest.mark.parametrize("case", ["checksum", "truncated", "size", "missing"])
def test_failed_download_names_file_url_and_checksum_and_leaves_nothing(server, tmp_path, case):
    url = f"{server}/" + {"checksum": "bad.bin", "truncated": "truncated.bin", "size": "good.bin",
                          "missing": "nothing.bin"}[case]
    size = len(PAYLOAD) + (1 if case == "size" else 0)
    target = tmp_path / "cache" / "f.bin"
    with pytest.raises(io.DownloadError) as err:
        io.download_file(url, target, SHA, size=size, progress=False)
    message = str(err.value)
    assert message.startswith(f"refusing f.bin downloaded from {url}: ") and f"expected sha256 {SHA}" in message
    assert err.value.url == url and err.value.file == "f.bin" and isinstance(err.value, UserError)
    assert {"checksum": "sha256 mismatch: got ",
            "truncated": f"transfer cut short: the connection closed after {len(PAYLOAD) // 3} of {len(PAYLOAD)} bytes",
            "size": f"got {len(PAYLOAD)} bytes (truncated or wrong file)",
            "missing": "transfer failed (HTTPError: HTTP Error 404"}[case] in err.value.reason
    assert not (tmp_path / "cache").exists()  # no partial file, no temporary, no folder it created


def test_failed_download_keeps_the_file_already_there(server, tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"previous")
    with pytest.raises(io.DownloadError, match="cut short"):
        io.download_file(f"{server}/truncated.bin", target, SHA, progress=False)
    assert target.read_bytes() == b"previous" and _everything(tmp_path) == ["f.bin", "www", "www/bad.bin",
                                                                            "www/good.bin"]


def test_interrupted_download_leaves_nothing(server, tmp_path, monkeypatch):
    class Interrupting:  # Ctrl-C arrives during the transfer
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            raise KeyboardInterrupt

    monkeypatch.setattr(io, "tqdm", Interrupting)
    with pytest.raises(KeyboardInterrupt):
        io.download_file(f"{server}/good.bin", tmp_path / "cache" / "f.bin", SHA)
    assert not (tmp_path / "cache").exists()


# ------------------------------------------------------------------------------------------------ model format
def _write_npz(arrays):
    return lambda path: np.savez(path, **arrays)


def test_write_and_read_model(tmp_path):
    folder = tmp_path / "m"
    export.write_model(folder, "toy", {"width": 3}, {"w.npz": _write_npz({"a": np.arange(3)})}, "lsat",
                       epoch=np.int64(4))
    assert _everything(folder) == ["model.json", "w.npz"]
    assert json.loads((folder / "model.json").read_text()) == {
        "format": "clue-tf/model/v1", "kind": "toy", "config": {"width": 3}, "dataset": "lsat",
        "weights": ["w.npz"], "epoch": 4}
    info = export.read_model(folder, ["toy"], "toy model", "write_model")
    assert (info.kind, info.config, info.dataset, info.weights, info.fields) == (
        "toy", {"width": 3}, "lsat", ("w.npz",), {"epoch": 4})
    assert info.path == folder / "model.json"

    def failing(path):
        path.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):  # a failed export leaves the previous one as it was
        export.write_model(folder, "toy", {"width": 5}, {"w.npz": failing})
    assert export.read_model(folder, ["toy"], "toy model", "write_model").config == {"width": 3}
    assert _everything(tmp_path) == ["m", "m/model.json", "m/w.npz"]
    with pytest.raises(ValueError, match="reserved"):
        export.write_model(folder, "toy", {}, {}, format="mine")


def test_read_model_refusals_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model\.json not found.*written by Posterior\.save"):
        export.read_model(tmp_path, ["bnn_posterior"], "BNN posterior", "Posterior.save")
    export.write_model(tmp_path / "m", "toy", {}, {})
    with pytest.raises(UserError, match=r"holds a 'toy' export, not a VAE"):
        export.read_model(tmp_path / "m", ["vae"], "VAE", "save_vae")
    (tmp_path / "m" / "model.json").write_text('{"format": "clue-tf/model/v9", "kind": "toy", "config": {}}')
    with pytest.raises(UserError, match="format 'clue-tf/model/v9', expected 'clue-tf/model/v1'"):
        export.read_model(tmp_path / "m", ["toy"], "toy model", "write_model")
    (tmp_path / "m" / "model.json").write_text('{"format": "clue-tf/mo')
    with pytest.raises(UserError, match=str(tmp_path / "m" / "model.json")) as err:
        export.read_model(tmp_path / "m", ["toy"], "toy model", "write_model", "`retrain it`")
    assert "truncated or damaged" in str(err.value) and "retrain it" in str(err.value)


def test_each_kind_has_its_components_loader_and_weights_imports_none_at_import():
    import BNN.posterior
    import VAE.expvae
    import VAE.model
    import VAEAC.export

    assert weights.loader("vae") is VAE.model.load_vae and weights.loader("expvae") is VAE.expvae.load_expvae
    assert weights.loader("under_vaeac") is VAEAC.export.load_model is weights.loader("vaeac")
    assert weights.loader("bnn_posterior") == BNN.posterior.Posterior.load
    assert all(callable(weights.loader(kind)) for kind in weights.LOADERS)
    with pytest.raises(weights.WeightsError, match=r"no loader for models of kind 'no_such'"):
        weights.loader("no_such")
    code = ("import sys, weights, weights.download; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'BNN', 'VAE', 'VAEAC', 'CLUE', 'keras'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=weights.ROOT.parent).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------------------------ committed weights
@pytest.mark.parametrize("name", ["bnn_lsat", "vae_lsat"])
def test_committed_weights_load_and_re_export_alike(name, tmp_path):
    if not weights.available(name):
        pytest.skip(f"committed weights {name} not present or not verified")
    entry = weights.read_manifest().entry(name)
    folder = weights.path(name, download=False)
    info = export.read_model(folder, [entry.kind], "model", "its writer")
    assert info.kind == entry.kind and info.path.name == "model.json" and info.dataset == "lsat"
    model = weights.load(name)
    assert model.dataset == "lsat"
    x = np.random.RandomState(0).normal(size=(4, 12)).astype(np.float32)
    if entry.kind == "bnn_posterior":
        from BNN.posterior import Posterior

        model.save(tmp_path / "new")
        reloaded, helper, outputs = Posterior.load(tmp_path / "new"), weights.load_posterior(name), model.forward
    else:
        from VAE.model import load_vae, save_vae

        save_vae(model, tmp_path / "new", {"dataset": info.dataset, **info.fields})
        reloaded, helper, outputs = load_vae(tmp_path / "new"), weights.load_vae(name), model.encode
    meta = json.loads((tmp_path / "new" / "model.json").read_text())
    assert (meta["format"], meta["kind"], meta["dataset"], meta["config"]) == (export.FORMAT, entry.kind, "lsat",
                                                                                info.config)
    for other in (reloaded, helper):
        np.testing.assert_array_equal(np.asarray(getattr(other, outputs.__name__)(x)), np.asarray(outputs(x)))


def test_weights_load_checks_the_kind():
    with pytest.raises(weights.WeightsError, match="'bnn_lsat' is a 'bnn_posterior', not a 'vae'"):
        weights.load("bnn_lsat", kind="vae")
