#!/usr/bin/env python3
"""cnnkit against its peers, from one run's figures: images/s of every cnnkit setting and every
peer mode at each batch size, cnnkit's ratio to the best PyTorch mode and to the best peer of
all, and device memory against PyTorch's peak (issue 14's targets: >= 1.0x the best PyTorch mode
at every batch size, memory <= PyTorch's).

Inputs are the JSON files the benches write (bench_train --json, bench/peer_torch.py --json,
bench/peer_keras.py: one JSON line per batch size):

    compare.py [--cnnkit [LABEL=]FILE]... [--torch FILE]... [--keras FILE] [--json OUT]
               [--markdown OUT]
    compare.py --run [--bench-train BIN] [--batches 128,512] [--steps N] [--device auto|cpu|cuda]
               [--model FILE] [--python PY] [--keras-python PY] [--json OUT] [--markdown OUT]

--run runs them itself, one after the other in this process tree (bench_train, then on the
device it chose and at its batch sizes PyTorch
where `PY -c "import torch"` works, then Keras where KERAS-PY imports keras), into a temporary
folder, then compares. Peers that are missing are named and skipped: the figures that exist are
still compared. A bench_train figure of precision bf16 is compared with PyTorch's bf16 modes
(peer_torch.py --precision bf16), a TF32 one (--precision or --math tf32) with PyTorch's TF32 runs
(peer_torch.py --math tf32), the others with the strict fp32 modes. Exit 0 when at least one cnnkit figure was read, 1 when none, 2 on bad input
(an unreadable or malformed file, an unknown option).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile


class Bad(Exception):
    """A file or an argument that cannot be used: exit 2 with its message."""


def load_json(path, cut_ok=False):
    """cut_ok: a bench_train file that its run's timeout stopped (bench_train writes whole rows,
    so the file ends after one: closed here) is read up to its last row, with a warning."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise Bad(f"{path}: {e.strerror}")
    except ValueError as e:  # not UTF-8
        raise Bad(f"{path}: not JSON ({e})")
    try:
        d = json.loads(text)
    except ValueError as e:
        try:
            if not cut_ok:
                raise
            d = json.loads(text.rstrip() + "]}")
            rows = d.get("results") if isinstance(d, dict) else None
            print(f"compare: warning: {path} is cut (its run was stopped): "
                  f"{len(rows) if isinstance(rows, list) else 0} complete row(s) read")
        except ValueError:
            raise Bad(f"{path}: not JSON ({e})")
    if not isinstance(d, dict):
        raise Bad(f"{path}: not a JSON object")
    return d


def need(obj, key, path, kind):
    # bool is an int to Python: a batch of true is no batch
    if (not isinstance(obj, dict) or key not in obj or not isinstance(obj[key], kind)
            or isinstance(obj[key], bool)):
        raise Bad(f"{path}: an entry lacks '{key}' ({kind.__name__})")
    return obj[key]


def positive(v, key, path):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf"):
        raise Bad(f"{path}: '{key}' is {v!r} (a positive number expected)")
    return float(v)


