"""Writes the optimizer fixtures that `make test` reads (no Python needed there):
tests/data/keras/rmsprop_momentum.keras, rmsprop_centered.keras, adadelta.keras and
tests/golden/keras_optimizers_golden.h.

Run with real Keras (the venv of tools/keras_venv.sh):
    $(bash tools/keras_venv.sh) tools/gen_keras_optimizers.py

  a. The update alone: keras.optimizers.RMSprop.apply_gradients on one float32 vector for
     KR_STEPS given gradients, four settings (plain; momentum; centered; rho 0.8 with momentum and
     weight decay), the vector after each step; then Adadelta the same way (its defaults; rho
     0.8, epsilon 1e-3, lr 1.0 and weight decay: Keras 2's lr).
  b. A model continued from Keras's file: a 6x6x1 Conv2D + BN + ReLU + Flatten + Dense softmax
     (no dropout: the step is deterministic; no conv bias: before BN its gradient is zero but
     for rounding, which RMSprop would scale up to a step of its own) trained 3 steps with RMSprop(momentum=0.5), and one
     with RMSprop(centered=True), saved as .keras (weights, BN statistics, optimizer state); then
     a 4th step on the batch below, and every weight after it (model.get_weights order, each
     array flattened row-major). cnnkit loads the file, takes the same step, and compares."""
import os

os.environ.setdefault("KERAS_BACKEND", "jax")
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data", "keras")
keras.utils.set_random_seed(29)
rng = np.random.default_rng(29)
out = [f"/* Written by tools/gen_keras_rmsprop.py with Keras {keras.__version__} "
       f"({keras.backend.backend()} backend): do not edit. */\n",
       "#ifndef CNNKIT_KERAS_OPTIMIZERS_GOLDEN_H", "#define CNNKIT_KERAS_OPTIMIZERS_GOLDEN_H\n"]


def rows(items, per):
    return ",\n".join("    " + ", ".join(items[i:i + per]) for i in range(0, len(items), per))


def carray(name, a):
    a = np.asarray(a, dtype=np.float32).ravel()
    items = [f"{np.format_float_positional(v, unique=True, trim='0')}f" for v in a]
    return f"static const float {name}[{a.size}] = {{\n{rows(items, 6)}}};\n"


def ints(name, a):
    a = np.asarray(a).ravel()
    return f"static const int {name}[{a.size}] = {{\n{rows([str(int(v)) for v in a], 16)}}};\n"


# a. the update alone
N, STEPS = 8, 5
p0 = rng.uniform(-1, 1, N).astype(np.float32)
grads = rng.uniform(-2, 2, (STEPS, N)).astype(np.float32)
settings = [("plain", dict(learning_rate=0.01)),
            ("momentum", dict(learning_rate=0.01, momentum=0.5)),
            ("centered", dict(learning_rate=0.01, centered=True)),
            ("decay", dict(learning_rate=0.02, rho=0.8, momentum=0.9, epsilon=1e-3, weight_decay=0.1))]
out.append(f"#define KR_N {N}\n#define KR_STEPS {STEPS}\n")
out.append(carray("kr_p0", p0))
out.append(carray("kr_grads", grads))


def update_alone(cls, name, kw):
    """The vector after each of STEPS updates by cls(**kw) with the given gradients."""
    opt = cls(**kw)
    v = keras.Variable(p0)
    after = []
    for t in range(STEPS):
        opt.apply_gradients([(keras.ops.convert_to_tensor(grads[t]), v)])
        after.append(np.asarray(v.value))
    out.append(f"/* {cls.__name__}{kw} */\n" + carray(f"kr_{name}_p", np.stack(after)))


for name, kw in settings:
    update_alone(keras.optimizers.RMSprop, name, kw)

# b. a model continued from Keras's file
TEXT = ("model = keras.Sequential([keras.Input((6, 6, 1)), layers.Conv2D(3, 3, use_bias=False), "
        "layers.BatchNormalization(), layers.Activation('relu'), layers.Flatten(), "
        "layers.Dense(4, activation='softmax')])")
out.append(f"/* the model, in cnnkit's text form:\n * {TEXT} */\n")
B = 16
batches = [(rng.random((B, 6, 6, 1), dtype=np.float32), rng.integers(0, 4, B)) for _ in range(4)]
out.append(f"#define KR_BATCH {B}\n")
out.append(carray("kr_x4", batches[3][0]))
out.append(ints("kr_y4", batches[3][1]))
for name, kw in [("momentum", dict(learning_rate=0.01, momentum=0.5)),
                 ("centered", dict(learning_rate=0.01, centered=True)),
                 ("adadelta", dict(learning_rate=1.0))]:
    m = keras.Sequential([keras.Input((6, 6, 1)), layers.Conv2D(3, 3, use_bias=False),
                          layers.BatchNormalization(),
                          layers.Activation("relu"), layers.Flatten(),
                          layers.Dense(4, activation="softmax")])
    opt = keras.optimizers.Adadelta(**kw) if name == "adadelta" else keras.optimizers.RMSprop(**kw)
    m.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    for x, y in batches[:3]:
        m.train_on_batch(x, y)
    m.save(os.path.join(DATA, "adadelta.keras" if name == "adadelta" else f"rmsprop_{name}.keras"))
    m.train_on_batch(*batches[3])
    w = np.concatenate([np.asarray(a).ravel() for a in m.get_weights()])
    out.append(f"/* after the 4th step, {type(opt).__name__}{kw} */\n" + carray(f"kr_{name}_w4", w))
# a, continued: Adadelta's update alone (drawn last: the numbers above stay as they were)
for name, kw in [("adadelta", dict()),
                 ("adadelta_decay", dict(learning_rate=1.0, rho=0.8, epsilon=1e-3, weight_decay=0.1))]:
    update_alone(keras.optimizers.Adadelta, name, kw)
out.append("#endif\n")
with open(os.path.join(ROOT, "tests", "golden", "keras_optimizers_golden.h"), "w") as f:
    f.write("\n".join(out))
