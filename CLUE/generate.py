"""Explains a trained BNN's most uncertain test points with CLUE, using a trained VAE (paper section 4).

Writes into ``--out``: ``explanations.npz`` (:class:`CLUE.explainer.CLUEResult` arrays, ``test_index``),
``summary.json``, for tabular data ``changes.csv`` and ``changes.png`` (changed features in original units), for
images ``clues.png``; with ``--diverse K`` also ``diverse.npz`` (δ-CLUE sets).

    python -m CLUE.generate --dataset lsat --bnn runs/bnn_lsat --vae runs/vae_lsat --out runs/clue_lsat
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import data
from BNN.posterior import Posterior
from CLUE.diverse import DeltaCLUE, DiverseConfig, check_options
from CLUE.explainer import CLUE, CLUEConfig, CLUEResult, CLUEWeights
from common import tabular
from common.config import option
from common.distribute import make_strategy
from common.errors import UserError
from common.io import atomic_path, save_json
from common.predictive import uncertainties
from common.runs import make_run_dir
from common.seeding import set_seed
from VAE.model import load_vae

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Config:
    """Settings of a CLUE run; defaults are the reference tabular run (shared/reference/README.md, section 3)."""

    dataset: str = option("lsat", "data.load name")
    bnn: str = option("runs/bnn", "BNN.train run folder (or its posterior/ folder)")
    vae: str = option("runs/vae", "VAE.train run folder (or its best/ folder)")
    out: str = option("runs/clue", "output folder")
    n_explain: int | None = option(None, "explain this many most uncertain test points, >= 1 (overrides --fraction)")
    fraction: float = option(0.1, "explain this fraction of the test set, in (0, 1], most uncertain first "
                                  "(reference: 0.1)")
    target: str = option("total", "uncertainty to reduce: total | aleatoric | epistemic")
    lam: float = option(2.0, "distance weight lambda; the objective uses lambda / D (reference: 2)")
    lr: float = option(0.1, "Adam step size on z (reference: 0.1)")
    min_steps: int = option(3, "no early stop before this step")
    max_steps: int = option(50, "Adam steps at most (reference: 50)")
    n_early_stop: int = option(3, "early-stopping window; 0 disables it")
    batch_size: int = option(256, "points optimized together (no effect on results)")
    change_threshold: float = option(0.05, "report a continuous feature as changed above this many training stds")
    seed: int = option(0, "data split seed and run seed")
    data_dir: str | None = option(None, "folder of raw data files")
    strategy: str = option("default", "default | mirrored: shard each batch over the replicas (GPUs or logical CPUs)")
    progress: bool = option(True, "show a progress bar over batches")
    n_figure: int = option(6, "tabular data: points drawn in changes.png, most uncertain first (0: no figure)")
    diverse: int = option(0, "δ-CLUE: also K explanations per point in a latent ball, in diverse.npz (0: none)")
    delta: float | None = option(None, "δ-CLUE: radius of the ball around the encoder mean (none: unconstrained)")
    delta_norm: str = option("l2", "δ-CLUE: the ball's norm, l2 | linf")
    diversity_weight: float = option(0.0, "δ-CLUE: weight of the set's mean pairwise distance (subtracted)")
    diverse_init: str = option("uniform", "δ-CLUE: starts inside the ball, uniform | normal | center")


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "tiny": {"n_explain": 8, "max_steps": 10, "progress": False},
}


def _resolve(folder: str, inner: str, flag: str) -> Path:
    path = Path(folder)
    if (path / inner).is_dir():
        return path / inner
    if not path.is_dir():
        raise UserError(f"{flag} {path} does not exist: pass the --out folder of its training run")
    return path


def load_models(config: Config) -> tuple[Posterior, Any]:
    """The BNN posterior and the best VAE of two training runs."""
    posterior = Posterior.load(_resolve(config.bnn, "posterior", "--bnn"))
    vae = load_vae(_resolve(config.vae, "best", "--vae"))
    return posterior, vae


def select_uncertain(posterior: Posterior, x: np.ndarray, n: int, target: str = "total") -> np.ndarray:
    """Indices of the ``n`` rows of ``x`` with the highest ``target`` uncertainty, most uncertain first."""
    parts = [uncertainties(posterior, x[i:i + 4096]) for i in range(0, len(x), 4096)]
    which = {"total": 0, "aleatoric": 1, "epistemic": 2}[target]
    u = np.concatenate([p[which].numpy() for p in parts])
    return np.argsort(-u, kind="stable")[:n]


UNCERTAINTIES = ("total", "aleatoric", "epistemic")


def check_counts(n_explain: int | None = None, fraction: float = 0.1) -> None:
    """Raises :class:`UserError` unless ``n_explain`` is None or a whole number >= 1 (else ``fraction`` in (0, 1])."""
    if n_explain is not None:
        if isinstance(n_explain, bool) or not isinstance(n_explain, (int, np.integer)) or n_explain < 1:
            raise UserError(f"--n-explain (n_explain) must be a whole number >= 1, the count of most uncertain points "
                            f"to explain; got {n_explain!r}. Omit it to explain --fraction of the points instead.")
        return
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.number)) or not 0 < fraction <= 1:
        raise UserError(f"--fraction (fraction) must be in (0, 1], the share of the points to explain (0.1: the 10% "
                        f"most uncertain, 1: all); got {fraction!r}. Use --n-explain N for a count instead.")


def n_to_explain(n_rows: int, n_explain: int | None = None, fraction: float = 0.1) -> int:
    """How many of ``n_rows`` points to explain: ``n_explain`` (at most ``n_rows``) or ``ceil(fraction * n_rows)``."""
    check_counts(n_explain, fraction)
    if n_explain is None:
        return min(math.ceil(fraction * n_rows), n_rows)
    if n_explain > n_rows:
        logger.warning("n_explain %d is more than the %d points there are: explaining all %d", n_explain, n_rows,
                       n_rows)
    return min(int(n_explain), n_rows)


def explain_most_uncertain(clue: CLUE, x: np.ndarray, n_explain: int | None = None, fraction: float = 0.1,
                           target: str = "total", progress: bool = False) -> tuple[CLUEResult, np.ndarray]:
    """CLUEs of the most uncertain rows of ``x`` under ``clue``'s BNN: the paper's protocol (section 4).

    Explains the top ``n_explain`` rows by ``target`` uncertainty (or ``ceil(fraction * len(x))``, default 10%).
    Returns ``(result, index)``, most uncertain first, with ``result.x0 == x[index]``; UserError for bad arguments."""
    if target not in UNCERTAINTIES:
        raise UserError(f"--target (target) must be total, aleatoric or epistemic, got {target!r}")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise UserError(f"x must be a non-empty [n, D] array of inputs, got shape {x.shape}")
    index = select_uncertain(clue.bnn, x, n_to_explain(len(x), n_explain, fraction), target)
    return clue.explain(x[index], progress=progress), index


def column_decimals(ds: data.Dataset, max_decimals: int = 6, share: float = 0.99) -> dict[str, int]:
    """Decimals each continuous variable of ``ds`` is recorded with in its raw training data: the fewest (0 to
    ``max_decimals``) at which ``share`` of the values lie on the grid, within ``1e-6 * (|x - mean| + std)``."""
    raw = ds.to_original_units(ds.x_train)
    decimals = {}
    for var, s in zip(ds.variables, tabular.block_slices(ds.input_dim_vec)):
        if var.categories is not None:
            continue
        values = raw[var.name].to_numpy(np.float64)
        tol = 1e-6 * (np.abs(values - ds.x_mean[s.start]) + ds.x_std[s.start])
        decimals[var.name] = next((d for d in range(max_decimals + 1)
                                   if np.mean(np.abs(values - np.round(values, d)) <= tol) >= share), max_decimals)
    return decimals


def rounded_original_units(ds: data.Dataset, x: np.ndarray, decimals: dict[str, int]) -> pd.DataFrame:
    """``ds.to_original_units(x)``, continuous columns rounded to ``decimals`` (integers where 0)."""
    table = ds.to_original_units(x)
    for name, d in decimals.items():
        table[name] = np.round(table[name].to_numpy(np.float64), d) + 0.0  # + 0.0: no -0.0
        if d == 0:
            table[name] = table[name].astype(np.int64)
    return table


def changed_features(ds: data.Dataset, result: CLUEResult, test_index: np.ndarray, threshold: float,
                     decimals: dict[str, int] | None = None) -> pd.DataFrame:
    """One row per (point, feature) that CLUE changed, in original units rounded to ``decimals``: a category changed, or
    a continuous value moved more than ``threshold`` training stds and the move shows at the column's resolution."""
    decimals = column_decimals(ds) if decimals is None else decimals
    before = rounded_original_units(ds, result.x0, decimals)
    after = rounded_original_units(ds, result.x, decimals)
    diff = np.abs(ds.to_compact(result.x) - ds.to_compact(result.x0))
    rows = []
    for i in range(len(result.x)):
        for j, var in enumerate(ds.variables):
            if var.categories is not None:
                changed = diff[i, j] > 0
            else:
                changed = diff[i, j] > threshold and before.iloc[i, j] != after.iloc[i, j]
            if changed:
                rows.append({"point": i, "test_index": int(test_index[i]), "feature": var.name,
                             "original": before.iloc[i, j], "clue": after.iloc[i, j],
                             "uncertainty_before": float(result.uncertainty_before[i]),
                             "uncertainty_after": float(result.uncertainty_after[i])})
    return pd.DataFrame(rows, columns=["point", "test_index", "feature", "original", "clue", "uncertainty_before",
                                       "uncertainty_after"])