def optional_positive(v):
    """A figure that may be missing (None): a number > 0, else None."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and \
        0 < v < float("inf") else None


def read_cnnkit(label, path):
    """bench_train --json: {"results": [{"batch", "images_per_s", "ms_per_step", "model_bytes",
    "context_bytes"}]}; also cut after a row by a timeout"""
    d = load_json(path, cut_ok=True)
    rows = []
    seen = {}
    for r in need(d, "results", path, list):
        b = need(r, "batch", path, int)
        mode = label or d.get("conv_algo", "cnnkit")
        prec = d.get("precision", "fp32")
        if prec != "fp32" and not label:
            mode += f" {prec}"
        graph = r.get("cuda_graph")  # on a GPU: each row says whether it replayed CUDA graphs
        if graph in ("on", "off"):
            mode += " graph" if graph == "on" else " eager"
            if graph == "on" and r.get("graph_replays") == 0:  # asked for, none replayed
                mode += " (0 replays)"
        seen[(mode, b)] = seen.get((mode, b), 0) + 1
        if seen[(mode, b)] > 1:  # two figures of one setting: both shown, told apart
            mode += f" #{seen[(mode, b)]}"
        # the arithmetic class its peers must share: TF32 is --precision tf32 or --math tf32
        cls = "bf16" if prec == "bf16" else "tf32" if "tf32" in (prec, d.get("math")) else "fp32"
        rows.append({"who": "cnnkit", "mode": mode, "batch": b, "bf16": prec == "bf16", "cls": cls,
                     "images_per_s": positive(r.get("images_per_s"), "images_per_s", path),
                     "ms_per_step": r.get("ms_per_step"),
                     # the model's arena and the context's own (cuBLAS's workspace), as
                     # PyTorch's allocator counts its cuBLAS workspace in its peak
                     "mib": ((optional_positive(r.get("model_bytes")) or 0)
                             + (optional_positive(r.get("context_bytes")) or 0)) / 2**20 or None,
                     "host_fraction": r.get("host_fraction"),
                     "device": d.get("device")})
    return rows


def read_torch(path):
    """peer_torch.py --json: {"results": [{"batch", "mode", "images_per_s", "peak_mib"}]}"""
    d = load_json(path)
    rows = []
    for r in need(d, "results", path, list):
        mode = need(r, "mode", path, str)
        cls = "bf16" if mode.startswith("bf16") else "tf32" if d.get("math") == "tf32" else "fp32"
        rows.append({"who": "torch", "mode": mode, "bf16": mode.startswith("bf16"), "cls": cls,
                     "batch": need(r, "batch", path, int),
                     "images_per_s": positive(r.get("images_per_s"), "images_per_s", path),
                     "ms_per_step": r.get("ms_per_step"), "mib": optional_positive(r.get("peak_mib")),
                     "device": d.get("device")})
    return rows


def read_keras(path):
    """peer_keras.py: one JSON object per line."""
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise Bad(f"{path}: {e.strerror}")
    except ValueError as e:  # not UTF-8
        raise Bad(f"{path}: not text ({e})")
    for k, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except ValueError as e:
            raise Bad(f"{path}:{k}: not JSON ({e})")
        if not isinstance(r, dict):
            raise Bad(f"{path}:{k}: not a JSON object")
        peak = r.get("peak_device_bytes")
        bf16 = r.get("dtype_policy") == "mixed_bfloat16"
        # a file without "math" predates --math: its GPU rows ran JAX's default, TF32
        math = r.get("math", "tf32" if r.get("device") not in (None, "cpu") else "fp32")
        cls = "bf16" if bf16 else "tf32" if math == "tf32" else "fp32"
        rows.append({"who": "keras", "bf16": bf16, "cls": cls,
                     "mode": r.get("backend", "keras") + ("" if cls == "fp32" else " " + cls),
                     "batch": need(r, "batch", path, int),
                     "images_per_s": positive(r.get("images_per_s"), "images_per_s", path),
                     "ms_per_step": r.get("median_step_ms"),
                     "mib": (optional_positive(peak) or 0) / 2**20 or None,
                     "device": r.get("device")})
    return rows


def compare(rows):
    """Per batch size: every row, and for each cnnkit row its ratios to the best torch mode and
    to the best peer of the same arithmetic class (bf16 against bf16 modes: issue 16 compares bf16
    with PyTorch autocast bf16; TF32 against TF32 runs; strict fp32 against strict fp32), and its
    memory against torch's smallest peak of that class (each cnnkit row's best_torch /
    best_peer)."""
    out = []
    for b in sorted({r["batch"] for r in rows}):
        at = [r for r in rows if r["batch"] == b]

        def best(cls):
            torch_rows = [r for r in at if r["who"] == "torch" and r["cls"] == cls]
            peers = [r for r in at if r["who"] != "cnnkit" and r["cls"] == cls]
            mib = [r["mib"] for r in torch_rows if isinstance(r["mib"], (int, float))]
            return (max(torch_rows, key=lambda r: r["images_per_s"], default=None),
                    max(peers, key=lambda r: r["images_per_s"], default=None), mib)

        entry = {"batch": b, "rows": at, "cnnkit": []}
        for r in (r for r in at if r["who"] == "cnnkit"):
            best_torch, best_peer, torch_mib = best(r["cls"])
            c = {"mode": r["mode"], "images_per_s": r["images_per_s"], "bf16": r["bf16"],
                 "cls": r["cls"], "best_torch": best_torch, "best_peer": best_peer,
                 "host_fraction": optional_positive(r.get("host_fraction"))
                 if r.get("device") == "cuda" else None,
                 "vs_best_torch": r["images_per_s"] / best_torch["images_per_s"]
                 if best_torch else None,
                 "vs_best_peer": r["images_per_s"] / best_peer["images_per_s"]
                 if best_peer else None,
                 "mib": r["mib"],
                 "mib_vs_torch": r["mib"] / min(torch_mib)
                 if torch_mib and isinstance(r["mib"], (int, float)) and min(torch_mib) > 0
                 else None}
            c["meets_speed_target"] = (c["vs_best_torch"] >= 1.0
                                       if c["vs_best_torch"] is not None else None)
            entry["cnnkit"].append(c)
            r["_entry"] = len(entry["cnnkit"]) - 1
        out.append(entry)
    return out


def fmt(v, spec):
    """v in spec, or a dash as wide (spec's leading digits)."""
    if isinstance(v, (int, float)):
        return format(v, spec)
    width = int("".join(ch for ch in spec.split(".")[0] if ch.isdigit()) or 0)
    return "-".rjust(width)


def text_table(table):
    lines = [f"{'batch':>6} {'who':>7} {'mode':>24} {'images/s':>10} {'ms/step':>9} {'MiB':>8}"
             f" {'host %':>7} {'vs torch':>9} {'vs best':>8}"]
    for e in table:
        for r in sorted(e["rows"], key=lambda r: (r["who"] != "cnnkit", r["who"], r["mode"])):
            c = e["cnnkit"][r["_entry"]] if r["who"] == "cnnkit" else None
            hf = c and c["host_fraction"]
            lines.append(f"{e['batch']:>6} {r['who']:>7} {r['mode'][:24]:>24} "
                         f"{r['images_per_s']:>10.0f} {fmt(r['ms_per_step'], '9.2f')} "
                         f"{fmt(r['mib'], '8.1f')} {fmt(hf * 100 if hf else None, '7.1f')} "
                         f"{fmt(c and c['vs_best_torch'], '8.2f') + ('x' if c and c['vs_best_torch'] else ' '):>9} "
                         f"{fmt(c and c['vs_best_peer'], '7.2f') + ('x' if c and c['vs_best_peer'] else ' '):>8}")
    return "\n".join(lines)


def markdown_table(table):
    lines = ["| batch | cnnkit setting | images/s | best PyTorch (mode) | ratio | best peer | ratio |"
             " MiB (cnnkit / PyTorch) | host part |", "|---|---|---|---|---|---|---|---|---|"]
    for e in table:
        for c in e["cnnkit"]:
            bt, bp = c["best_torch"], c["best_peer"]
            tmib = [r["mib"] for r in e["rows"] if r["who"] == "torch"
                    and r["cls"] == c["cls"] and isinstance(r["mib"], (int, float))]
            lines.append(
                f"| {e['batch']} | {c['mode']} | {c['images_per_s']:.0f} | "
                + (f"{bt['images_per_s']:.0f} ({bt['mode']})" if bt else "-") + " | "
                + (f"{c['vs_best_torch']:.2f}x" if c["vs_best_torch"] else "-") + " | "
                + (f"{bp['images_per_s']:.0f} ({bp['who']} {bp['mode']})" if bp else "-") + " | "
                + (f"{c['vs_best_peer']:.2f}x" if c["vs_best_peer"] else "-") + " | "
                + (f"{c['mib']:.0f} / {min(tmib):.0f}" if tmib and c["mib"] else "-") + " | "
                + (f"{100 * c['host_fraction']:.1f}%" if c["host_fraction"] else "-") + " |")
    return "\n".join(lines) + "\n"


def write_atomic(path, text, option):
    """text into path through a temporary file in its folder (nothing half-written is left)."""
    d = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".compare-")
    except OSError as e:
        raise Bad(f"{option} {path}: {e.strerror}")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; as an ordinary new file instead
        os.replace(tmp, path)
    except OSError as e:
        os.unlink(tmp)
        raise Bad(f"{option} {path}: {e.strerror}")


