"""``python -m weights.publish``: the folder it writes is fetched back by ``weights.download`` over HTTP on 127.0.0.1.

A temporary weights root holds three generated models: one committed (``<root>/bnn/toy``, a file in a sub-folder),
one downloaded (``<root>/cache/vae/toy``) and one absent, and a generated parity folder (two kits and a top-level
file). The real manifest is published too: every entry whose files are on this machine and the four parity kits
(plus the evaluation kit and the schemas) of ``../shared/reference/parity``, fetched back into a fresh root; the
entries whose files are not here are listed in a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import warnings

import numpy as np
import pytest

import weights
from tests import local_server
from weights import WeightsError, download, kits, publish

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
    assert publish.main([str(out), "--manifest", str(toy_root), "--no-parity"]) == 0
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
    card = (out / "bnn/toy/README.md").read_text()  # a model card per entry, from the manifest
    assert "# toy_committed" in card and "python -m toy.train --out toy_committed" in card
    assert all(f["sha256"] in card for f in source["toy_committed"]["files"])
    assert "toy_absent" in (out / "README.md").read_text()  # the index card names what is not in the upload
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
    assert names == ["README.md", "SHA256SUMS", "bnn--toy--README.md", "bnn--toy--config.json",
                     "bnn--toy--data--samples.npz", "manifest.json", "vae--toy--README.md",
                     "vae--toy--model.weights.h5", "vae--toy--model_config.json"]
    assert json.loads((out / "manifest.json").read_text())["base_url"] == "https://example.org/download/v1/{flat}"
    manifest = _fresh_root(tmp_path, toy_root)
    for name in ("toy_committed", "toy_cached"):
        download.download(name, manifest, base=serve(out) + "/{flat}", progress=False)
        _assert_verified(manifest, name)
    with pytest.raises(WeightsError, match="flat"):
        publish.publish(tmp_path / "other", manifest_path=toy_root, flat=True, base_url="https://example.org/v1")


KITS = ["parity_lsat", "parity_compas", "parity_wine", "parity_credit"]  # the four; + evaluation and docs


def test_every_entry_on_this_machine_and_the_parity_kits_round_trip(tmp_path, serve, monkeypatch):
    """``python -m weights.publish OUT`` on the real manifest: every entry whose files are here and the parity kits
    are published with their cards, served on 127.0.0.1 and fetched back into a fresh root, sha256-checked."""
    if not (kits.DEFAULT_PARITY_DIR / "lsat" / "io.npz").is_file():
        pytest.skip(f"the parity kits are not at {kits.DEFAULT_PARITY_DIR}")
    monkeypatch.delenv(weights.ENV_URL, raising=False)
    monkeypatch.delenv(download.ENV_PARITY, raising=False)
    src = tmp_path / "src"  # a copy of the manifest, so that recording the kits does not touch weights/
    src.mkdir()
    shutil.copy(weights.MANIFEST, src / "manifest.json")
    shipped = weights.read_manifest()
    out = tmp_path / "pub"
    result = publish.publish(out, manifest_path=src / "manifest.json", sources=[weights.ROOT],
                             parity_dir=kits.DEFAULT_PARITY_DIR)

    # Every entry is published or reported, and published exactly when its files are on this machine.
    models = [n for n, e in shipped.entries.items() if e.kind != download.PARITY_KIND]
    assert set(models) <= set(result.names) | set(result.unavailable)
    assert not set(result.names) & set(result.unavailable)
    for name in models:
        assert (name in result.names) == weights.available(name, shipped), name
    assert all("train it with" in why or "fetch it" in why for why in result.unavailable.values())
    kit_names = [*KITS, "parity_evaluation", kits.PARITY_DOCS]
    assert set(kit_names) <= set(result.names)
    if result.unavailable:
        warnings.warn(f"{len(models) - len(result.unavailable)} of {len(models)} manifest entries published; not on "
                      f"this machine, so not round-tripped: {', '.join(result.unavailable)}", stacklevel=1)

    # The kits' entries as recorded equal the shipped manifest's (which is therefore current), sha256 per file.
    recorded = weights.read_manifest(src / "manifest.json")
    raw_shipped = {m["name"]: m for m in json.loads(weights.MANIFEST.read_text())["models"]}
    raw_recorded = {m["name"]: m for m in json.loads((src / "manifest.json").read_text())["models"]}
    for kit in kit_names:
        assert raw_recorded[kit] == raw_shipped.get(kit), f"{kit}: run `python -m weights.publish OUT` to record it"
        assert recorded.entry(kit).kind == download.PARITY_KIND

    # A card per entry, from the manifest; the fairness notes where they belong.
    for item in result.manifest["models"]:
        card = (out / item["path"] / "README.md").read_text()
        assert f"# {item['name']}" in card and "## Intended use" in card and "## Limitations" in card
        assert all(f["sha256"] in card for f in item["files"])
        if "compas" in item["dataset"]:
            assert "is_recid" in card and "fairness-sensitive" in card
        if "credit" in item["dataset"]:
            assert "individuals" in card
    assert "license: mit" in (out / "README.md").read_text()

    # Fetched back over HTTP into a fresh root and a fresh parity folder.
    fresh = _fresh_root(tmp_path, src / "manifest.json")
    parity = tmp_path / "parity"
    monkeypatch.setenv(weights.ENV_URL, serve(out))
    monkeypatch.setenv(download.ENV_PARITY, str(parity))
    published_models = [n for n in result.names if n in models]
    args = [*published_models, "--parity", "--manifest", str(fresh.root / "manifest.json"), "--no-progress"]
    assert download.main(args) == 0
    for name in published_models:
        _assert_verified(fresh, name)
    view = download.parity_view(fresh)
    assert view.local_dir("parity_lsat") == parity / "lsat" and download.parity_root(fresh) == parity
    for kit in kit_names:
        _assert_verified(view, kit)
    assert (parity / "lsat" / "io.npz").is_file() and (parity / "SCHEMA.md").is_file()
    assert (parity / "evaluation" / "vaeac" / "wine_gt_weights.npz").is_file()


def test_parity_kits_are_recorded_and_fetched_like_models(toy_root, tmp_path, serve, monkeypatch):
    kit_dir = tmp_path / "kit_dir"
    for rel, content in (("lsat/io.npz", b"io"), ("lsat/sub/vae.npz", b"vae"), ("compas/io.npz", b"c"),
                         ("SCHEMA.md", b"# schema\n"), (".hidden", b"x")):
        (kit_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (kit_dir / rel).write_bytes(content)
    out = tmp_path / "pub"
    result = publish.publish(out, manifest_path=toy_root, parity_dir=kit_dir)
    assert result.names == ["toy_committed", "toy_cached", kits.PARITY_DOCS, "parity_compas", "parity_lsat"]
    assert list(result.unavailable) == ["toy_absent"]
    raw = {m["name"]: m for m in json.loads(toy_root.read_text())["models"]}
    assert raw["parity_lsat"]["kind"] == "parity_kit" and raw["parity_lsat"]["path"] == "parity/lsat"
    assert [(f["file"], f["url"], f["sha256"]) for f in raw["parity_lsat"]["files"]] == [
        ("io.npz", "parity/lsat/io.npz", hashlib.sha256(b"io").hexdigest()),
        ("sub/vae.npz", "parity/lsat/sub/vae.npz", hashlib.sha256(b"vae").hexdigest())]
    assert [f["file"] for f in raw[kits.PARITY_DOCS]["files"]] == ["SCHEMA.md"]  # top level only, no dot files
    assert (out / "parity/lsat/sub/vae.npz").read_bytes() == b"vae" and (out / "parity/README.md").is_file()

    # Republishing an unchanged kit leaves the manifest as it is; a changed kit is recorded anew.
    before = toy_root.read_text()
    publish.publish(tmp_path / "pub2", manifest_path=toy_root, parity_dir=kit_dir)
    assert toy_root.read_text() == before
    (kit_dir / "compas" / "io.npz").write_bytes(b"changed")
    publish.publish(tmp_path / "pub3", manifest_path=toy_root, parity_dir=kit_dir)
    changed = weights.read_manifest(toy_root).entry("parity_compas").files[0]
    assert changed.sha256 == hashlib.sha256(b"changed").hexdigest()

    # --list before and after; --parity into $CLUE_PARITY_DIR.
    dst = tmp_path / "parity"
    monkeypatch.setenv(download.ENV_PARITY, str(dst))
    manifest = _fresh_root(tmp_path, toy_root)
    status = download.status("parity_lsat", manifest)
    assert status.startswith("not hosted: copy it from")
    base = serve(tmp_path / "pub3")
    assert download.status("parity_lsat", manifest, base) == f"downloadable from {base}"
    assert download.main(["--parity", "--manifest", str(manifest.root / "manifest.json"), "--no-progress",
                          "--base-url", base]) == 0
    assert (dst / "lsat" / "sub" / "vae.npz").read_bytes() == b"vae" and (dst / "SCHEMA.md").is_file()
    assert download.status("parity_lsat", manifest) == f"in cache ({dst / 'lsat'})"
    monkeypatch.delenv(download.ENV_PARITY)
    assert download.parity_root(manifest) == manifest.root / weights.CACHE / "parity"
    with pytest.raises(WeightsError, match="parity kit"):  # not hosted: says where the kit comes from
        download.download("parity_lsat", download.parity_view(manifest), progress=False)


def test_set_base_url_pins_a_hugging_face_revision(toy_root, tmp_path, monkeypatch):
    from weights.manifest import table

    rev = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(WeightsError, match="--revision"):
        publish.set_base_url("https://huggingface.co/org/clue-tf", None, toy_root)
    out = tmp_path / "pub"
    publish.publish(out, manifest_path=toy_root)
    assert publish.main(["--set-base-url", "https://huggingface.co/org/clue-tf", "--revision", rev,
                         "--published", str(out), "--manifest", str(toy_root)]) == 0
    raw = json.loads(toy_root.read_text())
    assert raw["base_url"] == f"https://huggingface.co/org/clue-tf/resolve/{rev}" and raw["revision"] == rev
    hosted = {m["name"]: m.get("hosted", True) for m in raw["models"]}
    assert hosted == {"toy_committed": True, "toy_cached": True, "toy_absent": False}  # the upload lacked it
    manifest = weights.read_manifest(toy_root)
    assert download.status("toy_cached", manifest) == "in cache (" + str(manifest.local_dir("toy_cached")) + ")"
    assert download.status("toy_absent", manifest) == "not hosted: train it with python -m toy.train --out toy_absent"
    shutil.rmtree(manifest.local_dir("toy_cached"))
    assert download.status("toy_cached", manifest) == f"downloadable from {raw['base_url']}"
    rows = {line.split(" | ")[0]: line for line in table(raw).splitlines()}
    assert "| hosted |" in rows["| `toy_cached`"] and "not hosted: train" in rows["| `toy_absent`"]
    assert publish.hub_base_url("https://example.org/w/{revision}", "v1") == "https://example.org/w/v1"
    with pytest.raises(WeightsError, match="not --revision"):
        publish.hub_base_url("https://huggingface.co/org/r/resolve/main", rev)


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
