"""Train the parcellation network on synthetic images, for a wall-clock budget.

Built to be stopped and resumed: a checkpoint (network, optimiser,
iteration, configs) is written every few minutes and at the end, and
``--resume`` continues from it.  The learning rate drops tenfold for the last
20 % of the budget.  The log is ``<out>/log.jsonl``.

Synthesis runs on the CPU; with ``--workers N`` it runs in N loader processes
while the network trains on the GPU (``--device auto`` takes CUDA when
present, with bf16 autocast).  On a 2-core CPU, run it under ``nice -n 10``
with ``--workers 0``.

    nice -n 10 .venv/bin/python -m training.parcellation.train \
        --out runs/parcellation/run1 --until 21:00
    python -m training.parcellation.train --out runs/parcellation/gpu1 --minutes 7.5 \
        --batch 8 --workers 14 --patch 96 --features 16 32 64 96 192 32 --lr 2e-3 --seed 1
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses import DiceCELoss

from training.parcellation.labelmaps import TRAIN_SUBJECTS, LabelMap, load_label_maps
from training.parcellation.network import ParcNetConfig, build_parcellation_network
from training.parcellation.synth import SynthConfig, Synthesizer


@dataclass(frozen=True)
class TrainConfig:
    out: Path
    seconds: float
    lr: float = 5e-3
    seed: int = 0
    threads: int = 2
    checkpoint_every_s: float = 300.0
    log_every: int = 10
    max_iterations: int | None = None
    subjects: tuple[int, ...] = TRAIN_SUBJECTS
    batch: int = 1
    workers: int = 0
    device: str = "auto"


class SampleStream(torch.utils.data.IterableDataset[tuple[torch.Tensor, torch.Tensor]]):
    """An endless stream of synthetic (image, target) pairs.

    Each loader worker draws from its own generator, seeded by the run seed,
    the iteration it resumes from and the worker's index, so a resumed run
    does not replay the samples it has already seen.
    """

    def __init__(self, maps: list[LabelMap], synth: Synthesizer, seed: int) -> None:
        super().__init__()
        self.maps = maps
        self.synth = synth
        self.seed = seed

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        if info is not None:
            torch.set_num_threads(1)
        rng = np.random.default_rng([self.seed, worker])
        while True:
            lm = self.maps[int(rng.integers(len(self.maps)))]
            image, target, _ = self.synth.sample(lm.array, rng)
            yield torch.from_numpy(image)[None], torch.from_numpy(target)[None]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def loss_function() -> DiceCELoss:
    """Soft Dice over the label channels (background excluded) + cross-entropy over all."""
    return DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)


def save_checkpoint(
    path: Path, net: torch.nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), **state}, tmp)
    tmp.replace(path)


def train(
    cfg: TrainConfig,
    synth_cfg: SynthConfig | None = None,
    net_cfg: ParcNetConfig | None = None,
    label_maps: list[LabelMap] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train until the time budget or ``max_iterations``; returns the final state summary."""
    torch.set_num_threads(cfg.threads)
    synth_cfg = synth_cfg or SynthConfig()
    net_cfg = net_cfg or ParcNetConfig()
    cfg.out.mkdir(parents=True, exist_ok=True)
    maps = (
        label_maps
        if label_maps is not None
        else load_label_maps(cfg.subjects, synth_cfg.spacing_mm)
    )
    synth = Synthesizer(synth_cfg)
    device = resolve_device(cfg.device)
    net = build_parcellation_network(net_cfg)
    ckpt = cfg.out / "checkpoint.pt"
    iteration = 0
    elapsed_before = 0.0
    state: dict[str, Any] = {}
    if resume and ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        net.load_state_dict(state["model"])
        iteration = int(state["iteration"])
        elapsed_before = float(state.get("elapsed_s", 0.0))
    meta = {
        "synth": asdict(synth_cfg),
        "network": asdict(net_cfg),
        "subjects": list(cfg.subjects),
        "spacing_mm": synth_cfg.spacing_mm,
        "batch": cfg.batch,
        "device": device.type,
    }
    (cfg.out / "config.json").write_text(json.dumps(meta, indent=2, default=str))
    loader = torch.utils.data.DataLoader(
        SampleStream(maps, synth, cfg.seed + iteration),
        batch_size=cfg.batch,
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.workers > 0,
        prefetch_factor=4 if cfg.workers > 0 else None,
    )
    batches = iter(loader)  # the workers fork here, before CUDA is initialised
    net = net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    if state:
        opt.load_state_dict(state["optimizer"])  # moves its tensors to the parameters' device
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed patch size: pick the fastest kernels once
    loss_fn = loss_function()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    start = time.monotonic()
    last_ckpt = start
    log = (cfg.out / "log.jsonl").open("a")
    running: float | None = None
    net.train()
    while True:
        now = time.monotonic()
        done = now - start >= cfg.seconds or (
            cfg.max_iterations is not None and iteration >= cfg.max_iterations
        )
        if done:
            break
        frac = (now - start) / max(cfg.seconds, 1e-6)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * (0.1 if frac > 0.8 else 1.0)
        x, y = next(batches)
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        with autocast:
            logits = net(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        iteration += 1
        value = float(loss.detach())
        running = value if running is None else 0.95 * running + 0.05 * value
        if iteration % cfg.log_every == 0:
            rec = {
                "iteration": iteration,
                "loss": round(value, 4),
                "loss_ema": round(running, 4),
                "elapsed_s": round(elapsed_before + time.monotonic() - start, 1),
                "time": dt.datetime.now(dt.UTC).strftime("%H:%M:%S"),
            }
            log.write(json.dumps(rec) + "\n")
            log.flush()
        if time.monotonic() - last_ckpt >= cfg.checkpoint_every_s:
            save_checkpoint(
                ckpt,
                net,
                opt,
                {
                    "iteration": iteration,
                    "elapsed_s": elapsed_before + time.monotonic() - start,
                    "meta": meta,
                },
            )
            last_ckpt = time.monotonic()
    state = {
        "iteration": iteration,
        "elapsed_s": elapsed_before + time.monotonic() - start,
        "meta": meta,
        "loss_ema": running,
    }
    save_checkpoint(ckpt, net, opt, state)
    log.close()
    return state


def _seconds_until(hhmm: str) -> float:
    now = dt.datetime.now(dt.UTC)
    h, m = (int(v) for v in hhmm.split(":"))
    end = now.replace(hour=h, minute=m, second=0, microsecond=0)
    return max(0.0, (end - now).total_seconds())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, required=True)
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--minutes", type=float)
    budget.add_argument("--until", help="UTC HH:MM to stop at")
    p.add_argument("--max-iterations", type=int)
    p.add_argument("--patch", type=int, default=80)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--workers", type=int, default=0, help="synthesis processes (0: inline)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument(
        "--features", type=int, nargs=6, default=list(ParcNetConfig().features), metavar="F"
    )
    p.add_argument("--checkpoint-every", type=float, default=300.0, help="seconds")
    p.add_argument("--resume", action="store_true")
    a = p.parse_args(argv)
    seconds = a.minutes * 60 if a.minutes is not None else _seconds_until(a.until)
    cfg = TrainConfig(
        out=a.out,
        seconds=seconds,
        lr=a.lr,
        seed=a.seed,
        threads=a.threads,
        max_iterations=a.max_iterations,
        batch=a.batch,
        workers=a.workers,
        device=a.device,
        checkpoint_every_s=a.checkpoint_every,
    )
    net_cfg = ParcNetConfig(features=tuple(a.features))
    state = train(cfg, SynthConfig(patch=a.patch), net_cfg, resume=a.resume)
    print(json.dumps({"iteration": state["iteration"], "elapsed_s": round(state["elapsed_s"], 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
