"""Differentiable JPEG: exact forward value, non-zero and checked gradients."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from photos import photo
from qcamo_jax import jpeg
from qcamo_jax.jpeg import diff

SIZE = (29, 45)  # odd: padding, 4:2:0 edge handling and cropping are all in the graph


def _image(seed=0):
    rng = np.random.default_rng(seed)
    x = photo("chelsea", SIZE).astype(np.float32)
    return jnp.asarray(np.clip(x + rng.uniform(-0.45, 0.45, x.shape), 0, 255).astype(np.float32))


@functools.lru_cache(maxsize=None)
def roundtrip(dct_method, subsampling, rounding):
    return jax.jit(functools.partial(diff.jpeg_roundtrip, quality=90, dct_method=dct_method, subsampling=subsampling,
                                     rounding=rounding))


@pytest.mark.parametrize("subsampling, rounding", [("444", "ste"), ("420", "ste"), ("420", "cubic")])
def test_forward_value_is_the_exact_emulation_and_gradient_is_non_zero(subsampling, rounding):
    x = _image()
    w = jax.random.normal(jax.random.key(0), x.shape)
    f = functools.partial(diff.jpeg_roundtrip, quality=90, dct_method="ifast", subsampling=subsampling,
                          rounding=rounding)

    @jax.jit
    def value_and_vjp(a):
        y, pullback = jax.vjp(f, a)
        return y, pullback(w)[0]

    y, g = value_and_vjp(x)
    exact = jax.jit(functools.partial(jpeg.roundtrip, quality=90, dct_method="ifast", subsampling=subsampling))(
        np.asarray(jnp.round(x)).astype(np.uint8))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(exact).astype(np.float32))
    frac = float((g != 0).mean())
    print(f"jpeg_roundtrip {subsampling} {rounding}: non-zero gradient fraction {frac:.4f}, "
          f"|g| mean {float(jnp.abs(g).mean()):.4f}")
    assert bool(jnp.all(jnp.isfinite(g))) and frac > 0.95


def test_ste_gradient_is_the_linear_codec_without_quantization():
    # 4:4:4 with STE: colour conversion, DCT, IDCT and inverse colour cancel, so the Jacobian is ~identity
    # (except where decoded pixels clip at 0 / 255).
    x = _image(1)
    v = jax.random.normal(jax.random.key(1), x.shape)
    _, t = jax.jvp(roundtrip("islow", "444", "ste"), (x,), (v,))
    np.testing.assert_allclose(np.asarray(t), np.asarray(v), atol=1e-3)
    # 4:2:0: luma passes through, chroma is low-passed (box down, triangle up): the tangent is smoother
    _, t = jax.jvp(roundtrip("islow", "420", "ste"), (x,), (v,))
    assert 0.3 < float(jnp.corrcoef(t.ravel(), v.ravel())[0, 1]) < 0.95


def test_cubic_gradient_is_3_frac_squared():
    # d/dr [round(r) + (r - round r)^3] = 3 (r - round r)^2, at the encoder's exact ratio
    r_exact = jnp.array([0.0, 0.2, -0.4, 1.5, 2.49])
    z = jpeg.codec.round_half_away(r_exact)
    g = jax.grad(lambda r: jnp.sum(diff.quantize_surrogate(r, r_exact, z, "cubic")))(r_exact)
    np.testing.assert_allclose(np.asarray(g), 3 * np.asarray(r_exact - z) ** 2, rtol=1e-6)
    value = diff.quantize_surrogate(r_exact + 0.01, r_exact, z, "cubic")
    np.testing.assert_array_equal(np.asarray(value), np.asarray(z))  # the value stays the exact integer
    g = jax.grad(lambda r: jnp.sum(diff.quantize_surrogate(r, r_exact, z, "ste")))(r_exact)
    np.testing.assert_array_equal(np.asarray(g), np.ones(5))


@pytest.mark.parametrize("subsampling", ["444", "420"])
def test_check_grads_on_smooth_parts(subsampling):
    """Finite differences against autodiff for the smooth encoder front end and the float decoder."""
    x = jnp.asarray(photo("coffee", (12, 20)).astype(np.float32))
    fwd = jax.jit(functools.partial(jpeg.forward_dct_float, subsampling=subsampling))
    check_grads(fwd, (x,), order=1, modes=("fwd", "rev"), atol=1e-2, rtol=1e-2, eps=1.0)
    coefs = tuple(c * 0.5 for c in fwd(x))
    dec = jax.jit(lambda *c: jpeg.decode_float(c, height=12, width=20, subsampling=subsampling))
    check_grads(dec, coefs, order=1, modes=("fwd", "rev"), atol=1e-2, rtol=1e-2, eps=1.0)
    # with libjpeg's clamping (piecewise linear), away from the clamp boundaries
    decc = jax.jit(lambda *c: jpeg.decode_float(c, height=12, width=20, subsampling=subsampling, clip=True))
    check_grads(decc, coefs, order=1, modes=("rev",), atol=1e-2, rtol=1e-2, eps=1e-2)


def test_decode_float_gradient_wrt_coefficients_matches_basis_images():
    # d pixel / d coefficient of the float decoder is the DCT basis function, times the colour matrix
    coefs = tuple(jnp.zeros(s) for s in ((2, 3, 8, 8), (2, 3, 8, 8), (2, 3, 8, 8)))
    dec = functools.partial(jpeg.decode_float, height=16, width=24, subsampling="444")
    jac = jax.jacfwd(lambda y: dec((y, coefs[1], coefs[2])))(coefs[0])
    # luma coefficient (0,0) of block (0,0): 1/8 on each of the block's 64 pixels, all of R, G, B
    np.testing.assert_allclose(np.asarray(jac[:8, :8, :, 0, 0, 0, 0]), 1 / 8, atol=1e-6)
    assert float(jnp.abs(jac[8:, :, :, 0, 0, 0, 0]).max()) == 0.0


def test_roundtrip_vmaps_and_rejects_bad_input():
    xs = jnp.stack([_image(0), _image(1)])
    ys = jax.jit(jax.vmap(functools.partial(diff.jpeg_roundtrip, quality=90)))(xs)
    assert ys.shape == xs.shape and ys.dtype == jnp.float32
    with pytest.raises(ValueError, match=r"float32 \[H, W, 3\]"):
        diff.jpeg_roundtrip(xs, 90)
    with pytest.raises(ValueError, match=r"float32 \[H, W, 3\].*0..255"):
        diff.jpeg_roundtrip(jnp.full((8, 8, 3), 300.0), 90)
    with pytest.raises(ValueError, match="rounding"):
        diff.jpeg_roundtrip(xs[0], 90, rounding="soft")
    with pytest.raises(ValueError, match="1..100"):
        diff.jpeg_roundtrip(xs[0], 0)
