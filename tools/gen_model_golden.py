#!/usr/bin/python3
"""Generates tests/golden/model_golden.h: a whole-model cross-check of cnnkit against PyTorch
(used by tests/test_model_torch.c).

Usage (Debian's python with torch; /usr/bin/env python3 may lack it):
    /usr/bin/python3 tools/gen_model_golden.py tests/golden/model_golden.h
    /usr/bin/python3 tools/gen_model_golden.py > tests/golden/model_golden.h

The output is deterministic (fixed seed, CPU, float64 arithmetic): re-running it gives a
byte-identical header.

The model is a scaled-down version of the question's model, in Keras semantics, without dropout
(dropout RNGs differ between libraries):

    input 12x12x1
    Conv2D(4, (3,3))                 valid, use_bias
    BatchNormalization()             Keras: epsilon 1e-3, momentum 0.99
    Activation('relu')
    Conv2D(4, (3,3))
    BatchNormalization()
    Activation('relu')
    MaxPooling2D((2,2))
    Conv2D(6, (3,3), padding='same')
    BatchNormalization()
    Activation('relu')
    Flatten()                        Keras order: (N, H, W, C) flattened
    Dense(16)
    BatchNormalization()
    Activation('relu')
    Dense(10)
    Activation('softmax')

batch N = 5, integer labels, loss = mean sparse categorical cross-entropy.

Weights are drawn (seeded) as float32, in Keras get_weights() order and layouts (the order of
ck_model_set_weights): Conv2D kernel HWIO (kh, kw, cin, cout) then bias; BatchNormalization
gamma ~ U(0.5, 1.5), beta ~ U(-0.3, 0.3), moving_mean ~ U(-0.3, 0.3), moving_var ~ U(0.5, 2);
Dense kernel (in, out) then bias. Kernels ~ glorot_uniform, biases ~ U(-0.1, 0.1). The input x
is NHWC ~ U(-1, 1).

Expected values are computed in float64 from the float32 inputs, then rounded to float32:
  (1) the training-mode mean loss (BatchNormalization with batch statistics, biased variance);
  (2) the gradients of that mean loss w.r.t. every trainable array, in get_weights() order
      (moving statistics skipped);
  (3) inference-mode probabilities (BatchNormalization with the given moving statistics) and
      the inference-mode mean loss;
  (4) the moving statistics after one training-mode forward pass:
      moving = 0.99 moving + 0.01 batch (batch variance biased, as Keras does).

The reference ("route A") is PyTorch in NCHW: kernels converted HWIO -> OIHW, F.batch_norm,
F.max_pool2d, F.cross_entropy, and the conv output permuted to NHWC before flattening so the
Dense kernel (in, out) applies as in Keras. The script checks itself before writing anything:
  - route B, an independent hand-written NHWC implementation (shifted-slice convolutions on the
    HWIO kernels, reshape max pooling, explicit BN formulas, log-sum-exp loss), must agree with
    route A in float64 (loss, every gradient, probabilities, moving statistics) to 1e-10;
  - central finite differences in float64 on a sample of parameters must match autograd;
  - route A in float32 must agree with float64 to well under the C test's tolerance (this shows
    the case is well conditioned in single precision);
  - margins: every ReLU input in training mode is >= 1e-4 away from 0 and every max-pooling
    window's winner leads the runner-up by >= 1e-4 when positive, so float32 rounding cannot
    flip a kink (the seed is advanced until this holds).
"""
import math
import sys

import torch
import torch.nn.functional as F

BASE_SEED = 20240613
N, H, W, C = 5, 12, 12, 1
CLASSES = 10
EPS = 1e-3
MOMENTUM = 0.99
f32, f64 = torch.float32, torch.float64

# Keras layers: (class, args) -- the C test builds the same list.
LAYERS = [
    ("Conv2D", dict(filters=4, k=3, same=False)),
    ("BatchNormalization", {}),
    ("Activation", dict(act="relu")),
    ("Conv2D", dict(filters=4, k=3, same=False)),
    ("BatchNormalization", {}),
    ("Activation", dict(act="relu")),
    ("MaxPooling2D", dict(pool=2)),
    ("Conv2D", dict(filters=6, k=3, same=True)),
    ("BatchNormalization", {}),
    ("Activation", dict(act="relu")),
    ("Flatten", {}),
    ("Dense", dict(units=16)),
    ("BatchNormalization", {}),
    ("Activation", dict(act="relu")),
    ("Dense", dict(units=CLASSES)),
    ("Activation", dict(act="softmax")),
]


