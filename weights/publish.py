"""Lays out every model of the manifest and the PyTorch parity kits as a folder to upload to a model host.

Usage::

    python -m weights.publish dist/weights                        # every entry present here + the parity kits
    python -m weights.publish dist/weights --from /mnt/old/weights # cache-only entries from another weights/ folder
    python -m weights.publish dist/weights --only bnn_mnist vae_lsat --no-parity
    python -m weights.publish dist/release --flat                 # flat names: bnn--lsat--samples.npz, ...
    python -m weights.publish --set-base-url https://huggingface.co/ORG/REPO --revision COMMIT   # after uploading

Every entry of ``weights/manifest.json`` is looked for in its own folder (``weights/<path>`` when committed,
``weights/cache/<path>`` otherwise) and then in each ``--from`` folder laid out like ``weights/`` or
``weights/cache/`` (``<from>/<path>`` or ``<from>/cache/<path>``). Entries whose files are on this machine are
copied, each file checked against the manifest's size and sha256 while it is copied (a file that differs stops the
run); the others are named, with the reason and the command that makes them, in the log and in the returned report.
``--require-all`` makes an absent entry an error.

The parity kits (``--parity-dir``, default ``../shared/reference/parity``: the original PyTorch code's trained models
with the outputs it computed, format ``SCHEMA.md`` there) are published beside the models, under ``parity/``: each
kit folder becomes a manifest entry of kind ``parity_kit`` (``parity_lsat``, ``parity_compas``, ``parity_wine``,
``parity_credit``, ``parity_evaluation``) and the files at the top of the folder (the schemas and verify reports that
``verification.parity`` reads beside the kits) the entry ``parity_docs``; their sha256 are recorded in the manifest
(``weights/manifest.json`` is updated when they change), so ``python -m weights.download --parity`` fetches them like
models.

The folder is laid out as a model host serves it: each file at ``<base_url>/<url>`` (a tree, e.g. a Hugging Face
model repo, whose ``base_url`` is ``https://huggingface.co/ORG/REPO/resolve/<revision>``), or with ``--flat`` under
its flat name for a base holding ``{flat}`` (GitHub release assets, Zenodo). Beside the files: a model card
(``README.md``) in each entry's folder, generated from the manifest (what it is, dataset, command and seed, metrics,
files with sha256, intended use, limitations), an index card ``README.md`` at the top (the Hugging Face repo card),
``manifest.json`` (the published entries; ``base_url`` and ``revision`` when given) and ``SHA256SUMS``. The folder is
written beside ``OUT`` and renamed onto it only when everything is good; an existing non-empty ``OUT`` is refused
unless ``--force`` is given.

After uploading, ``--set-base-url URL --revision REV`` writes the address into ``weights/manifest.json``: those two
are the only things a maintainer sets by hand (``weights/README.md``, "Publishing").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.utils import atomic_path, save_json
from weights import CACHE, FORMAT, MANIFEST, Manifest, WeightsError, read_manifest
from weights.download import FLAT, PARITY_KIND, PARITY_PATH, flat_name

logger = logging.getLogger(__name__)

SUMS = "SHA256SUMS"
CARD = "README.md"
DEFAULT_PARITY_DIR = MANIFEST.parent.parent.parent / "shared" / "reference" / "parity"
PARITY_DOCS = "parity_docs"  # the files at the top of the parity folder (schemas, verify reports)
HUB = re.compile(r"^https://huggingface\.co/(?P<repo>[^/]+/[^/]+?)/?$")
HUB_RESOLVE = re.compile(r"^https://huggingface\.co/[^/]+/[^/]+/resolve/(?P<revision>[^/]+)/?$")


@dataclass
class Publication:
    """What :func:`publish` wrote: ``manifest`` (the published manifest.json), ``sources`` (entry -> the folder its
    files were copied from) and ``unavailable`` (entry -> why its files are not on this machine)."""

    manifest: dict[str, Any]
    sources: dict[str, Path] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [m["name"] for m in self.manifest["models"]]


def copy_hashed(src: Path, dst: Path, chunk: int = 1 << 20) -> tuple[str, int]:
    """Copies ``src`` to ``dst`` while hashing it; returns (sha256, bytes)."""
    digest, copied = hashlib.sha256(), 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while block := fin.read(chunk):
            digest.update(block)
            fout.write(block)
            copied += len(block)
    return digest.hexdigest(), copied


def copy_verified(src: Path, dst: Path, sha256: str, size: int) -> None:
    """Copies ``src`` to ``dst`` while hashing it; raises WeightsError (and removes ``dst``) unless the bytes match."""
    try:
        got, copied = copy_hashed(src, dst)
        if copied != size or got != sha256:
            raise WeightsError(
                f"refusing to publish {src}: it has {copied} bytes and sha256 {got}, the manifest "
                f"records {size} bytes and sha256 {sha256}. Restore or re-download the file, or, if it was replaced "
                "on purpose, record it with `python -m weights.manifest` first.")
    except BaseException:
        dst.unlink(missing_ok=True)
        raise


def _published_path(url: str, flat: bool) -> str:
    return flat_name(url) if flat else url.strip("/")


# ------------------------------------------------------------------------------------------------ finding the files
def candidates(manifest: Manifest, name: str, sources: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """The folders where the files of ``name`` may be: its own, then ``<from>/<path>`` and ``<from>/cache/<path>``."""
    path = manifest.entry(name).path
    found = [manifest.local_dir(name)]
    for source in sources:
        found += [Path(source) / path, Path(source) / CACHE / path]
    return list(dict.fromkeys(found))


def locate(manifest: Manifest, name: str, sources: Sequence[str | os.PathLike] = ()) -> tuple[Path | None, str]:
    """(the first folder holding every file of ``name`` with its recorded size, None) or (None, why none does).

    The sha256 is checked while publishing copies the files."""
    entry = manifest.entry(name)
    if not entry.files:
        return None, "the manifest lists no files (run `python -m weights.manifest`)"
    looked = candidates(manifest, name, sources)
    for folder in looked:
        if all((folder / f.file).is_file() and (folder / f.file).stat().st_size == f.bytes for f in entry.files):
            return folder, ""
    make = ("it is the original PyTorch code's export: copy it from ../shared/reference/parity"
            if entry.kind == PARITY_KIND else f"fetch it (`python -m weights.download {name}`) or train it with "
                                              f"`{entry.command}`")
    return None, f"files not on this machine (looked in {', '.join(str(p) for p in looked)}); {make}"


def present_models(manifest: Manifest, names: Sequence[str] | None = None, sources: Sequence[str | os.PathLike] = ()
                   ) -> tuple[dict[str, Path], dict[str, str]]:
    """The entries whose files are on this machine (name -> folder), and for the others why not.

    Raises:
      WeightsError: an entry named in ``names`` is unknown or not (completely) present.
    """
    chosen = list(names) if names else list(manifest.entries)
    present, absent = {}, {}
    for name in chosen:
        folder, why = locate(manifest, name, sources)
        if folder is None:
            absent[name] = why
        else:
            present[name] = folder
    if names and absent:
        raise WeightsError("cannot publish " + "; ".join(f"{n}: {why}" for n, why in absent.items()))
    return present, absent


# ------------------------------------------------------------------------------------------------- the parity kits
KIT_DESCRIPTIONS = {
    "lsat": "the original PyTorch CLUE code's trained LSAT BNN posterior (SG-HMC samples, Gaussian MLP) and VAE, with "
            "the reference inputs and the outputs its code computed from them (bnn_samples.npz, vae.npz, io.npz)",
    "compas": "the original PyTorch CLUE code's trained COMPAS BNN posterior (SG-HMC samples, categorical MLP) and "
              "VAE, with the reference inputs and the outputs its code computed from them",
    "wine": "the original PyTorch CLUE code's trained Wine BNN posterior (SG-HMC samples, Gaussian MLP) and its "
            "continuous-only Gaussian VAE, with the reference inputs and outputs (format SCHEMA-WINE-CREDIT.md)",
    "credit": "the original PyTorch CLUE code's trained Credit BNN posterior (SG-HMC samples, categorical MLP) and "
              "VAE, with the reference inputs and outputs (format SCHEMA-WINE-CREDIT.md)",
    "evaluation": "the original evaluation framework's reference outputs for Wine and COMPAS: sensitivity and CLUE "
                  "runs, the ground-truth and in-filling VAEACs' weights and outputs, U-FIDO (format "
                  "evaluation/SCHEMA-EVALUATION.md)",
}
KIT_DATASETS = {"evaluation": "wine, compas"}
KIT_COMMAND = ("exported from the original PyTorch code (cambridge-mlg/CLUE@3aaea125, patched as "
               "../shared/reference/README.md lists); not reproducible from this repository")


def _files_of(folder: Path, recursive: bool) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return [p for p in sorted(found) if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)]


def parity_kits(parity_dir: str | os.PathLike) -> dict[str, tuple[Path, list[Path]]]:
    """The kits of ``parity_dir``: entry name -> (its folder, its files). Each sub-folder is a kit ``parity_<folder>``
    (all files below it); the files at the top are ``parity_docs``."""
    parity_dir = Path(parity_dir)
    if not parity_dir.is_dir():
        raise WeightsError(f"--parity-dir {parity_dir} is not a folder (give the parity kits' folder, or --no-parity)")
    kits = {}
    top = _files_of(parity_dir, recursive=False)
    if top:
        kits[PARITY_DOCS] = (parity_dir, top)
    for sub in sorted(p for p in parity_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if files := _files_of(sub, recursive=True):
            kits[f"parity_{sub.name}"] = (sub, files)
    return kits


def kit_entry(name: str, folder: Path, files: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest entry of one parity kit (``files``: file, sha256, bytes, url records)."""
    kit = name.removeprefix("parity_")
    if name == PARITY_DOCS:
        path, dataset = PARITY_PATH, "lsat, compas, wine, credit"
        description = ("the parity kits' format descriptions (SCHEMA*.md) and the independent numpy recomputation "
                       "reports (verify_report*.json) that verification.parity reads beside the kits")
    else:
        path, dataset = f"{PARITY_PATH}/{kit}", KIT_DATASETS.get(kit, kit)
        description = KIT_DESCRIPTIONS.get(kit, f"parity kit {kit} of the original PyTorch code")
    return {"name": name, "kind": PARITY_KIND, "dataset": dataset, "description": description, "path": path,
            "committed": False, "command": KIT_COMMAND, "seed": 0,
            "seed_note": "the original driver's torch and numpy seed; its create_net reseeds torch with 42",
            "source": "../shared/reference/parity" + ("" if name == PARITY_DOCS else f"/{kit}"),
            "files": files, "metrics": {}}


