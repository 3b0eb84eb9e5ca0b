"""The training loop of the reconstruction network (one function, ``train``, driven by the CLI).

Per step: a batch of rendered faces (fresh or from the device pool, see ``data.BatchSource``), on-device
augmentation, a weighted loss per parameter group (pose, AUs, gender, identity, lighting; attributes and
lighting normalised to [0, 1]), AdamW with warm-up + cosine decay. Every ``checkpoint_every`` steps an
atomic full checkpoint (``last.pt``, resumable) and a weights-only ``model.pt``; every ``eval_every`` a
held-out evaluation (different seed); every ``sample_every`` a PNG of inputs over re-renders of the
predicted parameters; ``metrics.csv`` is rewritten atomically at every log step.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from surrogate.imageio import atomic_write_text, image_grid, save_png
from surrogate.schema import AttributeSchema
from training.gan.dataset import FaceDataset
from training.recon.checkpoint import build_network, export_weights, read_checkpoint, save_checkpoint
from training.recon.config import ReconConfig
from training.recon.data import (
    BatchSource,
    augment_batch,
    check_renderer_supports,
    lighting_ranges,
    render_chunk,
    to_network_input,
)
from training.recon.evaluate import attribute_metrics
from training.recon.folder import FolderSource, load_folder_split
from training.recon.networks import ReconNet, count_parameters

EVAL_SEED_OFFSET = 1_000_003  # held-out data: a seed stream training never draws from
METRIC_FIELDS = (
    "step", "lr", "loss", "loss_pose", "loss_aus", "loss_gender", "loss_identity", "loss_lighting",
    "images_per_s", "eval_pose_mae_deg", "eval_au_mae", "eval_au_r_min", "eval_gender_accuracy",
    "eval_gender_auc",
)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch sees no CUDA device")
    return torch.device(name)


def group_indices(schema: AttributeSchema) -> dict[str, list[int]]:
    return {
        "pose": [i for i, a in enumerate(schema.attributes) if a.unit == "degrees"],
        "aus": [i for i, n in enumerate(schema.names) if n.startswith("AU")],
        "gender": [i for i, n in enumerate(schema.names) if n == "gender"],
    }


def compute_loss(
    outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], groups: dict[str, list[int]], config: ReconConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of per-group losses on normalised targets (smooth L1 ~ L1: we report MAE).

    A head whose target the batch lacks (identity and lighting of real photos) is left out of the loss,
    so it gets no gradient; a zero target would teach it to answer zero."""
    weights = config.loss
    pred, target = outputs["attributes"].float(), batch["attributes"]
    parts: dict[str, torch.Tensor] = {}
    for group, index in groups.items():
        if index:
            parts[group] = torch.nn.functional.smooth_l1_loss(pred[:, index], target[:, index], beta=0.01)
    if "identity" in batch:
        parts["identity"] = torch.nn.functional.mse_loss(outputs["identity"].float(), batch["identity"])
    if "lighting" in batch:
        parts["lighting"] = torch.nn.functional.smooth_l1_loss(outputs["lighting"].float(), batch["lighting"],
                                                                beta=0.01)
    total = sum(getattr(weights, k) * v for k, v in parts.items())
    return total, {f"loss_{k}": float(v.detach()) for k, v in parts.items()}


def lr_factor(step: int, config: ReconConfig) -> float:
    """Linear warm-up, then cosine decay to 2 % of the peak."""
    warmup, total = config.train.warmup_steps, config.train.steps
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress))


def heldout_set(config: ReconConfig, n: int, held: FaceDataset | None = None) -> dict[str, Any]:
    """Rendered held-out faces (seed never used in training), randomised like the training data; in
    folder mode every held-out row of the folder (``held``) instead."""
    if held is not None:
        return {"images": torch.from_numpy(held.images), "values": held.values}
    rendered = render_chunk(config, np.random.default_rng([config.train.seed + EVAL_SEED_OFFSET, 0]), n)
    return {"images": torch.from_numpy(rendered.images), "values": rendered.values}


