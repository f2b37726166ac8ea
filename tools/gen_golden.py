#!/usr/bin/python3
"""Generates tests/golden/bn_golden.h: BatchNorm+ReLU golden vectors computed once with PyTorch.

Usage (Debian's python with torch; /usr/bin/env python3 may lack it):
    /usr/bin/python3 tools/gen_golden.py > tests/golden/bn_golden.h
    /usr/bin/python3 tools/gen_golden.py tests/golden/bn_golden.h

The output is deterministic (fixed seed, CPU, float64 arithmetic): re-running it must give a
byte-identical header. Inputs are drawn as float32 (they are what the C tests upload); every
expected value is computed in float64 from those float32 inputs and only then rounded to float32.

What is computed (x: N=3, C=4, H=5, W=6, NCHW order; all arrays are in logical NCHW order):

 a. PyTorch-convention training forward, exactly
        y = relu(torch.nn.functional.batch_norm(x, running_mean, running_var, gamma, beta,
                                                training=True, momentum=0.1, eps=1e-5))
    from random nonzero initial running stats. Expected: y, the updated running_mean and
    running_var (PyTorch stores the *unbiased* batch variance in the running average), and the
    saved mean / invstd = 1/sqrt(var_biased + eps) (from torch.native_batch_norm).

 b. Keras-convention training forward. Keras is not installed, so it is written by hand with
    torch ops (tf.keras.layers.BatchNormalization(momentum=0.99, epsilon=1e-3) semantics):
        mean_b  = mean(x over N, H, W)
        var_b   = mean((x - mean_b)^2 over N, H, W)            (biased, divides by M = N*H*W)
        y       = relu(gamma * (x - mean_b) / sqrt(var_b + 1e-3) + beta)
        moving_mean = 0.99 * moving_mean + 0.01 * mean_b
        moving_var  = 0.99 * moving_var  + 0.01 * var_b        (biased variance, no M/(M-1))
    Keras' own update is moving -= (moving - batch) * (1 - momentum): the same formula.
    The hand formula for y is cross-checked against F.batch_norm(eps=1e-3) in the script.

 c. Backward of BN+ReLU in training mode for both conventions (they differ only in eps for the
    gradients): a fixed upstream gradient dy; dx, dgamma, dbeta from torch.autograd through the
    float64 forward of (a) resp. the hand-written forward of (b).

 d. Inference BN+ReLU with given running stats (the initial ones of (a)):
        y = relu(gamma * (x - running_mean) / sqrt(running_var + eps) + beta)
    for eps = 1e-3 (Keras) and eps = 1e-5 (PyTorch; cross-checked with F.batch_norm(training=False)).

 e. k = 3 training steps on the same batch x, from the framework defaults running_mean = 0,
    running_var = 1, for both conventions. Expected running stats after 3 updates; the script
    asserts the closed forms
        Keras:   moving_mean = mean_b * (1 - 0.99^k),  moving_var = 0.99^k + var_b * (1 - 0.99^k)
        PyTorch: running_mean = mean_b * (1 - 0.9^k),  running_var = 0.9^k + var_u * (1 - 0.9^k)
    (var_u = var_b * M / (M - 1)). y of every step equals y of a single step.

The script also asserts that no pre-activation value lies within 1e-3 of the ReLU kink, so
that float32 rounding in the library cannot flip a ReLU decision against the float64 golden.
"""
import sys

import torch
import torch.nn.functional as F

SEED = 20240611
N, C, H, W = 3, 4, 5, 6
M = N * H * W
PT_MOMENTUM, PT_EPS = 0.1, 1e-5
KERAS_MOMENTUM, KERAS_EPS = 0.99, 1e-3
STEPS = 3
KINK_MARGIN = 1e-3

# Per-channel input distribution: different means so that the batch statistics matter.
CHAN_MEAN = [0.7, -1.3, 2.4, 0.1]
CHAN_STD = [1.5, 0.6, 1.1, 2.2]

torch.manual_seed(SEED)
f32, f64 = torch.float32, torch.float64

