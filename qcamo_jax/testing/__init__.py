"""Reference implementations of KonCept512 in the original frameworks, for parity tests and benchmarks.

* :mod:`qcamo_jax.testing.torch_koncept` - the MediaEval 2020 PyTorch port (Cadene's InceptionResNetV2
  from the ``pretrainedmodels`` package + the MediaEval head), needs ``torch``.
* :mod:`qcamo_jax.testing.keras_koncept` - the KonIQ Keras model (``keras.applications.InceptionResNetV2``
  + the kuti head), needs ``keras`` (any backend; the tests use ``KERAS_BACKEND=jax``).

Both build models with *random* weights whose batch-norm statistics are calibrated on real photos, so
that deep features stay image dependent and scores spread over several points: a parity test with the
default initialisation would compare nearly constant outputs. Nothing here downloads anything.
"""
