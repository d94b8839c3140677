"""The three methods over their sweeps, scored point by point, with a resumable journal (spec 6.4)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from CLUE.baselines import UFIDOConfig, localized_sensitivity, u_fido
from CLUE.compat import OriginalGradientMLP
from CLUE.evaluation.ground_truth import GroundTruth
from CLUE.evaluation.metrics import EvalBudget, PointScores, Reference, SweepPoint, score_points, summarize
from CLUE.explainer import CLUE, CLUEConfig, CLUEWeights
from common.io import save_npz

logger = logging.getLogger(__name__)

BNN_GRADIENTS = ("exact", "torch13")


def clue_grid(n: int) -> tuple[float, ...]:
    """CLUE's lambdas: ``n`` values log-spaced in [1e-4, 30] ([nb])."""
    return tuple(np.logspace(-4, math.log10(30), n))


def ufido_grid(n: int) -> tuple[float, ...]:
    """U-FIDO's L1 weights: ``n`` values log-spaced in [1e-5, 100] ([nb])."""
    return tuple(np.logspace(-5, 2, n))


def sensitivity_grid(n: int) -> tuple[float, ...]:
    """Sensitivity step sizes: ``n`` values log-spaced in [1e-3, 200] ([nb])."""
    return tuple(np.logspace(-3, math.log10(200), n))


@dataclass(frozen=True)
class Sweep:
    """Sweep grids and method settings ([nb] defaults; CLUE lr 0.1, 55/65 steps for aleatoric/epistemic, window 3).

    ``bnn_gradient``: the BNN input gradient the methods follow, ``exact`` or ``torch13`` (:mod:`CLUE.compat`); scoring
    always uses the exact BNN. ``ufido_mnist_norm``: the original ``fit_cat``'s MNIST normalization (spec trap 27)."""

    clue_lambdas: tuple[float, ...] = clue_grid(30)
    ufido_l1ws: tuple[float, ...] = ufido_grid(30)
    sensitivity_steps: tuple[float, ...] = sensitivity_grid(20)
    clue_lr: float = 0.1
    clue_max_steps_aleatoric: int = 55
    clue_max_steps_epistemic: int = 65
    clue_n_early_stop: int = 3
    ufido_iterations: int = 30
    ufido_batch: int = 3000
    bnn_gradient: str = "exact"
    ufido_mnist_norm: bool = False
    clue_batch: int = 1024

    def __post_init__(self):
        if self.bnn_gradient not in BNN_GRADIENTS:
            raise ValueError(f"bnn_gradient must be one of {BNN_GRADIENTS}, got {self.bnn_gradient!r}")

    @classmethod
    def paper(cls, sizes: dict[str, int] | None = None, **settings) -> Sweep:
        """Each method's [nb] range with ``sizes[method]`` log-spaced values (default: the method's ``default_n``)."""
        sizes = {**{m.name: m.default_n for m in METHODS.values()}, **(sizes or {})}
        if unknown := set(sizes) - set(METHODS):
            raise ValueError(f"unknown methods {sorted(unknown)}; choose from {tuple(METHODS)}")
        return cls(**{METHODS[m].grid_field: METHODS[m].grid(n) for m, n in sizes.items()}, **settings)

    def grid(self, method: str) -> tuple[float, ...]:
        return getattr(self, METHODS[method].grid_field)


def _explain_clue(target: str, lam: float, x0: np.ndarray, bnn, vae, vaeac, sweep: Sweep, seed: int) -> np.ndarray:
    """Distance weight ``lam / D`` with L1, weight 1 on the ``target`` uncertainty, z0 = encoder mean."""
    steps = sweep.clue_max_steps_aleatoric if target == "aleatoric" else sweep.clue_max_steps_epistemic
    config = CLUEConfig(CLUEWeights.paper(lam, x0.shape[1], target), lr=sweep.clue_lr, max_steps=steps,
                        n_early_stop=sweep.clue_n_early_stop, batch_size=sweep.clue_batch)
    return CLUE(bnn, vae, config).explain(x0).x


