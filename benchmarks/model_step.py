"""What each fusion head costs in training: clips/s of one training step (forward + backward + SGD step) and peak
memory, for every head on the same backbone and clip size, in one run, against `gap` (the original 3D-ResNets
model, the baseline).

Each head runs in a fresh Python process (so that the process's peak memory belongs to that head alone): it
builds the model, runs WARMUP steps, then STEPS timed steps on fixed random clips; the figures are medians over
the steps. Time: on CPU the overhead is computed from the process's CPU time per step (`time.process_time`) with
one intra-op thread (`--threads 1`): on a shared machine, other jobs inflate wall time, and with several threads
also CPU time (OpenMP threads spin while waiting for a descheduled sibling, measured 20x here); wall time is
reported beside it, and on CUDA it is the measure. Memory: on CPU the peak resident set size of the process
(`ru_maxrss`) and how much the training steps added to the RSS after building the model (activations,
gradients, optimizer state); on CUDA `torch.cuda.max_memory_allocated`. Prints one JSON line per head with its
overhead relative to gap (target: hbp, bilinear, compact, factorized at most +15 % step time).

    .venv/bin/python benchmarks/model_step.py [--depth 50] [--frames 16] [--size 112] [--batch 2]
        [--steps 3] [--warmup 1] [--threads 1] [--device cpu|cuda] [--amp] [--heads gap hbp ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from vidfuse.models import build_model, count_parameters, list_heads

BASELINE = "gap"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet")
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--shortcut", default="B")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--classes", type=int, default=101)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per head (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (default 1, see above)")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    parser.add_argument("--heads", nargs="+", default=list_heads(), help="heads to compare (gap is always run)")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one head in this process
    return parser


def _step_times(args: argparse.Namespace) -> dict:
    """Train the head `args.case` for warmup + steps steps in this process; its median step time and peak memory."""
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(arch=args.arch, depth=args.depth, shortcut=args.shortcut, num_classes=args.classes,
                        fusion=args.case).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    clips = torch.randn(args.batch, 3, args.frames, args.size, args.size, device=device)
    labels = torch.randint(args.classes, (args.batch,), device=device)
    rss_built_mib = _current_rss_mib()
    wall, cpu = [], []
    for step in range(args.warmup + args.steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            loss = F.cross_entropy(model(clips), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    result = {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu),
              "params_m": count_parameters(model) / 1e6}
    if device.type == "cuda":
        return result | {"peak_mib": torch.cuda.max_memory_allocated() / 2**20}
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return result | {"peak_mib": peak_mib, "train_extra_mib": peak_mib - rss_built_mib}


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def _run_case(head: str) -> dict:
    """`_step_times` for `head` in a fresh process with the same arguments."""
    command = [sys.executable, __file__, *sys.argv[1:], "--case", head]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    args = _parser().parse_args()
    if args.case:
        print(json.dumps(_step_times(args)))
        return
    on_cpu = args.device == "cpu"
    timing = "cpu_s" if on_cpu else "wall_s"
    base = _run_case(BASELINE)
    for head in [BASELINE] + [h for h in args.heads if h != BASELINE]:
        r = base if head == BASELINE else _run_case(head)
        line = {
            "bench": "model_step", "head": head, "model": f"{args.arch}-{args.depth}",
            "clip": f"{args.frames}x{args.size}x{args.size}", "batch": args.batch, "device": args.device,
            "amp": args.amp, "steps": args.steps, "params_m": round(r["params_m"], 2),
            "wall_s_median": round(r["wall_s"], 3), "clips_per_s": round(args.batch / r["wall_s"], 3),
            "cpu_s_median": round(r["cpu_s"], 3),
            "overhead_measure": timing, "time_overhead_vs_gap": round(r[timing] / base[timing] - 1, 3),
            ("cpu_peak_rss_mib" if on_cpu else "cuda_max_allocated_mib"): round(r["peak_mib"]),
        }
        if on_cpu:
            line["train_extra_rss_mib"] = round(r["train_extra_mib"])
            line["train_extra_ratio_vs_gap"] = round(r["train_extra_mib"] / base["train_extra_mib"], 3)
        else:
            line["memory_ratio_vs_gap"] = round(r["peak_mib"] / base["peak_mib"], 3)
        print(json.dumps(line), flush=True)

if __name__ == "__main__":
    main()
