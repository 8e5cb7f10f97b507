"""Test helper: a score function that counts the backward passes a compiled program really runs."""

import jax


def counting_backward(score_fn, calls):
    """``score_fn`` whose backward pass appends to ``calls`` when the compiled program runs it."""

    @jax.custom_vjp
    def f(v, x):
        return score_fn(v, x)

    def fwd(v, x):
        return jax.vjp(score_fn, v, x)

    def bwd(vjp, ct):
        jax.debug.callback(lambda: calls.append(1))
        return vjp(ct)

    f.defvjp(fwd, bwd)
    return f
