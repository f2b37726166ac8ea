#!/usr/bin/env python3
"""PyTorch peer of bench_train: the seed's Keras CNN (examples/seed_cnn.py), same input shape,
Adam (Keras defaults), training images/s at the same batch sizes, median of timed steps after
warm-up. CPU with Debian's python3-torch here; CUDA (eager, channels_last) when a GPU is present.

    /usr/bin/python3 bench/peer_torch.py [--batches 128,512] [--steps 10] [--device cpu|cuda]
                                         [--threads N] [--json FILE]
"""
import argparse, json, statistics, time

import torch
import torch.nn as nn
import torch.nn.functional as F


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
    ap.add_argument("--batches", default="128,512")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    out = {"torch": torch.__version__, "device": a.device, "threads": torch.get_num_threads(),
           "results": []}
    print(f"peer_torch: torch {torch.__version__}, device {a.device}, "
          f"{torch.get_num_threads()} threads, median of {a.steps} steps")
    print(f"{'batch':>8} {'mode':>14} {'ms/step':>10} {'images/s':>10}")
    for b in [int(s) for s in a.batches.split(",") if s]:
        for mode in (["eager", "channels_last"] if a.device == "cuda" else ["eager"]):
            torch.manual_seed(0)
            m = seed_cnn().to(dev)
            x = torch.rand(b, 1, 28, 28, device=dev)
            y = torch.randint(0, 10, (b,), device=dev)
            if mode == "channels_last":
                m = m.to(memory_format=torch.channels_last)
                x = x.to(memory_format=torch.channels_last)
            opt = torch.optim.Adam(m.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)

            def step():
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(m(x), y)
                loss.backward()
                opt.step()

            for _ in range(2):
                step()
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
            print(f"{b:>8} {mode:>14} {med * 1e3:>10.1f} {b / med:>10.0f}")
            out["results"].append({"batch": b, "mode": mode, "ms_per_step": med * 1e3,
                                   "images_per_s": b / med})
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
