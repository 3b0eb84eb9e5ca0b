"""The one command-line entry point, ``surrogate``, with lazily imported subcommands.

Each command group has one module holding all its click commands, in the package it drives
(``surrogate/data_cli.py``, ``surrogate/attributes_cli.py``, ``surrogate/synthesis_cli.py``,
``training/train_cli.py``, ``training/evaluate_cli.py``, ``export/cli.py``, ``service/cli.py``,
``audit/cli.py``, ``annotation/cli.py``); library modules hold no commands. They are imported only
when used, so ``surrogate --help`` is fast and a command whose optional dependencies are missing
(torch for training, bentoml for serving) explains which extra to install instead of failing with an
import error.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

# name -> (module:attribute, one-line help, extra that provides its dependencies)
Command = tuple[str, str, str]

COMMANDS: dict[str, dict[str, Command] | Command] = {
    "data": {
        "synth": ("surrogate.data_cli:synth_command", "Render a synthetic labelled face dataset.", ""),
        "sheet": ("surrogate.data_cli:sheet_command", "Draw a contact sheet of a dataset with captions.", ""),
        "portraits": (
            "surrogate.data_cli:portraits_command",
            "Render, label (MediaPipe) and crop a corpus of photoreal portraits of nobody.",
            "portraits",
        ),
        "portraits-merge": (
            "surrogate.data_cli:portraits_merge_command",
            "Merge portrait corpus parts into one training folder.",
            "",
        ),
        "portrait-gender": (
            "surrogate.data_cli:portrait_gender_command",
            "Fit the portraits' gender boundary in w to hand labels.",
            "portraits",
        ),
        "portrait-directions": (
            "surrogate.data_cli:portrait_directions_command",
            "Fit attribute directions in the portrait generator's w space.",
            "portraits",
        ),
    },
    "attributes": {
        "convert": (
            "surrogate.attributes_cli:convert_command",
            "Convert OpenFace / py-feat / LibreFace / schema files to the canonical CSV.",
            "",
        ),
        "extract": (
            "surrogate.attributes_cli:extract_command",
            "Estimate attributes from face images with the reconstruction network.",
            "serve",
        ),
        "schema": ("surrogate.attributes_cli:schema_command", "Print an attribute schema as JSON.", ""),
    },
    "train": {
        "gan": ("training.train_cli:train_gan_command", "Train the conditional BEGAN-CS generator.", "train"),
        "gan-average": (
            "training.train_cli:train_gan_average_command",
            "Average a GAN run's generator snapshots (post-hoc weight averaging).",
            "train",
        ),
        "recon": ("training.train_cli:train_recon_command", "Train the 3-D reconstruction network.", "train"),
    },
    "evaluate": {
        "gan": (
            "training.evaluate_cli:evaluate_gan_command",
            "Evaluate a generator's fidelity and diversity.",
            "train",
        ),
        "recon": ("training.evaluate_cli:evaluate_recon_command", "Evaluate the reconstruction network.", "train"),
    },
    "synthesize": (
        "surrogate.synthesis_cli:synthesize_command",
        "Render surrogates for an attribute file (3-D face model or GAN).",
        "",
    ),
    "synthesize-batch": (
        "surrogate.synthesis_cli:synthesize_batch_command",
        "Sharded, resumable batch synthesis of a large attribute file.",
        "",
    ),
    "export": ("export.cli:export_command", "Export trained networks into the Triton model repository.", "train"),
    "serve": ("service.cli:serve_command", "Start the HTTP service (BentoML).", "serve"),
    "client": ("service.cli:client_group", "Call the service over HTTP, or Triton over gRPC.", "serve"),
    "audit": ("audit.cli:audit_command", "Privacy and fidelity audit of the surrogates.", "audit"),
    "annotate": ("annotation.cli:annotate_group", "Crowd batches out, labels back, the paper's analyses.", "annotate"),
}


GROUP_HELP: dict[str, str] = {
    "data": "Synthetic labelled faces and contact sheets.",
    "attributes": "Convert, extract and describe attribute files.",
    "train": "Train the GAN or the reconstruction network.",
    "evaluate": "Measure a trained network against its targets.",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def __init__(self, *args: Any, lazy: dict[str, dict[str, Command] | Command], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.lazy)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = self.lazy.get(cmd_name)
        if entry is None:
            return None
        if isinstance(entry, dict):
            return LazyGroup(name=cmd_name, lazy=entry, help=GROUP_HELP.get(cmd_name, f"{cmd_name} commands."))
        target, short_help, extra = entry
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            hint = f" Install it with: pip install 'surrogate-faces[{extra}]'." if extra else ""
            reason = f"unavailable: {exc}.{hint}"

            @click.command(name=cmd_name, help=f"{short_help} ({reason})", short_help=f"{short_help} [{reason}]",
                           context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
            def unavailable() -> None:
                raise click.ClickException(f"'{cmd_name}' is {reason}")

            return unavailable
        command = getattr(module, attr)
        if command.short_help is None:
            command.short_help = short_help
        return command


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="surrogate-faces")
def cli() -> None:
    """surrogate-faces: label private faces through attribute-conditioned surrogates.

    Pipeline: private photo -> attributes (pose, action units, gender) -> surrogate face
    (3-D face model or conditional BEGAN-CS) -> crowd labels -> labels back on the private photo.
    """


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="surrogate")


if __name__ == "__main__":
    main()