# ---------------------------------------------------------------------------------------------------- model cards
INTENDED_USE = (
    "Reproducing the experiments of Antorán et al., *Getting a CLUE: A Method for Explaining Uncertainty Estimates* "
    "(ICLR 2021) with the TensorFlow 2 code these files belong to, and research on explaining predictive "
    "uncertainty. Not for decisions about people, and not a general-purpose model.")
DATASET_LIMITATIONS = {
    "compas": "COMPAS (ProPublica's Broward County recidivism data) is fairness-sensitive: it records people's race, "
              "sex, age and criminal history, and the risk scores it was collected around are contested for racial "
              "bias. The `is_recid` input nearly equals the label (`two_year_recid`): it leaks the label, which is why "
              "the BNN reaches about 98% accuracy. The model says nothing valid about predicting recidivism; the "
              "leak-free variant is `data.load(\"compas\", leak_free=True)`. Never use it to assess a person.",
    "credit": "Default of credit card clients (Taiwan, 2005; UCI) is data about individuals: sex, education, marriage, "
              "age, bill and payment history. Fairness-sensitive; never use it for credit decisions.",
    "lsat": "The law-school data (LSAT, UGPA, first-year average) includes race and sex columns; fairness-sensitive. "
            "Never use it to assess applicants.",
    "wine": "Red wine quality (Cortez et al., 2009): physico-chemical measurements, no personal data.",
    "mnist_t10k": "MNIST digits: the `mnist_t10k` split trains on 8000 of the 10,000 official test images and tests on "
                  "the other 2000 (`data/README.md`); not comparable with models trained on the official train set.",
}
GENERAL_LIMITATIONS = (
    "MNIST/tabular only: trained on one dataset, preprocessed exactly as `data.load` does (standardised continuous "
    "columns, one-hot categories; images flat in [0, 1]); other data, or inputs prepared otherwise, give meaningless "
    "outputs and uncertainties. BNN posteriors are finite SG-HMC sample sets: their uncertainty is only as good as "
    "that approximation.")


