"""Model cards (Markdown) of the published entries, generated from the manifest's fields alone."""

from __future__ import annotations

import json
from typing import Any

from weights.download import PARITY_KIND

CARD = "README.md"

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
    "MNIST/tabular only: trained on one dataset, preprocessed exactly as `data.load` does (standardized continuous "
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
                           "../shared/reference/README.md. Their license is the original repository's.")
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
