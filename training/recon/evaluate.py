"""How well the network recovers the face model's parameters (``surrogate evaluate recon`` runs it).

Three held-out sets, all rendered with seeds training never used:

* ``clean``: centred, evenly lit renders (random identity and skin): the accuracy of the network itself;
* ``randomised``: the training distribution (crop jitter, lighting, backgrounds, occluders, blur, noise);
* ``closed_loop``: surrogates of the 3-D path (``surrogate.synthesis_3d.render_surrogates_3d``) for
  requested attributes: does the estimator read back what was asked for (attributes -> render ->
  attributes)?

and for a model trained on a labelled folder (``data.mode = "folder"``, e.g. the portrait corpus):

* ``held_out``: the folder's held-out rows (the training run's own split, by row id), against their
  labels (for the portraits: MediaPipe's readings and the hand-labelled gender boundary), with the
  portrait targets of issue 18 (``portrait_targets``).

Per attribute: MAE (natural units) and Pearson r; summary: pose MAE (degrees), mean/min AU figures,
gender accuracy (P(male) > 0.5 on both sides) and gender AUC (label > 0.5 as the class). Written as
metrics.json and metrics.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from surrogate.schema import AttributeSchema
from surrogate.stats import auc, pearson

TARGET_POSE_MAE_DEG = 3.0
TARGET_AU_R = 0.85
# issue 18's targets against the labels of held-out portraits: the AUs the service leans on most are held
# to the rendered-face bar, the others (read more weakly by MediaPipe itself) to 0.7
PORTRAIT_STRONG_AUS = ("AU04", "AU12")
TARGET_PORTRAIT_OTHER_AU_R = 0.7
TARGET_GENDER_AUC = 0.95
RENDERED_SETS = ("clean", "randomised", "closed_loop")


def attribute_metrics(schema: AttributeSchema, true: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """Per-attribute MAE and Pearson r, and the summary figures the targets are stated in."""
    true, predicted = np.asarray(true, np.float32), np.asarray(predicted, np.float32)
    per: dict[str, dict[str, float | str]] = {}
    for i, spec in enumerate(schema.attributes):
        per[spec.name] = {"mae": float(np.abs(true[:, i] - predicted[:, i]).mean()),
                          "r": pearson(true[:, i], predicted[:, i]), "unit": spec.unit}
    pose = [n for n, s in zip(schema.names, schema.attributes, strict=True) if s.unit == "degrees"]
    aus = list(schema.action_units)
    summary: dict[str, float] = {"n": float(len(true))}
    if pose:
        summary["pose_mae_deg"] = float(np.mean([per[n]["mae"] for n in pose]))
        summary["pose_mae_max_deg"] = float(np.max([per[n]["mae"] for n in pose]))
    if aus:
        summary["au_mae"] = float(np.mean([per[n]["mae"] for n in aus]))
        rs = [per[n]["r"] for n in aus]
        summary["au_r_mean"] = float(np.nanmean(rs)) if not np.all(np.isnan(rs)) else float("nan")
        summary["au_r_min"] = float(np.nanmin(rs)) if not np.all(np.isnan(rs)) else float("nan")
    if "gender" in schema:
        g = schema.index("gender")
        summary["gender_accuracy"] = float(((true[:, g] > 0.5) == (predicted[:, g] > 0.5)).mean())
        summary["gender_auc"] = auc(predicted[:, g], true[:, g] > 0.5)
    return {"per_attribute": per, "summary": summary}


def targets_met(summary: dict[str, float]) -> dict[str, bool]:
    met = {}
    if "pose_mae_max_deg" in summary:
        met["pose_mae_max_deg <= 3"] = summary["pose_mae_max_deg"] <= TARGET_POSE_MAE_DEG
    if "au_r_min" in summary:
        met["au_r_min >= 0.85"] = bool(summary["au_r_min"] >= TARGET_AU_R)
    return met


def portrait_targets(metrics: dict[str, Any]) -> dict[str, bool]:
    """Issue 18's targets on held-out labelled rows: each angle's MAE <= 3 degrees, AU04 and AU12 r >= 0.85,
    the other AUs r >= 0.7, gender AUC >= 0.95 (a NaN figure, e.g. one gender class only, is a miss)."""
    per, met = metrics["per_attribute"], {}
    for name, m in per.items():
        if m["unit"] == "degrees":
            met[f"{name} MAE <= {TARGET_POSE_MAE_DEG:g}"] = bool(m["mae"] <= TARGET_POSE_MAE_DEG)
        elif name.startswith("AU"):
            bar = TARGET_AU_R if name in PORTRAIT_STRONG_AUS else TARGET_PORTRAIT_OTHER_AU_R
            met[f"{name} r >= {bar:g}"] = bool(m["r"] >= bar)
    if "gender_auc" in metrics["summary"]:
        met[f"gender AUC >= {TARGET_GENDER_AUC:g}"] = bool(metrics["summary"]["gender_auc"] >= TARGET_GENDER_AUC)
    return met


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures a model card shows: MAE per angle, r per AU, gender AUC, n, targets met."""
    out: dict[str, Any] = {"n": int(metrics["summary"]["n"])}
    for name, m in metrics["per_attribute"].items():
        if m["unit"] == "degrees":
            out[f"{name}_mae_deg"] = m["mae"]
        elif name.startswith("AU"):
            out[f"{name}_r"] = m["r"]
    for key in ("gender_auc", "gender_accuracy"):
        if key in metrics["summary"]:
            out[key] = metrics["summary"][key]
    out["targets_met"] = metrics.get("targets_met", {})
    return out