def _datasets(item: dict[str, Any]) -> list[str]:
    return [d.strip() for d in str(item.get("dataset", "")).split(",") if d.strip()]


def model_card(item: dict[str, Any], base_url: str | None = None, revision: str | None = None) -> str:
    """The model card (Markdown) of one manifest entry, generated from its fields alone."""
    name, kind = item["name"], item["kind"]
    parity = kind == PARITY_KIND
    rows = [("kind", f"`{kind}`"), ("dataset", ", ".join(f"`{d}`" for d in _datasets(item)) or "-"),
            ("produced by", item["command"] if parity else f"`{item['command']}`"),
            ("seed", f"{item['seed']}" + (f" ({item['seed_note']})" if item.get("seed_note") else ""))]
    for key, label in (("code_commit", "code commit"), ("trained", "trained"), ("trained_on", "trained on"),
                       ("rebuildable", "rebuildable bit for bit"), ("source", "source")):
        if key in item:
            value = item[key]
            rows.append((label, ", ".join(map(str, value)) if isinstance(value, list) else f"{value}"))
    if base_url:
        rows.append(("hosted at", f"{base_url}/{item['path']}/" + (f" (revision `{revision}`)" if revision else "")))
    lines = [f"# {name}", "", item.get("description", ""), "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    if parity:
        fetch = ["python -m weights.download --parity   # every kit, into $CLUE_PARITY_DIR or weights/cache/parity",
                 f"python -m weights.download {name}"]
        use = ["from verification.parity import load_kit   # the kits' format: parity/SCHEMA.md",
               "import weights.download",
               "kit = load_kit(weights.download.parity_root(), \"lsat\")"]
    else:
        fetch = [f"python -m weights.download {name}"]
        use = ["import weights", f"folder = weights.path({name!r})   # sha256-verified; downloads when hosted"]
        loader = {"bnn_posterior": "load_posterior", "vae": "load_vae", "expvae": "load_expvae"}.get(kind)
        if loader:
            use.append(f"model = weights.{loader}({name!r})")
    lines += ["", "## Fetch and use", "", "```bash", *fetch, "```", "", "```python", *use, "```"]
    metrics = item.get("metrics") or {}
    lines += ["", "## Metrics", ""]
    if metrics:
        lines += ["| metric | value |", "|---|---:|"]
        lines += [f"| `{k}` | {v:.6g} |" if isinstance(v, float) else f"| `{k}` | {v} |" for k, v in metrics.items()]
        lines += ["", "Recorded by the training run (`metrics.json`); see `weights/README.md` for their definitions."]
    elif parity:
        lines.append("The kit stores the original's reference outputs rather than summary figures; the parity tests "
                     "(`tests/test_parity*.py`) reproduce them, and `verify_report*.json` (entry `parity_docs`) holds "
                     "an independent numpy recomputation's largest differences.")
    else:
        lines.append("None recorded for this entry; its run's own files (`*/metrics.json`) hold the stages' figures.")
    if "stage_config" in item:
        lines += ["", "## Stage configuration", "", "```json", json.dumps(item["stage_config"], indent=1), "```"]
    lines += ["", "## Files", "", "| file | bytes | sha256 |", "|---|---:|---|"]
    lines += [f"| `{f['file']}` | {f['bytes']:,} | `{f['sha256']}` |" for f in item["files"]]
    limitations = [DATASET_LIMITATIONS[d] for d in _datasets(item) if d in DATASET_LIMITATIONS]
    limitations.append(GENERAL_LIMITATIONS)
    if kind == "evaluation_stages":
        limitations.append("Evaluation stages (ground-truth and under-fitted VAEACs, artificial data, the BNN, VAE and "
                           "in-filling VAEAC trained on it) only mean something inside `python -m CLUE.evaluate`, "
                           "which rebuilds or reuses them.")
    if parity:
        limitations.append("These are the original code's models and outputs, quirks included (the BNN drops its "
                           "last sample; CLUE's gradients use the last-loaded sample's weights): see SCHEMA.md and "
                           "../shared/reference/README.md. Their licence is the original repository's.")
    lines += ["", "## Intended use", "", INTENDED_USE, "", "## Limitations", ""]
    lines += [f"- {text}" for text in limitations]
    return "\n".join(lines) + "\n"


def index_card(published: dict[str, Any], unavailable: dict[str, str]) -> str:
    """The top-level ``README.md`` (the Hugging Face repo card): front matter and one row per published entry."""
    lines = ["---", "license: mit", "library_name: keras",
             "tags: [bayesian-neural-network, vae, uncertainty, explainability, clue, tabular, mnist, tensorflow]",
             "---", "", "# CLUE (ICLR 2021) in TensorFlow 2: pretrained weights and parity kits", "",
             "Files for the TensorFlow 2 reproduction of Antorán et al., *Getting a CLUE* (ICLR 2021). Fetch them with "
             "the project's `python -m weights.download NAME` (`--parity` for the PyTorch parity kits), which checks "
             "every file against the sha256 in its `weights/manifest.json`. Each folder has its model card.", "",
             f"{INTENDED_USE}", "", "| name | kind | dataset | size | card |", "|---|---|---|---:|---|"]
    for m in published["models"]:
        size = sum(f["bytes"] for f in m["files"]) / 1e6
        lines.append(f"| `{m['name']}` | {m['kind']} | {m.get('dataset', '')} | {size:.1f} MB | "
                     f"[{m['path']}/{CARD}]({m['path']}/{CARD}) |")
    if unavailable:
        lines += ["", "Not in this upload (their files were not on the publishing machine; train them with the command "
                      "in `weights/manifest.json`): " + ", ".join(f"`{n}`" for n in unavailable) + "."]
    lines += ["", "## Limitations", "", f"- {GENERAL_LIMITATIONS}",
              f"- {DATASET_LIMITATIONS['compas']}", f"- {DATASET_LIMITATIONS['credit']}"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------- base url
def hub_base_url(url: str, revision: str | None) -> str:
    """The pinned base url: a Hugging Face repo address ``https://huggingface.co/ORG/REPO`` becomes
    ``.../resolve/<revision>``; ``{revision}`` in ``url`` is replaced; any other address is kept as it is.

    Raises:
      WeightsError: a Hugging Face address without a revision, or whose ``resolve/<rev>`` differs from ``revision``.
    """
    url = url.rstrip("/")
    if "{revision}" in url:
        if not revision:
            raise WeightsError(f"{url} holds {{revision}}: give --revision")
        return url.replace("{revision}", revision)
    if HUB.match(url):
        if not revision:
            raise WeightsError(f"{url} is a Hugging Face repo: give --revision (the commit the upload made; "
                               "`huggingface-cli upload` prints it) so that downloads are pinned")
        return f"{url}/resolve/{revision}"
    if (match := HUB_RESOLVE.match(url)) and revision and match["revision"] != revision:
        raise WeightsError(f"{url} resolves revision {match['revision']!r}, not --revision {revision!r}")
    return url


def set_base_url(url: str, revision: str | None, manifest_path: str | os.PathLike = MANIFEST,
                 hosting: str | None = None, published: str | os.PathLike | None = None) -> dict[str, Any]:
    """Writes ``base_url`` (pinned, :func:`hub_base_url`), ``revision`` and ``hosting`` into the manifest.

    ``published``: the folder that was uploaded; entries missing from its manifest.json get ``"hosted": false`` (so
    ``--list`` and the README table do not call them downloadable), the others lose that mark."""
    from weights.manifest import lock

    base = hub_base_url(url, revision)
    match = HUB_RESOLVE.match(base)
    pinned = revision or (match["revision"] if match else None)
    if pinned and not re.fullmatch(r"[0-9a-f]{40}", pinned):
        logger.warning("revision %r is not a commit hash: a branch or tag can move, and the sha256 checks will then "
                       "refuse the files", pinned)
    with lock(manifest_path):
        raw = json.loads(Path(manifest_path).read_text())
        raw.update(base_url=base, revision=pinned,
                   hosting=hosting or f"hosted at {base} (files at <base_url>/<url>); committed models are also in git")
        if published is not None:
            uploaded = {m["name"] for m in json.loads((Path(published) / "manifest.json").read_text())["models"]}
            for model in raw["models"]:
                model.pop("hosted", None)
                if model["name"] not in uploaded:
                    model["hosted"] = False
                    logger.warning("%s is not in %s: marked \"hosted\": false", model["name"], published)
        save_json(manifest_path, raw)
    logger.info("wrote base_url %s%s into %s", base, f" (revision {pinned})" if pinned else "", manifest_path)
    return raw


# ---------------------------------------------------------------------------------------------------------- publish
def _record_kits(manifest_path: Path, kits: list[dict[str, Any]]) -> bool:
    """Adds or updates the parity kits' entries in the manifest; returns whether it changed."""
    from weights.manifest import lock

    with lock(manifest_path):
        raw = json.loads(manifest_path.read_text())
        by_name = {m["name"]: i for i, m in enumerate(raw["models"])}
        changed = False
        for kit in kits:
            if kit["name"] in by_name:
                old = raw["models"][by_name[kit["name"]]]
                if old != kit:
                    if old.get("files") != kit["files"]:
                        logger.warning("%s: the kit's files differ from the manifest's record; recording them anew",
                                       kit["name"])
                    raw["models"][by_name[kit["name"]]] = kit
                    changed = True
            else:
                raw["models"].append(kit)
                changed = True
        if changed:
            save_json(manifest_path, raw)
    return changed


def publish(out: str | os.PathLike, names: Sequence[str] | None = None, manifest_path: str | os.PathLike = MANIFEST,
            flat: bool = False, base_url: str | None = None, force: bool = False,
            sources: Sequence[str | os.PathLike] = (), parity_dir: str | os.PathLike | None = None,
            revision: str | None = None, require_all: bool = False) -> Publication:
    """Writes the upload folder ``out`` (module docstring) and returns what it published and what it could not.

    Args:
      out: the folder to write (created; an existing non-empty one only with ``force``).
      names: the entries to publish (default: every entry whose files are on this machine).
      manifest_path: the manifest to publish from (its folder is the ``weights/`` root); the parity kits' entries
        are recorded in it.
      flat: flat file names (``bnn--lsat--samples.npz``) for hosts without folders, instead of the tree.
      base_url: the address the folder will have, recorded (pinned with ``revision``) in its manifest.json.
      sources: more folders laid out like ``weights/`` or ``weights/cache/`` to take absent entries' files from.
      parity_dir: the parity kits' folder to publish (None: none).
      require_all: an entry whose files are not on this machine is an error, not only reported.

    Raises:
      WeightsError: nothing to publish, a named entry is not present (or any, with ``require_all``), a file differs
        from the manifest, two files would share a name, ``out`` exists (without ``force``) or is inside weights/.
    """
    out, manifest_path = Path(out), Path(manifest_path)
    manifest = read_manifest(manifest_path)
    if out.exists() and not force and (not out.is_dir() or any(out.iterdir())):
        raise WeightsError(f"{out} exists; choose another OUT or pass --force to replace it")
    if out.resolve() == manifest.root.resolve() or manifest.root.resolve() in out.resolve().parents:
        raise WeightsError(f"OUT {out} is inside the weights folder {manifest.root}: publish to a folder outside it")
    if base_url:
        base_url = hub_base_url(base_url, revision)
    if flat and base_url and FLAT not in base_url:
        raise WeightsError(f"--flat needs a --base-url holding {FLAT} (e.g. "
                           f"https://github.com/ORG/REPO/releases/download/TAG/{FLAT}); got {base_url}")
    kits = parity_kits(parity_dir) if parity_dir is not None else {}
    wanted = [n for n in (names or manifest.entries) if n not in kits]  # kits come from parity_dir, not the cache
    present, unavailable = present_models(manifest, wanted if names else None, sources)
    present = {n: f for n, f in present.items() if n not in kits}
    unavailable = {n: why for n, why in unavailable.items() if n not in kits}
    if names:
        present = {n: present[n] for n in wanted}
    for name, why in unavailable.items():
        logger.warning("%s: not published, %s", name, why)
    if require_all and unavailable:
        raise WeightsError(f"{len(unavailable)} entries are not on this machine: {', '.join(unavailable)} (see above; "
                           "--from DIR takes them from another weights folder)")
    if not present and not kits:
        raise WeightsError(f"no entry of {manifest_path} is on this machine: nothing to publish")
    raw = json.loads(manifest_path.read_text())
    by_name = {item["name"]: item for item in raw["models"]}
    published = {key: value for key, value in raw.items() if key != "models"}
    published.update(format=FORMAT, base_url=base_url, revision=revision, layout="flat" if flat else "tree",
                     hosting=("the files of this folder, uploaded as they are; "
                              + (f"flat names: the base url ends in /{FLAT}" if flat else "a tree: <base>/<url>")))
    published["models"] = []
    taken: dict[str, str] = {}
    sums: list[str] = []
    kit_entries: list[dict[str, Any]] = []

    def place(key: str, url: str) -> str:
        where = _published_path(url, flat)
        if where in taken or where in ("manifest.json", SUMS, CARD):
            raise WeightsError(f"{key} would be published as {where}, a name already taken by {taken.get(where)}")
        taken[where] = key
        return where

    with atomic_path(out) as tmp:
        tmp.mkdir()
        for name, folder in present.items():
            entry = manifest.entry(name)
            item = json.loads(json.dumps(by_name[name]))
            item.pop("hosted", None)  # it is in this upload
            for f, record in zip(entry.files, item["files"], strict=True):
                if "://" in record["url"]:  # hosted elsewhere until now: from here on, beside the others
                    record["url"] = f"{entry.path}/{f.file}"
                where = place(f"{name}/{f.file}", record["url"])
                copy_verified(folder / f.file, tmp / where, f.sha256, f.bytes)
                sums.append(f"{f.sha256}  {where}")
            published["models"].append(item)
            logger.info("%s: %d files published from %s", name, len(entry.files), folder)
        for name, (folder, files) in kits.items():
            records = []
            for file in files:
                rel = file.relative_to(folder).as_posix()
                url = f"{kit_entry(name, folder, [])['path']}/{rel}"
                where = place(f"{name}/{rel}", url)
                sha, size = copy_hashed(file, tmp / where)
                records.append({"file": rel, "sha256": sha, "bytes": size, "url": url})
                sums.append(f"{sha}  {where}")
            kit_entries.append(kit_entry(name, folder, records))
            published["models"].append(kit_entries[-1])
            logger.info("%s: %d files published from %s", name, len(files), folder)
        for item in published["models"]:
            where = place(f"{item['name']}/{CARD}", f"{item['path']}/{CARD}")
            (tmp / where).parent.mkdir(parents=True, exist_ok=True)
            (tmp / where).write_text(model_card(item, base_url, revision))
        (tmp / CARD).write_text(index_card(published, unavailable))
        (tmp / "manifest.json").write_text(json.dumps(published, indent=2) + "\n")
        (tmp / SUMS).write_text("\n".join(sums) + "\n")
    if kit_entries and _record_kits(manifest_path, kit_entries):
        logger.info("recorded the parity kits %s in %s", ", ".join(k["name"] for k in kit_entries), manifest_path)
    return Publication(published, {**present, **{n: f for n, (f, _) in kits.items()}}, unavailable)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m weights.publish", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", metavar="OUT", help="the folder to write (must not exist, or be empty)")
    parser.add_argument("--out", dest="out_option", default=None, help=argparse.SUPPRESS)  # the former spelling
    parser.add_argument("--only", nargs="+", metavar="NAME", default=None,
                        help="publish only these entries (default: every entry on this machine)")
    parser.add_argument("--from", dest="sources", action="append", default=[], metavar="DIR",
                        help="another folder laid out like weights/ or weights/cache/ to take absent entries from "
                             "(may be repeated)")
    parser.add_argument("--parity-dir", default=str(DEFAULT_PARITY_DIR),
                        help="the PyTorch parity kits' folder (default: ../shared/reference/parity)")
    parser.add_argument("--no-parity", action="store_true", help="do not publish the parity kits")
    parser.add_argument("--require-all", action="store_true", help="fail when an entry's files are not here")
    parser.add_argument("--flat", action="store_true",
                        help=f"flat file names for hosts without folders (a base url holding {FLAT})")
    parser.add_argument("--base-url", default=None,
                        help="the address the folder will have, for its manifest.json and cards "
                             "(https://huggingface.co/ORG/REPO is pinned with --revision)")
    parser.add_argument("--revision", default=None, help="the host's revision (commit) the files are pinned to")
    parser.add_argument("--set-base-url", default=None, metavar="URL",
                        help="after uploading: write URL (pinned to --revision) into the manifest; publishes nothing")
    parser.add_argument("--published", default=None, metavar="DIR",
                        help="with --set-base-url: the uploaded folder; entries not in it are marked not hosted")
    parser.add_argument("--manifest", default=str(MANIFEST), help="manifest file (default: weights/manifest.json)")
    parser.add_argument("--force", action="store_true", help="replace an existing OUT")
    args = parser.parse_args(argv)
    args.out = args.out or args.out_option
    if args.set_base_url is None and not args.out:
        parser.error("give OUT (the folder to write), or --set-base-url URL --revision REV")
    if args.set_base_url is not None and args.out:
        parser.error("--set-base-url writes the manifest only: give it without OUT")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.set_base_url is not None:
        set_base_url(args.set_base_url, args.revision, args.manifest, published=args.published)
        logger.info("now regenerate the table of weights/README.md (`python -m weights.manifest --table`) and commit "
                    "%s", args.manifest)
        return 0
    parity = None if args.no_parity else args.parity_dir
    if parity is not None and not Path(parity).is_dir():
        logger.warning("no parity kits at %s: publishing without them (--parity-dir DIR, or --no-parity)", parity)
        parity = None
    result = publish(args.out, args.only, args.manifest, args.flat, args.base_url, args.force, args.sources, parity,
                     args.revision, args.require_all)
    total = sum(f["bytes"] for m in result.manifest["models"] for f in m["files"])
    kits = sum(m["kind"] == PARITY_KIND for m in result.manifest["models"])
    logger.info("wrote %s: %d entries (%d of them parity kits), %.1f MB; %d entries not on this machine", args.out,
                len(result.manifest["models"]), kits, total / 1e6, len(result.unavailable))
    if result.unavailable:
        logger.warning("not published (files not on this machine): %s", ", ".join(result.unavailable))
    example = "https://huggingface.co/ORG/REPO"
    logger.info("upload it (`huggingface-cli upload ORG/REPO %s . --repo-type model`), then record where: "
                "`python -m weights.publish --set-base-url %s --revision <commit>`; see weights/README.md",
                shlex.quote(str(args.out)), example if not args.flat else f"<address>/{FLAT}")
    return 0


if __name__ == "__main__":
    from common.cli import run

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(main)
