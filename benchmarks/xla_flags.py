"""XLA:CPU flag settings side by side: forward + input gradient and the attack, interleaved with PyTorch.

XLA flags are read once per process, so every setting runs in its own worker process (and PyTorch in
one more). The driver starts the workers, each loads the same weights and compiles its programs, then
the driver asks them in turn for one timed run each, ``--repeats`` rounds (settings alternate within a
round, so a burst of load from other jobs hits every setting alike). Medians are reported with the
load average sampled around every round. Each JAX setting's gradient and adversarial images are
compared with the first setting's (the reference).

Models: ``koncept512`` (MediaEval KonCept512, random weights with calibrated batch norms, the weights of
``benchmarks/attack_pgd.py:build_models``, PyTorch worker included) and ``default`` (the embedded
``qcamo-small``; no PyTorch counterpart). The attack is the paper's plain search at ``--tries`` x
``--steps`` with early stop off (``benchmarks/attack_pgd.py``'s configuration, ``torch_search`` on the
PyTorch side), so every side does exactly ``batch * tries * steps`` gradients.

Usage:
  python benchmarks/xla_flags.py --model koncept512 --batch 1 --repeats 3 \\
      --setting dot=--xla_cpu_experimental_ynn_fusion_type=dot --setting none=
Prints one JSON object (also written to ``--out``). The worker mode (``--worker``) is internal.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from report_json import emit  # noqa: E402  (benchmarks/ is on sys.path: run as a script)
from sections.measure import cpu_name  # noqa: E402

from qcamo_jax import xla_flags as pkg_flags  # noqa: E402


def _reply(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def worker(args) -> int:
    """Load, compile, then answer ``grad`` / ``attack`` / ``quit`` lines on stdin with timings on stdout.

    Each reply: ``{"s": wall seconds, "minflt": minor page faults, "sys_s": kernel CPU seconds}`` of the call.
    """
    import qcamo_jax  # noqa: F401  first: its process defaults (XLA flags, malloc) apply before any work
    import attack_pgd

    x = attack_pgd.photos(tuple(args.size), args.batch).astype(np.float32)
    targets = None
    if args.side == "torch":
        import torch

        from qcamo_jax.testing import torch_koncept

        torch.set_num_threads(args.threads)
        tmodel = torch_koncept.build_torch_koncept()
        tmodel.load_state_dict(torch.load(args.weights + ".pth"))
        tmodel.eval()
        targets = (torch_koncept.scores(tmodel, x) - args.drop).astype(np.float32)

        def grad():
            xt = torch.from_numpy(x).requires_grad_(True)
            (g,) = torch.autograd.grad(tmodel(xt.permute(0, 3, 1, 2) / 127.5 - 1.0).sum(), xt)
            return g.numpy()

        def attack():
            return attack_pgd.torch_search(tmodel, x, targets, 2000.0, args.tries, args.steps)[0]
        grad()
        compile_s = {}
    else:
        import jax
        import jax.numpy as jnp

        from qcamo_jax import attacks
        from qcamo_jax.models import hub

        model = hub.load_model("default" if args.model == "default" else args.weights + ".safetensors")
        xj = jnp.asarray(x)
        total = lambda v, p: model.apply(v, p).sum()  # noqa: E731
        t0 = time.perf_counter()
        g_c = jax.jit(jax.value_and_grad(total, argnums=1)).lower(model.variables, xj).compile()
        compile_s = {"grad": round(time.perf_counter() - t0, 2)}
        tj = jnp.asarray(np.asarray(jax.jit(model.apply)(model.variables, xj)) - args.drop, jnp.float32)
        cfg = attacks.SearchConfig.paper(pgd=attacks.PGDConfig(steps=args.steps, early_stop=False, schedule="constant"),
                                         bisection_steps=args.tries)
        t0 = time.perf_counter()
        a_c = attacks.make_attack(model.score_one, "search", cfg).lower(model.variables, xj, tj, None).compile()
        compile_s["attack"] = round(time.perf_counter() - t0, 2)

        def grad():
            return np.asarray(jax.block_until_ready(g_c(model.variables, xj))[1])

        def attack():
            return np.asarray(jax.block_until_ready(a_c(model.variables, xj, tj, None))[0])
        grad()
    _reply({"ready": True, "compile_s": compile_s})
    saved = set()
    for line in sys.stdin:
        what = line.strip()
        if what == "quit":
            break
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        out = {"grad": grad, "attack": attack}[what]()
        dt, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        if what not in saved:
            np.save(os.path.join(args.dump, f"{args.name}-{what}.npy"), out)
            saved.add(what)
        _reply({"s": dt, "minflt": r1.ru_minflt - r0.ru_minflt, "sys_s": r1.ru_stime - r0.ru_stime})
    return 0


def interleave(sides, args, weights: str, tmp: str, reference: str, torch_name: str | None) -> dict:
    """Start one worker per side, then time them in alternating rounds; returns ``{name: entry}``.

    Args:
      sides: ``[(name, "jax" | "torch", env)]``; ``env`` is added to this process's environment.
      args: the parsed command line (model, size, batch, tries, steps, drop, threads, what, repeats).
      weights, tmp: :func:`prepare_weights`' path prefix and the folder where workers save outputs.
      reference: the side whose outputs the other JAX sides are compared with.
      torch_name: the side the JAX sides' ``ratio_vs_torch`` divides by (None: no ratio).

    Returns:
      ``{name: {"compile_s", what: {"median_s", "runs_s", "minflt_per_call", "sys_s_per_call", ...}}}`` and
      ``"loadavg_per_round"``. A worker that fails to start gets ``{"error": ...}``.
    """
    common = [sys.executable, os.path.abspath(__file__), "--worker", "--model", args.model, "--size",
              *map(str, args.size), "--batch", str(args.batch), "--tries", str(args.tries), "--steps",
              str(args.steps), "--drop", str(args.drop), "--threads", str(args.threads), "--weights", weights,
              "--dump", tmp]
    procs, info, kinds = {}, {}, {}
    for name, side, env in sides:  # started one at a time: compiling side by side would skew nothing
        kinds[name] = side
        proc = subprocess.Popen(common + ["--side", side, "--name", name], env=dict(os.environ, **env),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = proc.stdout.readline()
        if not line:
            info[name] = {"error": f"worker exited with {proc.wait()}"}
            continue
        procs[name] = proc
        info[name] = {"compile_s": json.loads(line)["compile_s"]}
        print(f"{name} ready: {info[name]}", file=sys.stderr, flush=True)
    calls = {(n, w): [] for n in procs for w in args.what}
    loads = []
    for r in range(args.repeats):
        for what in args.what:
            # Alternate the order from round to round so no side always runs first.
            order = list(procs) if r % 2 == 0 else list(procs)[::-1]
            for name in order:
                procs[name].stdin.write(what + "\n")
                procs[name].stdin.flush()
                calls[name, what].append(json.loads(procs[name].stdout.readline()))
                print(f"round {r} {what} {name}: {calls[name, what][-1]['s']:.3f} s (load {os.getloadavg()[0]:.2f})",
                      file=sys.stderr, flush=True)
        loads.append(os.getloadavg()[0])
    for proc in procs.values():
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        proc.wait()
    median = lambda name, what: statistics.median(c["s"] for c in calls[name, what])  # noqa: E731
    for name in procs:
        for what in args.what:
            cs = calls[name, what]
            entry = {"median_s": round(median(name, what), 3), "runs_s": [round(c["s"], 3) for c in cs],
                     "minflt_per_call": round(statistics.median(c["minflt"] for c in cs)),
                     "sys_s_per_call": round(statistics.median(c["sys_s"] for c in cs), 3)}
            if name != reference and kinds[name] == "jax" and reference in procs:
                a = np.load(os.path.join(tmp, f"{name}-{what}.npy"))
                b = np.load(os.path.join(tmp, f"{reference}-{what}.npy"))
                entry["max_abs_diff_vs_ref"] = float(np.max(np.abs(a - b)))
                entry["rel_l2_diff_vs_ref"] = float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))
            if torch_name in procs and kinds[name] == "jax":
                entry["ratio_vs_torch"] = round(median(name, what) / median(torch_name, what), 3)
            info[name][what] = entry
    info["loadavg_per_round"] = [round(v, 2) for v in loads]
    return info


def prepare_weights(path: str, size) -> None:
    """The benchmark's KonCept512 weights as ``path.pth`` (PyTorch) and ``path.safetensors`` (Flax)."""
    import torch

    import attack_pgd
    from qcamo_jax.models import convert

    tmodel, _ = attack_pgd.build_models(attack_pgd.photos(tuple(size), 4), 0)
    torch.save(tmodel.state_dict(), path + ".pth")
    convert.convert_file(path + ".pth", path + ".safetensors")


