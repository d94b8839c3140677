"""Input checks at the public boundary of the models, and readable errors for damaged model files."""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.errors import UserError

MAX_ROWS_NAMED = 5  # row indices quoted in the NaN / inf message

# What reading a damaged file raises: zipfile / zlib for .npz, h5py's OSError for .h5, json's ValueError.
FILE_ERRORS = (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile, zlib.error)


def _layout_hint(width: int, dataset: str | None) -> str:
    if dataset:
        return f"pass rows in the layout of data.load({dataset!r}).x_test"
    return (f"pass [n, {width}] rows in the model-input layout the model was trained on "
            "(for a registered dataset, the layout of data.load(NAME).x_test)")


def _check_shape(shape: Sequence[int | None], width: int | None, name: str, what: str, dataset: str | None,
                 image_shape: Sequence[int] | None, concrete: bool = True) -> None:
    """Rank, width and (``concrete`` only: graphs run on empty shards) emptiness of a shape; None entries pass."""
    shape = tuple(shape)
    expected = f"[n, {width}]" if width else "[n, D]"
    takes = f", {expected} for {what}" if width else ""
    if len(shape) != 2:
        hint = ""
        if image_shape is not None and len(shape) >= 3:
            hint = f" {what} takes flat images, [n, H*W*C]: pass {name}.reshape(len({name}), -1)."
        elif len(shape) == 1:
            hint = f" For one row pass {name}[None] (shape [1, {shape[0]}])."
        elif len(shape) == 0:
            hint = f" Pass a batch of rows, {expected}."
        raise UserError(f"{name} must be [n, D] flat inputs{takes}; got shape {shape}.{hint}")
    if concrete and shape[0] == 0:
        raise UserError(f"{name} is empty (shape {shape}): pass at least one row, {expected}, to {what}.")
    if width is not None and shape[1] is not None and shape[1] != width:
        trained = f"was trained on {width} ({dataset})" if dataset else f"takes {width} ([B, {width}] rows)"
        raise UserError(f"{name} has {shape[1]} columns but {what} {trained}; {_layout_hint(width, dataset)}.")


def _raise_non_finite(bad_rows: np.ndarray, n_rows: int, name: str, what: str) -> None:
    shown = ", ".join(str(int(i)) for i in bad_rows[:MAX_ROWS_NAMED])
    more = ", ..." if len(bad_rows) > MAX_ROWS_NAMED else ""
    raise UserError(f"{name} holds NaN or inf in {len(bad_rows)} of {n_rows} rows (row indices {shown}{more}); "
                    f"{what} would return NaN for them. Drop or impute those rows first, e.g. "
                    f"{name}[np.isfinite({name}).all(axis=1)].")


def check_inputs(x, width: int | None, name: str = "x", what: str = "the model", dataset: str | None = None,
                 image_shape: Sequence[int] | None = None) -> np.ndarray:
    """``x`` as a float32 ``[n, width]`` array (``width`` None: any), or a UserError saying what is wrong (empty,
    not 2-D, wrong width, NaN/inf rows) and what to do; ``name``, ``what``, ``dataset``, ``image_shape`` word it."""
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise UserError(f"{name} must be a numeric [n, D] array for {what}; could not convert it ({err}).") from err
    _check_shape(arr.shape, width, name, what, dataset, image_shape)
    finite = np.isfinite(arr)
    if not finite.all():
        _raise_non_finite(np.flatnonzero(~finite.all(axis=1)), len(arr), name, what)
    return arr


def is_concrete(x) -> bool:
    """Whether ``x`` holds values that can be checked now: NumPy, Python data, or an eager tensor (not a graph one)."""
    import tensorflow as tf

    if not tf.executing_eagerly():
        return False
    if tf.is_tensor(x) or isinstance(x, tf.Variable):
        return hasattr(x, "numpy") and not tf.is_symbolic_tensor(x)
    return type(x).__name__ != "KerasTensor"