# ---- weights in Keras get_weights() order --------------------------------------------------------
def weight_specs():
    """[(layer index, keras layer name, array name, shape, trainable)] in get_weights() order."""
    specs = []
    h, w, c = H, W, C
    counters = {}
    flat = None
    for li, (cls, a) in enumerate(LAYERS):
        base = {"Conv2D": "conv2d", "BatchNormalization": "batch_normalization",
                "Activation": "activation", "MaxPooling2D": "max_pooling2d",
                "Flatten": "flatten", "Dense": "dense"}[cls]
        k = counters.get(base, 0)
        counters[base] = k + 1
        lname = base if k == 0 else f"{base}_{k}"
        if cls == "Conv2D":
            specs.append((li, lname, "kernel", (a["k"], a["k"], c, a["filters"]), True))
            specs.append((li, lname, "bias", (a["filters"],), True))
            if not a["same"]:
                h, w = h - a["k"] + 1, w - a["k"] + 1
            c = a["filters"]
        elif cls == "BatchNormalization":
            ch = c if flat is None else flat
            for nm, tr in (("gamma", True), ("beta", True), ("moving_mean", False),
                           ("moving_variance", False)):
                specs.append((li, lname, nm, (ch,), tr))
        elif cls == "MaxPooling2D":
            h, w = h // a["pool"], w // a["pool"]
        elif cls == "Flatten":
            flat = h * w * c
        elif cls == "Dense":
            specs.append((li, lname, "kernel", (flat, a["units"]), True))
            specs.append((li, lname, "bias", (a["units"],), True))
            flat = a["units"]
    return specs


SPECS = weight_specs()


def draw_weights(gen):
    ws = []
    for (_, _, nm, shape, _) in SPECS:
        def u(lo, hi):
            return (torch.rand(shape, generator=gen, dtype=f64) * (hi - lo) + lo).to(f32)
        if nm == "kernel":
            if len(shape) == 4:
                fan_in, fan_out = shape[0] * shape[1] * shape[2], shape[0] * shape[1] * shape[3]
            else:
                fan_in, fan_out = shape
            lim = math.sqrt(6.0 / (fan_in + fan_out))
            ws.append(u(-lim, lim))
        elif nm == "bias":
            ws.append(u(-0.1, 0.1))
        elif nm == "gamma":
            ws.append(u(0.5, 1.5))
        elif nm == "beta":
            ws.append(u(-0.3, 0.3))
        elif nm == "moving_mean":
            ws.append(u(-0.3, 0.3))
        else:
            ws.append(u(0.5, 2.0))
    return ws


# ---- route A: PyTorch NCHW with converted weights ------------------------------------------------
def route_a(x_nhwc, labels, ws, training, probe=None):
    """Returns (mean loss, logits, [(batch mean, biased batch var)] per BN, probs).
    probe (optional list) receives ('relu', input) and ('pool', input NCHW) tensors."""
    it = iter(ws)
    h = x_nhwc.permute(0, 3, 1, 2)  # NCHW
    stats = []
    flat = False
    for cls, a in LAYERS:
        if cls == "Conv2D":
            k, b = next(it), next(it)
            h = F.conv2d(h, k.permute(3, 2, 0, 1), b, padding=1 if a["same"] else 0)
        elif cls == "BatchNormalization":
            g, be, mm, mv = next(it), next(it), next(it), next(it)
            dims = (0,) if flat else (0, 2, 3)
            if training:
                stats.append((h.detach().mean(dims), h.detach().var(dims, unbiased=False)))
                h = F.batch_norm(h, None, None, g, be, training=True, eps=EPS)
            else:
                h = F.batch_norm(h, mm, mv, g, be, training=False, eps=EPS)
        elif cls == "Activation":
            if a["act"] == "relu":
                if probe is not None:
                    probe.append(("relu", h.detach()))
                h = F.relu(h)
            # softmax: applied to the logits below (the loss takes logits)
        elif cls == "MaxPooling2D":
            if probe is not None:
                probe.append(("pool", h.detach()))
            h = F.max_pool2d(h, a["pool"])
        elif cls == "Flatten":
            h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)  # Keras (NHWC) order
            flat = True
        elif cls == "Dense":
            k, b = next(it), next(it)
            h = h @ k + b
    loss = F.cross_entropy(h, labels)
    return loss, h, stats, F.softmax(h, dim=1)


