"""``surrogate train``: the training commands, in one place.

``gan`` trains the conditional BEGAN-CS from a config file (``training.gan``), ``gan-average`` averages a
run's generator snapshots, ``recon`` trains the 3-D reconstruction network (``training.recon``). torch is
imported inside the commands, so ``surrogate --help`` stays torch-free and fast.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import click

from training.gan.config import ConfigError, load_config, parse_override


@click.command("gan")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="TOML config (configs/gan/paper.toml, tiny_cpu.toml, default64.toml).",
)
@click.option("--steps", type=int, default=None, help="Total steps to train to (overrides train.steps).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="Overrides train.device.")
@click.option("--data", type=click.Path(path_type=Path), default=None, help="Dataset folder (data.path).")
@click.option(
    "--attributes",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Attribute file for an image folder, any adapter format (data.attributes).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run folder for checkpoints, samples and metrics.csv (train.out_dir).",
)
@click.option("--batch-size", type=int, default=None, help="Overrides optim.batch_size.")
@click.option("--lr", type=float, default=None, help="Overrides optim.lr.")
@click.option("--max-minutes", type=float, default=None, help="Stop with a checkpoint after this wall time.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Override any config value, e.g. --set loss.gamma=0.5 (repeatable).",
)
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt (k_t, optimisers, RNG, step).")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and exit.")
def train_gan_command(
    config_path: Path,
    steps: int | None,
    device: str | None,
    data: Path | None,
    attributes: Path | None,
    out_dir: Path | None,
    batch_size: int | None,
    lr: float | None,
    max_minutes: float | None,
    overrides: tuple[str, ...],
    resume: bool,
    dry_run: bool,
) -> None:
    """Train the conditional BEGAN-CS generator (paper section 4)."""
    values: dict[str, Any] = {}
    try:
        for text in overrides:
            key, value = parse_override(text)
            values[key] = value
        for key, value in (
            ("train.steps", steps),
            ("train.device", device),
            ("data.path", data and str(data)),
            ("data.attributes", attributes and str(attributes)),
            ("train.out_dir", out_dir and str(out_dir)),
            ("optim.batch_size", batch_size),
            ("optim.lr", lr),
            ("train.max_minutes", max_minutes),
        ):
            if value is not None:
                values[key] = value
        config = load_config(config_path, values)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if dry_run:
        click.echo(f"# resolved config from {config_path}")
        click.echo(config.to_toml())
        return
    if not config.data.path:
        raise click.ClickException("no dataset: set data.path in the config or pass --data")

    from training.gan.dataset import DatasetError, load_face_dataset
    from training.gan.loop import GanTrainer, TrainingError

    try:
        dataset = load_face_dataset(
            config.data.path,
            attributes=config.data.attributes,
            fmt=config.data.format,
            min_confidence=config.data.min_confidence,
            size=config.model.image_size,
            channels=config.model.channels,
        )
    except (DatasetError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if dataset.skipped:
        click.echo(f"skipped {len(dataset.skipped)} row(s)/image(s):", err=True)
        for line in dataset.skipped[:20]:
            click.echo(f"  {line}", err=True)
        if len(dataset.skipped) > 20:
            click.echo(f"  ... and {len(dataset.skipped) - 20} more", err=True)
    try:
        trainer = GanTrainer(config, dataset, config.train.out_dir, resume=resume)
    except TrainingError as exc:
        raise click.ClickException(str(exc)) from exc
    if resume and trainer.step:
        click.echo(
            f"resumed from {trainer.last_path} at step {trainer.step} (k_t {float(trainer.k_t):.4f})",
            err=True,
        )
    click.echo(
        f"training on {len(trainer.train_idx)} images ({len(trainer.held_idx)} held out), "
        f"device {config.train.device}, out {config.train.out_dir}",
        err=True,
    )
    result = trainer.run()
    if result.stopped_by and result.step < config.train.steps:
        click.echo(f"stopped by {result.stopped_by} at step {result.step}; checkpoint {result.checkpoint} written "
                   "(continue with --resume)", err=True)
        raise SystemExit(128 + signal.SIGTERM)  # not done: a Job retries, a script sees the failure
    summary = ", ".join(f"{k} {v:.4g}" for k, v in result.last_metrics.items())
    click.echo(f"step {result.step}: {summary}")
    click.echo(f"checkpoint: {result.checkpoint}")


@click.command("gan-average")
@click.argument("run", type=click.Path(exists=True, path_type=Path))
@click.option("--from-step", type=int, default=0, show_default=True, help="First snapshot step to include.")
@click.option("--to-step", type=int, default=None, help="Last snapshot step to include (default: the newest).")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the averaged generator (a snapshot file: evaluate gan and export gan read it).",
)
def train_gan_average_command(run: Path, from_step: int, to_step: int | None, out_path: Path) -> None:
    """Average the weights of a run's generator snapshots in a step range.

    For runs trained without train.ema_kimg: the generator circles BEGAN's equilibrium, and the average
    of its snapshots is better than any one of them (docs/gan.md, finding 7)."""
    from training.gan.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from training.gan.ema import average_snapshots, mixing_notes
    from training.gan.evaluate import snapshot_paths

    found = snapshot_paths(run)
    chosen = [(step, path) for step, path in found if step >= from_step and (to_step is None or step <= to_step)]
    if len(chosen) < 2:
        raise click.ClickException(
            f"{run}: {len(chosen)} snapshot(s) in steps {from_step}-{to_step if to_step is not None else 'newest'} "
            f"(found {len(found)} in all); averaging needs at least two"
        )
    try:
        payloads = [(str(path), load_checkpoint(path)) for _, path in chosen]
        averaged = average_snapshots(payloads)
    except (CheckpointError, ValueError, KeyError) as exc:
        raise click.ClickException(str(exc)) from exc
    for note in mixing_notes(payloads):
        click.echo(f"note: {note}", err=True)
    save_checkpoint(out_path, averaged)
    click.echo(f"wrote {out_path}: {averaged['weights']}")


def command_line(ctx: click.Context) -> str:
    """The command as given (options in canonical spelling), for the model card: whatever launched it."""
    import shlex

    parts = ["surrogate", "train", "recon"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if value is None or value is False:
            continue
        parts += [param.opts[0]] if value is True else [param.opts[0], str(value)]
    return shlex.join(parts)


@click.command("recon")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="TOML config (configs/recon/default.toml for a GPU run, tiny_cpu.toml for a smoke test).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Override train.steps.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Override train.device.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Override train.batch_size (e.g. 64 for a CPU run of a GPU config).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Override out_dir (checkpoints, metrics.csv, samples/).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Override data.workers (rendering processes; use ~cores - 2 on a GPU machine).")
@click.option("--data", "data_path", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Train on this labelled image folder (data.mode = folder), e.g. a portrait corpus.")
@click.option("--attributes", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Attribute file of the folder, any adapter format (default: DATA/attributes.csv).")
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt (same data stream, optimiser, schedule).")
@click.option("--dry-run", is_flag=True,
              help="Print the resolved config and model size, render one test chunk, write nothing.")
def train_recon_command(config_path: Path, steps: int | None, device: str | None, batch_size: int | None,
                        out_dir: Path | None,
                        workers: int | None, data_path: Path | None, attributes: Path | None, resume: bool,
                        dry_run: bool) -> None:
    """Train the 3-D reconstruction network on randomised renders of the face model, or on a labelled
    image folder (--data, or data.mode = "folder" in the config)."""
    from dataclasses import replace

    from training.gan.dataset import DatasetError
    from training.recon.checkpoint import CheckpointError
    from training.recon.config import ConfigError, load_config

    try:
        config = load_config(config_path).with_overrides(
            steps=steps, device=device, batch_size=batch_size, out_dir=str(out_dir) if out_dir is not None else None,
            data_path=str(data_path) if data_path is not None else None,
            attributes=str(attributes) if attributes is not None else None)
        if workers is not None:
            config = replace(config, data=replace(config.data, workers=workers))
        config.check()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc

    from training.recon.loop import train

    try:
        command = command_line(click.get_current_context())
        train(config, resume=resume, dry_run=dry_run, echo=click.echo, command=command)
    except (ConfigError, DatasetError, CheckpointError, FileExistsError, FileNotFoundError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
