"""Train the parcellation network on synthetic images, for a wall-clock budget.

Runs on a shared 2-core CPU, so it is built to be stopped and resumed: a
checkpoint (network, optimiser, iteration, configs) is written every few
minutes and at the end, and ``--resume`` continues from it.  The learning
rate drops tenfold for the last 20 % of the budget.  Run it under
``nice -n 10`` in the background; the log is ``<out>/log.jsonl``.

    nice -n 10 .venv/bin/python -m training.parcellation.train \
        --out runs/parcellation/run1 --until 21:00
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
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
    net = build_parcellation_network(net_cfg)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    loss_fn = loss_function()
    ckpt = cfg.out / "checkpoint.pt"
    iteration = 0
    elapsed_before = 0.0
    if resume and ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        iteration = int(state["iteration"])
        elapsed_before = float(state.get("elapsed_s", 0.0))
    rng = np.random.default_rng(cfg.seed + iteration)
    meta = {
        "synth": asdict(synth_cfg),
        "network": asdict(net_cfg),
        "subjects": list(cfg.subjects),
        "spacing_mm": synth_cfg.spacing_mm,
    }
    (cfg.out / "config.json").write_text(json.dumps(meta, indent=2, default=str))
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
        lm = maps[int(rng.integers(len(maps)))]
        image, target, _ = synth.sample(lm.array, rng)
        x = torch.from_numpy(image)[None, None]
        y = torch.from_numpy(target)[None, None]
        loss = loss_fn(net(x), y)
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
    )
    state = train(cfg, SynthConfig(patch=a.patch), resume=a.resume)
    print(json.dumps({"iteration": state["iteration"], "elapsed_s": round(state["elapsed_s"], 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