def _exported_estimator(repository: Path, config_path: Path | None) -> tuple[Any, Any, int]:
    """(OnnxEstimator, training config, step) for the newest ``recon`` of a model repository.

    An exported model does not carry its training config, and the held-out sets are rendered the way
    training rendered them, so the config file that trained it must be named (``--config``)."""
    from surrogate.extract import RECON_MODEL, OnnxEstimator
    from surrogate.model_repo import ModelRepository
    from training.recon.config import load_config

    if config_path is None:
        raise ValueError(f"{repository} is a model repository: pass --config with the TOML file that trained its "
                         "recon model (its MODEL_CARD.md names it), so the held-out sets are rendered the same way")
    config = load_config(config_path)
    estimator = OnnxEstimator(repository)
    if estimator.image_size != config.model.image_size or estimator.channels != config.model.channels:
        raise ValueError(f"{config_path} describes {config.model.image_size} px x {config.model.channels} channel(s), "
                         f"the exported model takes {estimator.image_size} px x {estimator.channels}")
    step = ModelRepository(repository).export_info(RECON_MODEL, estimator.model.version).get("step", 0)
    return estimator, config, int(step)


def evaluate_checkpoint(checkpoint: str | Path, *, n: int = 2000, seed: int = 20_240_601, device: str = "cpu",
                        include: tuple[str, ...] = (), config_path: Path | None = None,
                        data: Path | None = None, attributes: Path | None = None) -> dict[str, Any]:
    """Render the held-out sets (or read the folder's held-out rows), run the estimator, return all
    metrics (nothing written).

    ``checkpoint``: a training checkpoint, or a model repository folder (its newest exported ``recon``,
    run with onnxruntime; then ``config_path`` names the config that trained it). ``include``: the sets
    (default: ``held_out`` for a folder-trained model or when ``data`` is given, else the rendered
    ones). ``data`` / ``attributes``: the labelled folder, when it is not where training read it."""
    import torch
    from tqdm import tqdm

    from training.recon.checkpoint import read_checkpoint
    from training.recon.config import config_from_dict
    from training.recon.data import augment_batch, render_chunk, sample_attributes
    from training.recon.estimator import load_estimator

    if Path(checkpoint).is_dir():
        estimator, config, step = _exported_estimator(Path(checkpoint), config_path)
    else:
        state = read_checkpoint(checkpoint, "cpu")
        config = config_from_dict(state["config"], f"{checkpoint} config")
        estimator, step = load_estimator(checkpoint, device), int(state.get("step", 0))
    if data is not None or attributes is not None:
        config = config.with_overrides(data_path=str(data) if data is not None else config.data.path,
                                       attributes=str(attributes) if attributes is not None else None)
    include = include or (("held_out",) if config.data.mode == "folder" else RENDERED_SETS)
    schema = estimator.schema
    results: dict[str, Any] = {"checkpoint": str(checkpoint), "step": step, "n": n, "seed": seed,
                               "schema": list(schema.names), "sets": {}}
    chunk = 250
    if "held_out" in include:
        results["sets"]["held_out"] = _held_out_metrics(estimator, config, chunk)
        results["data"] = {"path": config.data.path, "held_out_fraction": config.data.held_out_fraction,
                           "split_seed": config.train.seed}
        results["summary"] = headline(results["sets"]["held_out"])
    include = tuple(name for name in include if name != "held_out")
    bar = tqdm(total=n * len(include), desc="evaluate recon", unit="img", disable=not include)

    def collect(name: str, make: Any) -> None:
        true, predicted = [], []
        for k in range(0, n, chunk):
            values, images = make(k, min(chunk, n - k))
            true.append(values)
            predicted.append(estimator.predict(images))
            bar.update(len(values))
        metrics = attribute_metrics(schema, np.concatenate(true), np.concatenate(predicted))
        metrics["targets_met"] = targets_met(metrics["summary"])
        results["sets"][name] = metrics

    def clean(k: int, m: int) -> tuple[np.ndarray, np.ndarray]:
        r = render_chunk(config, np.random.default_rng([seed, 0, k]), m, randomise_scene=False)
        images = r.images.transpose(0, 2, 3, 1)
        return r.values, images[..., 0] if images.shape[-1] == 1 else images

    generator = torch.Generator().manual_seed(seed)

    def randomised(k: int, m: int) -> tuple[np.ndarray, np.ndarray]:
        r = render_chunk(config, np.random.default_rng([seed, 1, k]), m)
        x = augment_batch(torch.from_numpy(r.images), config.augment, generator)
        images = ((x.numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
        return r.values, images[..., 0] if images.shape[-1] == 1 else images

    def closed_loop(k: int, m: int) -> tuple[np.ndarray, np.ndarray]:
        from surrogate.synthesis_3d import render_surrogates_3d

        values = sample_attributes(np.random.default_rng([seed, 2, k]), m, schema, config)
        images = render_surrogates_3d(schema, values, [seed + k + i for i in range(m)],
                                      size=config.model.image_size, rgb=config.model.channels == 3)
        return values, np.asarray(images)

    makers = {"clean": clean, "randomised": randomised, "closed_loop": closed_loop}
    for name in include:
        try:
            collect(name, makers[name])
        except ImportError as exc:  # the 3-D surrogate path is optional for this evaluation
            results["sets"][name] = {"skipped": f"unavailable: {exc}"}
    bar.close()
    return results


def _held_out_metrics(estimator: Any, config: Any, chunk: int) -> dict[str, Any]:
    """The estimator on the folder's held-out rows against their labels, with the portrait targets."""
    from training.recon.folder import load_folder_split

    if config.data.mode != "folder":
        raise ValueError("the held_out set needs a labelled folder: pass --data DIR (and --attributes FILE)")
    _, held = load_folder_split(config)
    if len(held) < 2:
        raise ValueError(f"{config.data.path}: {len(held)} held-out row(s) (data.held_out_fraction "
                         f"{config.data.held_out_fraction}); nothing to measure")
    images = held.images.transpose(0, 2, 3, 1)
    images = images[..., 0] if images.shape[-1] == 1 else images
    predicted = np.concatenate([estimator.predict(images[k:k + chunk]) for k in range(0, len(images), chunk)])
    metrics = attribute_metrics(estimator.schema, held.values, predicted)
    metrics["targets_met"] = portrait_targets(metrics)
    return metrics


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def metrics_markdown(results: dict[str, Any]) -> str:
    rendered = [name for name in results["sets"] if name != "held_out"]
    lines = ["# Reconstruction network evaluation", "",
             f"Checkpoint `{results['checkpoint']}` (step {results['step']})"
             + (f", {results['n']} images per rendered set, seed {results['seed']}." if rendered else "."), ""]
    if "data" in results:
        d = results["data"]
        lines += [f"held_out: the rows of `{d['path']}` held out by row id (fraction {d['held_out_fraction']}, "
                  f"split seed {d['split_seed']}), {results['summary']['n']} rows.", ""]
    for name, metrics in results["sets"].items():
        if "skipped" in metrics:
            lines += [f"## {name}", "", f"Skipped: {metrics['skipped']}", ""]
            continue
        lines += [f"## {name}", "", "| attribute | unit | MAE | Pearson r |", "|---|---|---|---|"]
        for attr, m in metrics["per_attribute"].items():
            lines.append(f"| {attr} | {m['unit']} | {_fmt(m['mae'])} | {_fmt(m['r'])} |")
        lines += ["", "Summary: " + ", ".join(f"{k} {_fmt(v)}" for k, v in metrics["summary"].items()), ""]
        if metrics.get("targets_met"):
            verdicts = (f"{k}: {'met' if ok else 'MISSED'}" for k, ok in metrics["targets_met"].items())
            lines += ["Targets: " + ", ".join(verdicts), ""]
    return "\n".join(lines)
