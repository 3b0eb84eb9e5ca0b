"""The conditional BEGAN-CS training loop.

Per step (upstream BEGAN-CS order): one generator forward; a discriminator step on real and (detached)
fake images in ONE concatenated forward, whose encoder output on the fakes is reused for L_C; a
generator step through the updated discriminator (its weights frozen so no unused gradients are
computed); then the k_t update. k_t and the running sums stay on the device, so a GPU step never waits
for the host except at log intervals.

Reproducibility: one ``torch.Generator`` draws batch indices and z; its state, torch's global CPU/CUDA
states, numpy's and python's are all in the checkpoint, so ``--resume`` continues exactly where the
last checkpoint was taken (a killed run loses at most one checkpoint interval).
"""

from __future__ import annotations

import csv
import io
import math
import random
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from surrogate.imageio import atomic_write_text, save_png
from training.gan.checkpoint import OPTIMISER_KEYS, generator_only, load_checkpoint, save_checkpoint
from training.gan.config import GanConfig, config_from_dict
from training.gan.dataset import FaceDataset, split_held_out
from training.gan.ema import averaged_copy, ema_beta, update_ema
from training.gan.losses import (
    StepLosses,
    boosted_weights,
    constraint_loss,
    convergence_measure,
    discriminator_loss,
    generator_loss,
    label_loss,
    mode_seeking_loss,
    reconstruction_loss,
    standardising_weights,
    update_k,
)
from training.gan.networks import build_networks, to_began
from training.gan.sampling import probe_attributes, probe_noise, real_grid, save_grids
from training.imageops import gaussian_blur

METRIC_FIELDS = [
    "step",
    "elapsed_s",
    "images_per_s",
    "loss_d",
    "loss_g",
    "loss_real",
    "loss_fake",
    "constraint",
    "label_real",
    "label_fake",
    "k_t",
    "m_global",
    "mode_seeking",
    "lr",
    "diversity",
]


# k_t below this counts as zero for the collapse warning (a collapsed run sat at 0.0001 for 2,000 steps).
K_ZERO = 1e-3
_NOT_INSTALLED = object()  # run() off the main thread: no SIGTERM handler was set, none to restore


class TrainingError(RuntimeError):
    """Training cannot start or continue (bad resume state, device unavailable)."""


@dataclass
class TrainResult:
    step: int
    k_t: float
    last_metrics: dict[str, float]
    checkpoint: Path
    out_dir: Path
    stopped_by: str = ""  # "SIGTERM" when a termination signal ended the run early (checkpoint written)


def sample_diversity(images: np.ndarray, per_row: int) -> float:
    """Mean pairwise L1 distance ([0, 1] pixel scale) between images in consecutive groups of ``per_row``.

    Groups share y and differ in z, so this is the mode-collapse monitor (0 = z has no effect)."""
    flat = images.reshape(len(images), -1).astype(np.float32) / 255.0
    total, count = 0.0, 0
    for start in range(0, len(flat) - per_row + 1, per_row):
        group = flat[start : start + per_row]
        d = np.abs(group[:, None, :] - group[None, :, :]).mean(axis=2)
        iu = np.triu_indices(len(group), 1)
        total += float(d[iu].sum())
        count += len(iu[0])
    return total / max(count, 1)