def check_tensor_inputs(x, width: int | None, name: str = "x", what: str = "the model", dataset: str | None = None,
                        image_shape: Sequence[int] | None = None):
    """:func:`check_inputs` for entries used in graphs or differentiated in ``x``: a tensor is returned as it is
    (float32), so a tape still reaches it; a symbolic one gets the static shape checks only."""
    import tensorflow as tf

    if not (tf.is_tensor(x) or isinstance(x, tf.Variable)):
        if not is_concrete(x):  # e.g. a KerasTensor while building a functional model
            return x
        return check_inputs(x, width, name, what, dataset, image_shape)
    x = tf.convert_to_tensor(x)
    if x.dtype != tf.float32:
        x = tf.cast(x, tf.float32)
    concrete = is_concrete(x)
    if x.shape.rank is not None:
        _check_shape(x.shape.as_list(), width, name, what, dataset, image_shape, concrete)
    if concrete:
        row_ok = tf.reduce_all(tf.math.is_finite(x), axis=-1)
        if not bool(tf.reduce_all(row_ok)):
            _raise_non_finite(np.flatnonzero(~row_ok.numpy()), int(x.shape[0]), name, what)
    return x


# ------------------------------------------------------------------------------------------------ damaged files
# Functions ``path -> advice or None`` of the layers above that know where a file came from: ``weights`` adds the
# advice of its manifest entries when it is imported (common/ must not import weights/).
ADVICE_PROVIDERS: list = []


def register_advice(provider) -> None:
    """Adds ``provider(path) -> str | None`` to the sources of :func:`repair_advice` (once)."""
    if provider not in ADVICE_PROVIDERS:
        ADVICE_PROVIDERS.append(provider)


def repair_advice(path: str | os.PathLike, retrain: str | None = None, missing: bool = False) -> str:
    """Advice for a damaged (or ``missing``) model file: a registered provider's, else restore or ``retrain``."""
    for provider in ADVICE_PROVIDERS:
        try:
            advice = provider(path)
        except Exception:  # noqa: BLE001 - advice is best effort; the error itself must still be raised
            advice = None
        if advice:
            return advice
    command = f" ({retrain})" if retrain else ""
    state = "it is missing" if missing else "it is truncated or damaged (an interrupted copy, download or export?)"
    return (f"{state}: copy it again from where it came from, or retrain the model with the command that wrote "
            f"it{command}")


def unreadable_file(path: str | os.PathLike, err: BaseException, what: str, retrain: str | None = None) -> UserError:
    """A :class:`UserError` for a model file that exists but cannot be read (truncated, corrupt, wrong format)."""
    reason = f"{type(err).__name__}: {err}".strip().rstrip(":")
    return UserError(f"cannot read {what} {Path(path)} ({reason}); {repair_advice(path, retrain)}.")


def missing_file(path: str | os.PathLike, what: str, retrain: str | None = None) -> FileNotFoundError:
    """A ``FileNotFoundError`` for a model file that is absent, with the same advice."""
    return FileNotFoundError(f"{Path(path)} not found: {what} is missing; {repair_advice(path, retrain, True)}.")


def load_npz(path: str | os.PathLike, what: str = "the weights file", retrain: str | None = None,
             keep=lambda key: True) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` whose key passes ``keep``; FileNotFoundError if absent, UserError if damaged."""
    path = Path(path)
    if not path.is_file():
        raise missing_file(path, what, retrain)
    try:
        with np.load(path) as f:
            return {k: f[k] for k in f.files if keep(k)}
    except FILE_ERRORS as err:
        raise unreadable_file(path, err, what, retrain) from err


def load_weights_h5(model, path: str | os.PathLike, what: str = "the model weights",
                    retrain: str | None = None) -> None:
    """``model.load_weights(path)``; FileNotFoundError if absent, UserError if damaged or of another config."""
    path = Path(path)
    if not path.is_file():
        raise missing_file(path, what, retrain)
    try:
        model.load_weights(str(path))
    except FILE_ERRORS as err:
        if isinstance(err, UserError):
            raise
        raise unreadable_file(path, err, what, retrain) from err