def _explain_ufido(target: str, lam: float, x0: np.ndarray, bnn, vae, vaeac, sweep: Sweep, seed: int) -> np.ndarray:
    """``L1w = lam`` with the in-filling ``vaeac`` trained on artificial x."""
    config = UFIDOConfig(l1_weight=lam, aleatoric=float(target == "aleatoric"),
                         epistemic=float(target == "epistemic"), n_iterations=sweep.ufido_iterations,
                         mnist_norm_quirk=sweep.ufido_mnist_norm)
    return np.concatenate([u_fido(bnn, vaeac, x0[i:i + sweep.ufido_batch], config, seed=seed + i).x
                           for i in range(0, len(x0), sweep.ufido_batch)])


def _explain_sensitivity(target: str, lam: float, x0: np.ndarray, bnn, vae, vaeac, sweep: Sweep,
                         seed: int) -> np.ndarray:
    """One localized-sensitivity step of size ``-lam`` (descent)."""
    return localized_sensitivity(bnn, x0, -lam, aleatoric=float(target == "aleatoric"),
                                 epistemic=float(target == "epistemic"))


@dataclass(frozen=True)
class Method:
    """A swept method: name, label, :class:`Sweep` grid field, [nb] grid and size, and
    ``explain(target, value, x0, bnn, vae, vaeac, sweep, seed) -> xc``."""

    name: str
    label: str
    grid_field: str
    grid: Callable[[int], tuple[float, ...]]
    default_n: int
    explain: Callable[..., np.ndarray]


# The one table of methods, in sweep order. A new baseline: a row here, its grid field in Sweep and its sweep size
# ``n_<name>`` in CLUE.evaluation.config.Config.
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("sensitivity", "sensitivity", "sensitivity_steps", sensitivity_grid, 20, _explain_sensitivity),
    Method("clue", "CLUE", "clue_lambdas", clue_grid, 30, _explain_clue),
    Method("ufido", "U-FIDO", "ufido_l1ws", ufido_grid, 30, _explain_ufido),
)}


