#!/usr/bin/python3
"""Generates tests/golden/layers_golden.h: golden vectors for the CPU layer reference
(src/host/backend/cpu/cpu_layers.c), computed once with PyTorch.

Usage (Debian's python with torch; /usr/bin/env python3 may lack it):
    /usr/bin/python3 tools/gen_layer_golden.py > tests/golden/layers_golden.h
    /usr/bin/python3 tools/gen_layer_golden.py tests/golden/layers_golden.h

The output is deterministic (fixed seed, CPU, float64 arithmetic): re-running it gives a
byte-identical header. Inputs are drawn as float32 (what the C tests use); every expected value
is computed in float64 from those float32 inputs and only then rounded to float32.

Layouts follow Keras / cnnkit: images NHWC, conv kernels HWIO (kh, kw, cin, cout). The script
converts to PyTorch's NCHW / OIHW, computes, and converts the results back to NHWC / HWIO.

 a. Conv2D, y = conv2d(x, k) + bias, for several geometries (valid/same, strides 1..3, odd
    sizes, even kernels, 1x1). TF 'same' padding: oh = ceil(h / sh),
    pad_total = max((oh - 1) sh + kh - h, 0), pad_top = pad_total // 2, the rest at the bottom
    (likewise left/right); applied with an explicit F.pad since PyTorch pads symmetrically.
    With a fixed upstream gradient dy: dx, dk (HWIO), dbias from torch.autograd.
 b. MaxPooling2D / AveragePooling2D, TF semantics: padded cells never win the max (F.pad with
    -inf) and are excluded from the average (sum of zero-padded x divided by the number of real
    cells, = avg_pool(pad(x)) / avg_pool(pad(ones))). Backward for a fixed dy via autograd
    (inputs are random, so max windows have no ties).
 c. Activations over a (rows, 8) array with values in [-4, 4] kept >= 0.05 away from 0:
    relu, sigmoid, tanh, softmax (last axis), elu(alpha 0.7), leaky_relu(alpha 0.3),
    gelu (exact erf), swish (x sigmoid(x)); y and dx = autograd for a fixed dy.
 d. Sparse softmax cross-entropy from logits: loss sum of -log softmax[label] and
    dlogits = d(mean loss)/dlogits = (softmax - onehot) / n (F.cross_entropy, reduction mean).
 e. Optimizers, 3 steps with given gradients, Keras formulas written by hand in float64:
      Adam: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; alpha = lr sqrt(1-b2^t)/(1-b1^t);
            p -= alpha m / (sqrt(v) + eps)
            (cross-checked on step 1 against torch.optim.Adam with eps_torch = eps/sqrt(1-b2))
      SGD nesterov: vel = mom vel - lr g; p += mom vel - lr g
            (cross-checked against torch.optim.SGD(nesterov=True): the same for constant lr)
"""
import math
import sys

import torch
import torch.nn.functional as F

SEED = 20240612
torch.manual_seed(SEED)
f32, f64 = torch.float32, torch.float64


def close(a, b, tol=1e-12):
    return torch.allclose(a, b, rtol=tol, atol=tol)


def same_pad(size, k, s):
    o = (size + s - 1) // s
    total = max((o - 1) * s + k - size, 0)
    return o, total // 2, total - total // 2


def out_geom(h, w, kh, kw, sh, sw, same):
    if same:
        oh, pt, pb = same_pad(h, kh, sh)
        ow, pl, pr = same_pad(w, kw, sw)
    else:
        oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
        pt = pb = pl = pr = 0
    return oh, ow, (pl, pr, pt, pb)  # F.pad order: last dim first


def nhwc_to_nchw(t):
    return t.permute(0, 3, 1, 2)


def nchw_to_nhwc(t):
    return t.permute(0, 2, 3, 1).contiguous()


# ---- formatting ----------------------------------------------------------------------------------
def fmt(v):
    if math.isinf(v):
        return "-INFINITY" if v < 0 else "INFINITY"
    s = "%.9g" % v  # 9 significant digits round-trip float32 exactly
    if "." not in s and "e" not in s and "n" not in s:
        s += ".0"
    return s + "f"


