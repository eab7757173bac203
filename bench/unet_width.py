"""What a wider U-Net costs: CPU inference, CPU training steps and file size per channel width.

Run: ``nice -n 5 .venv/bin/python -m bench.unet_width [--quick] [--out FILE]``

The model card's next step for the U-Net's candidate ceiling is a wider
network (features 16-256 instead of 8-128) trained on a GPU lease.  The
product must still run it on a 2-core CPU and ship it in ``model/weights``
(<= 25 MB a file), and a CPU session may have to train it: this measures
what each width costs before a lease is spent on it.

* Every width is an UNTRAINED ``training.network`` U-Net exported by
  ``training.export`` (``bench.common.untrained_model``): the graph, and so
  the time, of a trained one; no accuracy is measured.
* Inference: the product's ``model.infer.predict_probability`` (overlap 0,
  as shipped) on the same head-sized phantom, ONNX Runtime on the CPU with 2
  threads; the widths interleaved round-robin (bench/common.py), wall and
  process CPU seconds, ratios against the shipped width.
* Training: one optimiser step (forward, loss, backward, AdamW) of a batch
  of 2 patches of 48^3 with the training loss (``training.losses``), torch
  with 2 threads, interleaved the same way.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Recorder, interleaved, phantom, ratio, stats, untrained_model

#: The shipped widths first: every ratio is against it.
WIDTHS: dict[str, tuple[int, ...]] = {
    "shipped_8-128": (8, 16, 32, 64, 128, 8),
    "x1.5_12-192": (12, 24, 48, 96, 192, 12),
    "x2_16-256": (16, 32, 64, 128, 256, 16),
}
BASE = "shipped_8-128"


def train_step(features: Sequence[int], batch: int, patch: int, threads: int) -> Callable[[], None]:
    """One AdamW step of the training loss on random patches with a few dark spots."""
    import torch

    from training.losses import build_loss
    from training.network import NetworkConfig, build_network

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = build_network(NetworkConfig(features=tuple(features))).train()
    loss_fn = build_loss()
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-4)
    image = torch.randn(batch, 1, patch, patch, patch)
    target = torch.zeros_like(image)
    target[:, :, patch // 2 - 1 : patch // 2 + 2, patch // 2 - 1 : patch // 2 + 2, 10:13] = 1.0

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        loss = loss_fn(net(image), target)
        loss.backward()
        optimiser.step()

    return step


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke size (seconds)")
    p.add_argument("--out", type=Path, help="JSON result path")
    p.add_argument("--repeats", type=int)
    a = p.parse_args(argv)

    from model.infer import predict_probability
    from model.onnx_model import OnnxModel
    from training.network import NetworkConfig, build_network, count_parameters

    repeats = a.repeats or (1 if a.quick else 3)
    shape = (48, 64, 64) if a.quick else (128, 176, 144)
    batch, patch, threads = (1, 32, 2) if a.quick else (2, 48, 2)
    rec = Recorder("unet_width", a.quick)
    tmp = Path(tempfile.mkdtemp(prefix="bench_width_"))
    volume = phantom(shape, (1.0, 1.0, 1.0))
    models: dict[str, OnnxModel] = {}
    sizes: dict[str, Any] = {}
    for name, features in WIDTHS.items():
        path = untrained_model(tmp / f"{name}.onnx", features=features)
        models[name] = OnnxModel.load(path, device="cpu", threads=threads)
        sizes[name] = {
            "features": list(features),
            "parameters": count_parameters(build_network(NetworkConfig(features=features))),
            "onnx_mb": round(path.stat().st_size / 1e6, 2),
        }
    rec.params = {
        "volume_shape": shape,
        "spacing_mm": [1.0, 1.0, 1.0],
        "overlap": 0.0,
        "threads": threads,
        "train_batch": batch,
        "train_patch": patch,
        "repeats": repeats,
        "networks": sizes,
        "weights": "UNTRAINED (training.export of training.network): time only, no accuracy",
    }

    def infer(model: OnnxModel) -> Callable[[], object]:
        return lambda: predict_probability(volume, model, overlap=0.0)

    cpu: dict[str, list[float]] = {}
    warmup = 0 if a.quick else 1
    times = interleaved({n: infer(m) for n, m in models.items()}, repeats, warmup=warmup, cpu=cpu)
    rec.results["inference_s"] = {n: stats(v) for n, v in times.items()}
    rec.results["inference_cpu_s"] = {n: stats(v) for n, v in cpu.items()}
    rec.results["inference_ratio_vs_shipped"] = {n: ratio(v, times[BASE]) for n, v in times.items()}

    steps = {n: train_step(f, batch, patch, threads) for n, f in WIDTHS.items()}
    cpu_t: dict[str, list[float]] = {}
    t_train = interleaved(steps, repeats, warmup=1, cpu=cpu_t)
    rec.results["train_step_s"] = {n: stats(v) for n, v in t_train.items()}
    rec.results["train_step_cpu_s"] = {n: stats(v) for n, v in cpu_t.items()}
    rec.results["train_step_ratio_vs_shipped"] = {
        n: ratio(v, t_train[BASE]) for n, v in t_train.items()
    }
    path = rec.write(a.out)
    print(f"wrote {path}")
    for n in WIDTHS:
        print(
            f"{n}: {sizes[n]['parameters']:,} parameters, {sizes[n]['onnx_mb']} MB; "
            f"inference {np.median(times[n]):.2f} s "
            f"(x{rec.results['inference_ratio_vs_shipped'][n]['of_medians']:.2f}), "
            f"train step {np.median(t_train[n]):.2f} s "
            f"(x{rec.results['train_step_ratio_vs_shipped'][n]['of_medians']:.2f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