# ---- inputs (float32, exactly what the tests upload) -----------------------------------------
mean_t = torch.tensor(CHAN_MEAN, dtype=f32).view(1, C, 1, 1)
std_t = torch.tensor(CHAN_STD, dtype=f32).view(1, C, 1, 1)
x32 = (torch.randn(N, C, H, W, dtype=f32) * std_t + mean_t).to(f32)
gamma32 = (1.0 + 0.4 * torch.randn(C, dtype=f32)).to(f32)
beta32 = (0.3 * torch.randn(C, dtype=f32)).to(f32)
rmean0_32 = (0.5 * torch.randn(C, dtype=f32)).to(f32)
rvar0_32 = (0.5 + 1.5 * torch.rand(C, dtype=f32)).to(f32)  # positive
dy32 = torch.randn(N, C, H, W, dtype=f32)

x, gamma, beta = x32.to(f64), gamma32.to(f64), beta32.to(f64)
rmean0, rvar0, dy = rmean0_32.to(f64), rvar0_32.to(f64), dy32.to(f64)

# ---- batch statistics (float64) --------------------------------------------------------------
mean_b = x.mean(dim=(0, 2, 3))
var_b = ((x - mean_b.view(1, C, 1, 1)) ** 2).mean(dim=(0, 2, 3))  # biased
var_u = var_b * M / (M - 1)                                       # unbiased


def bc(v):
    return v.view(1, C, 1, 1)


def check_kink(pre, what):
    m = pre.abs().min().item()
    assert m > KINK_MARGIN, f"{what}: pre-activation {m} too close to 0; change SEED"


def close(a, b, tol=1e-12):
    return torch.allclose(a, b, rtol=tol, atol=tol)


# ---- a. PyTorch training forward ---------------------------------------------------------------
pt_rmean, pt_rvar = rmean0.clone(), rvar0.clone()
pre_pt = F.batch_norm(x, pt_rmean, pt_rvar, weight=gamma, bias=beta, training=True,
                      momentum=PT_MOMENTUM, eps=PT_EPS)
check_kink(pre_pt, "pytorch training")
pt_y = torch.relu(pre_pt)
_, pt_save_mean, pt_save_invstd = torch.native_batch_norm(
    x, gamma, beta, rmean0.clone(), rvar0.clone(), True, PT_MOMENTUM, PT_EPS)
assert close(pt_save_mean, mean_b)
assert close(pt_save_invstd, 1.0 / torch.sqrt(var_b + PT_EPS))
assert close(pt_rmean, (1 - PT_MOMENTUM) * rmean0 + PT_MOMENTUM * mean_b)
assert close(pt_rvar, (1 - PT_MOMENTUM) * rvar0 + PT_MOMENTUM * var_u)


# ---- b. Keras training forward (by hand) -------------------------------------------------------
def keras_pre(xx, g, b):
    mu = xx.mean(dim=(0, 2, 3))
    var = ((xx - bc(mu)) ** 2).mean(dim=(0, 2, 3))
    return bc(g) * (xx - bc(mu)) / torch.sqrt(bc(var) + KERAS_EPS) + bc(b)


pre_k = keras_pre(x, gamma, beta)
check_kink(pre_k, "keras training")
assert close(pre_k, F.batch_norm(x, None, None, gamma, beta, training=True, eps=KERAS_EPS))
k_y = torch.relu(pre_k)
k_mmean = KERAS_MOMENTUM * rmean0 + (1 - KERAS_MOMENTUM) * mean_b
k_mvar = KERAS_MOMENTUM * rvar0 + (1 - KERAS_MOMENTUM) * var_b
k_save_mean = mean_b
k_save_invstd = 1.0 / torch.sqrt(var_b + KERAS_EPS)


# ---- c. backward of BN+ReLU ----------------------------------------------------------------------
def grads(fwd):
    xx = x.clone().requires_grad_(True)
    g = gamma.clone().requires_grad_(True)
    b = beta.clone().requires_grad_(True)
    y = torch.relu(fwd(xx, g, b))
    y.backward(dy)
    return xx.grad.detach(), g.grad.detach(), b.grad.detach()


pt_dx, pt_dgamma, pt_dbeta = grads(lambda xx, g, b: F.batch_norm(
    xx, rmean0.clone(), rvar0.clone(), g, b, training=True, momentum=PT_MOMENTUM, eps=PT_EPS))
