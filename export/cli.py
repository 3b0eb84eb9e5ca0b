"""``surrogate export gan|recon|photoreal|check|python-backend``: models -> a Triton model repository.

torch is imported inside the commands only, so ``surrogate --help`` stays fast and torch-free.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from surrogate.assets import sha256 as file_sha256

DEFAULT_REPOSITORY = Path("model_repository")


def _serving_options(f: Any) -> Any:
    """Options shared by ``gan`` and ``recon``: where to write, precision, serving knobs."""
    options = [
        click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Training checkpoint (.pt) to export."),
        click.option("--repository", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_REPOSITORY,
                     show_default=True, help="Triton model repository to add the model to."),
        click.option("--name", default=None, help="Model name in the repository (default: gan_generator / recon)."),
        click.option("--version", "version", type=click.IntRange(min=1), default=None,
                     help="Version number (default: the next free one). Existing versions are never overwritten."),
        click.option("--fp16", is_flag=True, help="Run the network body in float16 (parity tolerance 1e-2)."),
        click.option("--tensorrt", is_flag=True,
                     help="Enable onnxruntime's TensorRT accelerator in config.pbtxt (GPU Triton); parity is "
                          "also checked with TensorRT when this onnxruntime has it."),
        click.option("--openvino", is_flag=True,
                     help="Enable onnxruntime's OpenVINO accelerator for CPU instances in config.pbtxt (uses "
                          "bf16 on CPUs with AVX512-BF16/AMX; see docs/export.md for its parity)."),
        click.option("--exporter", type=click.Choice(["dynamo", "legacy"]), default="dynamo", show_default=True,
                     help="torch.onnx exporter."),
        click.option("--max-batch-size", type=click.IntRange(min=1), default=256, show_default=True),
        click.option("--preferred-batch-sizes", default="16,64", show_default=True,
                     help="Comma-separated preferred batch sizes for Triton's dynamic batcher."),
        click.option("--queue-delay-us", type=click.IntRange(min=0), default=2000, show_default=True,
                     help="Dynamic batcher's max queue delay in microseconds."),
        click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Model instances per device."),
        click.option("--instance-kind", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True),
        click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
                     help="onnxruntime intra-op threads per instance in Triton (0 = backend default)."),
        click.option("--version-policy", default="all", show_default=True,
                     help="Triton version_policy: all | latest:N | specific:V1,V2."),
        click.option("--metrics", "metrics_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     default=None, help="Evaluation JSON (e.g. from `surrogate evaluate`) to put in the model card."),
        click.option("--licence", default=None,
                     help="Licence stated in the model card (default: Apache-2.0, or the terms the training "
                          "config's data.licence names, e.g. a portrait corpus's research-only weights)."),
        click.option("--training-command", default=None,
                     help="The exact command that trained the checkpoint, for the model card "
                          "(default: the generic `surrogate train ... --config CONFIG.toml`)."),
        click.option("--data-description", default=None,
                     help="What the checkpoint was trained on, for the model card (default: from the "
                          "checkpoint's data settings; for a GAN that is a path on the machine that trained it)."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the parity-check batches."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@click.group("export")
def export_command() -> None:
    """Export trained networks to ONNX in a Triton model repository (parity-checked)."""


@export_command.command("gan")
@_serving_options
def export_gan_command(checkpoint: Path, **kwargs: Any) -> None:
    """Export a generator checkpoint as `gan_generator` (attributes + z -> uint8 image)."""
    from training.gan.checkpoint import CheckpointError, load_generator

    try:
        generator, schema, config = load_generator(checkpoint)
    except (CheckpointError, KeyError, ValueError) as exc:
        raise click.ClickException(f"{checkpoint}: cannot load the generator: {exc}") from exc
    data = config.get("data", {}) if isinstance(config.get("data"), dict) else {}
    _run_export("gan", checkpoint, generator, schema, config, data_path=data.get("path", ""),
                steps=config.get("step"), command="surrogate train gan", **kwargs)


@export_command.command("recon")
@_serving_options
def export_recon_command(checkpoint: Path, **kwargs: Any) -> None:
    """Export a reconstruction checkpoint as `recon` (uint8 image -> attributes, identity, lighting)."""
    from training.recon.checkpoint import CheckpointError, load_reconnet, read_checkpoint

    try:
        net, schema, config = load_reconnet(checkpoint)
        state = read_checkpoint(checkpoint)
    except (CheckpointError, KeyError, ValueError) as exc:
        raise click.ClickException(f"{checkpoint}: cannot load the reconstruction network: {exc}") from exc
    if kwargs.get("metrics_path") is None and state.get("metrics_summary"):
        kwargs["checkpoint_metrics"] = dict(state["metrics_summary"])
    data = config.get("data", {}) if isinstance(config.get("data"), dict) else {}
    if kwargs.get("licence") is None and data.get("licence"):
        kwargs["licence"] = data["licence"]
    if kwargs.get("training_command") is None and state.get("command"):
        kwargs["training_command"] = state["command"]
    if data.get("mode") == "folder":
        kwargs["card_notes"] = ("The `identity` and `lighting` outputs are untrained: the labelled rows carry no "
                                "3-D face-model coefficients, so those heads got no loss. Use the attributes only.")
    _run_export("recon", checkpoint, net, schema, config, data_path=_describe_data(data),
                steps=state.get("step"), command="surrogate train recon", **kwargs)


# data keys of folder mode (the rest describe rendering); description and licence are said in words
FOLDER_KEYS = ("path", "attributes", "format", "min_confidence", "held_out_fraction", "flip_probability")


def _describe_data(data: dict[str, Any]) -> str:
    """What the recon network was trained on: a labelled folder (its description, as the config words it)
    or faces rendered on the fly (no dataset folder), with the settings that apply to it."""
    if not data:
        return ""
    folder = data.get("mode") == "folder"
    settings = ", ".join(f"{k}={v}" for k, v in data.items()
                         if not isinstance(v, dict | list) and (k in FOLDER_KEYS) == folder
                         and k not in ("description", "licence"))
    if folder:
        return f"{data.get('description') or data.get('path')} (read from `{data.get('path')}`: {settings})"
    return f"synthetic faces rendered on the fly by the project's 3-D face model ({settings})"


def _run_export(
    kind: str,
    checkpoint: Path,
    network: Any,
    schema: Any,
    config: dict[str, Any],
    *,
    data_path: str,
    steps: Any,
    command: str,
    repository: Path,
    name: str | None,
    version: int | None,
    fp16: bool,
    tensorrt: bool,
    openvino: bool,
    exporter: str,
    max_batch_size: int,
    preferred_batch_sizes: str,
    queue_delay_us: int,
    instances: int,
    instance_kind: str,
    threads: int,
    version_policy: str,
    metrics_path: Path | None,
    licence: str | None,
    seed: int,
    training_command: str | None = None,
    data_description: str | None = None,
    checkpoint_metrics: dict[str, Any] | None = None,
    card_notes: str = "",
) -> None:
    from export.onnx_export import (
        GAN_MODEL_NAME,
        RECON_MODEL_NAME,
        ExportError,
        export_generator,
        export_reconnet,
    )
    from export.triton import (
        PROJECT_LICENCE,
        ModelCardInfo,
        ModelVersion,
        RepositoryWriteError,
        ServingOptions,
        add_version,
    )

    try:
        preferred = tuple(int(v) for v in preferred_batch_sizes.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{preferred_batch_sizes!r} is not a comma-separated list of integers",
                                 param_hint="--preferred-batch-sizes") from None
    options = ServingOptions(
        max_batch_size=max_batch_size, preferred_batch_sizes=preferred, max_queue_delay_us=queue_delay_us,
        instance_count=instances, instance_kind=f"KIND_{instance_kind.upper()}", version_policy=version_policy,
        intra_op_threads=threads, tensorrt=tensorrt, tensorrt_fp16=fp16, openvino=openvino,
    )
    try:
        options.validate()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    metrics, metrics_source = _load_metrics(metrics_path, checkpoint_metrics)

    click.echo(f"exporting {checkpoint} ({kind}, {'fp16' if fp16 else 'fp32'}, {exporter} exporter) ...")
    try:
        if kind == "gan":
            exported = export_generator(network, schema, fp16=fp16, exporter=exporter, seed=seed,
                                        tensorrt=tensorrt)
        else:
            exported = export_reconnet(network, schema, image_size=int(config["image_size"]),
                                       channels=int(config["channels"]), fp16=fp16, exporter=exporter, seed=seed,
                                       tensorrt=tensorrt)
    except ExportError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"parity: {exported.parity.summary()}")
    tensorrt_parity = exported.tensorrt_parity
    if tensorrt and tensorrt_parity is None:
        click.echo("TensorRT: this onnxruntime has no TensorrtExecutionProvider; the TensorRT accelerator is "
                   "set in config.pbtxt but its parity was NOT checked here (check it on the GPU machine).")
    elif tensorrt_parity is not None:
        click.echo(f"TensorRT parity: {tensorrt_parity.summary()}")

    checkpoint_sha = file_sha256(checkpoint)
    card = ModelCardInfo(
        kind=exported.kind, checkpoint=str(checkpoint), checkpoint_sha256=checkpoint_sha,
        training_command=training_command or f"{command} --config CONFIG.toml", training_config=config,
        data=data_description or str(data_path or ""), steps=int(steps) if steps is not None else None,
        metrics=metrics, metrics_source=metrics_source, licence=licence or PROJECT_LICENCE, notes=card_notes,
    )
    info = {
        "kind": exported.kind, "precision": exported.precision, "exporter": exported.exporter,
        "opset": exported.opset, "checkpoint": str(checkpoint), "checkpoint_sha256": checkpoint_sha,
        "step": card.steps, "parity": exported.parity.to_dict(),
        **({"generator_weights": config["weights"]} if kind == "gan" and "weights" in config else {}),
        "tensorrt_parity": tensorrt_parity.to_dict() if tensorrt_parity else "not checked (no TensorRT here)"
        if tensorrt else None,
    }
    model_name = name or (GAN_MODEL_NAME if kind == "gan" else RECON_MODEL_NAME)
    try:
        folder = add_version(repository, ModelVersion(model_name, exported.to_bytes(), schema, exported.facts,
                                                      info, card), options, version=version)
    except (RepositoryWriteError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    size_mb = (folder / "model.onnx").stat().st_size / 1e6
    click.echo(f"wrote {folder / 'model.onnx'} ({size_mb:.1f} MB) and {folder.parent / 'config.pbtxt'}, "
               f"attributes.json, MODEL_CARD.md")


def _load_metrics(path: Path | None, fallback: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
    if path is None:
        return (fallback or {}), ("checkpoint metrics_summary" if fallback else "")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise click.BadParameter(f"{path}: not a readable JSON file ({exc})", param_hint="--metrics") from exc
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path}: expected a JSON object", param_hint="--metrics")
    return data.get("summary", data) if isinstance(data.get("summary"), dict) else data, str(path)


@export_command.command("photoreal")
@click.option("--repository", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_REPOSITORY,
              show_default=True)
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="INFERENCE_NUM_THREADS of Triton's OpenVINO backend per instance (0: its default, every core).")
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True)
def export_photoreal_command(repository: Path, threads: int, instances: int) -> None:
    """Place the photoreal method's synthesis network (OpenVINO IR, from the fetched portrait files) in REPOSITORY."""
    import dataclasses

    from export.photoreal import SERVING, export_photoreal
    from surrogate.model_repo import ModelRepositoryError
    from surrogate.portraits import PortraitModelError

    options = dataclasses.replace(SERVING, intra_op_threads=threads, instance_count=instances)
    try:
        target = export_photoreal(repository, options=options)
    except (ModelRepositoryError, PortraitModelError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    size = sum(p.stat().st_size for p in target.iterdir()) / 1e6
    click.echo(f"{target}: OpenVINO IR, {size:.1f} MB (not committed: research / non-commercial weights)")


@export_command.command("check")
@click.argument("repository", type=click.Path(exists=True, file_okay=False, path_type=Path),
                default=DEFAULT_REPOSITORY)
@click.option("--no-run", is_flag=True, help="Only parse and compare; do not run each version once.")
def export_check_command(repository: Path, no_run: bool) -> None:
    """Check a repository: configs parse with Triton's protobuf and match each version's ONNX graph."""
    from export.triton import check_repository
    from surrogate.model_repo import ModelRepositoryError

    try:
        report = check_repository(repository, run=not no_run)
    except ModelRepositoryError as exc:
        raise click.ClickException(str(exc)) from exc
    if not report:
        raise click.ClickException(f"{repository}: no models (no <name>/config.pbtxt)")
    failed = False
    for name, problems in report.items():
        click.echo(f"{name}: {'ok' if not problems else 'PROBLEMS'}")
        for problem in problems:
            click.echo(f"  - {problem}")
        failed |= bool(problems)
    if failed:
        raise click.ClickException("repository check failed")


@export_command.command("python-backend")
@click.argument("repository", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the Python-backend variant (must be empty or absent).")
@click.option("--site-packages", multiple=True, help="Extra sys.path entry for model.py (repeatable): the "
              "site-packages of the environment holding onnxruntime and numpy for Triton's Python stub.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="onnxruntime intra-op threads per model instance.")
def export_python_backend_command(repository: Path, out: Path, site_packages: tuple[str, ...], threads: int) -> None:
    """Write a variant of REPOSITORY whose models run model.onnx through Triton's Python backend."""
    from export.triton import RepositoryWriteError, write_python_backend_repository
    from surrogate.model_repo import ModelRepositoryError

    try:
        write_python_backend_repository(repository, out, extra_sys_path=site_packages, intra_op_threads=threads)
    except (RepositoryWriteError, ModelRepositoryError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {out}")
