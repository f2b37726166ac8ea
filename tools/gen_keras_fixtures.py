"""Writes the Keras fixtures that `make test` reads (no Python needed there):
tests/data/keras/*.keras, *.weights.h5, *.h5 and tests/golden/keras_golden.h.

Run with real Keras (the venv of tools/keras_venv.sh):
    $(bash tools/keras_venv.sh) tools/gen_keras_fixtures.py

Two small models that cover every layer class cnnkit reads, each trained a few steps in Keras
(so BatchNormalization's moving statistics and the optimizer state are not their initial values):
  small:  16x16x1, Conv2D 'same' + BN + ReLU + AveragePooling2D + SpatialDropout2D, Conv2D
          (relu) + BN + MaxPooling2D + Dropout, Flatten, Dense + BN + ReLU, Dense softmax; Adam.
  small2: 8x8x2, Conv2D strides 2 + LeakyReLU(0.1), Conv2D no bias tanh 'same' + ELU(0.5),
          ReLU, GlobalAveragePooling2D, Dense gelu, Dense sigmoid, Dense swish, Dense, Softmax;
          SGD with momentum 0.9.
  func:   8x8x2 functional: a projection Conv2D made before the branch it meets (Keras lists
          layers by depth, not by creation: the weights groups follow Keras's order), Add of
          three, Concatenate with a MaxPooling2D 'same' branch, BN after the merge; Adam. Also
          written as a legacy whole-model .h5 (Keras 2's inbound_nodes).
  rescale: 8x8x1 Sequential fed raw 0..255 pixels: Rescaling(1./255) first, a Rescaling(2,
          offset=-0.5) after the pooling; Adam.
  rescale_func: 8x8x2 functional fed raw pixels: Rescaling(1./127.5, offset=-1) on the input, a
          negative Rescaling(-0.5) in a branch before a ReLU and an Add; SGD. Also legacy .h5.
  mixed_bf16: 8x8x1 Sequential under the mixed_bfloat16 policy (Conv2D + BN + ReLU + MaxPooling2D,
          Flatten, Dense), its softmax Activation kept float32 as Keras's guide advises; Adam.
          Last, so the models before it draw the same numbers as before it existed.
The golden header holds each model's inputs, Keras's inference probabilities, the optimizer's
iteration count and the first values of the first optimizer slot (momentum) arrays."""
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data", "keras")
os.makedirs(DATA, exist_ok=True)
keras.utils.set_random_seed(13)
rng = np.random.default_rng(13)


def small():
    m = keras.Sequential([
        keras.Input((16, 16, 1)),
        layers.Conv2D(4, 3, padding="same"), layers.BatchNormalization(), layers.Activation("relu"),
        layers.AveragePooling2D(2), layers.SpatialDropout2D(0.2),
        layers.Conv2D(6, (3, 3), activation="relu"), layers.BatchNormalization(momentum=0.9, epsilon=1e-4),
        layers.MaxPooling2D((2, 2)), layers.Dropout(0.3),
        layers.Flatten(), layers.Dense(12), layers.BatchNormalization(), layers.Activation("relu"),
        layers.Dense(5, activation="softmax")])
    m.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
    return m, (16, 16, 1), 5


def small2():
    m = keras.Sequential([
        keras.Input((8, 8, 2)),
        layers.Conv2D(3, (2, 2), strides=2), layers.LeakyReLU(negative_slope=0.1),
        layers.Conv2D(4, 3, padding="same", use_bias=False, activation="tanh"), layers.ELU(alpha=0.5),
        layers.ReLU(), layers.GlobalAveragePooling2D(),
        layers.Dense(7, activation="gelu"), layers.Dense(6, activation="sigmoid"),
        layers.Dense(5, activation="swish"), layers.Dense(3), layers.Softmax()])
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9),
              loss="sparse_categorical_crossentropy")
    return m, (8, 8, 2), 3


def func():
    inp = keras.Input((8, 8, 2))
    proj = layers.Conv2D(4, 3, strides=2, padding="same", name="proj")(inp)
    x = layers.Conv2D(4, 3, strides=2, padding="same")(inp)
    x = layers.BatchNormalization()(x)
    y = layers.Activation("relu")(x)
    y = layers.Conv2D(4, 3, padding="same")(y)
    s = layers.Add()([proj, y, x])
    b = layers.MaxPooling2D(2, padding="same")(layers.Conv2D(3, 2, padding="same")(inp))
    c = layers.Concatenate()([s, b])
    c = layers.BatchNormalization(momentum=0.9)(c)
    c = layers.Activation("relu")(c)
    out = layers.Dense(3, activation="softmax")(layers.GlobalAveragePooling2D()(c))
    m = keras.Model(inp, out)
    m.compile(optimizer=keras.optimizers.Adam(learning_rate=0.02), loss="sparse_categorical_crossentropy")
    return m, (8, 8, 2), 3


