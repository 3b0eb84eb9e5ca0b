"""``surrogate audit --config FILE``: the privacy and fidelity audit, JSON + markdown + figures."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("audit")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Audit config (TOML), e.g. configs/audit/ci.toml or configs/audit/full.toml.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (overrides the config's 'out').",
)
def audit_command(config_path: Path, out: Path | None) -> None:
    """Measure identity leakage, memorisation and label fidelity of the surrogates.

    Writes OUT/audit.json, OUT/audit.md and figures (reidentification.png, memorisation.png, examples.png).
    """
    from dataclasses import replace

    from audit.config import AuditConfig, AuditConfigError
    from audit.emotion import EmotionModelMissingError
    from audit.identity import IdentityModelMissingError

    try:
        config = AuditConfig.from_file(config_path)
    except AuditConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if out is not None:
        config = replace(config, out=str(out))
    from audit.run import run_audit
    from surrogate.training_data import DatasetError

    try:
        result = run_audit(config)
    except (IdentityModelMissingError, EmotionModelMissingError, DatasetError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    for set_name, block in result["identity"].items():
        for name, row in block["probes"].items():
            r1 = row["ranks"][0]
            null = row.get("null")
            against_null = (
                f", null {null['null_rate']:.3f} p {row['p_vs_null']:.2g}" if null and row.get("p_vs_null") is not None
                else ""
            )
            click.echo(
                f"{set_name} {name}: rank-{r1['rank']} {r1['hits']}/{r1['probes']} "
                f"(chance {r1['chance']:.3f} p {row['p_vs_chance']:.2g}{against_null}) {row['verdict']}"
            )
    click.echo(f"attributes-only checks: {'passed' if result['attributes_only']['passed'] else 'FAILED'}")
    click.echo(
        f"wrote {Path(config.out) / 'audit.json'} and {Path(config.out) / 'audit.md'} in {result['elapsed_s']} s"
    )
