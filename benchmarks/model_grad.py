"""Forward + input gradient of KonCept512 at 384x512: JAX (jit) vs PyTorch eager, same weights, same CPU.

The model is the MediaEval variant (the PyTorch port) with random weights: one PyTorch model is built,
its state_dict is converted with :mod:`qcamo_jax.models.convert`, so both frameworks run the very same
network. The timed step is what an attack iteration needs: scores of a batch and d(sum of scores)/d(pixels).
JAX compile time is reported apart; every JAX result is waited for with ``block_until_ready``.
Prints one JSON object; ``ratio`` = JAX time / PyTorch time (below 1: JAX faster).

    python benchmarks/model_grad.py --batches 1 4 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per batch size (median reported)")
    parser.add_argument("--size", type=int, nargs=2, default=[384, 512], metavar=("H", "W"))
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from qcamo_jax.models import convert, hub
    from qcamo_jax.testing import torch_koncept as tk

    torch.manual_seed(0)
    tmodel = tk.build_torch_koncept().eval()
    with tempfile.TemporaryDirectory() as d:
        torch.save(tmodel.state_dict(), os.path.join(d, "k.pth"))
        convert.convert_file(os.path.join(d, "k.pth"), os.path.join(d, "k.safetensors"))
        model = hub.load_model(os.path.join(d, "k.safetensors"))

    def total(variables, pixels):
        return model.apply(variables, pixels).sum()

    grad_fn = jax.jit(jax.value_and_grad(total, argnums=1))
    h, w = args.size
    rng = np.random.default_rng(0)
    results = []
    for b in args.batches:
        x = rng.uniform(0, 255, (b, h, w, 3)).astype(np.float32)
        xj = jnp.asarray(x)
        t0 = time.perf_counter()
        compiled = grad_fn.lower(model.variables, xj).compile()
        compile_s = time.perf_counter() - t0
        jax.block_until_ready(compiled(model.variables, xj))  # warm-up
        jt = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(model.variables, xj))
            jt.append(time.perf_counter() - t0)

        def torch_step():
            # autograd.grad w.r.t. the input only: .backward() would also compute every weight
            # gradient, work the JAX side (argnums=1) never does.
            xt = torch.from_numpy(x).requires_grad_(True)
            out = tmodel(xt.permute(0, 3, 1, 2) / 127.5 - 1.0).sum()
            (g,) = torch.autograd.grad(out, xt)
            return g

        torch_step()  # warm-up
        tt = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            torch_step()
            tt.append(time.perf_counter() - t0)
        jm, tm = statistics.median(jt), statistics.median(tt)
        results.append({"batch": b, "jax_s": round(jm, 4), "torch_s": round(tm, 4), "ratio": round(jm / tm, 3),
                        "jax_compile_s": round(compile_s, 2), "jax_runs_s": [round(t, 4) for t in jt],
                        "torch_runs_s": [round(t, 4) for t in tt]})
    print(json.dumps({
        "benchmark": "koncept512 forward + input gradient", "size": [h, w], "variant": "mediaeval",
        "jax": jax.__version__, "jax_backend": jax.default_backend(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "load_average": os.getloadavg(), "results": results,
    }, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
