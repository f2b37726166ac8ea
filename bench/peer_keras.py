"""The seed model trained by real Keras on this machine: the Keras row of the peer table
(docs/results.md), next to bench_train (cnnkit) and bench/peer_torch.py (PyTorch).
    python bench/peer_keras.py [--backend jax|tensorflow] [--batch 128] [--steps 100]
        [--warmup 5] [--threads N] [--seed 1] [--math fp32|tf32] [--precision fp32|bf16]
        [--fallback-path DIR]
Runs in the venv of tools/keras_venv.sh (keras + JAX CPU; `pip install tensorflow-cpu` there for
the TensorFlow backend; on a GPU host, JAX with CUDA). Like bench_train it times training steps on
batches already in memory (train_on_batch, the same batches every run, after warm-up steps that
include tracing) and prints one JSON line: images/s from the median step, and the peak device
memory where the backend reports it. --math: both backends default to TF32 convolutions and
matmuls on an Ampere or later GPU (JAX's default matmul precision, TensorFlow's TF32 execution);
fp32 (the default here, as cnnkit's) turns that off so the row is strict fp32, tf32 turns it on.
--precision bf16: Keras's mixed_bfloat16 policy (the softmax in float32, as cnnkit's).
--fallback-path DIR: modules this Python lacks are taken from
DIR (the GPU bundle's wheels of Keras's pure-Python dependencies; the Python's own copies win)."""
import argparse
import json
import os
import statistics
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--backend", default="jax", choices=["jax", "tensorflow"])
ap.add_argument("--batch", type=int, default=128)
ap.add_argument("--steps", type=int, default=100)
ap.add_argument("--warmup", type=int, default=5)
ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--math", default="fp32", choices=["fp32", "tf32"])
ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
ap.add_argument("--fallback-path", action="append", default=[])
a = ap.parse_args()
if a.precision == "bf16" and a.math == "tf32":
    ap.error("--precision bf16 runs its convolutions in bf16: --math tf32 does not apply")
if a.batch < 1 or a.steps < 1 or a.warmup < 0:
    ap.error(f"--batch and --steps must be >= 1 and --warmup >= 0, got {a.batch}, {a.steps}, "
             f"{a.warmup}")
sys.path.extend(a.fallback_path)  # after site-packages: only what is missing comes from there
os.environ["KERAS_BACKEND"] = a.backend
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if a.backend == "tensorflow":
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.experimental.enable_tensor_float_32_execution(a.math == "tf32")
    version = tf.__version__
else:  # JAX has no thread setting: XLA's CPU client takes the machine; said in the JSON
    import jax
    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if a.math == "tf32" else "float32")
    version = jax.__version__
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

keras.utils.set_random_seed(a.seed)
if a.precision == "bf16":
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
m = keras.Sequential([keras.Input((28, 28, 1)),
    layers.Conv2D(32, (3, 3)), layers.BatchNormalization(), layers.Activation("relu"),
    layers.Conv2D(32, (3, 3)), layers.BatchNormalization(), layers.Activation("relu"),
    layers.MaxPooling2D((2, 2)), layers.Dropout(0.2),
    layers.Conv2D(64, (3, 3)), layers.BatchNormalization(), layers.Activation("relu"),
    layers.Conv2D(64, (3, 3)), layers.BatchNormalization(), layers.Activation("relu"),
    layers.MaxPooling2D((2, 2)), layers.Dropout(0.2),
    layers.Flatten(), layers.Dense(512), layers.BatchNormalization(), layers.Activation("relu"),
    layers.Dropout(0.4), layers.Dense(10), layers.Activation("softmax", dtype="float32")])
m.compile(optimizer=keras.optimizers.Adam(), loss="sparse_categorical_crossentropy")
rng = np.random.default_rng(a.seed)
x = rng.random((a.batch, 28, 28, 1), dtype=np.float32)
y = rng.integers(0, 10, a.batch).astype("int32")
for _ in range(a.warmup):
    m.train_on_batch(x, y)
times = []
for _ in range(a.steps):
    t0 = time.perf_counter()
    loss = m.train_on_batch(x, y)  # returns host values: the step has finished
    times.append(time.perf_counter() - t0)
med = statistics.median(times)
peak = None
if a.backend == "jax":
    try:
        st = jax.devices()[0].memory_stats()
        peak = st.get("peak_bytes_in_use") if st else None
    except Exception:  # CPU devices report no memory statistics
        peak = None
elif a.backend == "tensorflow":
    try:
        peak = tf.config.experimental.get_memory_info("GPU:0")["peak"]
    except Exception:
        peak = None
print(json.dumps(dict(peer="keras", backend=a.backend, backend_version=version, keras=keras.__version__,
                      device=str(keras.backend.backend() == "jax" and jax.devices()[0].platform or "cpu"),
                      batch=a.batch, steps=a.steps, math=a.math,
                      dtype_policy=keras.mixed_precision.global_policy().name,
                      threads=a.threads if a.backend == "tensorflow" else None,
                      params=m.count_params(),
                      median_step_ms=med * 1e3, images_per_s=a.batch / med,
                      peak_device_bytes=peak)))
sys.stdout.flush()