@torch.no_grad()
def predict_normalised(net: ReconNet, images: torch.Tensor, device: torch.device, batch: int = 256,
                       augment: Callable[[torch.Tensor], torch.Tensor] | None = None) -> np.ndarray:
    was_training = net.training
    net.eval()
    out = []
    for start in range(0, images.shape[0], batch):
        chunk = images[start:start + batch].to(device)
        x = augment(chunk) if augment else to_network_input(chunk)
        out.append(net(x.contiguous(memory_format=torch.channels_last))["attributes"].float().cpu())
    net.train(was_training)
    return torch.cat(out).numpy()


def write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRIC_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def write_samples(path: Path, net: ReconNet, images: torch.Tensor, config: ReconConfig, device: torch.device,
                  generator: torch.Generator) -> None:
    """Top row: network inputs (augmented); bottom row: the face model re-rendered from the predictions."""
    from surrogate.face_model import params_from_attributes
    from surrogate.render import render_batch

    schema = config.schema
    net.eval()
    with torch.no_grad():
        x = augment_batch(images.to(device), config.augment, generator)
        out = net(x.contiguous(memory_format=torch.channels_last))
    net.train()
    values = schema.denormalise(out["attributes"].float().cpu().numpy())
    identity = out["identity"].float().cpu().numpy()
    lighting = out["lighting"].float().cpu().numpy()
    params = [
        params_from_attributes(schema, values[i], identity=identity[i], light_azimuth=float(lighting[i, 0]),
                               light_elevation=float(lighting[i, 1]), light_strength=float(lighting[i, 2]),
                               ambient=float(lighting[i, 3]))
        for i in range(len(values))
    ]
    rerender = np.asarray(render_batch(params, config.model.image_size, rgb=config.model.channels == 3))
    inputs = ((x.float().cpu().numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
    inputs = inputs.transpose(0, 2, 3, 1) if config.model.channels == 3 else inputs[:, 0]
    save_png(path, image_grid([*inputs, *rerender], columns=len(inputs)))


def describe(config: ReconConfig, device: torch.device, net: ReconNet) -> str:
    return json.dumps(
        {"device": str(device), "parameters": count_parameters(net), "config": config.to_dict()}, indent=2
    )


def init_weights(net: torch.nn.Module, path: Path, device: torch.device) -> None:
    """Load another run's weights into ``net``; a different architecture is a clear error, not a crash."""
    if not path.is_file():
        raise FileNotFoundError(f"train.init_from: no checkpoint at {path}")
    state = read_checkpoint(path, device)
    try:
        net.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise RuntimeError(f"train.init_from: {path} holds a different architecture ({first[0].strip()})") from exc


def train(config: ReconConfig, *, resume: bool = False, dry_run: bool = False,
          echo: Callable[[str], None] = print, command: str = "") -> dict[str, Any]:
    """Train (or with ``dry_run`` only resolve and check) a reconstruction network; return a summary.

    ``command``: the command line that started the run, kept in the checkpoint for the model card."""
    from surrogate.face_model import N_IDENTITY

    config.check()
    schema = config.schema
    check_renderer_supports(schema)
    device = resolve_device(config.train.device)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    out_dir = Path(config.out_dir)
    low, high = lighting_ranges(config.augment)
    torch.manual_seed(config.train.seed)
    random.seed(config.train.seed)
    np.random.seed(config.train.seed % 2**32)
    net = build_network(config.to_dict(), N_IDENTITY, low.tolist(), high.tolist()).to(device)
    folder = load_folder_split(config) if config.data.mode == "folder" else None
    if folder is not None:
        skipped = folder[0].skipped
        echo(f"{config.data.path}: {len(folder[0])} training rows, {len(folder[1])} held out"
             + (f"; skipped {len(skipped)}: {'; '.join(skipped[:5])}" if skipped else ""))
    if dry_run:
        echo(describe(config, device, net))
        if folder is not None:
            return {"dry_run": True, "parameters": count_parameters(net)}
        chunk = render_chunk(config, np.random.default_rng([config.train.seed, 0]), 4)
        echo(f"dry run: rendered a test chunk {chunk.images.shape} {chunk.images.dtype}; nothing written")
        return {"dry_run": True, "parameters": count_parameters(net)}

    use_cuda = device.type == "cuda"
    if use_cuda and config.train.channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: lr_factor(s, config))
    step, chunks_consumed, history = 0, 0, []
    last_path = out_dir / "last.pt"
    if resume:
        if not last_path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {last_path}")
        state = read_checkpoint(last_path, device)
        net.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        step, chunks_consumed, history = int(state["step"]), int(state["chunks_consumed"]), list(state["history"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        echo(f"resumed from {last_path} at step {step}")
    elif last_path.exists():
        raise FileExistsError(f"{last_path} exists: pass --resume to continue it or choose another out_dir")
    elif config.train.init_from:
        init_weights(net, Path(config.train.init_from), device)
        echo(f"initialised from the weights in {config.train.init_from}")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "config.json", json.dumps(config.to_dict(), indent=2))
    atomic_write_text(out_dir / "schema.json", schema.to_json())

    forward = torch.compile(net.forward_normalised) if config.train.compile else net.forward_normalised
    source = (FolderSource(config, folder[0], device, chunks_consumed) if folder is not None
              else BatchSource(config, device, chunks_consumed))
    augment_rng = torch.Generator(device="cpu").manual_seed(config.train.seed * 1_000_033 + step)
    groups = group_indices(schema)
    heldout = heldout_set(config, config.train.eval_size, folder[1] if folder is not None else None)
    # a folder with nothing held out shows training rows (un-augmented) instead
    sample_images = heldout["images"][:16] if len(heldout["values"]) else folder[0].images[:16]
    sample_images = torch.as_tensor(sample_images)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_cuda and config.train.amp)

    def checkpoint_state() -> dict[str, Any]:
        return {
            "config": config.to_dict(), "schema": schema.to_json(), "n_identity": N_IDENTITY,
            "lighting_low": low.tolist(), "lighting_high": high.tolist(),
            "model": net.state_dict(), "optimiser": optimiser.state_dict(), "scheduler": scheduler.state_dict(),
            "step": step, "chunks_consumed": source.chunks_consumed, "history": history,
            "rng": {"torch": torch.get_rng_state()}, "command": command,
            "metrics_summary": next((h for h in reversed(history) if "eval_pose_mae_deg" in h), {}),
        }

    net.train()
    progress = tqdm(total=config.train.steps, initial=step, desc="train recon", unit="step", dynamic_ncols=True)
    window_start, window_images = time.perf_counter(), 0
    while step < config.train.steps:
        batch = source.next_batch()
        x = augment_batch(batch["images"], config.augment, augment_rng)
        if use_cuda and config.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            outputs = forward(x)
        loss, parts = compute_loss(outputs, batch, groups, config)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if config.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), config.train.grad_clip)
        optimiser.step()
        scheduler.step()
        step += 1
        window_images += x.shape[0]
        progress.update(1)
        is_last = step == config.train.steps
        if step % config.train.log_every == 0 or is_last:
            elapsed = time.perf_counter() - window_start
            row: dict[str, Any] = {"step": step, "lr": scheduler.get_last_lr()[0], "loss": float(loss.detach()),
                                   **parts, "images_per_s": window_images / max(elapsed, 1e-9)}
            if (step % config.train.eval_every == 0 or is_last) and len(heldout["values"]):
                predicted = predict_normalised(net, heldout["images"], device)
                metrics = attribute_metrics(schema, heldout["values"], schema.denormalise(predicted))
                row.update({f"eval_{k}": v for k, v in metrics["summary"].items()})
            history.append(row)
            write_metrics(out_dir / "metrics.csv", history)
            progress.set_postfix(loss=f"{row['loss']:.4f}", **(
                {"pose_mae": f"{row['eval_pose_mae_deg']:.2f}"} if "eval_pose_mae_deg" in row else {}))
            window_start, window_images = time.perf_counter(), 0
        if step % config.train.sample_every == 0 or is_last:
            write_samples(out_dir / "samples" / f"step_{step:07d}.png", net, sample_images, config, device, augment_rng)
        if step % config.train.checkpoint_every == 0 or is_last:
            state = checkpoint_state()
            save_checkpoint(last_path, state)
            export_weights(state, out_dir / "model.pt")
    progress.close()
    summary = next((h for h in reversed(history) if "eval_pose_mae_deg" in h), {})
    echo(f"done: {step} steps; weights {out_dir / 'model.pt'}; held-out {json.dumps(summary)}")
    return summary