blocks = []


def array(name, t, comment, ctype="float"):
    vals = t.detach().reshape(-1)
    if ctype == "float":
        vals = vals.to(f32).tolist()  # float64 -> float32 rounding happens here
        items = [fmt(v) for v in vals]
    else:
        items = [str(int(v)) for v in vals.tolist()]
    out = [f"/* {comment} */", f"static const {ctype} {name}[{len(items)}] = {{"]
    per_line = 5
    for i in range(0, len(items), per_line):
        out.append("    " + ", ".join(items[i:i + per_line]) + ",")
    out.append("};")
    blocks.append("\n".join(out))


# ---- a. Conv2D -----------------------------------------------------------------------------------
# name, n, h, w, cin, cout, kh, kw, sh, sw, same, bias
CONV_CASES = [
    ("valid_s1", 2, 7, 6, 3, 4, 3, 2, 1, 1, 0, 1),
    ("same_s2", 2, 7, 8, 3, 5, 3, 3, 2, 2, 1, 1),
    ("same_s1_even", 1, 5, 6, 2, 3, 2, 4, 1, 1, 1, 0),
    ("valid_s23", 2, 9, 7, 4, 3, 3, 3, 2, 3, 0, 1),
    ("same_s3_big", 1, 4, 5, 2, 2, 5, 5, 3, 3, 1, 1),
    ("pointwise", 2, 3, 4, 5, 6, 1, 1, 1, 1, 0, 1),
]

conv_rows = []
for (name, n, h, w, cin, cout, kh, kw, sh, sw, same, use_bias) in CONV_CASES:
    oh, ow, pad = out_geom(h, w, kh, kw, sh, sw, same)
    x32 = torch.randn(n, h, w, cin, dtype=f32)
    k32 = (torch.randn(kh, kw, cin, cout, dtype=f32) * 0.5).to(f32)
    b32 = (torch.randn(cout, dtype=f32) * 0.3).to(f32)
    dy32 = torch.randn(n, oh, ow, cout, dtype=f32)
    x = x32.to(f64).requires_grad_(True)
    k = k32.to(f64).requires_grad_(True)
    b = b32.to(f64).requires_grad_(True)
    xin = F.pad(nhwc_to_nchw(x), pad)
    y = F.conv2d(xin, k.permute(3, 2, 0, 1), b if use_bias else None, stride=(sh, sw))
    y = nchw_to_nhwc(y)
    assert tuple(y.shape) == (n, oh, ow, cout), (name, y.shape)
    y.backward(dy32.to(f64))
    p = f"lg_conv_{name}"
    array(p + "_x", x32, f"conv {name}: x (n, h, w, cin)")
    array(p + "_k", k32, f"conv {name}: kernel (kh, kw, cin, cout)")
    array(p + "_b", b32, f"conv {name}: bias (cout)" + ("" if use_bias else " (unused)"))
    array(p + "_y", y, f"conv {name}: y (n, oh, ow, cout)")
    array(p + "_dy", dy32, f"conv {name}: dy")
    array(p + "_dx", x.grad, f"conv {name}: dx")
    array(p + "_dk", k.grad, f"conv {name}: dk (HWIO)")
    array(p + "_db", b.grad if use_bias else torch.zeros(cout), f"conv {name}: dbias")
    conv_rows.append(
        f"    {{\"{name}\", {n}, {h}, {w}, {cin}, {cout}, {kh}, {kw}, {sh}, {sw}, {same}, "
        f"{use_bias}, {oh}, {ow}, {pad[2]}, {pad[0]},\n" +
        "".join(f"     {p}_{s},\n" for s in ("x", "k", "b", "y", "dy", "dx", "dk")) +
        f"     {p}_db}},")

