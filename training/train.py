"""The training loop: patches -> Dice+focal -> checkpoints, per-epoch detection validation.

A run lives in one folder (``runs/<name>`` by default)::

    config.json          the resolved config (written at start; a resumed run must match it)
    metrics.csv          one row per epoch: loss, lr, time, validation metrics
    tb/                  TensorBoard scalars
    checkpoints/last.pt  written every epoch (resume point)
    checkpoints/best.pt  the epoch with the best validation score
    best.onnx            that epoch's exported model, threshold chosen on validation
    cache/               preprocessed cases (unless data.cache_dir says otherwise)

Validation exports the network to ONNX and runs the product's inference path
on it (``training.validate``), so the numbers are those of the artifact that
ships.  Works on CPU, one GPU (AMP), or under ``torchrun`` (DDP, ``training.ddp``).
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import math
import platform
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from model.errors import InputError
from training import ddp
from training.augment import build_augmentation
from training.config import TrainConfig, config_from_dict
from training.data import (
    CaseRef,
    PatchDataset,
    PoolPreparer,
    PreparedCase,
    data_hash,
    list_cases,
    prepare_cases,
)
from training.errors import TrainingInputError
from training.export import build_metadata, export_onnx, load_init_weights, set_metadata
from training.losses import build_loss
from training.network import build_network, count_parameters

log = logging.getLogger(__name__)

CSV_FIELDS = [
    "epoch",
    "train_loss",
    "lr",
    "epoch_seconds",
    "threshold",
    "recall",
    "recall_ge3mm",
    "precision",
    "fp_per_scan",
    "f1",
    "score",
    "fit_recall",
    "fit_recall_ge3mm",
]


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    epochs_done: int
    best_score: float | None
    best_checkpoint: Path | None
    last_checkpoint: Path


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def hardware_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA), torch {torch.__version__}"
    return (
        f"CPU {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )


def score_of(summary: dict[str, Any], select_by: str, max_fp: float) -> float:
    """Checkpoint selection score: recall if the FP limit holds (else penalised), or F1."""
    if select_by == "f1":
        return float(summary.get("f1") or 0.0)
    recall = float(summary.get("recall") or 0.0)
    fp = float(summary.get("fp_per_scan") or 0.0)
    return recall if fp <= max_fp else recall * max_fp / fp - 1.0


def improves(
    score: float,
    summary: dict[str, Any],
    best_score: float | None,
    best_summary: dict[str, Any] | None,
) -> bool:
    """Whether an epoch's validation beats the best so far: a higher score, or the same
    score with fewer false positives per scan (for a candidate generator at a
    generous FP limit, equal recall with fewer candidates is the better model)."""
    if best_score is None or score > best_score:
        return True
    if score < best_score or not best_summary:
        return False
    fp, best_fp = summary.get("fp_per_scan"), best_summary.get("fp_per_scan")
    return fp is not None and best_fp is not None and float(fp) < float(best_fp)


def _poly(step: int, total: int) -> float:
    return _poly_fraction(min(step, total - 1) / total)


def _poly_fraction(fraction: float) -> float:
    """The poly factor at a fraction of the run (0 at and after the end)."""
    return float((1.0 - min(max(fraction, 0.0), 1.0)) ** 0.9)


def schedule_factor(
    step: int, total_steps: int, elapsed_s: float, schedule: str, time_budget_s: float = 0.0
) -> float:
    """The learning-rate factor at ``step`` after ``elapsed_s`` seconds of training.

    Without a time budget this is nnU-Net's poly over steps (or 1 for "constant");
    with one, poly runs on whichever of the step and the time fraction is further
    along, so a run cut short by its budget still ends annealed.
    """
    if schedule != "poly":
        return 1.0
    if time_budget_s <= 0:
        return _poly(step, total_steps)
    return _poly_fraction(max(step / total_steps, elapsed_s / time_budget_s))


def _progress(iterable: Any, desc: str, enabled: bool, total: int | None = None) -> Any:
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        disable=not enabled,
        mininterval=1.0 if sys.stderr.isatty() else 60.0,
        dynamic_ncols=True,
    )


def _save(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # a crash mid-write never leaves a broken checkpoint


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    init: str | None = None,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
) -> TrainResult:
    """Train (or resume) a run; see the module docstring for what the run folder holds."""
    run = Path(run_dir)
    info = ddp.init_distributed(device)
    ckpt_dir = run / "checkpoints"
    last_path, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    state: dict[str, Any] | None = None
    if resume:
        if not last_path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint {last_path} to resume from")
        state = torch.load(str(last_path), map_location="cpu", weights_only=False)
        saved = config_from_dict(state["config"])
        if saved.config_hash() != config.config_hash():
            raise TrainingInputError(
                f"--resume: the config differs from the one run {run} was started with "
                f"({run / 'config.json'}); resume with that config or start a new run"
            )
    seed_everything(config.seed + 1000 * info.rank)
    if info.is_main:
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.json").write_text(config.to_json())

    # ---------------------------------------------------------------- data
    metadata = build_metadata(config)
    cache = Path(config.data.cache_dir) if config.data.cache_dir else run / "cache"
    if config.data.rescan and info.distributed:
        raise TrainingInputError("data.rescan (a growing pool) is for single-process runs, not DDP")
    train_refs = _train_refs(config)
    val_refs = _val_refs(config)
    train_hash = data_hash(train_refs)
    if info.is_main:
        cases = prepare_cases(
            train_refs,
            metadata,
            cache,
            progress=lambda xs: _progress(xs, "preprocess", progress, total=len(train_refs)),
            workers=config.data.prepare_workers,
        )
    ddp.barrier(info)
    if not info.is_main:
        cases = prepare_cases(train_refs, metadata, cache)
    n_inst = sum(len(c.centers) for c in cases)
    log.info(
        "%d training cases, %d microbleeds; %d validation cases", len(cases), n_inst, len(val_refs)
    )
    if info.distributed:
        log.info("DDP rank %d of %d on %s", info.rank, info.world_size, info.device)
    dataset, sampler, loader = _loader(config, cases, info)
    preparer: PoolPreparer | None = None
    if config.data.rescan:  # new cases are preprocessed beside the loop, not in it
        preparer = PoolPreparer(metadata, cache, workers=config.data.prepare_workers)
        preparer.include(train_refs, cases)

    # ---------------------------------------------------------------- model
    net = build_network(config.network)
    if init and state is None:
        source = load_init_weights(net, init)
        log.info("initialised from %s", source)
    net.to(info.device)
    model: torch.nn.Module = (
        torch.nn.parallel.DistributedDataParallel(net) if info.distributed else net
    )
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay
    )
    total_steps = config.optim.epochs * config.optim.steps_per_epoch
    budget = config.optim.time_budget_s
    start_epoch, best_score, wall_before = 0, None, 0.0
    wall_start = time.monotonic()

    def elapsed() -> float:
        """Training wall time of the run so far, resumed parts included."""
        return wall_before + time.monotonic() - wall_start

    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: schedule_factor(s, total_steps, elapsed(), config.optim.schedule, budget),
    )
    use_amp = config.amp and info.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    loss_fn = build_loss(config.loss)
    best_val: dict[str, Any] | None = None
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, best_score = int(state["epoch"]) + 1, state.get("best_score")
        best_val = state.get("best_validation")
        wall_before = float(state.get("wall_seconds", 0.0))
        torch.set_rng_state(state["torch_rng"])
        log.info("resumed %s at epoch %d", run, start_epoch)
    hardware = hardware_description(info.device)
    if info.is_main:
        log.info("network: %d parameters; %s", count_parameters(net), hardware)

    writer = None
    if info.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run / "tb"))
    csv_path = run / "metrics.csv"

    # ---------------------------------------------------------------- loop
    epoch = start_epoch - 1
    for epoch in range(start_epoch, config.optim.epochs):
        t0 = time.monotonic()
        if preparer is not None and epoch > start_epoch:
            found = _rescan(config)
            if found is not None:
                preparer.add(found)
            if preparer.collect():
                train_refs, cases = preparer.refs, preparer.cases
                train_hash = data_hash(train_refs)
                dataset, sampler, loader = _loader(config, cases, info)
                log.info(
                    "pool grew to %d training cases (%d more being prepared)",
                    len(cases),
                    preparer.waiting,
                )
            if not config.data.max_val_cases or len(val_refs) < config.data.max_val_cases:
                val_refs = _val_refs(config)
        dataset.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        model.train()
        losses: list[float] = []
        bar = _progress(
            loader, f"epoch {epoch + 1}/{config.optim.epochs}", progress and info.is_main
        )
        for batch in bar:
            image = batch["image"].to(info.device, non_blocking=True)
            label = batch["label"].to(info.device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=info.device.type, dtype=torch.float16, enabled=use_amp):
                logits = model(image)
            loss = loss_fn(logits.float(), label)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}; lower optim.lr")
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(net.parameters(), config.optim.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            losses.append(float(loss.item()))
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", refresh=False)
            if budget > 0 and ddp.broadcast_flag(elapsed() >= budget, info):
                break  # the budget is spent: this epoch is the last
        train_loss = ddp.all_reduce_mean(float(np.mean(losses)) if losses else math.nan, info)
        lr = float(scheduler.get_last_lr()[0])
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": round(train_loss, 6),
            "lr": lr,
            "epoch_seconds": round(time.monotonic() - t0, 1),
        }
        improved = False
        provenance = {
            "hardware": hardware,
            "epochs": epoch + 1,
            "training_wall_s": round(wall_before + time.monotonic() - wall_start),
        }
        validation: dict[str, Any] | None = None
        out_of_time = budget > 0 and ddp.broadcast_flag(elapsed() >= budget, info)
        last_epoch = epoch + 1 == config.optim.epochs or out_of_time
        if info.is_main and val_refs and ((epoch + 1) % config.val.every == 0 or last_epoch):
            # imported here: validation's connected components and ONNX Runtime are not
            # needed by a run without validation cases (a bare GPU lease machine lacks them)
            from training.validate import validate_model

            candidate = run / "candidate.onnx"
            export_onnx(
                net,
                build_metadata(config, training_data_hash=train_hash),
                candidate,
            )
            n_val = len(val_refs)
            validation = validate_model(
                candidate,
                val_refs,
                config.val.thresholds,
                max_fp_per_scan=config.val.max_fp_per_scan,
                overlap=config.val.overlap,
                threads=torch.get_num_threads(),
                progress=functools.partial(
                    _progress, desc="validate", enabled=progress, total=n_val
                ),
            )
            summary = validation["summary"]
            if config.val.fit_cases:
                validation["fit"] = _fit(candidate, train_refs, config)
                row.update({f"fit_{k}": validation["fit"][k] for k in ("recall", "recall_ge3mm")})
            score = score_of(summary, config.val.select_by, config.val.max_fp_per_scan)
            row.update({k: summary.get(k) for k in CSV_FIELDS if k in summary})
            row["score"] = round(score, 6)
            if improves(score, summary, best_score, (best_val or {}).get("summary")):
                best_score, best_val, improved = score, validation, True
                set_metadata(
                    candidate,
                    build_metadata(
                        config,
                        threshold=float(validation["threshold"]),
                        metrics=summary,
                        training_data_hash=train_hash,
                        trained_on=_describe_data(train_refs, val_refs),
                        provenance=provenance,
                    ),
                )
                candidate.replace(run / "best.onnx")
            log.info(
                "epoch %d: loss %.4f, recall %s, FP/scan %s at threshold %s (score %.4f%s)",
                epoch + 1,
                train_loss,
                summary.get("recall"),
                summary.get("fp_per_scan"),
                summary.get("threshold"),
                score,
                ", best" if improved else "",
            )
        elif info.is_main:
            log.info("epoch %d: loss %.4f", epoch + 1, train_loss)
        if info.is_main:
            _write_csv(csv_path, row)
            if writer is not None:
                for key, value in row.items():
                    if key != "epoch" and isinstance(value, int | float) and value is not None:
                        writer.add_scalar(key, value, epoch + 1)
                writer.flush()
            ckpt = {
                "model": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch,
                "config": config.to_dict(),
                "best_score": best_score,
                "best_validation": best_val,
                "validation": validation,
                "training_data_hash": train_hash,
                "trained_on": _describe_data(train_refs, val_refs),
                "provenance": provenance,
                "wall_seconds": wall_before + time.monotonic() - wall_start,
                "torch_rng": torch.get_rng_state(),
            }
            _save(last_path, ckpt)
            if improved or (not val_refs and last_epoch):
                _save(best_path, {**ckpt, "validation": validation})
        ddp.barrier(info)
        if out_of_time:
            log.info("time budget of %.0f s spent after epoch %d", budget, epoch + 1)
            break
    if writer is not None:
        writer.close()
    if preparer is not None:
        preparer.close()
    ddp.cleanup(info)
    return TrainResult(
        run_dir=run,
        epochs_done=epoch + 1,
        best_score=best_score,
        best_checkpoint=best_path if best_path.is_file() else None,
        last_checkpoint=last_path,
    )


def _train_refs(config: TrainConfig) -> list[CaseRef]:
    return _checked_train_refs(list_cases(config.data.train))


def _checked_train_refs(refs: list[CaseRef]) -> list[CaseRef]:
    """``refs``, unless there are none or some are held-out cases (TrainingInputError)."""
    if not refs:
        raise TrainingInputError(
            "no training cases: give data.train folders in the config or --data"
        )
    leaked = [r.case_id for r in refs if r.record.get("split") in ("val", "validation", "test")]
    if leaked:
        raise TrainingInputError(
            f"training folders hold held-out cases (split val/test): {leaked[:5]}"
        )
    return refs


def _val_refs(config: TrainConfig) -> list[CaseRef]:
    refs = list_cases(config.data.val) if config.data.val else []
    return refs[: config.data.max_val_cases] if config.data.max_val_cases else refs


def _rescan(config: TrainConfig) -> list[CaseRef] | None:
    """The training cases now in the folders (a growing pool), or None if unreadable now.

    Only the read is retried next epoch; held-out cases that appeared in the
    pool stop the run, as they do at its start.
    """
    try:
        refs = list_cases(config.data.train)
    except InputError as e:  # a generator is appending a line right now: try next epoch
        log.warning("rescan skipped: %s", e)
        return None
    return _checked_train_refs(refs)


def _loader(
    config: TrainConfig, cases: list[PreparedCase], info: ddp.DistInfo
) -> tuple[PatchDataset, DistributedSampler[Any] | None, DataLoader[dict[str, torch.Tensor]]]:
    per_epoch = config.optim.steps_per_epoch * config.optim.batch_size * info.world_size
    dataset = PatchDataset(
        cases,
        config.patch_size,
        per_epoch,
        fg_fraction=config.data.fg_fraction,
        fg_jitter=config.data.fg_jitter,
        seed=config.seed,
        transform=build_augmentation(config.augment),
    )
    sampler: DistributedSampler[Any] | None = (
        DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=False)
        if info.distributed
        else None
    )
    loader = DataLoader(
        dataset,
        batch_size=config.optim.batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=config.data.num_workers,
        drop_last=True,
        pin_memory=info.device.type == "cuda",
    )
    return dataset, sampler, loader


def _describe_data(train: list[CaseRef], val: list[CaseRef]) -> str:
    """The cmb.trained_on text: how many cases of which subjects, and what was held out."""

    def subjects(refs: list[CaseRef]) -> str:
        ids = sorted({int(r.record["subject"]) for r in refs if "subject" in r.record})
        return ",".join(str(i) for i in ids) or "unknown"

    sources = sorted({str(r.record.get("source", "unknown")) for r in train})
    held_out = (
        f"validated on {len(val)} held-out cases (subjects {subjects(val)})"
        if val
        else "no validation during training (cmb export --val-data validates the file)"
    )
    return (
        f"{len(train)} {'/'.join(sources)} training cases (subjects {subjects(train)}); {held_out}"
    )


def _fit(candidate: Path, train_refs: Sequence[CaseRef], config: TrainConfig) -> dict[str, Any]:
    """Recall on the first ``val.fit_cases`` training cases at the lowest validation threshold."""
    from training.validate import validate_model

    refs = sorted(train_refs, key=lambda r: r.case_id)[: config.val.fit_cases]
    lowest = min(config.val.thresholds)
    report = validate_model(
        candidate, refs, (lowest,), overlap=config.val.overlap, threads=torch.get_num_threads()
    )
    summary = report["summary"]
    return {
        "cases": len(refs),
        "threshold": lowest,
        "recall": summary.get("recall"),
        "recall_ge3mm": summary.get("recall_ge3mm"),
        "fp_per_scan": summary.get("fp_per_scan"),
    }


def _write_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.is_file() or path.stat().st_size == 0
    fields = CSV_FIELDS
    if not new:  # a resumed run keeps the columns its file was started with
        with path.open(newline="") as f:
            fields = next(csv.reader(f), []) or CSV_FIELDS
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)


def describe(result: TrainResult) -> str:
    return json.dumps(
        {
            "run_dir": str(result.run_dir),
            "epochs_done": result.epochs_done,
            "best_score": result.best_score,
            "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
        }
    )
