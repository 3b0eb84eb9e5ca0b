"""``surrogate serve`` (start the BentoML service) and ``surrogate client ...`` (HTTP or Triton gRPC)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click

SERVICE_TARGET = "service.service:SurrogateService"


@click.command(name="serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=3000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--backend",
    type=click.Choice(["embedded", "triton"]),
    default=None,
    help="Model backend (default: $SURROGATE_BACKEND or embedded).",
)
@click.option(
    "--model-repository",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Model repository (default: $SURROGATE_MODEL_REPOSITORY or ./model_repository).",
)
@click.option("--triton-url", default=None, help="Triton host:port (backend triton).")
@click.option("--triton-protocol", type=click.Choice(["http", "grpc"]), default=None)
def serve_command(
    host: str,
    port: int,
    backend: str | None,
    model_repository: Path | None,
    triton_url: str | None,
    triton_protocol: str | None,
) -> None:
    """Start the HTTP service (BentoML) with usage tracking off."""
    env = dict(os.environ, BENTOML_DO_NOT_TRACK="true")
    for name, value in (
        ("BACKEND", backend),
        ("MODEL_REPOSITORY", model_repository),
        ("TRITON_URL", triton_url),
        ("TRITON_PROTOCOL", triton_protocol),
    ):
        if value is not None:
            env[f"SURROGATE_{name}"] = (
                str(Path(value).resolve()) if name == "MODEL_REPOSITORY" else str(value)
            )
    from service.config import ConfigError, ServiceConfig

    try:
        config = ServiceConfig.from_env(env)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if config.backend == "embedded" and not Path(config.model_repository).is_dir():
        raise click.ClickException(
            f"model repository {config.model_repository} not found; run "
            "`surrogate export` or pass --model-repository"
        )
    root = Path(__file__).resolve().parent.parent
    command = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        SERVICE_TARGET,
        "--host",
        host,
        "--port",
        str(port),
        "--working-dir",
        str(root),
    ]
    click.echo(f"serving {config.backend} backend on http://{host}:{port}", err=True)
    raise SystemExit(subprocess.call(command, env=env))


@click.group(name="client")
def client_group() -> None:
    """Call a running service over HTTP, or Triton over gRPC, with the service's seeding."""


def _records(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise click.ClickException(f"{path}: cannot read JSON records ({exc})") from None
    records = data.get("records", data) if isinstance(data, dict) else data
    if isinstance(records, dict):
        records = [records]
    if not isinstance(records, list):
        raise click.ClickException(f"{path}: expected a record, a list of records or {{'records': [...]}}")
    return records


@client_group.command(name="synthesize")
@click.argument("records_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("-n", "n", type=click.IntRange(1), default=1, show_default=True, help="Surrogates per record.")
@click.option("--method", type=click.Choice(["gan", "3d"]), default="gan", show_default=True)
@click.option(
    "--transport",
    type=click.Choice(["http", "grpc"]),
    default="http",
    show_default=True,
    help="http: the service; grpc: Triton's gRPC endpoint (gan only).",
)
@click.option("--url", default=None, help="Service URL (http) or Triton host:port (grpc).")
def synthesize_client_command(
    records_file: Path, out_dir: Path, seed: int, n: int, method: str, transport: str, url: str | None
) -> None:
    """Render surrogates for JSON RECORDS_FILE into PNGs under --out."""
    from service.client import ClientError, HttpClient, TritonGrpcClient
    from surrogate.imageio import save_png
    from surrogate.schema import AttributeValidationError

    records = _records(records_file)
    try:
        if transport == "grpc":
            if method != "gan":
                raise click.ClickException("the gRPC path serves the generator only (method gan)")
            client = TritonGrpcClient(url or "127.0.0.1:8001")
            surrogates = client.synthesize(records, seed=seed, n=n)
        else:
            with HttpClient(url or "http://127.0.0.1:3000") as http:
                surrogates = http.synthesize(records, seed=seed, n=n, method=method)
    except (ClientError, AttributeValidationError) as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - connection errors of httpx / grpc
        raise click.ClickException(f"cannot reach the {transport} endpoint: {exc}") from None
    for item in surrogates:
        save_png(out_dir / f"record{item.record:04d}_seed{item.seed}.png", item.image)
    click.echo(f"wrote {len(surrogates)} surrogates to {out_dir}")


@client_group.command(name="models")
@click.option("--url", default="http://127.0.0.1:3000", show_default=True)
def models_client_command(url: str) -> None:
    """Print the served models as JSON."""
    from service.client import HttpClient

    try:
        with HttpClient(url) as http:
            click.echo(json.dumps(http.models(), indent=2))
    except Exception as exc:  # noqa: BLE001
        raise click.ClickException(f"cannot reach {url}: {exc}") from None
