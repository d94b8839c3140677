"""An evaluation protocol for VAE attention maps on one-class MNIST (this project's: neither the original code nor Liu
et al. [1] give an MNIST metric; reference-spec-expvae.md section 4).

**Data.** A model trained on the inlier digit (3) of the training split; held-out inliers: that digit in the test split;
outliers: the outlier digit (8, or every other digit with ``outlier_digit=None``) of the test split. Synthetic local
anomalies with pixel ground truth (``RandomState(anomaly_seed)``): *additive*, the pixel-wise max of an inlier with a
10x10 ink crop of another digit (ground truth: pixels that rose by > 0.2); *subtractive*, an 8x8 ink block set to 0
(pixels that fell by > 0.2).

**Maps**: the code and paper maps, the anomaly attention (Eq. 4), ablations, and a priori baselines
(:func:`score_maps`). **Metrics.** Pooled pixel AUROC [2] of per-image min-max maps and mean per-image AUROC; image
AUROC (inliers vs outliers) of the eval-mode ``BCE + KL``, the BCE and the raw maps' max and mean. :func:`aggregate`
gives mean and sd over seeds.

References: [1] Liu et al. Towards Visually Explaining VAEs. CVPR 2020. [2] Bergmann et al. MVTec AD. CVPR 2019."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.ndimage import gaussian_filter
from sklearn.metrics import roc_auc_score

from VAE.attention import AggregatePosterior, aggregate_posterior, attention_maps, target_and_jacobian

logger = logging.getLogger(__name__)

SIDE = 28
INK = 0.5  # a pixel counts as ink above this gray level


@dataclass(frozen=True)
class Protocol:
    """Every constant of the protocol (module docstring), written into the results JSON."""

    inlier_digit: int = 3
    outlier_digit: int | None = 8  # None: every other digit (the one-class protocol)
    anomaly_seed: int = 0
    crop: int = 10
    block: int = 8
    min_ink: int = 8
    min_gt: int = 8
    gt_threshold: float = 0.2
    blur_sigma: float = 2.0
    centre_sigma: float = 7.0
    max_images: int | None = None  # cap per set (smoke runs)


@dataclass(frozen=True)
class EvalData:
    """Flat ``[N, 784]`` image sets and ``[N, 28, 28]`` bool masks (``train_inliers``: optional)."""

    inliers: np.ndarray
    outliers: np.ndarray
    additive: np.ndarray
    additive_gt: np.ndarray
    subtractive: np.ndarray
    subtractive_gt: np.ndarray
    train_inliers: np.ndarray | None = None


def _ink_windows(image: np.ndarray, size: int, min_ink: int) -> list[tuple[int, int]]:
    """Top-left corners of every ``size x size`` window of a 28x28 image holding >= ``min_ink`` ink pixels."""
    ink = image > INK
    return [(r, c) for r in range(SIDE - size + 1) for c in range(SIDE - size + 1)
            if ink[r:r + size, c:c + size].sum() >= min_ink]


def additive_anomaly(base: np.ndarray, sources: np.ndarray, rng: np.random.RandomState, p: Protocol):
    """Pastes an ink crop of a random source digit onto ``base`` ``[28, 28]``; returns ``(image, gt_mask)``."""
    for _ in range(1000):
        source = sources[rng.randint(len(sources))]
        windows = _ink_windows(source, p.crop, p.min_ink)
        if not windows:
            continue
        r, c = windows[rng.randint(len(windows))]
        top, left = rng.randint(SIDE - p.crop + 1), rng.randint(SIDE - p.crop + 1)
        patch = np.zeros_like(base)
        patch[top:top + p.crop, left:left + p.crop] = source[r:r + p.crop, c:c + p.crop]
        image = np.maximum(base, patch)
        gt = image - base > p.gt_threshold
        if gt.sum() >= p.min_gt:
            return image, gt
    raise RuntimeError("no additive anomaly with enough ground-truth pixels after 1000 draws")


def subtractive_anomaly(base: np.ndarray, rng: np.random.RandomState, p: Protocol):
    """Erases a random ink-holding block of ``base`` ``[28, 28]``; returns ``(image, gt_mask)``."""
    windows = _ink_windows(base, p.block, p.min_ink)
    if not windows:
        raise ValueError("the base image has no block with enough ink to erase")
    r, c = windows[rng.randint(len(windows))]
    image = base.copy()
    image[r:r + p.block, c:c + p.block] = 0.0
    return image, base - image > p.gt_threshold


def make_eval_data(ds, p: Protocol) -> EvalData:
    """Builds the protocol's image sets from a labeled MNIST-like dataset (``data.load``)."""
    y = ds.y_test.astype(int)
    cap = slice(None, p.max_images)
    is_outlier = y != p.inlier_digit if p.outlier_digit is None else y == p.outlier_digit
    inliers = ds.x_test[y == p.inlier_digit][cap].astype(np.float32)
    outliers = ds.x_test[is_outlier][cap].astype(np.float32)
    sources = ds.x_test[(y != p.inlier_digit) & (y != (-1 if p.outlier_digit is None else p.outlier_digit))]
    sources = sources.reshape(-1, SIDE, SIDE)
    train_inliers = ds.x_train[ds.y_train.astype(int) == p.inlier_digit].astype(np.float32)
    rng = np.random.RandomState(p.anomaly_seed)
    bases = inliers.reshape(-1, SIDE, SIDE)
    add = [additive_anomaly(b, sources, rng, p) for b in bases]
    sub = [subtractive_anomaly(b, rng, p) for b in bases]

    def stack(pairs):
        return (np.stack([im for im, _ in pairs]).reshape(len(pairs), -1).astype(np.float32),
                np.stack([gt for _, gt in pairs]))

    (x_add, gt_add), (x_sub, gt_sub) = stack(add), stack(sub)
    logger.info("protocol data: %d inliers, %d outliers, %.1f / %.1f GT pixels per additive / subtractive image",
                len(inliers), len(outliers), gt_add.sum((1, 2)).mean(), gt_sub.sum((1, 2)).mean())
    return EvalData(inliers, outliers, x_add, gt_add, x_sub, gt_sub, train_inliers)


