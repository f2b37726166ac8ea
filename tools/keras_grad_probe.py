"""Gradient accuracy probe (issue 13): the seed model (dropout 0, Keras init with seed 1), first
Fashion-MNIST batch of 128. A float64 JAX re-computation of the model gives the reference
gradients; float32 Keras and cnnkit gradients come from one SGD step with lr 1e4
(g = (w0 - w1) / 1e4). Prints max |g - g64| / max |g64| per weight array (biases before a BN have
a true gradient of 0, so theirs is noise over ~0), the float32-vs-float64 error of each node's dy
in the float32 JAX re-computation, the max-pool windows whose top two inputs are near-ties, and
the same per-array errors against Keras's own float64 gradient (dtype policy float64), and
the first 10 Adam-default training losses of the float64 re-computation (batches 0-9).
    $(bash tools/keras_venv.sh) tools/keras_grad_probe.py BUILD_DIR OUT_DIR"""
import ctypes as C, gzip, os, struct, sys
os.environ.setdefault("KERAS_BACKEND", "jax")
import numpy as np
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
from jax import lax
import keras
from keras import layers

build = sys.argv[1]
out = sys.argv[2]
data = "/usr/share/datasets/fashion-mnist"
def idx(name):
    for n in (name + ".gz", name):
        p = os.path.join(data, n)
        if os.path.exists(p):
            with (gzip.open(p) if n.endswith(".gz") else open(p, "rb")) as f:
                magic = struct.unpack(">I", f.read(4))[0]
                dims = struct.unpack(">" + "I" * (magic & 0xFF), f.read(4 * (magic & 0xFF)))
                return np.frombuffer(f.read(), np.uint8).reshape(dims)
xtr = idx("train-images-idx3-ubyte")[..., None].astype("float32") / 255
ytr = idx("train-labels-idx1-ubyte").astype("int32")
xb, yb = xtr[:128], ytr[:128]

def seed_model():
    return keras.Sequential([keras.Input((28, 28, 1)),
        layers.Conv2D(32, (3, 3)), layers.BatchNormalization(), layers.Activation("relu"),
        layers.Conv2D(32, (3, 3)), layers.BatchNormalization(), layers.Activation("relu"),
        layers.MaxPooling2D((2, 2)), layers.Dropout(0.0),
        layers.Conv2D(64, (3, 3)), layers.BatchNormalization(), layers.Activation("relu"),
        layers.Conv2D(64, (3, 3)), layers.BatchNormalization(), layers.Activation("relu"),
        layers.MaxPooling2D((2, 2)), layers.Dropout(0.0),
        layers.Flatten(), layers.Dense(512), layers.BatchNormalization(), layers.Activation("relu"),
        layers.Dropout(0.0), layers.Dense(10), layers.Activation("softmax")])
keras.utils.set_random_seed(1)
m = seed_model()
m.compile(optimizer=keras.optimizers.SGD(1e4), loss="sparse_categorical_crossentropy")
path = os.path.join(out, "probe.keras")
m.save(path)
W = [w.copy() for w in m.get_weights()]
names = []
for l in m.layers:
    for v in l.weights:
        names.append(l.name + "/" + v.name)
# trainable: conv k,b ; bn gamma,beta (moving mean/var non-trainable)
def unpack(W):
    P = []
    i = 0
    for l in m.layers:
        n = len(l.weights)
        P.append(W[i:i + n]); i += n
    return P

