"""torchrun DDP with two CPU processes (gloo): both ranks train, rank 0 writes the run."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from tests.helpers.tiny_cmb_layout import write_tiny_layout
from tests.training.test_train import tiny_config
from training import ddp

ROOT = Path(__file__).resolve().parents[2]


def test_single_process_needs_no_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = ddp.init_distributed("cpu")
    assert not info.distributed
    assert info.is_main
    assert ddp.all_reduce_mean(2.5, info) == 2.5
    assert ddp.broadcast_flag(True, info) is True
    assert not dist.is_initialized()


@pytest.mark.timeout(240)
def test_torchrun_two_cpu_processes_train_one_run(tmp_path: Path) -> None:
    train_dir = write_tiny_layout(tmp_path / "train", 2)
    val_dir = write_tiny_layout(tmp_path / "val", 1, split="val", seed0=50)
    cfg = tiny_config(train_dir, val_dir, epochs=2, steps_per_epoch=2)
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(cfg.to_json())
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "cmb.cli",
            "train",
            "--config",
            str(cfg_file),
            "--out",
            str(run),
            "--device",
            "cpu",
            "--no-progress",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=230,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DDP rank 0 of 2" in proc.stderr
    assert "DDP rank 1 of 2" in proc.stderr
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]  # one row per epoch: only rank 0 writes
    assert (run / "checkpoints" / "last.pt").is_file()
    assert (run / "best.onnx").is_file()