k_dx, k_dgamma, k_dbeta = grads(keras_pre)

# ---- d. inference ---------------------------------------------------------------------------------
def infer(eps):
    return torch.relu(bc(gamma) * (x - bc(rmean0)) / torch.sqrt(bc(rvar0) + eps) + bc(beta))


pre_ki = bc(gamma) * (x - bc(rmean0)) / torch.sqrt(bc(rvar0) + KERAS_EPS) + bc(beta)
pre_pi = bc(gamma) * (x - bc(rmean0)) / torch.sqrt(bc(rvar0) + PT_EPS) + bc(beta)
check_kink(pre_ki, "keras inference")
check_kink(pre_pi, "pytorch inference")
k_infer_y = infer(KERAS_EPS)
pt_infer_y = infer(PT_EPS)
assert close(pt_infer_y, torch.relu(F.batch_norm(x, rmean0, rvar0, gamma, beta, training=False,
                                                 eps=PT_EPS)))

# ---- e. k successive identical batches from (0, 1) ------------------------------------------------
zeros, ones = torch.zeros(C, dtype=f64), torch.ones(C, dtype=f64)
pt3_rmean, pt3_rvar = zeros.clone(), ones.clone()
k3_mmean, k3_mvar = zeros.clone(), ones.clone()
for _ in range(STEPS):
    y_step = torch.relu(F.batch_norm(x, pt3_rmean, pt3_rvar, gamma, beta, training=True,
                                     momentum=PT_MOMENTUM, eps=PT_EPS))
    assert close(y_step, pt_y)
    mu = x.mean(dim=(0, 2, 3))
    var = ((x - bc(mu)) ** 2).mean(dim=(0, 2, 3))
    k3_mmean = KERAS_MOMENTUM * k3_mmean + (1 - KERAS_MOMENTUM) * mu
    k3_mvar = KERAS_MOMENTUM * k3_mvar + (1 - KERAS_MOMENTUM) * var
a_pt, a_k = (1 - PT_MOMENTUM) ** STEPS, KERAS_MOMENTUM ** STEPS
assert close(pt3_rmean, mean_b * (1 - a_pt))
assert close(pt3_rvar, a_pt + var_u * (1 - a_pt))
assert close(k3_mmean, mean_b * (1 - a_k))
assert close(k3_mvar, a_k + var_b * (1 - a_k))


# ---- emit ---------------------------------------------------------------------------------------------
def fmt(v):
    s = "%.9g" % v  # 9 significant digits round-trip float32 exactly
    if "." not in s and "e" not in s and "n" not in s:
        s += ".0"
    return s + "f"


def array(name, t, comment):
    vals = t.detach().to(f32).reshape(-1).tolist()  # float64 -> float32 rounding happens here
    out = [f"/* {comment} */", f"static const float {name}[{len(vals)}] = {{"]
    per_line = 6
    for i in range(0, len(vals), per_line):
        out.append("    " + ", ".join(fmt(v) for v in vals[i:i + per_line]) + ",")
    out.append("};")
    return "\n".join(out)


