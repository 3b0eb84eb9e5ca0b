"""``surrogate evaluate``: measure a trained network against its targets, in one place.

``gan`` measures a generator's attribute fidelity and diversity (``training.gan.evaluate``), ``recon`` the
reconstruction network's accuracy (``training.recon.evaluate``). The library modules hold the measures;
these commands read options, load what they name and write the reports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from surrogate.imageio import atomic_write_text
from surrogate.runtime import to_hwc
from training.gan.evaluate import (
    RANKING_RULES,
    AttributeEstimator,
    CachedDescriber,
    CheckpointSource,
    EvaluationResult,
    FaceDescriber,
    ImageSource,
    OnnxSource,
    RidgePixelEstimator,
    evaluate_generator,
    markdown_summary,
    snapshot_figure,
    snapshot_paths,
    snapshot_ranking_key,
    snapshot_table,
    teacher_r_on_real,
    write_outputs,
)
from training.recon.evaluate import RENDERED_SETS, evaluate_checkpoint, metrics_markdown


@click.command("gan")
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    default=None,
    help="Training checkpoint (last.pt / best.pt / a snapshot), or a run folder: then every weights-only "
    "snapshot in it (train.snapshot_every) is evaluated and the best step picked.",
)
@click.option(
    "--onnx",
    "onnx_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Model repository with an exported gan_generator instead of a checkpoint.",
)
@click.option(
    "--estimator",
    default="ridge",
    show_default=True,
    help="Independent attribute estimator: a reconstruction-network checkpoint, a model repository with a "
    "`recon` model (onnxruntime, e.g. model_repository), 'mediapipe' (MediaPipe FaceLandmarker's pose and AUs, "
    "no gender; also reports the face-detection rate), or 'ridge' for a pixel ridge regressor fitted on the "
    "real training images.",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    required=True,
    help="Dataset folder the generator was trained on (held-out split taken from the checkpoint).",
)
@click.option(
    "--attributes",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Attribute file when --data is an image folder.",
)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--n-eval", type=int, default=500, show_default=True, help="Held-out attribute vectors to use.")
@click.option(
    "--held-out-fraction",
    type=float,
    default=None,
    help="Identity share held out (default: the checkpoint's, else 0.1).",
)
@click.option("--seed", type=int, default=None, help="Split seed (default: the checkpoint's training seed).")
@click.option(
    "--confirm-top",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Run folders: evaluate the best K snapshots again with --confirm-n vectors and pick among those "
    "(0 = off). The best of many snapshots at a few hundred vectors is flattered by chance: a pick that met 10 "
    "targets at 500 vectors met 8 at 1,000 (docs/gan.md, stage 7).",
)
@click.option(
    "--confirm-n",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Held-out attribute vectors for the confirmation.",
)
@click.option(
    "--rank-by",
    type=click.Choice(sorted(RANKING_RULES)),
    default="attainment",
    show_default=True,
    help="Run folders: how the best snapshot is picked. attainment: closest to every target (a miss counts by "
    "its size), then most targets met; targets: most targets met, then attainment.",
)
@click.option(
    "--identity-diversity",
    is_flag=True,
    help="Also measure diversity on dlib face descriptors (the audit's identity model; needs the audit extra): "
    "does a new z give a different-looking person, not only other lighting and hair.",
)
@click.option(
    "--realism",
    is_flag=True,
    help="With --identity-diversity: the Frechet distance between dlib descriptors of the n-eval samples and as "
    "many held-out real faces, beside the same distance between two halves of the real faces (the floor).",
)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
def evaluate_gan_command(
    checkpoint: Path | None,
    onnx_dir: Path | None,
    estimator: str,
    data: Path,
    attributes: Path | None,
    out_dir: Path,
    n_eval: int,
    held_out_fraction: float | None,
    seed: int | None,
    confirm_top: int,
    confirm_n: int,
    rank_by: str,
    identity_diversity: bool,
    realism: bool,
    device: str,
) -> None:
    """Measure a generator's attribute fidelity (independent estimator) and diversity."""
    if (checkpoint is None) == (onnx_dir is None):
        raise click.ClickException("give exactly one of --checkpoint or --onnx")
    from training.gan.checkpoint import CheckpointError
    from training.gan.dataset import DatasetError, load_face_dataset, split_held_out

    snapshots: list[tuple[int, Path]] = []
    if checkpoint is not None and checkpoint.is_dir():
        snapshots = snapshot_paths(checkpoint)
        if not snapshots:
            raise click.ClickException(f"--checkpoint {checkpoint}: no generator-STEP.pt snapshots in this folder")

    def load_source(path: Path | None) -> ImageSource:
        try:
            return CheckpointSource(path, device) if path else OnnxSource(onnx_dir)  # type: ignore[arg-type]
        except (CheckpointError, OSError, ValueError, KeyError) as exc:
            raise click.ClickException(f"cannot load the generator {path or onnx_dir}: {exc}") from exc

    source = load_source(snapshots[-1][1] if snapshots else checkpoint)
    config = getattr(source, "config", {})
    size = int(config.get("model", {}).get("image_size", 64))
    channels = int(config.get("model", {}).get("channels", 1))
    try:
        dataset = load_face_dataset(
            data, attributes=attributes or "", schema=source.schema, size=size, channels=channels
        )
    except (DatasetError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if dataset.schema.names != source.schema.names:
        raise click.ClickException(
            f"{data}: attributes {dataset.schema.names} differ from the generator's {source.schema.names}"
        )
    fraction = (
        held_out_fraction
        if held_out_fraction is not None
        else float(config.get("data", {}).get("held_out_fraction", 0.1))
    )
    split_seed = seed if seed is not None else int(config.get("train", {}).get("seed", 0))
    train_idx, held_idx = split_held_out(dataset.identities, fraction, split_seed)
    if len(held_idx) == 0:
        click.echo("no held-out identities: using every row's attribute vector", err=True)
        held_idx = train_idx
    if realism and not identity_diversity:
        raise click.ClickException("--realism needs --identity-diversity (both use dlib's descriptors)")
    if estimator == "mediapipe":
        from surrogate.landmarks import MediaPipeEstimator

        est = MediaPipeEstimator()
    elif estimator == "ridge":
        fit = train_idx[:4000]
        est: AttributeEstimator = RidgePixelEstimator(source.schema).fit(
            to_hwc(dataset.images[fit]), dataset.values[fit]
        )
    else:
        try:
            from surrogate.extract import load_any_estimator

            est = load_any_estimator(estimator, device=device, option="--estimator")
        except (ImportError, OSError, ValueError) as exc:
            raise click.ClickException(f"cannot load the estimator {estimator}: {exc}") from exc
    describer: FaceDescriber | None = None
    if identity_diversity:
        from surrogate.face_identity import DlibIdentity, IdentityModelMissingError

        try:
            describer = CachedDescriber(DlibIdentity())
        except IdentityModelMissingError as exc:
            raise click.ClickException(f"--identity-diversity: {exc}") from exc

    def evaluate(generator: ImageSource, n: int = n_eval) -> EvaluationResult:
        return evaluate_generator(
            generator,
            est,
            dataset.images[train_idx],
            dataset.values[train_idx],
            dataset.values[held_idx],
            held_images=dataset.images[held_idx][:n],
            n_eval=n,
            seed=split_seed,
            describer=describer,
            realism_images=(dataset.images[held_idx][:n], dataset.images[train_idx][:n]) if realism else None,
        )

    if snapshots:
        from tqdm import tqdm

        rows = []
        for step, path in tqdm(snapshots, desc="snapshots", unit="snapshot"):
            result = evaluate(load_source(path))
            write_outputs(result, out_dir / f"step_{step:07d}", str(path), estimator, 7)
            rows.append((step, result.report))
        ranked = sorted(rows, key=lambda row: snapshot_ranking_key(row[1], rank_by), reverse=True)
        best_step = ranked[0][0]
        paths = dict(snapshots)
        confirmed: list[tuple[int, dict[str, Any]]] = []
        if confirm_top > 0 and confirm_n > n_eval and len(held_idx) > n_eval:
            for step, _ in tqdm(ranked[:confirm_top], desc=f"confirming at {confirm_n} vectors", unit="snapshot"):
                result = evaluate(load_source(paths[step]), confirm_n)
                write_outputs(result, out_dir / f"step_{step:07d}_n{confirm_n}", str(paths[step]), estimator, 7)
                confirmed.append((step, result.report))
            best_step = max(confirmed, key=lambda row: snapshot_ranking_key(row[1], rank_by))[0]
        table = snapshot_table(rows, best_step, confirmed, confirm_n, rank_by)
        atomic_write_text(out_dir / "snapshots.md", table)
        atomic_write_text(
            out_dir / "snapshots.json",
            json.dumps(
                {
                    "best_step": best_step,
                    "rank_by": rank_by,
                    "snapshots": {str(k): v for k, v in rows},
                    "confirmed": {str(k): v for k, v in confirmed},
                    "confirm_n": confirm_n if confirmed else None,
                },
                indent=2,
            ),
        )
        plotted = snapshot_figure(rows, out_dir / "snapshots.png")
        click.echo(table.split("![snapshots]")[0])
        click.echo(
            f"best: step {best_step} ({paths[best_step]}); wrote {out_dir / 'snapshots.md'}"
            + ("" if plotted else " (no plot: matplotlib is not installed)")
        )
        return
    result = evaluate(source)
    if checkpoint is not None:
        teacher = teacher_r_on_real(
            checkpoint, dataset.images[held_idx][:n_eval], dataset.values[held_idx][:n_eval], source.schema, device
        )
        for name, r in (teacher or {}).items():
            if name in result.report["fidelity"]:
                result.report["fidelity"][name]["teacher_r_on_real"] = r
    write_outputs(result, out_dir, str(checkpoint or onnx_dir), estimator, 7)
    click.echo(markdown_summary(result.report, str(checkpoint or onnx_dir), estimator).split("![samples]")[0])
    click.echo(f"wrote {out_dir / 'evaluation.json'} and {out_dir / 'evaluation.md'}")


@click.command("recon")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, path_type=Path),
              help="Training checkpoint (last.pt), weights file (model.pt), or a model repository folder "
                   "(its newest exported recon, through onnxruntime; needs --config).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="With a model repository: the TOML config that trained the exported model.")