def _shown(value: Any, decimals: int | None) -> str:
    """A value of a changes table as a person reads it: a category label, an integer, or ``decimals`` decimals."""
    if isinstance(value, (float, np.floating)) and decimals is not None:
        return f"{value:.{decimals}f}"
    return str(value)


def plot_changes(path: Path, ds: data.Dataset, result: CLUEResult, test_index: np.ndarray, table: pd.DataFrame,
                 decimals: dict[str, int], unit: str, max_points: int = 6) -> None:
    """PNG for tabular data: per point (``max_points`` most uncertain), uncertainty bars and the changed features."""
    from matplotlib.figure import Figure

    n = min(len(result.x), max_points)
    per_point = [table[table.point == i] for i in range(n)]
    heights = [max(len(rows), 2) + 1.6 for rows in per_point]
    fig = Figure(figsize=(9.0, 0.26 * sum(heights) + 0.8))  # no pyplot: the caller's backend is left alone
    axes = fig.subplots(n, 2, squeeze=False, gridspec_kw={"width_ratios": [1.0, 3.2], "height_ratios": heights})
    top = max(float(result.uncertainty_before[:n].max()), float(result.uncertainty_after[:n].max()), 1e-12)
    for i, rows in enumerate(per_point):
        before, after = float(result.uncertainty_before[i]), float(result.uncertainty_after[i])
        bars, ax = axes[i, 0], axes[i, 1]
        bars.barh([1, 0], [before, after], color=["tab:red", "tab:green"], height=0.6)
        bars.set_yticks([1, 0], ["x0", "CLUE"], fontsize=8)
        bars.set_xlim(0, 1.35 * top)
        for y, v in ((1, before), (0, after)):
            bars.text(v, y, f" {v:.3f}", va="center", fontsize=8)
        bars.tick_params(axis="x", labelsize=7)
        bars.set_title(f"#{i + 1}, test row {int(test_index[i])}", fontsize=9, loc="left")
        if i == n - 1:
            bars.set_xlabel(f"uncertainty, {unit}", fontsize=8)
        ax.axis("off")
        change = 100 * (after - before) / before if before else 0.0
        ax.set_title(f"uncertainty {before:.3f} -> {after:.3f} ({change:+.0f}%); {len(rows)} feature"
                     f"{'' if len(rows) == 1 else 's'} changed", fontsize=9, loc="left")
        if len(rows) == 0:
            ax.text(0.0, 0.5, "no feature changed: the CLUE is this point up to the reporting threshold",
                    fontsize=8, va="center", transform=ax.transAxes)
            continue
        cells = [[r.feature, _shown(r.original, decimals.get(r.feature)), _shown(r.clue, decimals.get(r.feature))]
                 for r in rows.itertuples()]
        shown = ax.table(cellText=cells, colLabels=["feature", "original", "CLUE"], loc="upper left",
                         cellLoc="left", colLoc="left", colWidths=[0.34, 0.33, 0.33])
        shown.auto_set_font_size(False)
        shown.set_fontsize(8)
        for (r, _), cell in shown.get_celld().items():
            cell.set_edgecolor("0.85")
            if r == 0:
                cell.set_text_props(weight="bold")
    fig.suptitle(f"CLUEs of the {n} most uncertain {ds.name} test points, in original units "
                 f"({len(result.x)} explained: all in changes.csv)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def plot_image_grid(path: Path, ds: data.Dataset, result: CLUEResult, posterior: Posterior,
                    per_row: int = 4, max_images: int = 32) -> None:
    """PNG grid of the first ``max_images`` points: original, CLUE and their difference (red added, blue removed)."""
    from matplotlib.figure import Figure

    h, w, _ = ds.image_shape
    n = min(len(result.x), max_images)
    p_before = np.mean(posterior.predict_samples(result.x0[:n]).numpy(), axis=0)
    p_after = np.mean(posterior.predict_samples(result.x[:n]).numpy(), axis=0)
    n_rows = math.ceil(n / per_row)
    fig = Figure(figsize=(1.6 * 3 * per_row, 1.9 * n_rows))  # no pyplot: the caller's backend is left alone
    axes = fig.subplots(n_rows, 3 * per_row, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, per_row)
        orig, clue = result.x0[i].reshape(h, w), result.x[i].reshape(h, w)
        panels = [(orig, "gray_r", (0, 1), f"y={p_before[i].argmax()} H={result.uncertainty_before[i]:.2f}"),
                  (clue, "gray_r", (0, 1), f"y={p_after[i].argmax()} H={result.uncertainty_after[i]:.2f}"),
                  (clue - orig, "bwr", (-1, 1), "CLUE - original")]
        for k, (img, cmap, (lo, hi), title) in enumerate(panels):
            ax = axes[r, 3 * c + k]
            ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi)
            ax.set_title(title, fontsize=8)
    fig.suptitle(f"CLUEs of the {n} most uncertain {ds.name} test images (predicted class y, entropy H in nats)",
                 fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def main(config: Config) -> dict[str, float]:
    """Runs CLUE on the most uncertain test points and writes the outputs listed in the module docstring."""
    if config.target not in UNCERTAINTIES:
        raise UserError(f"--target must be total, aleatoric or epistemic, got {config.target!r}")
    if config.strategy not in ("default", "mirrored"):
        raise UserError(f"--strategy must be default or mirrored, got {config.strategy!r} (CLUE shards points "
                        "over the local replicas; run one CLUE.generate per worker on its own points instead)")
    check_counts(config.n_explain, config.fraction)  # before anything is loaded
    if config.n_figure < 0:
        raise UserError(f"--n-figure must be >= 0 (0: no changes.png), got {config.n_figure}")
    check_options(config.diverse or 1, config.delta, config.delta_norm, config.diversity_weight, config.diverse_init)
    set_seed(config.seed)
    ds = data.load(config.dataset, data_dir=config.data_dir, seed=config.seed)
    posterior, vae = load_models(config)
    if posterior.arch.input_dim != ds.x_dim or vae.input_dim != ds.x_dim:
        raise UserError(f"models expect {posterior.arch.input_dim} (BNN) and {vae.input_dim} (VAE) inputs, but "
                        f"{ds.name} has {ds.x_dim}: were they trained on this dataset?")
    run_dir = make_run_dir(config.out, dataclasses.asdict(config), resume_safe={"batch_size", "strategy"},
                           kind="CLUE.generate", resumable=False, inputs=(config.bnn, config.vae))
    clue_config = CLUEConfig(CLUEWeights.paper(config.lam, ds.x_dim, config.target), lr=config.lr,
                             min_steps=config.min_steps, max_steps=config.max_steps,
                             n_early_stop=config.n_early_stop, batch_size=config.batch_size)
    strategy = make_strategy("mirrored") if config.strategy == "mirrored" else None
    result, test_index = explain_most_uncertain(CLUE(posterior, vae, clue_config, strategy), ds.x_test,
                                                config.n_explain, config.fraction, config.target, config.progress)
    result.save(run_dir / "explanations.npz", test_index=test_index)
    summary = {**result.summary(), "dataset": ds.name, "target": config.target,
               "uncertainty_unit": "nats" if ds.task == "classification" else "std (normalised y)",
               "mean_stop_step": float(result.stop_step[result.stop_step > 0].mean()) if np.any(result.stop_step)
               else 0.0, "n_test": int(len(ds.x_test))}
    if config.diverse:  # δ-CLUE sets of the same points (CLUE.diverse)
        sets = DeltaCLUE(posterior, vae, DiverseConfig(clue_config, config.diverse, config.delta, config.delta_norm,
                                                       config.diversity_weight, init=config.diverse_init,
                                                       seed=config.seed)).explain(result.x0, progress=config.progress)
        sets.save(run_dir / "diverse.npz", test_index=test_index)
        summary["diverse"] = sets.summary()
    if ds.is_image:
        plot_image_grid(run_dir / "clues.png", ds, result, posterior)
        summary["figure"] = "clues.png"
    else:
        decimals = column_decimals(ds)
        table = changed_features(ds, result, test_index, config.change_threshold, decimals)
        with atomic_path(run_dir / "changes.csv") as tmp:
            table.to_csv(tmp, index=False)
        summary.update(table="changes.csv", decimals=decimals)
        if config.n_figure > 0:
            plot_changes(run_dir / "changes.png", ds, result, test_index, table, decimals,
                         summary["uncertainty_unit"], config.n_figure)
            summary["figure"] = "changes.png"
    save_json(run_dir / "summary.json", summary)
    logger.info("explained %d points: uncertainty %.4f -> %.4f, mean L1 %.3f, %.1f s", summary["n_explained"],
                summary["uncertainty_before"], summary["uncertainty_after"], summary["l1_distance"],
                summary["seconds"])
    return summary


if __name__ == "__main__":
    import common.cli

    common.cli.run_script(main, Config, PRESETS, prog="python -m CLUE.generate", description=__doc__.split("\n")[0],
                          preset_help={"paper": "the reference tabular run (the defaults)",
                                       "tiny": "seconds, for tests: 8 points, 10 steps, no progress bar"})