blocks = [
    array("bn_golden_x", x32, "input x, NCHW order"),
    array("bn_golden_dy", dy32, "upstream gradient dy of y = relu(bn(x)), NCHW order"),
    array("bn_golden_gamma", gamma32, "gamma (scale), C values"),
    array("bn_golden_beta", beta32, "beta (shift), C values"),
    array("bn_golden_running_mean0", rmean0_32, "initial running/moving mean for (a), (b), (d)"),
    array("bn_golden_running_var0", rvar0_32, "initial running/moving var for (a), (b), (d)"),
    "/* ---- a. PyTorch training forward (momentum 0.1, eps 1e-5, unbiased running var) ---- */",
    array("bn_golden_pt_y", pt_y, "y = relu(batch_norm(x, training=True)), NCHW order"),
    array("bn_golden_pt_running_mean", pt_rmean, "running_mean after one update"),
    array("bn_golden_pt_running_var", pt_rvar, "running_var after one update (unbiased batch var)"),
    array("bn_golden_pt_saved_mean", pt_save_mean, "saved batch mean"),
    array("bn_golden_pt_saved_invstd", pt_save_invstd, "saved 1/sqrt(var_biased + 1e-5)"),
    "/* ---- b. Keras training forward (momentum 0.99, eps 1e-3, biased moving var) ---- */",
    array("bn_golden_keras_y", k_y, "y = relu(gamma (x - mean) / sqrt(var_b + 1e-3) + beta)"),
    array("bn_golden_keras_moving_mean", k_mmean, "0.99 moving_mean0 + 0.01 mean_b"),
    array("bn_golden_keras_moving_var", k_mvar, "0.99 moving_var0 + 0.01 var_b (biased)"),
    array("bn_golden_keras_saved_mean", k_save_mean, "saved batch mean"),
    array("bn_golden_keras_saved_invstd", k_save_invstd, "saved 1/sqrt(var_biased + 1e-3)"),
    "/* ---- c. backward of BN+ReLU, training mode (torch.autograd) ---- */",
    array("bn_golden_pt_dx", pt_dx, "PyTorch convention (eps 1e-5): dx, NCHW order"),
    array("bn_golden_pt_dgamma", pt_dgamma, "PyTorch convention: dgamma"),
    array("bn_golden_pt_dbeta", pt_dbeta, "PyTorch convention: dbeta"),
    array("bn_golden_keras_dx", k_dx, "Keras convention (eps 1e-3): dx, NCHW order"),
    array("bn_golden_keras_dgamma", k_dgamma, "Keras convention: dgamma"),
    array("bn_golden_keras_dbeta", k_dbeta, "Keras convention: dbeta"),
    "/* ---- d. inference with running stats running_mean0 / running_var0 ---- */",
    array("bn_golden_keras_infer_y", k_infer_y, "relu(gamma (x - rm0) / sqrt(rv0 + 1e-3) + beta)"),
    array("bn_golden_pt_infer_y", pt_infer_y, "relu(gamma (x - rm0) / sqrt(rv0 + 1e-5) + beta)"),
    f"/* ---- e. {STEPS} training steps on the same x from running mean 0, running var 1 ---- */",
    array("bn_golden_pt_steps_running_mean", pt3_rmean, "mean_b (1 - 0.9^k)"),
    array("bn_golden_pt_steps_running_var", pt3_rvar, "0.9^k + var_unbiased (1 - 0.9^k)"),
    array("bn_golden_keras_steps_moving_mean", k3_mmean, "mean_b (1 - 0.99^k)"),
    array("bn_golden_keras_steps_moving_var", k3_mvar, "0.99^k + var_biased (1 - 0.99^k)"),
]

header = f"""/* Generated by tools/gen_golden.py -- do not edit; re-run the script instead:
 *     /usr/bin/python3 tools/gen_golden.py > tests/golden/bn_golden.h
 * Golden vectors for BatchNorm + ReLU (torch {torch.__version__}, seed {SEED}).
 * Inputs are float32; expected values were computed in float64 from them and rounded to float32.
 * Tensors are in logical NCHW order, per-channel vectors have C entries.
 * See the script's docstring for the exact formulas (Keras convention computed by hand). */
#ifndef CNNKIT_TESTS_GOLDEN_BN_GOLDEN_H
#define CNNKIT_TESTS_GOLDEN_BN_GOLDEN_H

#define BN_GOLDEN_N {N}
#define BN_GOLDEN_C {C}
#define BN_GOLDEN_H {H}
#define BN_GOLDEN_W {W}
#define BN_GOLDEN_COUNT {N * C * H * W}
#define BN_GOLDEN_STEPS {STEPS}
#define BN_GOLDEN_PT_MOMENTUM {PT_MOMENTUM}
#define BN_GOLDEN_PT_EPS {PT_EPS}
#define BN_GOLDEN_KERAS_MOMENTUM {KERAS_MOMENTUM}
#define BN_GOLDEN_KERAS_EPS {KERAS_EPS}

"""
text = header + "\n\n".join(blocks) + "\n\n#endif /* CNNKIT_TESTS_GOLDEN_BN_GOLDEN_H */\n"

if len(sys.argv) > 1:
    with open(sys.argv[1], "w") as f:
        f.write(text)
else:
    sys.stdout.write(text)