def explain_with(method: str, target: str, lam: float, x0: np.ndarray, bnn, vae=None, vaeac=None,
            sweep: Sweep = Sweep(), seed: int = 0) -> np.ndarray:
    """Explanations ``[n, D]`` of ``x0`` by one method of :data:`METHODS` at one sweep value ``lam``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {tuple(METHODS)}")
    return METHODS[method].explain(target, lam, x0, bnn, vae, vaeac, sweep, seed)


class SweepResults(list):
    """The scored :class:`SweepPoint` list in job order, with ``per_point`` scores keyed ``(target, method, lam)``."""

    def __init__(self, points, per_point):
        super().__init__(points)
        self.per_point = per_point


def run_sweeps(gt: GroundTruth, bnn, refs: dict[str, Reference], vae, vaeac, sweep: Sweep, budget: EvalBudget,
               methods=METHODS, progress: bool = True, journal: str | os.PathLike | None = None) -> SweepResults:
    """Every method over its grid, for each target's explained set; one :class:`SweepPoint` per value.

    Each scored value is appended to the JSON-lines ``journal`` at once (per-point scores beside it, in
    ``<journal stem>/``); a later call reuses the points with the same fingerprint and skips a torn last line."""
    fingerprints = {t: sweep_fingerprint(ref, sweep, budget) for t, ref in refs.items()}
    explaining_bnn = OriginalGradientMLP.from_posterior(bnn) if sweep.bnn_gradient == "torch13" else bnn
    saved = read_journal(journal) if journal is not None else {}
    jobs = [(t, m, lam) for t in refs for m in methods for lam in sweep.grid(m)]
    points, per_point, reused = [], {}, 0
    for target, method, lam in tqdm(jobs, desc="sweeps", disable=not progress):
        key = (fingerprints[target], target, method, float(lam))
        if key in saved:
            points.append(saved[key])
            scores = read_point_scores(journal, key)
            if scores is not None:
                per_point[key[1:]] = scores
            reused += 1
            continue
        start = time.perf_counter()
        xc = explain_with(method, target, lam, refs[target].x0, explaining_bnn, vae, vaeac, sweep, budget.seed)
        seconds = time.perf_counter() - start
        scores = score_points(gt, bnn, refs[target], xc, budget, target)
        point = summarize(scores, refs[target], gt.task, method, target, lam, seconds)
        logger.info("%s %s %.3g: dH %.4f d_err %.4f log p(x) %.3f L1 %.3f", target, method, lam,
                    point.mean_delta_h, point.delta_err, point.mean_log_px, point.mean_l1)
        if journal is not None:  # the scores first: a journal line always has its per-point file
            save_npz(_scores_path(journal, key), **scores.arrays())
            _append_line(journal, json.dumps({"fingerprint": fingerprints[target], **dataclasses.asdict(point)}))
        points.append(point)
        per_point[key[1:]] = scores
    if reused:
        logger.info("reused %d of %d sweep points from %s", reused, len(jobs), journal)
    return SweepResults(points, per_point)


# settings left out of the fingerprint at these values, so that journals scored before they existed still match
_ADDED_LATER = {"bnn_gradient": "exact", "ufido_mnist_norm": False, "clue_batch": 256}


def sweep_fingerprint(ref: Reference, sweep: Sweep, budget: EvalBudget) -> str:
    """A digest of what a sweep point depends on besides the models: the explained points, the sweep, the budget."""
    digest = hashlib.sha256(np.ascontiguousarray(ref.x0, np.float32).tobytes())
    settings = dataclasses.asdict(sweep)
    for name, old in _ADDED_LATER.items():
        if settings[name] == old:
            del settings[name]
    digest.update(json.dumps([settings, dataclasses.asdict(budget)], sort_keys=True, default=float).encode())
    return digest.hexdigest()[:16]


def _scores_path(journal, key: tuple) -> Path:
    fingerprint, target, method, lam = key
    journal = Path(journal)
    return journal.parent / journal.stem / f"{fingerprint}_{target}_{method}_{lam:.17g}.npz"


def read_point_scores(journal, key: tuple) -> PointScores | None:
    """The per-point scores saved with a journal line, or None (journals written before they were kept)."""
    path = _scores_path(journal, key)
    if not path.exists():
        return None
    with np.load(path) as saved:
        return PointScores(**{k: saved[k] for k in PointScores.FIELDS})


def _append_line(path, line: str) -> None:
    """Appends one line and syncs it; a torn last line (no newline) is closed first so that it stays alone."""
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write(line.encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())


def read_journal(path) -> dict[tuple, SweepPoint]:
    """The points of a sweep journal, keyed by (fingerprint, target, method, lam); a torn line is skipped."""
    saved = {}
    if not os.path.exists(path):
        return saved
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
                fingerprint = row.pop("fingerprint")
                point = SweepPoint(**row)
            except (ValueError, TypeError, KeyError):
                logger.warning("%s: skipping an unreadable line (an interrupted write)", path)
                continue
            saved[(fingerprint, point.target, point.method, float(point.param))] = point
    return saved


def save_point_scores(path: str | os.PathLike, per_point: dict) -> None:
    """Every sweep value's per-point scores in one compressed float32 npz (read by :func:`load_point_scores`): keys
    ``<target>/<method>/<value>/<field>``, and ``err0``, the same for every value of a target, as ``<target>/err0``."""
    arrays = {}
    for (target, method, lam), scores in sorted(per_point.items()):
        arrays.setdefault(f"{target}/err0", np.asarray(scores.err0, np.float32))
        for field in PointScores.FIELDS:
            if field != "err0":
                arrays[f"{target}/{method}/{float(lam)!r}/{field}"] = np.asarray(getattr(scores, field), np.float32)
    save_npz(path, compressed=True, **arrays)


def load_point_scores(path: str | os.PathLike) -> dict:
    """The per-point scores saved by :func:`save_point_scores`, keyed ``(target, method, value)``, in float64."""
    out = {}
    with np.load(path) as saved:
        keys = [k.rsplit("/", 1)[0] for k in saved.files if k.endswith("/delta_h")]
        for key in keys:
            target, method, lam = key.split("/")
            fields = {f: np.asarray(saved[f"{key}/{f}"], np.float64) for f in PointScores.FIELDS if f != "err0"}
            out[(target, method, float(lam))] = PointScores(err0=np.asarray(saved[f"{target}/err0"], np.float64),
                                                            **fields)
    return out