# ---- b. pooling ----------------------------------------------------------------------------------
# name, is_max, n, h, w, c, kh, kw, sh, sw, same
POOL_CASES = [
    ("max_valid_2x2", 1, 2, 7, 5, 3, 2, 2, 2, 2, 0),
    ("max_same_2x2", 1, 2, 7, 5, 3, 2, 2, 2, 2, 1),
    ("max_valid_3x3s2", 1, 2, 9, 7, 2, 3, 3, 2, 2, 0),
    ("max_same_3x3s2", 1, 1, 8, 7, 3, 3, 3, 2, 2, 1),
    ("max_same_3x3s1", 1, 1, 5, 6, 2, 3, 3, 1, 1, 1),
    ("avg_valid_2x2", 0, 2, 7, 5, 3, 2, 2, 2, 2, 0),
    ("avg_same_2x2", 0, 2, 7, 5, 3, 2, 2, 2, 2, 1),
    ("avg_valid_3x3s2", 0, 2, 9, 7, 2, 3, 3, 2, 2, 0),
    ("avg_same_3x3s2", 0, 1, 8, 7, 3, 3, 3, 2, 2, 1),
    ("avg_same_3x2s1", 0, 1, 5, 6, 2, 3, 2, 1, 1, 1),
]

pool_rows = []
for (name, is_max, n, h, w, c, kh, kw, sh, sw, same) in POOL_CASES:
    oh, ow, pad = out_geom(h, w, kh, kw, sh, sw, same)
    x32 = torch.randn(n, h, w, c, dtype=f32)
    dy32 = torch.randn(n, oh, ow, c, dtype=f32)
    x = x32.to(f64).requires_grad_(True)
    xc = nhwc_to_nchw(x)
    if is_max:
        y = F.max_pool2d(F.pad(xc, pad, value=-math.inf), (kh, kw), (sh, sw))
    else:
        s = F.avg_pool2d(F.pad(xc, pad), (kh, kw), (sh, sw))
        cnt = F.avg_pool2d(F.pad(torch.ones_like(xc), pad), (kh, kw), (sh, sw))
        y = s / cnt
    y = nchw_to_nhwc(y)
    assert tuple(y.shape) == (n, oh, ow, c), (name, y.shape)
    y.backward(dy32.to(f64))
    p = f"lg_pool_{name}"
    array(p + "_x", x32, f"pool {name}: x (n, h, w, c)")
    array(p + "_y", y, f"pool {name}: y (n, oh, ow, c)")
    array(p + "_dy", dy32, f"pool {name}: dy")
    array(p + "_dx", x.grad, f"pool {name}: dx")
    pool_rows.append(
        f"    {{\"{name}\", {is_max}, {n}, {h}, {w}, {c}, {kh}, {kw}, {sh}, {sw}, {same}, "
        f"{oh}, {ow},\n     {p}_x, {p}_y,\n     {p}_dy, {p}_dx}},")

# ---- c. activations ------------------------------------------------------------------------------
ACT_ROWS, ACT_C = 6, 8
ELU_ALPHA, LEAKY_ALPHA = 0.7, 0.3
mag = 0.05 + 3.95 * torch.rand(ACT_ROWS, ACT_C, dtype=f32)
sign = torch.where(torch.rand(ACT_ROWS, ACT_C) < 0.5, -1.0, 1.0).to(f32)
ax32 = (mag * sign).to(f32)
ady32 = torch.randn(ACT_ROWS, ACT_C, dtype=f32)
array("lg_act_x", ax32, f"activations: x ({ACT_ROWS} rows x {ACT_C} channels)")
array("lg_act_dy", ady32, "activations: dy")