def centre_prior(sigma: float) -> np.ndarray:
    """An isotropic Gaussian bump ``[28, 28]`` centered on (13.5, 13.5)."""
    grid = np.arange(SIDE) - (SIDE - 1) / 2
    return np.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) / (2 * sigma ** 2))


def score_maps(model, x: np.ndarray, p: Protocol, seed: int, aggregate: AggregatePosterior | None = None,
               background: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every raw map of the protocol for ``x`` ``[N, 784]``: name -> ``[N, 28, 28]``."""
    images = x.reshape(-1, SIDE, SIDE)
    recon = model.reconstruct(x).numpy().reshape(images.shape)
    extra = {}
    if aggregate is not None:
        extra["attention_anomaly"] = attention_maps(model, x, method="anomaly", normalize=False, aggregate=aggregate,
                                                    seed=seed).numpy()
        extra["ablation_anomaly_mean"] = attention_maps(model, x, method="anomaly", normalize=False,
                                                        aggregate=aggregate, draws=0).numpy()
        extra["ablation_anomaly_abs"] = attention_maps(model, x, method="anomaly", normalize=False, aggregate=aggregate,
                                                       seed=seed, rectify="abs", upsample_first=True).numpy()
        extra["ablation_anomaly_reversed"] = attention_maps(model, x, method="anomaly", normalize=False,
                                                            aggregate=aggregate, seed=seed, reverse=True).numpy()
    if background is not None:
        extra["baseline_mean_inlier"] = np.abs(images - background.reshape(SIDE, SIDE))
    return {
        "attention_code": attention_maps(model, x, method="code", normalize=False).numpy(),
        "attention_paper": attention_maps(model, x, method="paper", normalize=False).numpy(),
        "ablation_code_relu": attention_maps(model, x, method="code", normalize=False, rectify="relu").numpy(),
        "ablation_code_abs_then_upsample": attention_maps(model, x, method="code", normalize=False,
                                                          upsample_first=False).numpy(),
        "baseline_reconstruction_error": np.abs(images - recon),
        "baseline_intensity": images.copy(),
        "baseline_blurred_intensity": np.stack([gaussian_filter(im, p.blur_sigma) for im in images]),
        "baseline_centre_prior": np.broadcast_to(centre_prior(p.centre_sigma), images.shape).copy(),
        "baseline_random": np.random.RandomState(seed).uniform(size=images.shape),
        **extra,
    }


def normalize_per_image(maps: np.ndarray) -> np.ndarray:
    """Per-image min-max of ``[N, H, W]`` maps (a constant map becomes zeros), as the attention display does."""
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return (maps - low) / np.where(span > 0, span, 1.0)


def pixel_aurocs(maps: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Pooled AUROC of min-max-normalized maps ``[N, H, W]`` against bool ``gt``, and the mean per-image AUROC."""
    pooled = roc_auc_score(gt.ravel(), normalize_per_image(maps).ravel())
    per_image = [roc_auc_score(g.ravel(), m.ravel()) for m, g in zip(maps, gt)]
    return {"pooled": float(pooled), "per_image_mean": float(np.mean(per_image))}


def raw_maps(model, x: np.ndarray, aggregate: AggregatePosterior | None = None, seed: int = 0
             ) -> dict[str, np.ndarray]:
    """Raw (unnormalized) maps ``[N, H, W]`` of ``x`` per method: code, paper; anomaly with ``aggregate``."""
    methods = {"code": {}, "paper": {}}
    if aggregate is not None:
        methods["anomaly"] = {"aggregate": aggregate, "seed": seed}
    return {method: attention_maps(model, x, method=method, normalize=False, **kwargs).numpy()
            for method, kwargs in methods.items()}


def image_scores(model, x: np.ndarray, aggregate: AggregatePosterior | None = None, seed: int = 0,
                 batch_size: int = 1024, maps: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Image scores ``[N]``: ``loss``, ``bce``, ``attention_{method}_{max,mean}`` (``maps``: :func:`raw_maps` of
    ``x`` if already computed)."""
    terms = [model.loss_terms(x[start:start + batch_size]) for start in range(0, len(x), batch_size)]
    scores = {key: np.concatenate([t[key].numpy() for t in terms]) for key in ("loss", "bce")}
    for method, raw in (maps if maps is not None else raw_maps(model, x, aggregate, seed)).items():
        scores[f"attention_{method}_max"], scores[f"attention_{method}_mean"] = raw.max((1, 2)), raw.mean((1, 2))
    return scores


def image_aurocs(model, inliers: np.ndarray, outliers: np.ndarray, aggregate: AggregatePosterior | None = None,
                 seed: int = 0, maps: Mapping[str, np.ndarray] | None = None) -> dict[str, float]:
    """Image-level AUROC, inliers negative and outliers positive, of every :func:`image_scores` score (``maps``:
    :func:`raw_maps` of the inliers followed by the outliers, if already computed)."""
    x = np.concatenate([inliers, outliers])
    labels = np.r_[np.zeros(len(inliers)), np.ones(len(outliers))]
    scores = image_scores(model, x, aggregate, seed) if maps is None else image_scores(model, x, maps=maps)
    return {name: float(roc_auc_score(labels, s)) for name, s in scores.items()}


def code_paper_agreement(model, x: np.ndarray, maps: Mapping[str, np.ndarray] | None = None) -> dict[str, float]:
    """Per-image Pearson correlation of the code map and the paper map (both raw): median and 10th percentile
    (``maps``: :func:`raw_maps` of ``x`` if already computed)."""
    maps = maps if maps is not None else raw_maps(model, x)
    code, paper = (maps[method].reshape(len(x), -1) for method in ("code", "paper"))
    code, paper = code - code.mean(1, keepdims=True), paper - paper.mean(1, keepdims=True)
    r = (code * paper).sum(1) / np.sqrt((code ** 2).sum(1) * (paper ** 2).sum(1) + 1e-30)
    return {"pearson_median": float(np.median(r)), "pearson_p10": float(np.percentile(r, 10))}


def sign_statistics(model, x: np.ndarray) -> dict[str, float]:
    """Fractions of negative signed coarse cells and of all-zero ReLU code maps over ``x``."""
    relu = attention_maps(model, x, method="code", normalize=False, rectify="relu").numpy()
    a, grad = target_and_jacobian(model, x, per_dimension=False)
    coarse = np.einsum("bhwk,bk->bhw", a.numpy(), grad.numpy().mean(axis=(1, 2)))
    return {"negative_cell_fraction": float((coarse < 0).mean()),
            "relu_map_all_zero_fraction": float((relu.max(axis=(1, 2)) == 0).mean())}


def evaluate_model(model, data: EvalData, p: Protocol, seed: int) -> dict[str, dict]:
    """All metrics of one model: ``{"pixel": ..., "image": ..., "agreement": ..., "sign": ...}``."""
    aggregate = background = None
    if data.train_inliers is not None:
        aggregate, background = aggregate_posterior(model, data.train_inliers), data.train_inliers.mean(axis=0)
    pixel = {}
    for kind, x, gt in (("additive", data.additive, data.additive_gt),
                        ("subtractive", data.subtractive, data.subtractive_gt)):
        maps = score_maps(model, x, p, seed, aggregate, background)
        pixel[kind] = {name: pixel_aurocs(m, gt) for name, m in maps.items()}
    maps = raw_maps(model, np.concatenate([data.inliers, data.outliers]), aggregate, seed)  # once for both uses
    outlier_maps = {method: m[len(data.inliers):] for method, m in maps.items()}
    return {"pixel": pixel, "image": image_aurocs(model, data.inliers, data.outliers, maps=maps),
            "agreement": code_paper_agreement(model, data.outliers, outlier_maps),
            "sign": sign_statistics(model, data.additive)}


def _leaves(tree: Mapping, prefix: tuple = ()) -> dict[tuple, float]:
    out = {}
    for key, value in tree.items():
        out.update(_leaves(value, prefix + (key,)) if isinstance(value, Mapping) else {prefix + (key,): value})
    return out


def aggregate(per_seed: Mapping[int, Mapping]) -> dict[str, dict[str, float]]:
    """Mean, sample sd (ddof 1; 0 for one seed), min and max over seeds of every metric, keyed by ``a/b/c`` paths."""
    leaves = [_leaves(r) for r in per_seed.values()]
    out = {}
    for path in leaves[0]:
        values = np.array([leaf[path] for leaf in leaves])
        out["/".join(path)] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1) if len(values) > 1 else 0),
                               "min": float(values.min()), "max": float(values.max())}
    return out


def run_protocol(load_model: Callable[[int], object], seeds: Sequence[int], ds, p: Protocol) -> dict:
    """Evaluates the model of every seed on one fixed protocol data set; returns a JSON-ready results dict."""
    data = make_eval_data(ds, p)
    per_seed = {}
    for seed in seeds:
        per_seed[seed] = evaluate_model(load_model(seed), data, p, seed)
        logger.info("seed %d: additive pooled AUROC attention %.3f", seed,
                    per_seed[seed]["pixel"]["additive"]["attention_code"]["pooled"])
    return {"protocol": asdict(p), "dataset": ds.name, "seeds": list(seeds),
            "n_images": {"inliers": len(data.inliers), "outliers": len(data.outliers),
                         "gt_pixels_additive": float(data.additive_gt.sum((1, 2)).mean()),
                         "gt_pixels_subtractive": float(data.subtractive_gt.sum((1, 2)).mean())},
            "per_seed": {str(s): r for s, r in per_seed.items()}, "summary": aggregate(per_seed)}


def summary_table(results: Mapping, anomaly: str, statistic: str = "pooled") -> list[tuple[str, float, float]]:
    """``(map, mean, sd)`` rows of one pixel-level metric, best first (for a notebook table)."""
    rows = [(key.split("/")[2], v["mean"], v["sd"]) for key, v in results["summary"].items()
            if key.startswith(f"pixel/{anomaly}/") and key.endswith("/" + statistic)]
    return sorted(rows, key=lambda r: -r[1])


def plot_overlays(model, x: np.ndarray, n: int = 8, title: str = "", masks: np.ndarray | None = None):
    """A figure of the first ``n`` images of ``x``: image, code map, paper map, reconstruction error, overlay."""
    import matplotlib.pyplot as plt

    x = x[:n]
    images = x.reshape(-1, SIDE, SIDE)
    code = attention_maps(model, x, method="code").numpy()
    rows = [("image", images, "gray"), ("attention (code)", code, "jet"),
            ("attention (paper)", attention_maps(model, x, method="paper").numpy(), "jet"),
            ("|x - x_hat|", np.abs(images - model.reconstruct(x).numpy().reshape(images.shape)), "magma")]
    fig, axes = plt.subplots(len(rows) + 1, len(x), figsize=(1.3 * len(x), 1.4 * (len(rows) + 1)), squeeze=False)
    for i, (name, maps, cmap) in enumerate(rows):
        for j in range(len(x)):
            axes[i, j].imshow(maps[j], cmap=cmap, vmin=0, vmax=None if name.startswith("|") else 1)
        axes[i, 0].set_ylabel(name, fontsize=7)
    for j in range(len(x)):  # the original's overlay: jet color map added to the gray image, rescaled
        overlay = plt.get_cmap("jet")(code[j])[..., :3] + images[j][..., None]
        axes[-1, j].imshow(overlay / overlay.max())
    axes[-1, 0].set_ylabel("overlay", fontsize=7)
    for j in range(len(x) if masks is not None else 0):
        axes[0, j].contour(masks[j].astype(float), levels=[0.5], colors="lime", linewidths=0.8)
    for ax in axes.ravel():
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
