"""Inference: ONNX Runtime vs torch eager, same sliding window; threads; overlap; TTA.

Run: ``nice -n 5 .venv/bin/python -m bench.inference_speed [--quick]``

* Both back-ends run through the product's own ``model.infer.predict_probability``
  (resample + normalize, the same windows, Gaussian blending, resampling back):
  the torch runner only replaces ``OnnxModel.run`` with the eager network, so
  the ratio is the runtime's and nothing else.  Their outputs are compared.
* Variants are interleaved round-robin in every repeat (see bench/common.py).
* Without the trained model (model/weights/cmb_unet.onnx) an UNTRAINED network
  of the same architecture is exported with ``training.export`` (same graph,
  random weights): valid for time, meaningless for recall, which is then not
  measured.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    Recorder,
    interleaved,
    phantom,
    ratio,
    shipped_model,
    stats,
    untrained_model,
)


class TorchRunner:
    """Duck-typed `OnnxModel` whose ``run`` is the torch eager network (+ sigmoid)."""

    def __init__(self, onnx_model: Any, net: Any, threads: int) -> None:
        self.metadata = onnx_model.metadata
        self.info = onnx_model.info
        self.net = net
        self.threads = threads

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        torch.set_num_threads(self.threads)
        with torch.inference_mode():
            out = torch.sigmoid(self.net(torch.from_numpy(np.ascontiguousarray(batch))))
        return out.numpy().astype(np.float32)


def torch_network(onnx_path: Path, seed: int) -> tuple[Any, str]:
    """The eager network with the ONNX file's weights when their names match, else seeded."""
    import onnx
    import torch
    from onnx import numpy_helper

    from training.network import build_network

    torch.manual_seed(seed)
    net = build_network().eval()
    inits = {
        i.name.removeprefix("net."): numpy_helper.to_array(i)
        for i in onnx.load(str(onnx_path)).graph.initializer
    }
    state = net.state_dict()
    if all(k in inits and inits[k].shape == tuple(v.shape) for k, v in state.items()):
        net.load_state_dict({k: torch.from_numpy(inits[k].copy()) for k in state})
        return net, "weights loaded from the ONNX file"
    return net, f"same architecture, weights from torch.manual_seed({seed})"


def windows(shape: tuple[int, ...], patch: tuple[int, ...], overlap: float) -> int:
    from model.infer import window_starts

    n = 1
    for s, p in zip(shape, patch, strict=True):
        n *= len(window_starts(max(s, p), p, overlap))
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke size (seconds)")
    parser.add_argument("--out", type=Path, help="JSON result path")
    parser.add_argument("--model", type=Path, help="ONNX model (default: shipped, else untrained)")
    parser.add_argument("--repeats", type=int)
    args = parser.parse_args(argv)

    from model.infer import predict_probability
    from model.onnx_model import OnnxModel

    quick = args.quick
    repeats = args.repeats or (1 if quick else 3)
    shape = (32, 48, 48) if quick else (64, 96, 96)
    overlaps = (0.0, 0.5) if quick else (0.0, 0.5, 0.75)
    rec = Recorder("inference_speed", quick)
    tmp = Path(tempfile.mkdtemp(prefix="bench_infer_"))
    model_path = args.model or shipped_model()
    trained = model_path is not None
    if model_path is None:
        model_path = untrained_model(tmp / "untrained.onnx")
        rec.notes.append(
            "UNTRAINED network of the shipped architecture (training.network, exported with "
            "training.export): timings valid, no accuracy; recall not measured"
        )
    volume = phantom(shape, (1.0, 1.0, 1.0))
    ort = {t: OnnxModel.load(model_path, device="cpu", threads=t) for t in (1, 2)}
    net, weights_note = torch_network(model_path, seed=0)
    torch_run = {t: TorchRunner(ort[t], net, t) for t in (1, 2)}
    patch = ort[1].metadata.patch_size
    rec.params = {
        "model": str(model_path),
        "model_trained": trained,
        "torch_weights": weights_note,
        "volume_shape": shape,
        "spacing_mm": [1.0, 1.0, 1.0],
        "patch_size": patch,
        "repeats": repeats,
        "windows_at_overlap": {str(o): windows(shape, patch, o) for o in (0.0, 0.5, 0.75)},
    }

    # 1. ORT vs torch eager, 1 and 2 threads, overlap 0.5, interleaved.
    outputs: dict[str, np.ndarray] = {}

    def job(name: str, runner: Any) -> Any:
        def fn() -> None:
            outputs[name] = predict_probability(volume, runner, overlap=0.5).array

        return fn

    variants = {
        "ort_1thread": job("ort_1thread", ort[1]),
        "ort_2threads": job("ort_2threads", ort[2]),
        "torch_1thread": job("torch_1thread", torch_run[1]),
        "torch_2threads": job("torch_2threads", torch_run[2]),
    }
    cpu: dict[str, list[float]] = {}
    times = interleaved(variants, repeats, warmup=0 if quick else 1, cpu=cpu)
    rec.results["backend_threads_s"] = {k: stats(v) for k, v in times.items()}
    rec.results["backend_threads_cpu_s"] = {k: stats(v) for k, v in cpu.items()}
    rec.results["ratio_torch_over_ort"] = {
        "1thread": ratio(times["torch_1thread"], times["ort_1thread"]),
        "2threads": ratio(times["torch_2threads"], times["ort_2threads"]),
        "best_vs_best": statistics_best(times),
    }
    rec.results["ratio_ort_1_over_2_threads"] = ratio(times["ort_1thread"], times["ort_2threads"])
    rec.results["max_abs_diff_torch_vs_ort"] = float(
        np.abs(outputs["torch_2threads"] - outputs["ort_2threads"]).max()
    )

    # 2. Overlap and TTA (ORT, 2 threads).
    sweep: dict[str, Any] = {}
    for o in overlaps:
        sweep[f"overlap_{o}"] = _bind(predict_probability, volume, ort[2], o, False)
    sweep["overlap_0.5_tta"] = _bind(predict_probability, volume, ort[2], 0.5, True)
    cpu2: dict[str, list[float]] = {}
    t2 = interleaved(sweep, max(1, repeats - 1) if not quick else 1, warmup=0, cpu=cpu2)
    base = t2["overlap_0.5"]
    rec.results["overlap_tta_s"] = {k: stats(v) for k, v in t2.items()}
    rec.results["overlap_tta_cpu_s"] = {k: stats(v) for k, v in cpu2.items()}
    rec.results["overlap_tta_ratio_vs_overlap_0.5"] = {k: ratio(v, base) for k, v in t2.items()}
    rec.results["recall"] = "not measured: " + (
        "see bench/inference_recall.py" if trained else "no trained model yet"
    )
    path = rec.write(args.out)
    print(f"wrote {path}")
    r = rec.results["ratio_torch_over_ort"]
    print(
        f"torch/ORT: 1 thread {r['1thread']['of_medians']:.2f}x, "
        f"2 threads {r['2threads']['of_medians']:.2f}x, best/best {r['best_vs_best']:.2f}x"
    )
    return 0


def statistics_best(times: dict[str, list[float]]) -> float:
    """Fastest torch configuration over fastest ORT configuration (medians)."""
    import statistics

    t = min(statistics.median(times[k]) for k in times if k.startswith("torch"))
    o = min(statistics.median(times[k]) for k in times if k.startswith("ort"))
    return t / o


def _bind(fn: Any, *args: Any) -> Any:
    volume, model, overlap, tta = args
    return lambda: fn(volume, model, overlap=overlap, tta=tta)


if __name__ == "__main__":
    raise SystemExit(main())