def run_all(a, tmp):
    """Runs the benches into tmp; returns (cnnkit files, torch file or None, keras file or None)."""
    here = os.path.dirname(os.path.abspath(__file__))
    bt = os.path.join(tmp, "bench_train.json")
    cmd = [a.bench_train, "--device", a.device, "--steps", str(a.steps), "--json", bt]
    cmd += (["--batches", a.batches] if a.batches else []) + (["--model", a.model] if a.model else [])
    cmd += a.bench_arg
    threads = ["--threads", str(a.threads)] if a.threads > 0 else []
    print("compare: " + " ".join(cmd), flush=True)
    if subprocess.call(cmd) != 0:
        raise Bad(f"{a.bench_train} failed")
    # the peers run where bench_train ran (auto: its choice), at its batch sizes
    ran = load_json(bt)
    device = "cuda" if ran.get("device") == "cuda" else "cpu"
    batches = ",".join(str(r["batch"]) for r in ran.get("results", []) if "batch" in r)
    if not batches:
        raise Bad(f"{a.bench_train} wrote no figures")
    torch_json = None
    if subprocess.call([a.python, "-c", "import torch"], stderr=subprocess.DEVNULL) == 0:
        torch_json = os.path.join(tmp, "peer_torch.json")
        cmd = [a.python, os.path.join(here, "peer_torch.py"), "--device", device, "--batches",
               batches, "--steps", str(a.steps), "--json", torch_json] + threads
        if ran.get("precision") == "bf16":  # bf16 figures compare with PyTorch's autocast bf16
            cmd += ["--precision", "bf16"]
        if ran.get("math") == "tf32":  # TF32 figures with PyTorch's TF32
            cmd += ["--math", "tf32"]
        print("compare: " + " ".join(cmd), flush=True)
        if subprocess.call(cmd) != 0:
            print("compare: peer_torch failed: its figures are left out", flush=True)
            torch_json = torch_json if os.path.exists(torch_json) else None
    else:
        print(f"compare: PyTorch skipped ({a.python} cannot import torch)", flush=True)
    keras_json = None
    kpy = a.keras_python or a.python
    # peer_keras.py runs Keras on JAX (its default backend); without it keras imports TensorFlow
    probe_env = dict(os.environ, KERAS_BACKEND="jax")
    if subprocess.call([kpy, "-c", "import keras"], stderr=subprocess.DEVNULL, env=probe_env) == 0:
        keras_json = os.path.join(tmp, "peer_keras.jsonl")
        with open(keras_json, "w") as out:
            for b in batches.split(","):
                cmd = [kpy, os.path.join(here, "peer_keras.py"), "--batch", b, "--steps",
                       str(a.steps)] + threads
                if ran.get("precision") == "bf16":  # the same arithmetic as bench_train's
                    cmd += ["--precision", "bf16"]
                if ran.get("math") == "tf32":
                    cmd += ["--math", "tf32"]
                print("compare: " + " ".join(cmd), flush=True)
                r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
                lines = [line for line in r.stdout.splitlines() if line.startswith("{")]
                if r.returncode != 0 or not lines:
                    print(f"compare: peer_keras at batch {b} failed: left out", flush=True)
                    continue
                out.write(lines[-1] + "\n")
    else:
        print(f"compare: Keras skipped ({kpy} cannot import keras)", flush=True)
    return [("", bt)], torch_json, keras_json


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cnnkit", action="append", default=[], metavar="[LABEL=]FILE")
    ap.add_argument("--torch", action="append", default=[],
                    help="peer_torch.py --json; repeat for its fp32 and bf16 runs")
    ap.add_argument("--keras")
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    ap.add_argument("--run", action="store_true")
    ap.add_argument("--bench-train", default="build/bench/bench_train")
    ap.add_argument("--batches", help="bench_train's default: 128,512 (and 2048 on a GPU)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--model")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--threads", type=int, default=0,
                    help="--run: the peers' CPU threads (0: their default), as cnnkit's")
    ap.add_argument("--bench-arg", action="append", default=[], metavar="ARG",
                    help="--run: one more argument for bench_train (e.g. --bench-arg=--conv-algo "
                         "--bench-arg=fastest)")
    ap.add_argument("--keras-python")
    try:
        a = ap.parse_args(argv)
    except SystemExit as e:
        return 2 if e.code else 0
    try:
        with tempfile.TemporaryDirectory(prefix="cnnkit-compare-") as tmp:
            cnnkit, torch_json, keras_json = [], list(a.torch), a.keras
            for spec in a.cnnkit:
                label, sep, path = spec.partition("=")
                if not sep or os.path.exists(spec):  # a file whose name holds '=' is a file
                    label, path = "", spec
                cnnkit.append((label, path))
            if a.run:
                if a.cnnkit or a.torch or a.keras:
                    raise Bad("--run measures its own figures: no --cnnkit, --torch or --keras")
                if a.steps < 1:
                    raise Bad(f"--steps: {a.steps} (must be >= 1)")
                cnnkit, torch_json, keras_json = run_all(a, tmp)
                torch_json = [torch_json] if torch_json else []
            rows = []
            for label, path in cnnkit:
                rows += read_cnnkit(label, path)
            for path in torch_json:
                rows += read_torch(path)
            if keras_json:
                rows += read_keras(keras_json)
    except Bad as e:
        print(f"compare: error: {e}", file=sys.stderr)
        return 2
    if not any(r["who"] == "cnnkit" for r in rows):
        print("compare: no cnnkit figures to compare (give --cnnkit FILE or --run)",
              file=sys.stderr)
        return 1
    # the same GPU is "cuda" to cnnkit and PyTorch and "gpu" to JAX
    devices = sorted({"cuda" if r["device"] == "gpu" else str(r["device"])
                      for r in rows if r["device"]})
    if len(devices) > 1:
        print(f"compare: warning: the figures come from different devices: {', '.join(devices)}")
    table = compare(rows)
    print(text_table(table))
    for e in table:
        for c in e["cnnkit"]:
            said = [f"batch {e['batch']}, cnnkit {c['mode']}: "]
            if c["vs_best_torch"] is not None:
                said.append(f"{c['vs_best_torch']:.2f}x the best PyTorch mode "
                            f"({c['best_torch']['mode']}) - target >= 1.0x: "
                            f"{'met' if c['meets_speed_target'] else 'NOT met'}")
            else:
                said.append(f"no PyTorch figure at batch {e['batch']}"
                            + (f" in {c['cls']}" if c["cls"] != "fp32" else ""))
            if c["mib_vs_torch"] is not None:
                said.append(f"; memory {c['mib']:.0f} MiB vs PyTorch's smallest peak "
                            f"{c['mib'] / c['mib_vs_torch']:.0f} MiB - target <=: "
                            f"{'met' if c['mib_vs_torch'] <= 1.0 else 'NOT met'}")
            if c["host_fraction"] is not None:
                said.append(f"; host part {100 * c['host_fraction']:.1f}% of the step"
                            + (f" - target <= 5%: {'met' if c['host_fraction'] <= 0.05 else 'NOT met'}"
                               if e["batch"] == 128 else ""))
            print("compare: " + "".join(said))
    for e in table:  # the rows' back references are the table's own business
        for r in e["rows"]:
            r.pop("_entry", None)
    try:
        if a.json:
            write_atomic(a.json, json.dumps({"devices": devices, "table": table}, indent=1) + "\n",
                         "--json")
        if a.markdown:
            write_atomic(a.markdown, markdown_table(table), "--markdown")
    except Bad as e:
        print(f"compare: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
