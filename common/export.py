"""One export format for every model: written by :func:`write_model`, read back by :func:`read_model`.

An export is a folder (written atomically by :func:`write_model`) of weights files and ``model.json``: ``{"format":
"clue-tf/model/v1", "kind", "config" (constructor arguments), "dataset" (or null), "weights" (file names), ...}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import UserError
from common.io import atomic_path, save_json
from common.validation import FILE_ERRORS, load_weights_h5, unreadable_file

FORMAT = "clue-tf/model/v1"
MODEL_FILE = "model.json"
RESERVED = ("format", "kind", "config", "dataset", "weights")
KERAS_WEIGHTS = "model.weights.h5"  # the weights file of the Keras models (VAE, ExpVAE, VAEAC, UnderVAEAC)


@dataclass(frozen=True)
class ModelInfo:
    """An export's metadata: ``folder``, ``path`` (its ``model.json``), that file's fields, kind-specific ``fields``."""

    folder: Path
    path: Path
    kind: str
    config: dict[str, Any]
    dataset: str | None = None
    weights: tuple[str, ...] = ()
    fields: dict[str, Any] = field(default_factory=dict)


def write_model(folder: str | os.PathLike, kind: str, config: Mapping[str, Any],
                weights: Mapping[str, Callable[[Path], None]], dataset: str | None = None, **fields: Any) -> Path:
    """Writes an export folder atomically (replacing an older one) and returns it; ``weights``: file name -> writer
    of that file given its path; ``fields``: kind-specific, JSON-serializable (NumPy scalars are converted)."""
    if clash := sorted(set(fields) & set(RESERVED)):
        raise ValueError(f"model.json fields {clash} are reserved; pass dataset= as its own argument")
    folder = Path(folder)
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        for name, write in weights.items():
            write(tmp / name)
        save_json(tmp / MODEL_FILE, {"format": FORMAT, "kind": kind, "config": dict(config), "dataset": dataset,
                                     "weights": list(weights), **fields})
    return folder


def _article(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "AEIOU" else f"a {noun}"


def _parse(folder: Path, path: Path, raw: Any) -> ModelInfo:
    """``ModelInfo`` of a parsed ``model.json``; KeyError / TypeError / AttributeError where it is malformed."""
    rest = {k: v for k, v in raw.items() if k not in RESERVED}
    return ModelInfo(folder, path, raw["kind"], dict(raw["config"]), _name(raw.get("dataset")),
                     tuple(raw.get("weights") or ()), rest)


def _name(dataset: Any) -> str | None:
    return dataset if isinstance(dataset, str) and dataset else None


def read_model(folder: str | os.PathLike, kinds: Iterable[str], what: str, writer: str,
               retrain: str | None = None) -> ModelInfo:
    """The metadata of the export in ``folder``, of one of ``kinds``; ``what``, ``writer``, ``retrain`` word messages.
    Raises FileNotFoundError without ``model.json``, UserError when it is damaged or of another format or kind."""
    folder, kinds = Path(folder), tuple(kinds)
    path = folder / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder / MODEL_FILE} not found: {folder} holds no {what} export (one written by "
                                f"{writer})")
    try:
        raw = json.loads(path.read_text())
        got = raw.get("format")
    except (*FILE_ERRORS, AttributeError) as err:
        raise unreadable_file(path, err, f"the {what} config", retrain) from err
    if got != FORMAT:
        raise UserError(f"{path}: format {got!r}, expected {FORMAT!r}: not {_article(what)} export written by "
                        f"{writer}")
    try:
        info = _parse(folder, path, raw)
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise unreadable_file(path, err, f"the {what} config", retrain) from err
    if info.kind not in kinds:
        raise UserError(f"{folder} holds a {info.kind!r} export, not {_article(what)} (kinds {', '.join(kinds)})")
    return info


def save_keras_model(model, folder: str | os.PathLike, kind: str, extra: Mapping[str, Any] | None = None) -> Path:
    """:func:`write_model` of ``model.get_config()`` and its weights; ``extra``'s ``dataset`` and kind fields."""
    extra = dict(extra or {})
    return write_model(folder, kind, model.get_config(), {KERAS_WEIGHTS: lambda p: model.save_weights(str(p))},
                       extra.pop("dataset", None), **extra)


def load_keras_model(folder: str | os.PathLike, kinds: Iterable[str], build: Callable[[ModelInfo], Any], what: str,
                     writer: str, retrain: str) -> tuple[Any, ModelInfo]:
    """:func:`read_model`, ``build(info)``, then ``model.weights.h5`` (``retrain`` may hold ``{dataset}``); a bad
    config or damaged weights raise UserError, a missing weights file FileNotFoundError."""
    folder = Path(folder)
    info = read_model(folder, kinds, what, writer, retrain.format(dataset="NAME"))
    retrain = retrain.format(dataset=info.dataset or "NAME")
    try:
        model = build(info)
    except (KeyError, TypeError, ValueError) as err:
        raise unreadable_file(info.path, err, f"the {what} config", retrain) from err
    load_weights_h5(model, folder / KERAS_WEIGHTS, f"the {what} weights", retrain)
    return model, info