ACTS = [  # (ck_activation name, torch function)
    ("CK_ACT_NONE", lambda t: t),
    ("CK_ACT_RELU", torch.relu),
    ("CK_ACT_SIGMOID", torch.sigmoid),
    ("CK_ACT_TANH", torch.tanh),
    ("CK_ACT_SOFTMAX", lambda t: torch.softmax(t, dim=-1)),
    ("CK_ACT_ELU", lambda t: F.elu(t, alpha=ELU_ALPHA)),
    ("CK_ACT_LEAKY_RELU", lambda t: F.leaky_relu(t, negative_slope=LEAKY_ALPHA)),
    ("CK_ACT_GELU", lambda t: F.gelu(t)),  # exact erf form
    ("CK_ACT_SWISH", lambda t: t * torch.sigmoid(t)),
]
act_rows = []
for (cname, fn) in ACTS:
    x = ax32.to(f64).requires_grad_(True)
    y = fn(x)
    y.backward(ady32.to(f64))
    short = cname[len("CK_ACT_"):].lower()
    if cname == "CK_ACT_SWISH":
        assert close(y, F.silu(x))
    if cname == "CK_ACT_GELU":
        assert close(y, 0.5 * x * (1 + torch.erf(x / math.sqrt(2))))
    alpha = ELU_ALPHA if cname == "CK_ACT_ELU" else (LEAKY_ALPHA if cname == "CK_ACT_LEAKY_RELU"
                                                     else 0.0)
    array(f"lg_act_{short}_y", y, f"{cname}: y")
    array(f"lg_act_{short}_dx", x.grad, f"{cname}: dx")
    act_rows.append(f"    {{{cname}, {fmt(alpha)}, lg_act_{short}_y, lg_act_{short}_dx}},")

# ---- d. softmax cross-entropy --------------------------------------------------------------------
XN, XC = 5, 7
lx32 = (torch.randn(XN, XC, dtype=f32) * 2.0).to(f32)
labels = torch.randint(0, XC, (XN,))
labels[0] = int(lx32[0].argmax())  # some samples classified correctly
labels[3] = int(lx32[3].argmax())
lx = lx32.to(f64).requires_grad_(True)
loss = F.cross_entropy(lx, labels, reduction="mean")
loss.backward()
loss_sum = float(loss) * XN
correct = int((lx.detach().argmax(dim=1) == labels).sum())
array("lg_xent_logits", lx32, f"softmax xent: logits ({XN} x {XC})")
array("lg_xent_labels", labels, "softmax xent: labels", ctype="int32_t")
array("lg_xent_dlogits", lx.grad, "softmax xent: (softmax - onehot) / n")

# ---- e. optimizers -------------------------------------------------------------------------------
OPT_COUNT, OPT_STEPS = 16, 3
p0_32 = torch.randn(OPT_COUNT, dtype=f32)
g32 = torch.randn(OPT_STEPS, OPT_COUNT, dtype=f32)
g32[1, 3] = 0.0  # a zero gradient entry
array("lg_opt_p0", p0_32, "optimizers: initial parameters")
array("lg_opt_g", g32, f"optimizers: gradients of steps 1..{OPT_STEPS}")

ADAM_LR, ADAM_B1, ADAM_B2, ADAM_EPS = 0.01, 0.9, 0.999, 1e-7
# the C code receives float32 hyper-parameters: use exactly those values
lr, b1, b2, eps = (float(torch.tensor(v, dtype=f32)) for v in (ADAM_LR, ADAM_B1, ADAM_B2,
                                                                ADAM_EPS))
p = p0_32.to(f64).clone()
m = torch.zeros(OPT_COUNT, dtype=f64)
v = torch.zeros(OPT_COUNT, dtype=f64)
adam_p = []
for t in range(1, OPT_STEPS + 1):
    g = g32[t - 1].to(f64)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    alpha = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    p = p - alpha * m / (torch.sqrt(v) + eps)
    adam_p.append(p.clone())
    if t == 1:
        tp = p0_32.to(f64).clone().requires_grad_(True)
        opt = torch.optim.Adam([tp], lr=lr, betas=(b1, b2), eps=eps / math.sqrt(1 - b2))
        tp.grad = g.clone()
        opt.step()
        assert close(tp.detach(), p, 1e-10)
array("lg_adam_p", torch.stack(adam_p), "Adam (lr 0.01, 0.9, 0.999, eps 1e-7): p after each step")