class GanTrainer:
    """Owns networks, optimisers, data on device, k_t and RNG; ``run(steps)`` trains up to ``steps``."""

    def __init__(
        self,
        config: GanConfig,
        dataset: FaceDataset,
        out_dir: str | Path,
        *,
        resume: bool = False,
        progress: bool = True,
    ) -> None:
        self.config, self.out_dir, self.progress = config, Path(out_dir), progress
        t = config.train
        if t.device == "cuda" and not torch.cuda.is_available():
            raise TrainingError("train.device is 'cuda' but torch sees no CUDA device")
        self.device = torch.device(t.device)
        if t.num_threads > 0:
            torch.set_num_threads(t.num_threads)
        self.use_cuda = self.device.type == "cuda"
        if self.use_cuda and t.amp:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        self.autocast_dtype = (
            torch.bfloat16 if ((self.use_cuda and t.amp) or (not self.use_cuda and t.cpu_bf16)) else None
        )
        self.channels_last = t.channels_last and (self.use_cuda or t.cpu_bf16)

        torch.manual_seed(t.seed)
        np.random.seed(t.seed % 2**32)
        random.seed(t.seed)
        self.data_rng = torch.Generator(device="cpu").manual_seed(t.seed + 1)

        self.schema = dataset.schema
        train_idx, held_idx = split_held_out(dataset.identities, config.data.held_out_fraction, t.seed)
        if config.data.limit > 0:
            train_idx = train_idx[: config.data.limit]
        if len(train_idx) == 0:
            raise TrainingError("no training rows left after holding out data.held_out_fraction of identities")
        self.train_idx, self.held_idx = train_idx, held_idx
        train = dataset.subset(train_idx)
        size, channels = config.model.image_size, config.model.channels
        if train.images.shape[1:] != (channels, size, size):
            raise TrainingError(f"dataset images are {train.images.shape[1:]}, model wants {(channels, size, size)}")
        self.images = torch.from_numpy(train.images).to(self.device)
        self.labels_np = train.normalised
        self.labels = torch.from_numpy(self.labels_np).to(self.device)
        self.label_weights = standardising_weights(self.labels) if config.loss.label_standardise else None
        try:
            self.label_weights_g = boosted_weights(self.label_weights, config.loss.label_boosts(), self.schema.names)
        except ValueError as exc:
            raise TrainingError(str(exc)) from exc
        self.real_preview = train.images[:64]

        self.generator, self.discriminator = build_networks(config.model, len(self.schema))
        self.generator.to(self.device)
        self.discriminator.to(self.device)
        if self.channels_last:
            self.generator.to(memory_format=torch.channels_last)
            self.discriminator.to(memory_format=torch.channels_last)
        # The averaged generator (train.ema_kimg): what snapshots, grids, evaluation and export use.
        self.generator_ema = averaged_copy(self.generator) if t.ema_kimg > 0 else None
        o = config.optim
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=o.lr, betas=(o.beta1, o.beta2))
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=o.lr_d or o.lr, betas=(o.beta1, o.beta2))
        self.k_t = torch.tensor(config.loss.k_init, device=self.device)
        self.step = 0
        self.best_m_global = math.inf
        self.k_zero_since: int | None = None  # first logged step of the current run of k_t == 0
        self.warned_k_zero = False
        self.metrics: list[dict[str, Any]] = []
        self.stop_signal = ""  # set by the SIGTERM handler; the loop stops at the next step boundary
        self.probes_y = probe_attributes(self.labels_np, t.probe_count, t.seed)
        self.probes_z = probe_noise(t.probe_z, config.model.z_dim)

        self.last_path = self.out_dir / "last.pt"
        self.best_path = self.out_dir / "best.pt"
        if resume and self.last_path.is_file():
            self._restore(load_checkpoint(self.last_path, self.device))
        stale = sorted((self.out_dir / "snapshots").glob("generator-*.pt")) if self.step == 0 else []
        if stale:
            raise TrainingError(
                f"{self.out_dir / 'snapshots'} holds {len(stale)} generator snapshots of another run, which would "
                "be evaluated and exported as this one's: use --resume to continue that run, or a new --out"
            )
        self.tensorboard = self._open_tensorboard()

    # -- state ------------------------------------------------------------------------------------
    def _payload(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "schema": self.schema.to_json(),
            "generator": self.generator.state_dict(),
            **({"generator_ema": self.generator_ema.state_dict()} if self.generator_ema is not None else {}),
            "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "k_t": float(self.k_t),
            "step": self.step,
            "best_m_global": self.best_m_global,
            "rng": {
                "data": self.data_rng.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.use_cuda else None,
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
            "split": {"train": self.train_idx, "held_out": self.held_idx},
        }

    def _restore(self, payload: dict[str, Any]) -> None:
        if "discriminator" not in payload:
            raise TrainingError(
                f"{self.last_path}: a generator snapshot, not a training checkpoint (no discriminator):"
                " it can be evaluated and exported, not resumed"
            )
        stored = config_from_dict(payload["config"])
        if stored.model != self.config.model:
            raise TrainingError(
                f"{self.last_path}: model config differs from the checkpoint's "
                f"({stored.model} vs {self.config.model}); use a new train.out_dir"
            )
        if payload["schema"] != self.schema.to_json():
            raise TrainingError(f"{self.last_path}: the dataset's attribute schema differs from the checkpoint's")
        self.generator.load_state_dict(payload["generator"])
        if self.generator_ema is None and "generator_ema" in payload:
            tqdm.write(
                f"{self.last_path}: the checkpoint's averaged generator is dropped (train.ema_kimg = 0): "
                "snapshots and export now use the raw generator"
            )
        if self.generator_ema is not None:
            if "generator_ema" in payload:
                self.generator_ema.load_state_dict(payload["generator_ema"])
            else:
                self.generator_ema.load_state_dict(payload["generator"])
                tqdm.write(
                    f"{self.last_path}: no averaged generator in the checkpoint; the average (train.ema_kimg) "
                    "starts from its generator"
                )
        self.discriminator.load_state_dict(payload["discriminator"])
        if all(key in payload for key in OPTIMISER_KEYS):
            self.opt_g.load_state_dict(payload["opt_g"])
            self.opt_d.load_state_dict(payload["opt_d"])
        else:
            tqdm.write(
                f"{self.last_path}: no optimiser state in the checkpoint (a networks-only bundle): Adam's "
                "moments start afresh"
            )
        self.k_t = torch.tensor(payload["k_t"], device=self.device)
        self.step = int(payload["step"])
        self.best_m_global = float(payload.get("best_m_global", math.inf))
        rng = payload["rng"]
        self.data_rng.set_state(rng["data"].cpu())
        torch.set_rng_state(rng["torch"].cpu())
        if self.use_cuda and rng.get("cuda") is not None:
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        self.metrics = [row for row in self._read_metrics() if int(row["step"]) <= self.step]

    def _read_metrics(self) -> list[dict[str, Any]]:
        path = self.out_dir / "metrics.csv"
        if not path.is_file():
            return []
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    def _write_metrics(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.metrics)
        atomic_write_text(self.out_dir / "metrics.csv", buffer.getvalue())

    def _open_tensorboard(self) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.out_dir / "tensorboard"))

    def save(self) -> Path:
        save_checkpoint(self.last_path, self._payload())
        return self.last_path

    # -- one step ----------------------------------------------------------------------------------
    def _autocast(self) -> Any:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _lr(self, base: float) -> float:
        """Step decay (halve every ``lr_decay_every`` steps, not below ``lr_floor``), or constant."""
        o = self.config.optim
        if o.lr_decay_every <= 0:
            return base
        return max(base * 0.5 ** (self.step // o.lr_decay_every), min(o.lr_floor, base))

    def label_view(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """y_hat for the label losses: ``labels`` from the main pass, or, with ``loss.label_blur``, the
        auxiliary predictor on the encoding of the blurred images (real and fake alike)."""
        sigma = self.config.loss.label_blur
        if sigma <= 0:
            return labels
        with self._autocast():
            return self.discriminator.read_labels(images, sigma)

    def train_step(self) -> StepLosses:
        cfg, lossc = self.config, self.config.loss
        batch = cfg.optim.batch_size
        index = torch.randint(len(self.images), (batch,), generator=self.data_rng)
        z = (torch.rand((batch, cfg.model.z_dim), generator=self.data_rng) * 2.0 - 1.0).to(self.device)
        index = index.to(self.device)
        x = to_began(self.images[index])
        y = self.labels[index]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for group in self.opt_g.param_groups:
            group["lr"] = self._lr(cfg.optim.lr)
        for group in self.opt_d.param_groups:
            group["lr"] = self._lr(cfg.optim.lr_d or cfg.optim.lr)

        # With loss.mode_seeking the second half of the fakes repeats the first half's attributes (new z):
        # the pairs L_MS compares. The reals keep their own labels.
        pairs = batch // 2 if lossc.mode_seeking > 0 else 0
        y_fake = torch.cat([y[:pairs], y[:pairs]]) if pairs else y

        # Discriminator step: real and detached fakes in one forward.
        with self._autocast():
            fake = self.generator(z, y_fake)
            out = self.discriminator(torch.cat([x, fake.detach()]))
        rec_real, rec_fake = out.reconstruction[:batch], out.reconstruction[batch:]
        loss_real = reconstruction_loss(x, rec_real, lossc.recon)
        loss_fake = reconstruction_loss(fake.detach(), rec_fake, lossc.recon)
        constraint = constraint_loss(z, out.latent[batch:, : cfg.model.z_dim])  # encoder output reused: no extra pass
        label_real = label_loss(y, self.label_view(x, out.labels[:batch]), self.label_weights)
        loss_d = discriminator_loss(
            loss_real, loss_fake, self.k_t, constraint, label_real, lossc.alpha, lossc.label_weight_d
        )
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()

        # Generator step through the updated discriminator (frozen: no D weight gradients needed).
        self.discriminator.requires_grad_(False)
        with self._autocast():
            out_g = self.discriminator(fake)
        loss_fake_g = reconstruction_loss(fake, out_g.reconstruction, lossc.recon)
        label_fake = label_loss(y_fake, self.label_view(fake, out_g.labels), self.label_weights_g)
        mode_seeking = self.mode_seeking_term(fake, z, pairs)
        loss_g = generator_loss(loss_fake_g, label_fake, lossc.label_weight_g, mode_seeking, lossc.mode_seeking)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.discriminator.requires_grad_(True)
        if self.generator_ema is not None:
            t = cfg.train
            beta = ema_beta(batch, (self.step + 1) * batch, t.ema_kimg, t.ema_rampup)
            update_ema(self.generator_ema, self.generator, beta)

        self.k_t = update_k(self.k_t, loss_real, loss_fake, lossc.gamma, lossc.lambda_k)
        self.step += 1
        return StepLosses(
            loss_d.detach(),
            loss_g.detach(),
            loss_real.detach(),
            loss_fake.detach(),
            constraint.detach(),
            label_real.detach(),
            label_fake.detach(),
            self.k_t.detach(),
            convergence_measure(loss_real, loss_fake, lossc.gamma),
            mode_seeking.detach(),
        )

    def mode_seeking_term(self, fake: torch.Tensor, z: torch.Tensor, pairs: int) -> torch.Tensor:
        """L_MS between the two halves of the fakes (same attributes, new z); 0 when loss.mode_seeking is off.

        Compared blurred by loss.label_blur (pixel noise does not count) and with each image's mean
        removed: otherwise the cheapest way to differ is exposure, and the generator turns z into
        brightness (seen at weight 0.03 within 200 steps) instead of into different faces."""
        if not pairs:
            return torch.zeros((), device=self.device)
        sigma = self.config.loss.label_blur
        view = gaussian_blur(fake.float(), sigma) if sigma > 0 else fake.float()
        view = view - view.mean(dim=(1, 2, 3), keepdim=True)
        return mode_seeking_loss(view[:pairs], view[pairs : 2 * pairs], z[:pairs], z[pairs : 2 * pairs])

    # -- the loop ----------------------------------------------------------------------------------
    @property
    def output_generator(self) -> torch.nn.Module:
        """The generator that is sampled, snapshotted and exported: the average when train.ema_kimg > 0."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    def sample(self, tag: str) -> float:
        """Write probe and sweep grids; return the probe grid's same-y diversity."""
        t = self.config.train
        save_grids(
            self.out_dir / "samples",
            tag,
            self.output_generator,
            self.probes_y,
            self.probes_z,
            self.labels_np,
            t.sweep_steps,
            device=self.device,
        )
        from training.gan.sampling import generate_uint8

        y = np.repeat(self.probes_y, len(self.probes_z), axis=0)
        z = np.tile(self.probes_z, (len(self.probes_y), 1))
        return sample_diversity(generate_uint8(self.output_generator, z, y, device=self.device), len(self.probes_z))

    def run(self, steps: int | None = None) -> TrainResult:
        """Train until ``steps`` total steps (or train.max_minutes), checkpointing every interval."""
        t = self.config.train
        target = steps if steps is not None else t.steps
        max_minutes = t.max_minutes
        self.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out_dir / "config.toml", self.config.to_toml())
        if not (self.out_dir / "samples" / "real.png").is_file():
            save_png(self.out_dir / "samples" / "real.png", real_grid(self.real_preview, 8))
        sums: dict[str, torch.Tensor] = {}
        interval_steps, interval_start = 0, time.perf_counter()
        start_time = time.perf_counter()
        last: dict[str, float] = {}
        diversity = float("nan")
        bar = tqdm(
            total=target,
            initial=self.step,
            desc="train gan",
            unit="step",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        previous_handler = self._catch_sigterm()
        try:
            while self.step < target:
                losses = self.train_step()
                for key, value in vars(losses).items():
                    sums[key] = sums.get(key, 0.0) + value
                interval_steps += 1
                bar.update(1)
                if self.step % t.sample_every == 0 or self.step == target:
                    diversity = self.sample(f"{self.step:07d}")
                if self.step % t.log_every == 0 or self.step == target:
                    last = self._log(sums, interval_steps, interval_start, start_time, diversity)
                    self._watch_k(last["k_t"])
                    bar.set_postfix(
                        d=f"{last['loss_d']:.4f}",
                        g=f"{last['loss_g']:.4f}",
                        k=f"{last['k_t']:.4f}",
                        M=f"{last['m_global']:.4f}",
                        ips=f"{last['images_per_s']:.0f}",
                    )
                    sums, interval_steps, interval_start = {}, 0, time.perf_counter()
                    diversity = float("nan")
                # The snapshot first: a run killed between the two resumes from the checkpoint's step and
                # would never write a snapshot of that step again.
                if t.snapshot_every and (self.step % t.snapshot_every == 0 or self.step == target):
                    self.snapshot()
                if self.step % t.checkpoint_every == 0 or self.step == target:
                    self._checkpoint(last)
                out_of_time = max_minutes > 0 and time.perf_counter() - start_time > max_minutes * 60
                if out_of_time or self.stop_signal:
                    if interval_steps:
                        last = self._log(sums, interval_steps, interval_start, start_time, diversity)
                    self.sample(f"{self.step:07d}")
                    if t.snapshot_every:
                        self.snapshot()
                    self._checkpoint(last)
                    break
        except KeyboardInterrupt:
            bar.close()
            self.save()
            raise
        finally:
            if previous_handler is not _NOT_INSTALLED:
                signal.signal(signal.SIGTERM, signal.SIG_DFL if previous_handler is None else previous_handler)
        bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        return TrainResult(self.step, float(self.k_t), last, self.last_path, self.out_dir, self.stop_signal)

    def _catch_sigterm(self) -> Any:
        """Stop at the next step boundary on SIGTERM (a Kubernetes eviction, ``kill``), with a snapshot and a
        checkpoint like a max-minutes stop, so a resumed run (the retrain Job's retry) loses nothing.
        Returns the previous handler (None: one not set from Python), or _NOT_INSTALLED off the main thread,
        where handlers cannot be set."""
        if threading.current_thread() is not threading.main_thread():
            return _NOT_INSTALLED

        def request_stop(signum: int, frame: Any) -> None:
            self.stop_signal = signal.Signals(signum).name

        return signal.signal(signal.SIGTERM, request_stop)

    def _log(
        self,
        sums: dict[str, torch.Tensor],
        n: int,
        interval_start: float,
        start_time: float,
        diversity: float,
    ) -> dict[str, float]:
        values = StepLosses(**{k: v / n for k, v in sums.items()}).as_floats()
        values["k_t"] = float(self.k_t)
        now = time.perf_counter()
        row: dict[str, Any] = {
            "step": self.step,
            "elapsed_s": round(now - start_time, 3),
            "images_per_s": round(n * self.config.optim.batch_size / max(now - interval_start, 1e-9), 1),
            "lr": self._lr(self.config.optim.lr),
            "diversity": "" if math.isnan(diversity) else f"{diversity:.6g}",
        }
        row.update({k: f"{v:.8g}" for k, v in values.items()})
        self.metrics.append(row)
        self._write_metrics()
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(f"gan/{key}", value, self.step)
            if not math.isnan(diversity):
                self.tensorboard.add_scalar("gan/diversity", diversity, self.step)
        values["images_per_s"] = row["images_per_s"]
        return values

    def _watch_k(self, k_t: float) -> None:
        """Warn once when k_t has sat at ~0 for ``train.k_zero_warning_steps``: the sign of collapse."""
        limit = self.config.train.k_zero_warning_steps
        if k_t >= K_ZERO:
            self.k_zero_since = None
            return
        if self.k_zero_since is None:
            self.k_zero_since = self.step
        if limit and not self.warned_k_zero and self.step - self.k_zero_since >= limit:
            self.warned_k_zero = True
            tqdm.write(
                f"warning: k_t has been ~0 since step {self.k_zero_since}: the discriminator no longer pushes "
                f"generated images away, and the generator tends to collapse to one face per attribute vector "
                f"(watch the diversity column). Raise loss.gamma (now {self.config.loss.gamma}; 0.7 kept k_t "
                f"above 0 where 0.5 did not, docs/gan.md) or lower loss.label_weight_g."
            )

    def snapshot(self) -> Path:
        """Weights-only generator at this step (``snapshots/generator-STEP.pt``), written atomically."""
        path = self.out_dir / "snapshots" / f"generator-{self.step:07d}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, generator_only(self._payload()))
        return path

    def _checkpoint(self, last: dict[str, float]) -> None:
        self.save()
        m_global = last.get("m_global", math.inf)
        if m_global < self.best_m_global:
            self.best_m_global = m_global
            save_checkpoint(self.best_path, self._payload())


def train(
    config: GanConfig,
    dataset: FaceDataset,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    steps: int | None = None,
    progress: bool = True,
) -> TrainResult:
    trainer = GanTrainer(config, dataset, out_dir or config.train.out_dir, resume=resume, progress=progress)
    return trainer.run(steps)
