"""Write the Keras fixtures of ``tests/fixtures/keras/`` with real Keras (run once; the tests need no TensorFlow).

Run it in a side environment that has TensorFlow, never in mnistlab's own::

    python3 -m venv /work/tfv && /work/tfv/bin/pip install tensorflow-cpu==2.21.0 numpy pillow
    /work/tfv/bin/python scripts/make_keras_fixtures.py [--data /work/shared/datasets/mnist]

It imports neither torch nor mnistlab, and writes into ``tests/fixtures/keras/``:

- ``mlp.keras``, ``mlp.weights.h5``, ``mlp_weights.txt``: the lesson's MLP (Flatten -> Dense relu -> Dense
  softmax; 32 hidden units to keep the files small), trained for one epoch on 10,000 MNIST images;
- ``cnn.keras``, ``cnn.weights.h5``, ``cnn_weights.txt``, ``cnn.json``: a small CNN (Reshape, Conv2D,
  BatchNormalization, MaxPooling2D, Dropout, Flatten, Dense softmax), trained the same way;
- ``zoo.keras``: the other supported layers (Rescaling, Normalization, strided Conv2D, AveragePooling2D,
  Activation, a linear Dense), trained briefly;
- ``shapes.keras``: what moves values between PyTorch's channels-first and Keras's channels-last order:
  Reshapes into, out of and between multi-channel images, a per-channel Normalization, AveragePooling2D
  with 'same' padding, and BatchNormalization after a Dense layer;
- ``roundtrip_mlp.keras``, ``roundtrip_cnn.keras``: the mnistlab exports ``roundtrip_*-keras.npz``
  (``mnistlab export --layout keras --format npz``, committed beside them) loaded into Keras layers
  built from the export's architecture list (the Normalization layer for the fast preset's
  standardisation), then saved by Keras;
- ``probabilities.npz``: Keras's own probabilities of each model on the first 1,000 MNIST test images.

``--only shapes`` (names as above, comma-separated) writes only those models and keeps the other
models' files and probabilities as they are.

The ``*_weights.txt`` files are written with the lesson's own code (``np.set_printoptions(threshold=np.inf)``
and ``str(v.name)``, ``str(v.shape)``, ``str(v.numpy())`` for each trainable variable).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "keras"
N_PROBS = 1000


def idx(path: Path) -> np.ndarray:
    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def mnist(folder: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    parts = [
        idx(folder / f"{p}-{k}-idx{n}-ubyte.gz") for p in ("train", "t10k") for k, n in (("images", 3), ("labels", 1))
    ]
    return (parts[0], parts[1]), (parts[2], parts[3])


def lesson_txt(model: keras.Model, path: Path) -> None:
    """The lesson's "参数提取" code, as it is taught."""
    np.set_printoptions(threshold=np.inf)
    with open(path, "w") as file:
        for v in model.trainable_variables:
            file.write(str(v.name) + "\n")
            file.write(str(v.shape) + "\n")
            file.write(str(v.numpy()) + "\n")
    np.set_printoptions(threshold=1000)


def train(model: keras.Model, x: np.ndarray, y: np.ndarray) -> keras.Model:
    """Train one epoch; return an uncompiled copy, so the saved files hold no optimizer state (3x smaller)."""
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["sparse_categorical_accuracy"])
    model.fit(x, y, batch_size=32, epochs=1, verbose=2)
    bare = keras.Sequential.from_config(model.get_config())
    bare.set_weights(model.get_weights())
    return bare


def reloaded(path: Path) -> keras.Model:
    """The model as Keras reads the saved file back: the probabilities then belong to the file itself."""
    return keras.models.load_model(path)