@click.option("--n", "n", default=2000, show_default=True, type=click.IntRange(10, 1_000_000), help="Images per set.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for metrics.json and metrics.md.")
@click.option("--seed", default=20_240_601, show_default=True, type=int, help="Seed of the held-out renders.")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]))
@click.option("--set", "sets", multiple=True, type=click.Choice([*RENDERED_SETS, "held_out"]),
              help="Evaluate only these sets (default: held_out for a model trained on a labelled folder or "
                   "with --data, else the three rendered sets).")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Labelled image folder whose held-out rows to measure (default: the folder training read).")
@click.option("--attributes", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Attribute file of --data (default: DATA/attributes.csv).")
def evaluate_recon_command(checkpoint: Path, config_path: Path | None, n: int, out: Path, seed: int, device: str,
                           sets: tuple[str, ...], data: Path | None, attributes: Path | None) -> None:
    """Pose MAE, per-AU MAE and Pearson r, gender accuracy and AUC: on held-out renders and on the 3-D
    path, or on a labelled folder's held-out rows (the portrait corpus) with issue 18's targets."""
    from training.recon.checkpoint import CheckpointError

    try:
        results = evaluate_checkpoint(checkpoint, n=n, seed=seed, device=device, include=sets,
                                      config_path=config_path, data=data, attributes=attributes)
    except (CheckpointError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    atomic_write_text(out / "metrics.json", json.dumps(results, indent=2))
    atomic_write_text(out / "metrics.md", metrics_markdown(results))
    click.echo(metrics_markdown(results))
    click.echo(f"wrote {out / 'metrics.json'} and {out / 'metrics.md'}")