# ---- route B: independent NHWC implementation ---------------------------------------------------
def conv_nhwc(x, k, b, same):
    kh, kw = k.shape[0], k.shape[1]
    if same:
        x = F.pad(x, (0, 0, (kw - 1) // 2, kw - 1 - (kw - 1) // 2,
                      (kh - 1) // 2, kh - 1 - (kh - 1) // 2))
    oh, ow = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    y = b.reshape(1, 1, 1, -1)
    for i in range(kh):
        for j in range(kw):
            y = y + torch.einsum("nhwc,co->nhwo", x[:, i:i + oh, j:j + ow, :], k[i, j])
    return y


def route_b(x_nhwc, labels, ws, training):
    it = iter(ws)
    h = x_nhwc
    stats = []
    for cls, a in LAYERS:
        if cls == "Conv2D":
            k, b = next(it), next(it)
            h = conv_nhwc(h, k, b, a["same"])
        elif cls == "BatchNormalization":
            g, be, mm, mv = next(it), next(it), next(it), next(it)
            dims = tuple(range(h.dim() - 1))  # all but the (last) channel axis
            if training:
                cnt = 1
                for d in dims:
                    cnt *= h.shape[d]
                mean = h.sum(dims) / cnt
                var = ((h - mean) ** 2).sum(dims) / cnt
                stats.append((mean.detach(), var.detach()))
            else:
                mean, var = mm, mv
            h = (h - mean) / torch.sqrt(var + EPS) * g + be
        elif cls == "Activation":
            if a["act"] == "relu":
                h = torch.where(h > 0, h, torch.zeros_like(h))
        elif cls == "MaxPooling2D":
            p = a["pool"]
            n_, hh, ww, cc = h.shape
            h = h[:, :hh // p * p, :ww // p * p, :].reshape(n_, hh // p, p, ww // p, p, cc)
            h = h.amax(dim=(2, 4))
        elif cls == "Flatten":
            h = h.reshape(h.shape[0], -1)
        elif cls == "Dense":
            k, b = next(it), next(it)
            h = torch.einsum("ni,io->no", h, k) + b
    z = h - h.max(dim=1, keepdim=True).values
    logp = z - torch.log(torch.exp(z).sum(dim=1, keepdim=True))
    loss = -logp[torch.arange(h.shape[0]), labels].mean()
    return loss, h, stats, torch.exp(logp)


# ---- evaluation ---------------------------------------------------------------------------------
def evaluate(route, x32, labels, ws32, dtype):
    """Everything the header holds, computed in dtype from the float32 inputs."""
    x = x32.to(dtype)
    ws = [w.to(dtype).requires_grad_(tr) for w, (_, _, _, _, tr) in zip(ws32, SPECS)]
    loss, _, stats, _ = route(x, labels, ws, True)
    trainable = [w for w, s in zip(ws, SPECS) if s[4]]
    grads = torch.autograd.grad(loss, trainable)
    with torch.no_grad():
        iloss, _, _, probs = route(x, labels, [w.detach() for w in ws], False)
    # moving statistics after one training-mode forward pass (Keras momentum, biased variance)
    moving = []
    si = 0
    for w, s in zip(ws, SPECS):
        if s[2] == "moving_mean":
            moving.append(MOMENTUM * w.detach() + (1 - MOMENTUM) * stats[si][0])
        elif s[2] == "moving_variance":
            moving.append(MOMENTUM * w.detach() + (1 - MOMENTUM) * stats[si][1])
            si += 1
    return dict(loss=loss.detach(), grads=[g.detach() for g in grads], iloss=iloss,
                probs=probs, moving=moving)


def rel_err(a, b):
    """max |a - b| / max(1, max |b|) -- the C test's measure."""
    a, b = a.to(f64), b.to(f64)
    return ((a - b).abs().max() / max(1.0, b.abs().max().item())).item()


def compare(r1, r2):
    errs = {"loss": rel_err(r1["loss"].reshape(1), r2["loss"].reshape(1)),
            "iloss": rel_err(r1["iloss"].reshape(1), r2["iloss"].reshape(1)),
            "probs": rel_err(r1["probs"], r2["probs"])}
    errs["grads"] = max(rel_err(a, b) for a, b in zip(r1["grads"], r2["grads"]))
    errs["moving"] = max(rel_err(a, b) for a, b in zip(r1["moving"], r2["moving"]))
    return errs


def margins(x32, labels, ws32):
    probe = []
    with torch.no_grad():
        route_a(x32.to(f64), labels, [w.to(f64) for w in ws32], True, probe)
    relu_min, pool_min = float("inf"), float("inf")
    for kind, t in probe:
        if kind == "relu":
            relu_min = min(relu_min, t.abs().min().item())
        else:  # NCHW, 2x2 windows
            n_, c_, hh, ww = t.shape
            win = t[:, :, :hh // 2 * 2, :ww // 2 * 2].reshape(n_, c_, hh // 2, 2, ww // 2, 2)
            win = win.permute(0, 1, 2, 4, 3, 5).reshape(-1, 4)
            top2 = win.topk(2, dim=1).values
            pos = top2[:, 0] > 0
            if pos.any():
                pool_min = min(pool_min, (top2[pos, 0] - top2[pos, 1]).min().item())
    return relu_min, pool_min


def draw(seed):
    gen = torch.Generator().manual_seed(seed)
    x32 = (torch.rand((N, H, W, C), generator=gen, dtype=f64) * 2 - 1).to(f32)
    labels = torch.randint(0, CLASSES, (N,), generator=gen)
    ws32 = draw_weights(gen)
    return x32, labels, ws32


def main():
    seed = BASE_SEED
    while True:
        x32, labels, ws32 = draw(seed)
        relu_min, pool_min = margins(x32, labels, ws32)
        if relu_min >= 1e-4 and pool_min >= 1e-4:
            break
        seed += 1
        assert seed < BASE_SEED + 100, "no seed with safe margins"

    ref = evaluate(route_a, x32, labels, ws32, f64)
    alt = evaluate(route_b, x32, labels, ws32, f64)
    e_ab = compare(alt, ref)
    assert all(v < 1e-10 for v in e_ab.values()), ("route A vs route B (float64)", e_ab)
    single = evaluate(route_a, x32, labels, ws32, f32)
    e_32 = compare(single, ref)
    assert all(v < 2e-5 for v in e_32.values()), ("float32 vs float64", e_32)

    # finite differences (float64) on a sample of trainable parameters
    gen = torch.Generator().manual_seed(seed)
    tr_idx = [i for i, s in enumerate(SPECS) if s[4]]
    fd_err = 0.0
    for gi, wi in enumerate(tr_idx):
        for _ in range(3):
            j = int(torch.randint(0, ws32[wi].numel(), (1,), generator=gen))
            hstep = 1e-6
            vals = []
            for sgn in (1, -1):
                ws = [w.to(f64).clone() for w in ws32]
                ws[wi].view(-1)[j] += sgn * hstep
                with torch.no_grad():
                    vals.append(route_a(x32.to(f64), labels, ws, True)[0].item())
            fd = (vals[0] - vals[1]) / (2 * hstep)
            fd_err = max(fd_err, abs(fd - ref["grads"][gi].reshape(-1)[j].item()))
    assert fd_err < 1e-7, ("finite differences", fd_err)

    # ---- header -------------------------------------------------------------------------------
    def fmt(v):
        s = "%.9g" % v  # 9 significant digits round-trip float32 exactly
        if "." not in s and "e" not in s and "n" not in s:
            s += ".0"
        return s + "f"

    blocks = []

    def array(name, tensors, comment):
        vals = torch.cat([t.detach().reshape(-1).to(f64) for t in tensors]).to(f32).tolist()
        out = [f"/* {comment} */", f"static const float {name}[{len(vals)}] = {{"]
        for i in range(0, len(vals), 5):
            out.append("    " + ", ".join(fmt(v) for v in vals[i:i + 5]) + ",")
        out.append("};")
        blocks.append("\n".join(out))

    array("mg_x", [x32], "input x, NHWC (N, H, W, C)")
    array("mg_weights", ws32, "all weights, Keras get_weights() order (ck_model_set_weights)")
    array("mg_grads", ref["grads"],
          "d(mean training loss)/d(trainable array), get_weights() order, moving stats skipped")
    array("mg_probs", [ref["probs"]], "inference-mode probabilities (N, CLASSES)")
    array("mg_moving_after", ref["moving"],
          "moving_mean, moving_variance of each BN after one training forward pass")

    rows = []
    w_off = g_off = m_off = 0
    for (li, lname, nm, shape, tr) in SPECS:
        cnt = 1
        for d in shape:
            cnt *= d
        shp = "x".join(str(d) for d in shape)
        rows.append(f'    {{"{lname}/{nm}", "{shp}", {li}, {cnt}, {w_off}, {int(tr)}, '
                    f'{g_off if tr else m_off}}},')
        w_off += cnt
        if tr:
            g_off += cnt
        else:
            m_off += cnt

    lines = [
        "/* Generated by tools/gen_model_golden.py -- do not edit; re-run the script instead:",
        " *     /usr/bin/python3 tools/gen_model_golden.py tests/golden/model_golden.h",
        f" * Whole-model cross-check against PyTorch (torch {torch.__version__}, seed {seed}).",
        " * Model (Keras semantics, no dropout): input 12x12x1; Conv2D(4,3x3) BN relu",
        " * Conv2D(4,3x3) BN relu MaxPooling2D(2) Conv2D(6,3x3,same) BN relu Flatten Dense(16) BN",
        " * relu Dense(10) softmax; BN epsilon 1e-3, momentum 0.99; N = 5; mean sparse categorical",
        " * cross-entropy.",
        " * Inputs are float32; expected values were computed in float64 from them and rounded to",
        " * float32. Layouts: x NHWC, conv kernels HWIO, dense kernels (in, out).",
        " * Self-checks passed when this was written (max |a - b| / max(1, max |b|)):",
        " *   independent NHWC implementation vs PyTorch (float64): %.2e" % max(e_ab.values()),
        " *   PyTorch float32 vs float64: loss %.2e, gradients %.2e, moving statistics %.2e,"
        % (e_32["loss"], e_32["grads"], e_32["moving"]),
        " *     inference probabilities %.2e, inference loss %.2e" % (e_32["probs"], e_32["iloss"]),
        " *   finite differences vs autograd (float64, absolute): %.2e" % fd_err,
        " *   margins: min |ReLU input| %.2e, min max-pool lead %.2e" % (relu_min, pool_min),
        " */",
        "#ifndef CNNKIT_TESTS_GOLDEN_MODEL_GOLDEN_H",
        "#define CNNKIT_TESTS_GOLDEN_MODEL_GOLDEN_H",
        "",
        "#include <stddef.h>",
        "#include <stdint.h>",
        "",
        f"#define MG_N {N}",
        f"#define MG_H {H}",
        f"#define MG_W {W}",
        f"#define MG_C {C}",
        f"#define MG_CLASSES {CLASSES}",
        f"#define MG_NUM_LAYERS {len(LAYERS)}",
        f"#define MG_NUM_ARRAYS {len(SPECS)}",
        f"#define MG_WEIGHT_COUNT {w_off}",
        f"#define MG_TRAINABLE_COUNT {g_off}",
        f"#define MG_MOVING_COUNT {m_off}",
        "/* mean sparse categorical cross-entropy, training mode (batch statistics) */",
        "#define MG_LOSS_TRAIN %.17g" % ref["loss"].item(),
        "/* the same in inference mode (moving statistics) */",
        "#define MG_LOSS_INFER %.17g" % ref["iloss"].item(),
        "",
        "static const int32_t mg_labels[MG_N] = {" + ", ".join(str(int(v)) for v in labels) + "};",
        "",
        "/* One weight array in get_weights() order. off: into mg_weights; at: into mg_grads when",
        " * trainable, else into mg_moving_after. */",
        "typedef struct mg_array {",
        "    const char *name, *shape;",
        "    int layer;",
        "    size_t count, off;",
        "    int trainable;",
        "    size_t at;",
        "} mg_array;",
        "",
        "static const mg_array mg_arrays[MG_NUM_ARRAYS] = {",
        *rows,
        "};",
        "",
    ]
    text = "\n".join(lines) + "\n" + "\n\n".join(blocks) + "\n\n#endif\n"
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    sys.stderr.write("seed %d; route A vs B %.2e; float32 vs float64 %s; fd %.2e; margins %.2e "
                     "%.2e\n" % (seed, max(e_ab.values()), {k: "%.2e" % v for k, v in
                                                            e_32.items()}, fd_err, relu_min,
                                                           pool_min))


if __name__ == "__main__":
    main()