def from_export(path: Path) -> keras.Model:
    """A Keras model built from a mnistlab keras-layout export: its architecture list and its tensors."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("__mnistlab__")))
    c, h, w = meta["input"]["chw"]
    layers: list[keras.layers.Layer] = [keras.Input((h, w, c))]
    weights: list[tuple[keras.layers.Layer, list[np.ndarray]]] = []
    for spec in meta["architecture"]:
        op, params = spec["op"], spec.get("params", {})
        if op == "standardize":
            std = float(arrays[params["std"]])
            layer = keras.layers.Normalization(axis=None, mean=float(arrays[params["mean"]]), variance=std * std)
        elif op == "flatten":
            layer = keras.layers.Flatten()
        elif op == "relu":
            layer = keras.layers.ReLU()
        elif op == "linear":
            layer = keras.layers.Dense(spec["out_features"])
            weights.append((layer, [arrays[params["kernel"]], arrays[params["bias"]]]))
        elif op == "conv2d":
            pad = spec["padding"]
            k = spec["kernel_size"]
            assert pad in ([0, 0], [k[0] // 2, k[1] // 2]) and spec["stride"] == [1, 1], spec
            bias = "bias" in params
            layer = keras.layers.Conv2D(
                spec["out_channels"], k, padding="same" if pad != [0, 0] else "valid", use_bias=bias
            )
            weights.append((layer, [arrays[params["kernel"]]] + ([arrays[params["bias"]]] if bias else [])))
        elif op == "batchnorm2d":
            layer = keras.layers.BatchNormalization(epsilon=spec["eps"])
            roles = ("gamma", "beta", "moving_mean", "moving_variance")
            weights.append((layer, [arrays[params[r]] for r in roles]))
        elif op == "maxpool2d":
            assert spec["padding"] == [0, 0], spec
            layer = keras.layers.MaxPooling2D(spec["kernel_size"], spec["stride"])
        else:
            raise SystemExit(f"{path}: no Keras layer for {op!r} in this script")
        layers.append(layer)
    layers.append(keras.layers.Softmax())
    model = keras.Sequential(layers)
    for layer, values in weights:
        layer.set_weights(values)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/datasets/mnist"))
    ap.add_argument("--only", help=f"comma-separated models to write (default: all of {', '.join(MODELS)})")
    args = ap.parse_args()
    only = args.only.split(",") if args.only else list(MODELS)
    unknown = [m for m in only if m not in MODELS]
    if unknown:
        ap.error(f"unknown model {unknown[0]!r} (choose from {', '.join(MODELS)})")
    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = mnist(args.data)
    x_train, x_probe = x_train[:10000] / 255.0, x_test[:N_PROBS] / 255.0
    y_train = y_train[:10000]
    probs: dict[str, np.ndarray] = {}
    if args.only and (OUT / "probabilities.npz").is_file():
        with np.load(OUT / "probabilities.npz") as z:
            probs = {k: z[k] for k in z.files}
    for name in only:
        probs.update(MODELS[name](x_train, y_train, x_probe))
    np.savez_compressed(OUT / "probabilities.npz", **{k: v.astype(np.float32) for k, v in probs.items()})
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {OUT} ({total:,} bytes); keras {keras.__version__}")


def make_mlp(x_train: np.ndarray, y_train: np.ndarray, x_probe: np.ndarray) -> dict[str, np.ndarray]:
    mlp = keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    mlp = train(mlp, x_train, y_train)
    mlp.save(OUT / "mlp.keras")
    mlp.save_weights(OUT / "mlp.weights.h5")
    lesson_txt(mlp, OUT / "mlp_weights.txt")
    return {"mlp": reloaded(OUT / "mlp.keras").predict(x_probe, verbose=0)}


def make_cnn(x_train: np.ndarray, y_train: np.ndarray, x_probe: np.ndarray) -> dict[str, np.ndarray]:
    cnn = keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Reshape((28, 28, 1)),
            keras.layers.Conv2D(6, 5, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("relu"),
            keras.layers.MaxPooling2D(2, 2, padding="same"),
            keras.layers.Dropout(0.2),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    cnn = train(cnn, x_train, y_train)
    cnn.save(OUT / "cnn.keras")
    cnn.save_weights(OUT / "cnn.weights.h5")
    (OUT / "cnn.json").write_text(cnn.to_json() + "\n")
    lesson_txt(cnn, OUT / "cnn_weights.txt")
    return {"cnn": reloaded(OUT / "cnn.keras").predict(x_probe, verbose=0)}


def make_zoo(x_train: np.ndarray, y_train: np.ndarray, x_probe: np.ndarray) -> dict[str, np.ndarray]:
    norm = keras.layers.Normalization(axis=-1)
    norm.adapt(x_train[:2000, :, :, None] * 255.0)
    zoo = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Rescaling(255.0),
            norm,
            keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
            keras.layers.AveragePooling2D(2),
            keras.layers.BatchNormalization(epsilon=1e-3),
            keras.layers.Flatten(),
            keras.layers.Dense(24),
            keras.layers.Activation("relu"),
            keras.layers.Dense(10),
            keras.layers.Activation("softmax"),
        ]
    )
    zoo = train(zoo, x_train[..., None], y_train)
    zoo.save(OUT / "zoo.keras")
    return {"zoo": reloaded(OUT / "zoo.keras").predict(x_probe[..., None], verbose=0)}


def make_shapes(x_train: np.ndarray, y_train: np.ndarray, x_probe: np.ndarray) -> dict[str, np.ndarray]:
    # Reshape (28, 28) -> (28, 14, 2): neighbouring pixel pairs become two channels, each with its own
    # Normalization mean and variance; later Reshapes flatten and unflatten multi-channel images.
    norm = keras.layers.Normalization(axis=-1)
    norm.adapt(x_train[:2000].reshape(-1, 28, 14, 2))
    shapes = keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Reshape((28, 14, 2)),
            norm,
            keras.layers.Conv2D(6, 3, activation="relu"),
            keras.layers.AveragePooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Reshape((13, 6, 6)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            keras.layers.AveragePooling2D(3, strides=1, padding="same"),
            keras.layers.AveragePooling2D(2),
            keras.layers.Reshape((144,)),
            keras.layers.Dense(16),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    shapes = train(shapes, x_train, y_train)
    shapes.save(OUT / "shapes.keras")
    return {"shapes": reloaded(OUT / "shapes.keras").predict(x_probe, verbose=0)}


def make_roundtrips(x_train: np.ndarray, y_train: np.ndarray, x_probe: np.ndarray) -> dict[str, np.ndarray]:
    probs = {}
    for name in ("mlp", "cnn"):
        model = from_export(OUT / f"roundtrip_{name}-keras.npz")
        model.save(OUT / f"roundtrip_{name}.keras")
        probs[f"roundtrip_{name}"] = reloaded(OUT / f"roundtrip_{name}.keras").predict(x_probe[..., None], verbose=0)
    return probs


MODELS = {"mlp": make_mlp, "cnn": make_cnn, "zoo": make_zoo, "shapes": make_shapes, "roundtrip": make_roundtrips}


if __name__ == "__main__":
    main()
