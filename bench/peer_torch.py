#!/usr/bin/env python3
"""PyTorch peer of bench_train: the seed's Keras CNN (examples/seed_cnn.py), same input shape,
Adam (Keras defaults), training images/s at the same batch sizes, median of timed steps after
warm-up. CPU with Debian's python3-torch here; on CUDA: eager NCHW, eager channels_last and
torch.compile(mode="reduce-overhead") (CUDA graphs; cudagraph_mark_step_begin() each step), with
the peak device memory (torch.cuda.max_memory_allocated, and max_memory_reserved beside it).

    /usr/bin/python3 bench/peer_torch.py [--batches 128,512[,2048]] [--steps 10]
                                         [--device cpu|cuda] [--threads N] [--json FILE]
                                         [--precision fp32|bf16] [--math strict|tf32]

--precision bf16: mixed precision as PyTorch users run it (issue 16's peer): forward and loss
under torch.autocast(dtype=torch.bfloat16), channels_last, fp32 master weights and Adam state;
modes "bf16 channels_last" and "bf16 reduce-overhead" on CUDA, "bf16 eager" on the CPU.

On CUDA PyTorch gets its fastest settings that keep the arithmetic: cudnn.benchmark (each conv
shape's algorithm timed, as cnnkit's --conv-algo fastest) and, for fp32, strict fp32 convs and
matmuls (PyTorch lets convs run in TF32 by default; cnnkit's fp32 is strict); --math tf32 allows
TF32 instead, for cnnkit's --math tf32 rows. Both settings go into the JSON. The peak memory
counts from the model's creation on, warm-up included: reduce-overhead's CUDA graphs take their
memory while they are recorded, and replays do not allocate.
"""
import argparse, gc, json, os, statistics, time

import torch
import torch.nn as nn
import torch.nn.functional as F


def dynamo_reset():
    """Forgets torch.compile's graphs (PyTorch 2; the CPU's Debian 1.13 has no dynamo)."""
    try:
        import torch._dynamo
    except ImportError:
        return
    torch._dynamo.reset()


def seed_cnn():
    # Keras: Conv2D(32,(3,3)) valid, BN(momentum .99 -> torch .01, eps 1e-3), ReLU, ...
    def bn2(c):
        return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), bn2(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3), bn2(32), nn.ReLU(),
        nn.MaxPool2d(2), nn.Dropout(0.2),
        nn.Conv2d(32, 64, 3), bn2(64), nn.ReLU(),
        nn.Conv2d(64, 64, 3), bn2(64), nn.ReLU(),
        nn.MaxPool2d(2), nn.Dropout(0.2),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 512), nn.BatchNorm1d(512, eps=1e-3, momentum=0.01),
        nn.ReLU(), nn.Dropout(0.4), nn.Linear(512, 10))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default=None)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--math", default="strict", choices=["strict", "tf32"])
    a = ap.parse_args()
    if a.steps < 1:
        ap.error(f"--steps must be >= 1, got {a.steps}")
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    if a.batches is None:
        a.batches = "128,512,2048" if a.device == "cuda" else "128,512"
    try:
        sizes = [int(s) for s in a.batches.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        ap.error(f"--batches must be a comma-separated list of batch sizes >= 1, got '{a.batches}'")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        tf32 = a.math == "tf32"
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
    out = {"torch": torch.__version__, "device": a.device, "threads": torch.get_num_threads(),
           "precision": a.precision, "math": a.math,
           "cudnn_benchmark": bool(torch.backends.cudnn.benchmark) if dev.type == "cuda" else None,
           "results": []}
    print(f"peer_torch: torch {torch.__version__}, device {a.device}, "
          f"{torch.get_num_threads()} threads, median of {a.steps} steps")
    print(f"{'batch':>8} {'mode':>16} {'ms/step':>10} {'images/s':>10} {'peak MiB':>9}", flush=True)
    # modes outer, batches inner: the eager figures of every batch size come before the slow
    # torch.compile ones (a time-limited run keeps what it printed: flush=True)
    modes = ["eager", "channels_last", "reduce-overhead"] if a.device == "cuda" else ["eager"]
    bf16 = a.precision == "bf16"
    if bf16:  # autocast with channels_last is how bf16 is run; NCHW eager adds nothing
        modes = ["channels_last", "reduce-overhead"] if a.device == "cuda" else ["eager"]
    for mode in modes:
        for b in sizes:
            torch.manual_seed(0)
            # the previous batch size's model, optimizer, data and compiled graphs go first
            m = opt = x = y = fwd = step = None
            dynamo_reset()
            gc.collect()
            if dev.type == "cuda":  # the peak of this batch size from here, warm-up included
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            m = seed_cnn().to(dev)
            x = torch.rand(b, 1, 28, 28, device=dev)
            y = torch.randint(0, 10, (b,), device=dev)
            if mode == "channels_last":
                m = m.to(memory_format=torch.channels_last)
                x = x.to(memory_format=torch.channels_last)
            opt = torch.optim.Adam(m.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
            fwd = m
            if mode == "reduce-overhead":
                m = m.to(memory_format=torch.channels_last)
                x = x.to(memory_format=torch.channels_last)
                # a static compile for each batch size (dynamo was reset above), not a dynamic one
                fwd = torch.compile(m, mode="reduce-overhead", dynamic=False)

            def step():
                if mode == "reduce-overhead":
                    torch.compiler.cudagraph_mark_step_begin()
                opt.zero_grad(set_to_none=True)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                    loss = F.cross_entropy(fwd(x), y)
                loss.backward()
                opt.step()

            try:
                for _ in range(3 if mode == "reduce-overhead" else 2):
                    step()
            except Exception as e:  # torch.compile needs a working compiler toolchain
                print(f"{b:>8} {mode:>16}  unavailable: {type(e).__name__}: {e}"[:200], flush=True)
                continue
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times = []
            for _ in range(a.steps):
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                step()
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None
            reserved = torch.cuda.max_memory_reserved() / 2**20 if dev.type == "cuda" else None
            name = ("bf16 " if bf16 else "") + mode
            print(f"{b:>8} {name:>16} {med * 1e3:>10.1f} {b / med:>10.0f} "
                  f"{peak if peak is not None else float('nan'):>9.1f}", flush=True)
            out["results"].append({"batch": b, "mode": name, "ms_per_step": med * 1e3,
                                   "images_per_s": b / med, "peak_mib": peak,
                                   "peak_reserved_mib": reserved})
            write_json(a.json, out)  # after every result: a run cut at its time limit keeps them
    write_json(a.json, out)


def write_json(path, out):
    if path:
        with open(path + ".tmp", "w") as f:
            json.dump(out, f, indent=1)
        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