def forward(params, x, y, deltas, dt):
    P = unpack(params)
    h = x.astype(dt)
    nodes = {}
    di = 0
    li = 0
    for l, p in zip(m.layers, P):
        cls = type(l).__name__
        if cls == "Conv2D":
            nodes["in_" + l.name] = h
            h = lax.conv_general_dilated(h, p[0].astype(dt), (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                         precision=lax.Precision.HIGHEST) + p[1].astype(dt)
            h = h + deltas[l.name]
        elif cls == "Dense":
            nodes["in_" + l.name] = h
            h = jnp.dot(h, p[0].astype(dt), precision=lax.Precision.HIGHEST) + p[1].astype(dt)
            h = h + deltas[l.name]
        elif cls == "BatchNormalization":
            ax = tuple(range(h.ndim - 1))
            mu = jnp.mean(h, axis=ax)
            var = jnp.mean(jnp.square(h - mu), axis=ax)
            h = (h - mu) * lax.rsqrt(var + dt(1e-3)) * p[0].astype(dt) + p[1].astype(dt)
            h = h + deltas[l.name]
        elif cls == "Activation":
            if l.get_config()["activation"] == "relu":
                h = jnp.maximum(h, 0)
                h = h + deltas[l.name]
            else:
                h = jax.nn.softmax(h, axis=-1)
        elif cls == "MaxPooling2D":
            h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
            h = h + deltas[l.name]
        elif cls == "Flatten":
            h = h.reshape(h.shape[0], -1)
    p = h / jnp.sum(h, axis=-1, keepdims=True)
    p = jnp.clip(p, 1e-7, 1 - 1e-7)
    loss = -jnp.mean(jnp.log(jnp.take_along_axis(p, y[:, None], axis=1)))
    return loss, nodes

def zero_deltas(params, x, y, dt):
    return {l.name: jnp.zeros(l.output.shape[1:], dt) for l in m.layers}

def run(dt):
    params = [jnp.asarray(w, dt) for w in W]
    deltas = {k: jnp.zeros((128,) + v.shape, dt) for k, v in zero_deltas(params, xb, yb, dt).items()}
    (loss, nodes), (gp, gd) = jax.value_and_grad(forward, argnums=(0, 3), has_aux=True)(
        params, jnp.asarray(xb, dt), jnp.asarray(yb), deltas, dt)
    return float(loss), [np.asarray(g) for g in gp], {k: np.asarray(v) for k, v in gd.items()}, {k: np.asarray(v) for k, v in nodes.items()}

l64, g64, d64, n64 = run(np.float64)
l32, g32, d32, n32 = run(np.float32)
print(f"loss f64 {l64:.9f} f32 {l32:.9f}")

# real Keras float32 SGD step
m.train_on_batch(xb, yb)
W1k = m.get_weights()
gk = [(a - b) / 1e4 for a, b in zip(W, W1k)]

# cnnkit
lib = C.CDLL(os.path.join(build, "libcnnkit.so"))
lib.ck_context_last_error.restype = C.c_char_p
lib.ck_context_create.argtypes = [C.POINTER(C.c_void_p), C.c_int, C.c_int, C.c_uint64]
lib.ck_model_load_keras.argtypes = [C.c_void_p, C.c_char_p, C.c_int, C.POINTER(C.c_void_p)]
class Opt(C.Structure):
    _fields_ = [("type", C.c_int), ("lr", C.c_float), ("b1", C.c_float), ("b2", C.c_float), ("eps", C.c_float),
                ("mom", C.c_float), ("nest", C.c_int), ("wd", C.c_float)]
class SR(C.Structure):
    _fields_ = [("loss", C.c_double), ("correct", C.c_int), ("count", C.c_int)]
ctx = C.c_void_p(); assert lib.ck_context_create(C.byref(ctx), 0, 0, C.c_uint64(1)) == 0
mm = C.c_void_p()
assert lib.ck_model_load_keras(ctx, path.encode(), 128, C.byref(mm)) == 0, lib.ck_context_last_error(ctx)
o = Opt(); lib.ck_optimizer_desc_init(C.byref(o), 1); o.lr = 1e4
assert lib.ck_model_set_optimizer(mm, C.byref(o)) == 0
FP = C.POINTER(C.c_float)
tot = sum(w.size for w in W)
buf0 = np.zeros(tot, np.float32); need = C.c_size_t()
assert lib.ck_model_get_weights(mm, buf0.ctypes.data_as(FP), C.c_size_t(tot), C.byref(need)) == 0
x = np.ascontiguousarray(xb); y = np.ascontiguousarray(yb)
r = SR()
assert lib.ck_model_train_step(mm, x.ctypes.data_as(FP), y.ctypes.data_as(C.POINTER(C.c_int32)), 128, C.byref(r)) == 0, lib.ck_context_last_error(ctx)
buf1 = np.zeros(tot, np.float32)
assert lib.ck_model_get_weights(mm, buf1.ctypes.data_as(FP), C.c_size_t(tot), C.byref(need)) == 0
print(f"loss cnnkit {r.loss:.9f}")
gc = []
o_ = 0
for w in W:
    gc.append(((buf0[o_:o_ + w.size] - buf1[o_:o_ + w.size]) / 1e4).reshape(w.shape)); o_ += w.size
print(f"{'array':40s} {'jaxf32':>9s} {'kerasf32':>9s} {'cnnkit':>9s}")
for nm, a64, a32, ak, ac in zip(names, g64, g32, gk, gc):
    if "moving" in nm: continue
    s = np.abs(a64).max()
    e = lambda a: np.abs(a - a64).max() / s
    print(f"{nm:40s} {e(a32):9.2e} {e(ak):9.2e} {e(ac):9.2e}")
print("per-node dy (jax f32 vs f64), max rel:")
for k in d64:
    s = np.abs(d64[k]).max()
    if s > 0:
        print(f"  d {k:28s} {np.abs(d32[k]-d64[k]).max()/s:9.2e}  max {s:.3e}")
k1 = names.index("conv2d_1/kernel")
E = np.abs(gk[k1] - g64[k1]).max(axis=(0, 1, 2)) / np.abs(g64[k1]).max()
Ec = np.abs(gc[k1] - g64[k1]).max(axis=(0, 1, 2)) / np.abs(g64[k1]).max()
print(f"conv2d_1/kernel error per output channel, min..max: Keras {E.min():.1e}..{E.max():.1e}, "
      f"cnnkit {Ec.min():.1e}..{Ec.max():.1e}")

# ---- near-ties in the max pools (f64 forward) ----
def pool_inputs(params, x, dt):
    P = unpack(params); h = jnp.asarray(x, dt); res = {}
    for l, p in zip(m.layers, P):
        cls = type(l).__name__
        if cls == "Conv2D":
            h = lax.conv_general_dilated(h, p[0].astype(dt), (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=lax.Precision.HIGHEST) + p[1].astype(dt)
        elif cls == "BatchNormalization":
            ax = tuple(range(h.ndim - 1)); mu = jnp.mean(h, axis=ax); var = jnp.mean(jnp.square(h - mu), axis=ax)
            h = (h - mu) * lax.rsqrt(var + dt(1e-3)) * p[0].astype(dt) + p[1].astype(dt)
        elif cls == "Activation" and l.get_config()["activation"] == "relu":
            h = jnp.maximum(h, 0)
        elif cls == "MaxPooling2D":
            res[l.name] = np.asarray(h)
            h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        elif cls == "Flatten":
            break
    return res
pi = pool_inputs([jnp.asarray(w, np.float64) for w in W], xb, np.float64)
for k, v in pi.items():
    n, H, Wd, Cc = v.shape
    oh, ow = H // 2, Wd // 2
    win = v[:, :oh * 2, :ow * 2, :].reshape(n, oh, 2, ow, 2, Cc).transpose(0, 1, 3, 5, 2, 4).reshape(n, oh, ow, Cc, 4)
    s = np.sort(win, axis=-1)
    top, sec = s[..., 3], s[..., 2]
    rel = (top - sec) / np.maximum(top, 1e-30)
    pos = top > 0
    for t in (1e-7, 1e-6, 1e-5):
        print(f"{k}: windows with positive max and gap < {t:g} relative: {int(((rel < t) & pos).sum())}")
    order = np.argsort(np.where(pos, rel, np.inf), axis=None)[:8]
    for o in order:
        i = np.unravel_index(o, rel.shape)
        print(f"   {i} top {top[i]:.9g} gap {top[i]-sec[i]:.3g} rel {rel[i]:.3g}")

# ---- Keras's own float64 gradient as the reference ----
keras.config.set_dtype_policy("float64")  # set_floatx alone leaves layers float32
m64 = seed_model()
m64.set_weights([w.astype(np.float64) for w in W])
m64.compile(optimizer=keras.optimizers.SGD(1e4), loss="sparse_categorical_crossentropy")
m64.train_on_batch(xb.astype(np.float64), yb)
gK = [(a.astype(np.float64) - b) / 1e4 for a, b in zip(W, m64.get_weights())]
print(f"{'array':40s} {'kf64-jf64':>9s} {'kerasf32':>9s} {'cnnkit':>9s}  (vs Keras float64)")
for nm, a64, aK, ak, ac in zip(names, g64, gK, gk, gc):
    if "moving" in nm or "bias" in nm:
        continue
    sK = np.abs(aK).max()
    print(f"{nm:40s} {np.abs(aK - a64).max() / sK:9.2e} {np.abs(ak - aK).max() / sK:9.2e} "
          f"{np.abs(ac - aK).max() / sK:9.2e}")

# ---- 10 Adam steps of the float64 re-computation (compare with Keras's and cnnkit's losses) ----
params = [jnp.asarray(w, np.float64) for w in W]
train = [i for i, nm in enumerate(names) if "moving" not in nm]
dz = {k: jnp.zeros((128,) + v.shape, np.float64) for k, v in zero_deltas(params, xb, yb, np.float64).items()}
vg = jax.jit(jax.value_and_grad(lambda p, x, y: forward(p, x, y, dz, np.float64)[0]))
mo = [jnp.zeros_like(p) for p in params]
ve = [jnp.zeros_like(p) for p in params]
losses = []
for b in range(10):
    lb, g = vg(params, jnp.asarray(xtr[b * 128:(b + 1) * 128], np.float64), jnp.asarray(ytr[b * 128:(b + 1) * 128]))
    t = b + 1
    alpha = 1e-3 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
    for i in train:
        mo[i] = 0.9 * mo[i] + 0.1 * g[i]
        ve[i] = 0.999 * ve[i] + 0.001 * g[i] ** 2
        params[i] = params[i] - alpha * mo[i] / (jnp.sqrt(ve[i]) + 1e-7)
    losses.append(f"{float(lb):.6f}")
print("float64 re-computation, Adam defaults, losses of steps 1-10:", " ".join(losses))
