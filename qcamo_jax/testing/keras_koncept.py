"""Keras 3 reference KonCept512: ``keras.applications.InceptionResNetV2`` + the kuti head.

The KonIQ project's model (github subpic/koniq, helper library kuti) is::

    base = InceptionResNetV2(weights=None, include_top=False, input_shape=(None, None, 3))
    x = GlobalAveragePooling2D()(base.output)
    for units, rate in ((2048, .25), (1024, .25), (256, .5)):    # kuti fc_layers, batch_norm=2
        x = Dropout(rate)(BatchNormalization()(Dense(units, activation="relu")(x)))
    model = Model(base.input, Dense(1)(x))

Any Keras backend works; the project's tests use ``KERAS_BACKEND=jax`` (no TensorFlow is installed).
The helpers that write ``.h5`` files use Keras' own legacy HDF5 writer (what ``model.save("x.h5")`` and
Keras 2's ``save_weights`` produce).
"""

from __future__ import annotations

import os

import numpy as np

HEAD = ((2048, 0.25), (1024, 0.25), (256, 0.5))


def build_keras_koncept():
    """The Keras KonCept512 with Keras' default random initialisation (input size free)."""
    import keras

    base = keras.applications.InceptionResNetV2(weights=None, include_top=False, input_shape=(None, None, 3))
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    for units, rate in HEAD:
        x = keras.layers.Dense(units, activation="relu")(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Dropout(rate)(x)
    out = keras.layers.Dense(1)(x)
    return keras.Model(base.input, out, name="koncept512")


def to_input(pixels: np.ndarray) -> np.ndarray:
    """``[B, H, W, 3]`` pixels in [0, 255] -> model input in [-1, 1] (kuti / Keras ``preprocess_input`` "tf")."""
    return np.asarray(pixels, np.float32) / 127.5 - 1.0


def scores(model, pixels: np.ndarray) -> np.ndarray:
    """Inference scores ``float32 [B]``."""
    return np.asarray(model(to_input(pixels), training=False))[:, 0].astype(np.float32)


def scores_and_grads(model, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``[B]`` and d(sum of scores)/d(pixels) ``[B, H, W, 3]`` (pixel units), with the JAX backend.

    Uses ``model.stateless_call`` under ``jax.jit`` with the weights as arguments (compiling the Keras
    graph once is faster than eager op-by-op dispatch of ~2000 layers).
    """
    import jax
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError("scores_and_grads needs KERAS_BACKEND=jax")

    def total(trainable, non_trainable, p):
        out, _ = model.stateless_call(trainable, non_trainable, p / 127.5 - 1.0, training=False)
        return out[:, 0].sum(), out[:, 0]

    grad_fn = jax.jit(jax.value_and_grad(total, argnums=2, has_aux=True))
    (_, s), g = grad_fn([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
                        np.asarray(pixels, np.float32))
    return np.asarray(s), np.asarray(g)


def calibrate(model, photos: np.ndarray, seed: int = 0, spread: float = 12.0, centre: float = 50.0):
    """Randomise batch-norm affine parameters, set every moving statistic from real photos, spread scores.

    Same recipe as :func:`qcamo_jax.testing.torch_koncept.calibrate`: betas (and the head's gammas)
    are randomised so a converter that swaps them fails; one training-mode call with ``momentum=0`` and
    dropout rates set to 0 makes every batch norm store the statistics of its own inputs (each layer
    normalises with the batch's statistics during that call, layer after layer); the last Dense is then
    rescaled so the photos' scores have standard deviation ``spread`` around ``centre``.
    """
    import keras

    rng = np.random.default_rng(seed)
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    drops = [l for l in model.layers if isinstance(l, keras.layers.Dropout)]
    saved = [(l, l.rate) for l in drops]
    for bn in bns:
        if bn.scale:
            bn.gamma.assign(rng.uniform(0.6, 1.4, bn.gamma.shape).astype(np.float32))
        bn.beta.assign((0.1 + 0.1 * rng.standard_normal(bn.beta.shape)).astype(np.float32))
        bn.momentum = 0.0
    for layer in drops:
        layer.rate = 0.0
    model(to_input(photos), training=True)
    for bn in bns:
        bn.momentum = 0.99
    for layer, rate in saved:
        layer.rate = rate
    s = scores(model, photos)
    last = model.layers[-1]
    kernel, bias = (np.asarray(w) for w in last.get_weights())
    gain = spread / max(float(s.std()), 1e-6)
    last.set_weights([kernel * gain, (bias - s.mean()) * gain + centre])
    return model


def save_h5_full(model, path: str | os.PathLike) -> None:
    """``model.save("x.h5")``: the legacy full-model layout (weights under ``model_weights/``)."""
    model.save(os.fspath(path))


def save_h5_weights(model, path: str | os.PathLike) -> None:
    """The legacy weights-only layout of Keras 2's ``model.save_weights("x.h5")`` (layer groups at the root)."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(os.fspath(path), "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