def rescale():
    m = keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.Rescaling(1. / 255),
        layers.Conv2D(4, 3, padding="same", activation="relu"), layers.MaxPooling2D(2),
        layers.Rescaling(2.0, offset=-0.5),
        layers.Flatten(), layers.Dense(3, activation="softmax")])
    m.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="sparse_categorical_crossentropy")
    return m, (8, 8, 1), 3


def rescale_func():
    inp = keras.Input((8, 8, 2))
    x = layers.Rescaling(1. / 127.5, offset=-1)(inp)
    a = layers.Conv2D(4, 3, padding="same")(x)
    b = layers.Activation("relu")(layers.Rescaling(-0.5)(a))
    s = layers.Add()([a, b])
    out = layers.Dense(3, activation="softmax")(layers.GlobalAveragePooling2D()(s))
    m = keras.Model(inp, out)
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9),
              loss="sparse_categorical_crossentropy")
    return m, (8, 8, 2), 3


def mixed_bf16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    m = keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.Conv2D(3, 3, padding="same"), layers.BatchNormalization(), layers.Activation("relu"),
        layers.MaxPooling2D(2), layers.Flatten(), layers.Dense(4),
        layers.Activation("softmax", dtype="float32")])
    keras.mixed_precision.set_global_policy("float32")  # the layers keep theirs
    m.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="sparse_categorical_crossentropy")
    return m, (8, 8, 1), 4


# models fed raw 0..255 pixels (integers as float32), as Keras users feed a Rescaling(1./255)
PIXELS = ("rescale", "rescale_func")


def cfloat(v):
    t = f"{float(v):.9g}"
    return t + ("f" if any(ch in t for ch in ".en") else ".0f")  # 110 -> 110.0f, valid C


def carray(name, a, ctype="float"):
    a = np.asarray(a).ravel()
    body = ",\n    ".join(", ".join(cfloat(v) if ctype == "float" else str(int(v))
                                    for v in a[i:i + 6]) for i in range(0, len(a), 6))
    return f"static const {ctype} {name}[{len(a)}] = {{\n    {body}}};\n"


out = ["/* Written by tools/gen_keras_fixtures.py with Keras %s (%s backend): do not edit. */\n"
       % (keras.__version__, keras.backend.backend()),
       "#ifndef CNNKIT_KERAS_GOLDEN_H\n#define CNNKIT_KERAS_GOLDEN_H\n"]
MODELS = (("small", small), ("small2", small2), ("func", func), ("rescale", rescale),
          ("rescale_func", rescale_func), ("mixed_bf16", mixed_bf16))
for name, make in MODELS:
    m, shape, classes = make()

    def draw(n):
        if name in PIXELS:
            return rng.integers(0, 256, (n,) + shape).astype(np.float32)
        return rng.random((n,) + shape, dtype=np.float32)
    xt = draw(32)
    yt = rng.integers(0, classes, 32)
    for _ in range(3):  # three steps: BN moving statistics and optimizer state move
        m.train_on_batch(xt, yt)
    x = draw(4)
    p = m.predict(x, verbose=0)
    m.save(os.path.join(DATA, name + ".keras"))
    if name == "small":  # the weights alone, and the legacy whole-model HDF5 format
        m.save_weights(os.path.join(DATA, name + ".weights.h5"))
    if name in ("small", "func", "rescale_func"):
        m.save(os.path.join(DATA, name + "_legacy.h5"))
    opt = m.optimizer.variables
    it = int(np.asarray(opt[0]))
    slot = np.asarray(opt[2]).ravel()[:8]
    out.append(f"/* {name}: {m.count_params()} parameters */\n")
    out.append(carray(f"kg_{name}_x", x))
    out.append(carray(f"kg_{name}_probs", p))
    out.append(f"static const int kg_{name}_iterations = {it};\n")
    out.append(carray(f"kg_{name}_slot0", slot))
out.append("#endif\n")
with open(os.path.join(ROOT, "tests", "golden", "keras_golden.h"), "w") as f:
    f.write("\n".join(out))
print("fixtures:", sorted(os.listdir(DATA)), file=sys.stderr)