SGD_LR, SGD_MOM = 0.05, 0.9
lr, mom = (float(torch.tensor(v, dtype=f32)) for v in (SGD_LR, SGD_MOM))
p = p0_32.to(f64).clone()
vel = torch.zeros(OPT_COUNT, dtype=f64)
tp = p0_32.to(f64).clone().requires_grad_(True)
opt = torch.optim.SGD([tp], lr=lr, momentum=mom, nesterov=True)
sgd_p = []
for t in range(OPT_STEPS):
    g = g32[t].to(f64)
    vel = mom * vel - lr * g
    p = p + mom * vel - lr * g
    sgd_p.append(p.clone())
    tp.grad = g.clone()
    opt.step()
    assert close(tp.detach(), p, 1e-10)
array("lg_sgd_p", torch.stack(sgd_p), "SGD nesterov (lr 0.05, momentum 0.9): p after each step")

# ---- header --------------------------------------------------------------------------------------
header = f"""/* Generated by tools/gen_layer_golden.py -- do not edit; re-run the script instead:
 *     /usr/bin/python3 tools/gen_layer_golden.py > tests/golden/layers_golden.h
 * Golden vectors for the CPU layer reference (torch {torch.__version__}, seed {SEED}).
 * Inputs are float32; expected values were computed in float64 from them and rounded to float32.
 * Images are NHWC, conv kernels HWIO (Keras order). See the script's docstring for the formulas.
 */
#ifndef CNNKIT_TESTS_GOLDEN_LAYERS_GOLDEN_H
#define CNNKIT_TESTS_GOLDEN_LAYERS_GOLDEN_H

#include <math.h>
#include <stdint.h>

#include "cnnkit/cnnkit.h"

#define LG_ACT_ROWS {ACT_ROWS}
#define LG_ACT_C {ACT_C}
#define LG_XENT_N {XN}
#define LG_XENT_CLASSES {XC}
#define LG_XENT_LOSS_SUM {loss_sum!r}
#define LG_XENT_CORRECT {correct}
#define LG_OPT_COUNT {OPT_COUNT}
#define LG_OPT_STEPS {OPT_STEPS}
#define LG_ADAM_LR {ADAM_LR}f
#define LG_ADAM_B1 {ADAM_B1}f
#define LG_ADAM_B2 {ADAM_B2}f
#define LG_ADAM_EPS {ADAM_EPS}f
#define LG_SGD_LR {SGD_LR}f
#define LG_SGD_MOMENTUM {SGD_MOM}f

typedef struct lg_conv_case {{
    const char *name;
    int n, h, w, cin, cout, kh, kw, sh, sw, same, use_bias;
    int oh, ow, pad_top, pad_left; /* expected geometry */
    const float *x, *k, *bias, *y, *dy, *dx, *dk, *dbias;
}} lg_conv_case;

typedef struct lg_pool_case {{
    const char *name;
    int is_max, n, h, w, c, kh, kw, sh, sw, same;
    int oh, ow;
    const float *x, *y, *dy, *dx;
}} lg_pool_case;

typedef struct lg_act_case {{
    ck_activation act;
    float alpha;
    const float *y, *dx;
}} lg_act_case;

"""
tables = [
    "static const lg_conv_case lg_conv_cases[] = {\n" + "\n".join(conv_rows) + "\n};",
    "static const lg_pool_case lg_pool_cases[] = {\n" + "\n".join(pool_rows) + "\n};",
    "static const lg_act_case lg_act_cases[] = {\n" + "\n".join(act_rows) + "\n};",
    "#define LG_CONV_CASES ((int)(sizeof lg_conv_cases / sizeof lg_conv_cases[0]))\n"
    "#define LG_POOL_CASES ((int)(sizeof lg_pool_cases / sizeof lg_pool_cases[0]))\n"
    "#define LG_ACT_CASES ((int)(sizeof lg_act_cases / sizeof lg_act_cases[0]))",
]
text = (header + "\n\n".join(blocks) + "\n\n" + "\n\n".join(tables) +
        "\n\n#endif /* CNNKIT_TESTS_GOLDEN_LAYERS_GOLDEN_H */\n")

if len(sys.argv) > 1:
    with open(sys.argv[1], "w") as f:
        f.write(text)
else:
    sys.stdout.write(text)
