"""Export and import of the VAEAC and the under-VAEAC (``common.export`` kinds ``vaeac`` and ``under_vaeac``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras

from common.export import ModelInfo, load_keras_model, save_keras_model
from VAEAC.model import VAEAC
from VAEAC.under import UnderVAEAC

KINDS = {"VAEAC": "vaeac", "UnderVAEAC": "under_vaeac"}  # class -> export kind (common.export)


def save_model(model: keras.Model, export_dir: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
    """Atomically writes ``export_dir/{model.weights.h5, model.json}`` (plus ``extra``)."""
    if type(model).__name__ not in KINDS:
        raise TypeError(f"save_model writes a VAEAC or an UnderVAEAC, not a {type(model).__name__}")
    return save_keras_model(model, export_dir, KINDS[type(model).__name__], extra)


def _build(info: ModelInfo) -> keras.Model:
    if info.kind == "vaeac":
        return VAEAC(**info.config)
    config = dict(info.config)
    return UnderVAEAC(VAEAC(**config.pop("base")), **config)


def load_model(export_dir: str | os.PathLike) -> keras.Model:
    """Rebuilds a :class:`VAEAC` or ``UnderVAEAC`` written by :func:`save_model` (``FileNotFoundError``,
    ``UserError``)."""
    model, _ = load_keras_model(export_dir, tuple(KINDS.values()), _build, "VAEAC", "VAEAC.export.save_model",
                                "`python -m VAEAC.train --dataset {dataset} --out RUN_DIR`")
    return model

