"""What training consumes: patches/s of one training step of the shipped network on this CPU.

Run: ``nice -n 5 .venv/bin/python -m bench.train_consumption [--quick]``

One step = what ``training.train`` does per batch: forward of the U-Net
(``training.network``) on a batch of 48^3 patches, the training loss
(``training.losses.build_loss``), backward, gradient clipping, Adam.  Batch 2
(``training/configs/cpu_session.json``) and 4 (``cpu_small.json``), interleaved,
1 intra-op thread as the session's training runs.  The result is compared
with the generator's throughput from ``bench/results/synth_throughput.json``
(written by ``bench.synth_throughput``, when present): how many training
patches each generated case must serve for the generator to keep up.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, Recorder, interleaved, stats


def make_step(batch: int, patch: int) -> Any:
    import torch

    from training.losses import build_loss
    from training.network import build_network

    torch.manual_seed(0)
    net = build_network().train()
    loss_fn = build_loss()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    image = torch.randn(batch, 1, patch, patch, patch)
    label = (torch.rand(batch, 1, patch, patch, patch) > 0.999).float()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(image).float(), label)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
        opt.step()

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    quick = args.quick
    patch = 32 if quick else 48
    batches = (1, 2) if quick else (2, 4)
    repeats = 2 if quick else 5
    rec = Recorder("train_consumption", quick)
    rec.params = {"patch": patch, "batches": batches, "threads": args.threads, "repeats": repeats}
    steps = {f"batch_{b}": make_step(b, patch) for b in batches}
    times = interleaved(steps, repeats, warmup=1)
    rec.results["step_s"] = {k: stats(v) for k, v in times.items()}
    rate = {k: b / stats(times[k])["median"] for k, b in zip(steps, batches, strict=True)}
    rec.results["patches_per_s"] = rate
    synth = RESULTS_DIR / "synth_throughput.json"
    if synth.is_file() and not quick:
        s = json.loads(synth.read_text())["results"]
        per_case = {k: v["median"] for k, v in s.get("generate_case_s", {}).items()}
        case_per_s = 1.0 / max(sum(per_case.values()) / max(len(per_case), 1), 1e-9)
        rec.results["generator"] = {
            "source": str(synth.relative_to(RESULTS_DIR.parent.parent)),
            "cases_per_s_one_process": case_per_s,
            "stream_one_process": s.get("stream_one_process"),
            "patches_needed_per_case_to_keep_up": {k: r / case_per_s for k, r in rate.items()},
        }
    print({k: round(v, 3) for k, v in rate.items()}, "patches/s")
    print(f"wrote {rec.write(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
