"""JPEG-aware attack (PGD through the differentiable JPEG, then the DCT quantizer) on a small CNN."""

import jax
import jax.numpy as jnp
import numpy as np

import photos
from qcamo_jax.attacks.config import PGDConfig, SearchConfig
from qcamo_jax.jpeg import codec
from qcamo_jax.jpeg.reencoders import ReencoderSet
from qcamo_jax.quantize import DCTConfig, jpeg_aware_attack
from test_quantize_spatial import toy_model


def test_jpeg_aware_attack_reaches_target_on_decoded_jpeg():
    score_fn, variables = toy_model((32, 48))
    originals = photos.photos((32, 48), names=("astronaut", "coffee"))
    clean = np.asarray(jax.vmap(lambda x: score_fn(variables, x))(originals.astype(jnp.float32)))
    targets = jnp.asarray(clean - 1.0, jnp.float32)
    search = SearchConfig(pgd=PGDConfig(steps=8, margin=0.2), eps_max=2000.0, bisection_steps=3)
    survive = ReencoderSet.parse("imagemagick:90,pillow-420:85")
    cfg = DCTConfig(margin=0.1, survive=survive)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    coeffs, decoded, res, att = jax.jit(lambda o, t, k: jpeg_aware_attack(score_fn, variables, o, t, k, search, cfg))(
        originals, targets, keys)
    assert np.all(np.asarray(res.success))
    decoded = np.asarray(decoded)
    true = np.asarray(jax.vmap(lambda x: score_fn(variables, x))(decoded.astype(np.float32)))
    assert np.all(true < np.asarray(targets) - 0.1)
    emus = survive.emulations(cfg.subsampling)
    for i in range(2):
        one = jax.tree.map(lambda a: np.asarray(a[i]), coeffs)
        np.testing.assert_array_equal(np.asarray(codec.decode(one)), decoded[i])
        # every re-encoder of the set keeps the image below the target (worst case decides success)
        for j, e in enumerate(emus):
            rt = codec.roundtrip(decoded[i], e.quality, dct_method=e.dct_method, subsampling=e.subsampling)
            s = float(score_fn(variables, rt.astype(jnp.float32)))
            np.testing.assert_allclose(s, float(res.scores[i, 1 + j]), atol=1e-4)
            assert s < float(targets[i]) - 0.1
    assert att.budget.shape == (2,)
