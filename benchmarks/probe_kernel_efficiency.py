"""Probe: how close to this CPU's matrix-product rate do JAX's and PyTorch's KonCept512 gradients run?

    python benchmarks/probe_kernel_efficiency.py [--batch 2] [--rounds 7] [--json PATH]

Issue 14 asks for JAX's forward + input gradient to beat PyTorch's on the 2-core CPU. This probe
measures how much room either side has left:

1. **The product rate.** One 2048 x 2048 x 2048 float32 product, JAX (``jit(a @ b)``, XLA:CPU with
   the package's flags) and PyTorch (``torch.mm``, 2 threads), median of ``--rounds`` calls each:
   what these libraries reach on this machine for one large, well-shaped product, in GFLOP/s.
2. **The whole gradient.** KonCept512 (random-weight MediaEval port, the inference form
   ``hub.load_model`` gives, 384x512, batch ``--batch``), JAX and PyTorch eager alternated call by
   call (``sections.measure.alternating_times``). Rate = the program's FLOPs (XLA's cost analysis of
   the HLO lowered for the CPU, ``sections.measure.hlo_flops``; the same network for both sides)
   divided by each side's median time, and that rate as a fraction of the best product rate of 1.
3. **Where JAX's time goes.** Three JAX calls under ``jax.profiler`` (a Perfetto trace of XLA:CPU's
   thunks), classified by the compiled program (:func:`thunk_breakdown`). The matrix products run as
   YNNPACK fusions, which the thunk executor runs synchronously, so their own durations are their
   wall time (which may overlap a concurrent branch). Eigen convolutions run asynchronously (the thunk
   returns before the kernel ends), so every thunk is charged the time from its start to the next
   thunk's start. That attribution is approximate: XLA runs independent branches concurrently, and
   two thunks that overlap are charged to the one that started first. FLOPs per thunk are counted
   from the compiled program as XLA's cost analysis counts them (:func:`classify_program`). The
   profiler slows the calls down by several per cent; the breakdown is for shares, not speeds.

JSON: ``product_rate_gflops`` (jax, torch), ``gradient`` (median and per-round seconds, GFLOP/s,
fraction of the best product rate, JAX / PyTorch), ``breakdown`` (per class: thunks per call,
milliseconds per call, GFLOP/s where known; ``products_own``: the YNNPACK products' own time and
rate), the device and this command.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import math
import os
import re
import sys
import tempfile
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import qcamo_jax  # noqa: E402,F401  (sets the package's XLA:CPU flags before JAX starts)

#: ``%name = f32[d0,d1,...]{layout} opcode(operands), attributes``: one HLO instruction with an array shape.
_INSTRUCTION = re.compile(r"\s*(?:ROOT )?%([\w.\-]+) = \w+\[([\d,]*)\]\S* ([\w\-]+)\((.*?)\)(.*)")
#: ``%name = (f32[...], ...) opcode(...``: an instruction with a tuple shape (name and opcode only).
_TUPLE_INSTRUCTION = re.compile(r"\s*(?:ROOT )?%([\w.\-]+) = \(.*?\) ([\w\-]+)\(")
#: ``HloModule name, ...``: the program's name, which its thunks' trace events carry.
_MODULE = re.compile(r"^HloModule ([^,\s]+)", re.M)
#: ``[ENTRY ]%name (param_0: f32[...], ...) -> f32[...] {``: the start of a computation.
_COMPUTATION = re.compile(r"^(ENTRY )?%([\w.\-]+) \(.*\) -> ")


def _dims(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def _window_pairs(size_in: int, size_out: int, window: dict[str, int]) -> int:
    """Valid (output position, kernel tap) pairs along one spatial axis: the taps that read an input
    element, not padding or a hole of the input dilation (what XLA's cost analysis counts)."""
    dilated = (size_in - 1) * window["lhs_dilate"] + 1
    pairs = 0
    for o in range(size_out):
        for k in range(window["size"]):
            pos = o * window["stride"] + k * window["rhs_dilate"] - window["pad_lo"]
            pairs += 0 <= pos < dilated and pos % window["lhs_dilate"] == 0
    return pairs


def _conv_flops(lhs: list[int], rhs: list[int], out: list[int], attrs: str) -> float:
    """2 x multiply-adds of one HLO ``convolution``, from its shapes, ``window`` and ``dim_labels``."""
    lhs_labels, rhs_labels, out_labels = re.split(r"_|->", re.search(r"dim_labels=(\S+?)[,}\s]", attrs + " ").group(1))
    spatial = [c for c in lhs_labels if c.isdigit()]
    text = re.search(r"window=\{([^}]*)\}", attrs).group(1)
    fields = dict(item.split("=", 1) for item in text.split())
    per_axis = {key: [int(v) for v in fields[key].split("x")] if key in fields else [1] * len(spatial)
                for key in ("size", "stride", "lhs_dilate", "rhs_dilate")}
    pads = [tuple(int(v) for v in p.split("_")) for p in fields["pad"].split("x")] if "pad" in fields else [(0, 0)] * len(spatial)
    pairs = 1
    for axis, label in enumerate(spatial):
        window = {key: values[axis] for key, values in per_axis.items()} | {"pad_lo": pads[axis][0]}
        pairs *= _window_pairs(lhs[lhs_labels.index(label)], out[out_labels.index(label)], window)
    batch, out_features = out[out_labels.index("b")], out[out_labels.index("f")]
    return 2.0 * batch * out_features * rhs[rhs_labels.index("i")] * pairs


def classify_program(hlo_text: str) -> dict[str, tuple[str, float | None]]:
    """``{thunk name: (class, FLOPs or None)}`` for the entry computation of a compiled program.

    Classes: ``product`` (a YNNPACK fusion around a ``dot``), ``dot`` (XLA's own), ``conv KHxKW``
    (with ``/s`` for a strided window and ``/lhs-dilated`` for the input gradient of a strided
    convolution; `` (YNNPACK)`` when a YNNPACK fusion runs it; a fusion holding several such
    operations is named by all of them, joined with ``+``), ``fusion:<name>`` (the fusion's name
    without its number) and the bare opcode for the rest. FLOPs (of a fusion: the sum over its dots
    and convolutions): 2 x multiply-adds, with a convolution's taps on padding and on the holes of an
    input dilation left out, as XLA's cost analysis counts them; ``None`` for everything else.
    """
    shapes: dict[str, list[int]] = {}
    entry, computation = None, None
    kinds: dict[str, list[tuple[str, float]]] = collections.defaultdict(list)  # computation -> its dots/convolutions
    own: dict[str, tuple[str, float]] = {}  # dot or convolution -> (kind, FLOPs)
    top: dict[str, tuple[str, str]] = {}  # entry instruction -> (library or opcode, called computation)
    for line in hlo_text.splitlines():
        head = _COMPUTATION.match(line)
        if head:
            computation = head.group(2)
            entry = computation if head.group(1) else entry
            continue
        m = _INSTRUCTION.match(line)
        if not m:
            tuple_shaped = _TUPLE_INSTRUCTION.match(line)
            if tuple_shaped and computation == entry:
                top[tuple_shaped.group(1)] = (tuple_shaped.group(2), "")
            continue
        name, dims, opcode, operands, rest = m.groups()
        shapes[name] = _dims(dims)
        operand_names = [o.strip().lstrip("%") for o in operands.split(",") if o.strip()]
        if opcode == "dot":
            contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", rest).group(1)
            k = math.prod(shapes[operand_names[0]][int(d)] for d in _dims(contracting))
            own[name] = ("dot", 2.0 * math.prod(shapes[name]) * k)
        elif opcode == "convolution":
            window = re.search(r"window=\{size=(\w+)", rest).group(1)
            kind = "conv " + window + ("/s" if "stride=" in rest else "") + ("/lhs-dilated" if "lhs_dilate" in rest else "")
            own[name] = (kind, _conv_flops(shapes[operand_names[0]], shapes[operand_names[1]], shapes[name], rest))
        if name in own:
            kinds[computation].append(own[name])
        if computation == entry:
            target = re.search(r"calls=%([\w.\-]+)", rest) if opcode == "fusion" else None
            library = "ynn" if '"__ynn_fusion"' in rest else opcode
            top[name] = (library, target.group(1) if target else "")
    out: dict[str, tuple[str, float | None]] = {}
    for name, (library, target) in top.items():
        inner = kinds.get(target or "", [])
        if library == "ynn" and inner:
            names = sorted({"product" if k == "dot" else k + " (YNNPACK)" for k, _ in inner})
            out[name] = ("+".join(names), sum(f for _, f in inner))
        elif name in own:
            out[name] = own[name]
        elif library == "fusion":
            out[name] = ("fusion:" + re.sub(r"[.\d]+$", "", name), None)
        else:
            out[name] = (library, None)
    return out


def thunk_breakdown(events: list[dict[str, Any]], hlo_text: str) -> dict[str, Any]:
    """Per-class time of one compiled program's calls, from a Perfetto trace's ``X`` events.

    Args:
      events: trace events; those with ``args.hlo_op``, ``args.run_id`` and this program's
        ``args.hlo_module`` are its thunks, one ``run_id`` per call.
      hlo_text: the compiled program's ``as_text()``, to classify the thunks (:func:`classify_program`).

    Returns: ``calls`` (how many runs), ``span_ms`` (first thunk start to last thunk end, per call),
    ``classes`` (``{class: {"thunks", "ms", "gflops"}}``, per call: thunks, milliseconds charged from
    each thunk's start to the next one's, and the class's FLOPs over that time; largest first) and
    ``products_own`` (the YNNPACK product fusions' own durations and rate: they run synchronously, but
    may overlap a concurrent branch).

    Raises:
      ValueError: no event in ``events`` is a thunk of this program.
    """
    kinds = classify_program(hlo_text)
    module = _MODULE.search(hlo_text)
    thunks = [e for e in events if e.get("ph") == "X" and "run_id" in e.get("args", {}) and "hlo_op" in e["args"]
              and (module is None or e["args"].get("hlo_module", module.group(1)) == module.group(1))]
    runs = sorted({e["args"]["run_id"] for e in thunks})
    if not runs:
        raise ValueError("the trace holds no XLA:CPU thunk events of this program")
    ms: dict[str, float] = collections.defaultdict(float)
    flops: dict[str, float] = collections.defaultdict(float)
    count: collections.Counter = collections.Counter()
    spans, product_ms, product_flops = [], 0.0, 0.0
    for run in runs:
        seq = sorted((e for e in thunks if e["args"]["run_id"] == run), key=lambda e: e["ts"])
        spans.append((max(e["ts"] + e["dur"] for e in seq) - seq[0]["ts"]) / 1e3)
        for this, following in zip(seq, seq[1:] + [None]):
            kind, f = kinds.get(this["name"], ("other", None))
            end = following["ts"] if following else this["ts"] + this["dur"]
            ms[kind] += (end - this["ts"]) / 1e3
            count[kind] += 1
            flops[kind] += f or 0.0
            if kind == "product":
                product_ms += this["dur"] / 1e3
                product_flops += f or 0.0
    n = len(runs)

    def rate(fl: float, milliseconds: float) -> float | None:
        return round(fl / 1e9 / (milliseconds / 1e3), 1) if fl and milliseconds else None

    classes = {k: {"thunks": round(count[k] / n, 1), "ms": round(ms[k] / n, 2), "gflops": rate(flops[k], ms[k])}
               for k in sorted(ms, key=lambda k: -ms[k])}
    return {"calls": n, "span_ms": [round(v, 1) for v in spans], "classes": classes,
            "products_own": {"ms": round(product_ms / n, 2), "gflops": rate(product_flops, product_ms)}}


def _product_rates(rounds: int) -> dict[str, float]:
    import jax
    import numpy as np
    import torch

    from sections.measure import alternating_times

    n = 2048
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    ja, jb = jax.numpy.asarray(a), jax.numpy.asarray(b)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    mm = jax.jit(lambda x, y: x @ y)
    timed = alternating_times({"jax": lambda: jax.block_until_ready(mm(ja, jb)), "torch": lambda: torch.mm(ta, tb)},
                              rounds, warmup=2)
    return {name: round(2.0 * n**3 / t.median_s / 1e9, 1) for name, t in timed.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.batch < 1:
        p.error("--rounds and --batch must be at least 1")

    import jax
    import numpy as np
    import torch

    from attack_pgd import build_models, photos
    from report_json import emit
    from sections.measure import alternating_times, compile_timed, device_info, per_round_ratios
    from sections.torch_side import torch_grad_step

    torch.set_num_threads(os.cpu_count())
    load = os.getloadavg()
    rates = _product_rates(args.rounds)
    tmodel, model = build_models(photos((384, 512), 4), 0)
    x = jax.numpy.asarray(photos((384, 512), args.batch).astype(np.float32))
    grad = jax.jit(jax.value_and_grad(lambda v, im: model.apply(v, im).sum(), argnums=1))
    compiled, compile_s = compile_timed(grad, model.variables, x)
    torch_step, xn = torch_grad_step(tmodel.eval(), "cpu"), np.asarray(x)
    timed = alternating_times({"jax": lambda: jax.block_until_ready(compiled(model.variables, x)),
                               "torch": lambda: torch_step(xn)}, args.rounds, warmup=2)
    flops = compiled.hlo_flops
    best = max(rates.values())
    gradient = {name: {"median_s": t.median_s, "runs_s": t.runs_s, "minflt_per_run": t.minflt,
                       "gflops": round(flops / t.median_s / 1e9, 1),
                       "fraction_of_best_product_rate": round(flops / t.median_s / 1e9 / best, 3)}
                for name, t in timed.items()}
    gradient["ratio_jax_torch"] = timed["jax"].median_s / timed["torch"].median_s
    gradient["ratio_per_round"] = per_round_ratios(timed["jax"].runs_s, timed["torch"].runs_s)

    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            for _ in range(3):
                jax.block_until_ready(compiled(model.variables, x))
        (trace_path,) = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
        with gzip.open(trace_path, "rt") as f:
            events = json.load(f)["traceEvents"]
    report = {
        "command": "python benchmarks/probe_kernel_efficiency.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": device_info(), "loadavg_at_start": [round(v, 2) for v in load], "batch": args.batch,
        "size": [384, 512], "rounds": args.rounds, "product_rate_gflops": rates, "gradient_hlo_flops": flops,
        "jax_compile_s": compile_s, "gradient": gradient,
        "breakdown": thunk_breakdown(events, compiled.as_text()),
    }
    return emit(report, args.json)


if __name__ == "__main__":
    sys.exit(main())
