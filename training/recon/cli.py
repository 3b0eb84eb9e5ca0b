"""``surrogate train recon``: train the reconstruction network from a TOML config.

Torch is imported only when the command runs, so ``surrogate --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click


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