def add_run_arguments(p: argparse.ArgumentParser, batch: int, repeats: int) -> None:
    """The options :func:`interleave` and the workers read, and ``--no-torch`` / ``--out``, on ``p``."""
    p.add_argument("--size", type=int, nargs=2, default=[384, 512], metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--repeats", type=int, default=repeats)
    p.add_argument("--tries", type=int, default=2)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--drop", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--what", nargs="+", default=["grad", "attack"], choices=["grad", "attack"])
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--out", default=None)


def run_description(script: str, args, argv) -> dict:
    """The report fields every interleaved comparison shares: command, CPU, size, batch, attack, threads."""
    return {"command": " ".join(["python", f"benchmarks/{script}", *map(shlex.quote, sys.argv[1:] if argv is None else argv)]),
            "cpu": f"{cpu_name()} ({os.cpu_count()} cores)", "size": args.size, "batch": args.batch,
            "attack": f"plain search {args.tries} tries x {args.steps} steps, no early stop",
            "threads": {"torch": args.threads, "xla": "all cores (default)"}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["koncept512", "default"], default="koncept512")
    add_run_arguments(p, batch=1, repeats=3)
    p.add_argument("--setting", action="append", default=None,
                   help="NAME=XLA_FLAGS (repeatable; the first is the reference). Default: the package's "
                        "default list, jaxlib's own (no flag) and convolutions alone")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--side", default="jax", help=argparse.SUPPRESS)
    p.add_argument("--name", default="", help=argparse.SUPPRESS)
    p.add_argument("--weights", default="", help=argparse.SUPPRESS)
    p.add_argument("--dump", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)

    settings = args.setting or [
        "package_default=" + " ".join(pkg_flags.vendor_flags()), "none=",
        "ynn_conv=--xla_cpu_experimental_ynn_fusion_type=individual_convolution",
    ]
    settings = [tuple(s.split("=", 1)) for s in settings]
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "koncept512")
        if args.model == "koncept512":
            prepare_weights(weights, args.size)
        sides = [(name, "jax", dict(JAX_PLATFORMS="cpu", XLA_FLAGS=flags, QCAMO_XLA_DEFAULTS="0"), flags)
                 for name, flags in settings]
        if args.model == "koncept512" and not args.no_torch:
            sides.append(("torch", "torch", {"JAX_PLATFORMS": "cpu"}, ""))
        info = interleave([s[:3] for s in sides], args, weights, tmp, reference=settings[0][0], torch_name="torch")
        for name, _, _, flags in sides:
            info.setdefault(name, {})["flags"] = flags
    report = {"benchmark": "XLA:CPU flag settings, interleaved", **run_description("xla_flags.py", args, argv),
              "model": args.model, "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
              "loadavg_per_round": info.pop("loadavg_per_round"), "settings": info}
    return emit(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
