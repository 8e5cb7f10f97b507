"""Share of ``qcamo attack``'s wall time spent outside the engine (the compiled attack + quantizer).

Runs :func:`qcamo_jax.pipeline.run` (what ``qcamo attack`` runs) on ``--images`` crops written as PNG
files, with the real engine (:class:`qcamo_jax.pipeline.AttackEngine`) wrapped in a timer. The engine is
compiled first on one batch of the same shape (a separate ``run`` into a scratch folder), so the timed run
measures steady state. Reported: total wall time of the timed ``run``, time inside engine calls
(the jitted attack + quantizer, *and* the host encoding of the output files that the engine does
after the device work), and the rest: decoding and probing inputs, planning, scoring the outputs as
saved and after the reference re-encoding, writing files and reports.

Public API only (``pipeline.run``, ``pipeline.Settings``, ``pipeline.make_engine``), so it keeps working
when the pipeline's internals move.

With ``--overlap both`` (default) the timed run is made twice, with ``overlap=True`` (a batch's host
work in a worker thread while the next batch's engine call runs: "outside" is then the host time the
engine waited for) and ``overlap=False`` (one after the other, as before issue 14).

Usage:
  python benchmarks/pipeline_overhead.py --images 32 --size 192x256 --batch 8 --out overhead.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from report_json import emit  # noqa: E402  (benchmarks/ is on sys.path)


class TimedEngine:
    """Wraps an engine; accumulates the wall time of its calls (each ends with host arrays: synchronous)."""

    def __init__(self, engine):
        self.engine, self.seconds, self.calls = engine, 0.0, 0

    def __call__(self, images, seeds):
        t0 = time.perf_counter()
        out = self.engine(images, seeds)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out

    def __getattr__(self, name):  # identity, traces... of the wrapped engine
        return getattr(self.engine, name)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--size", default="192x256")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--target", type=float, default=None, help="default: median clean score - 10")
    p.add_argument("--quantize", default="dct", choices=["dct", "spatial", "none"])
    p.add_argument("--overlap", default="both", choices=["both", "on", "off"],
                   help="host work of a batch during the next engine call (pipeline.run overlap=); both: measure each")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    from PIL import Image

    from attack_gradients import load_photos
    from qcamo_jax import pipeline
    from qcamo_jax.models.hub import load_model

    h, w = (int(v) for v in args.size.split("x"))
    crops, _ = load_photos((h, w))
    reps = -(-args.images // len(crops))
    crops = np.concatenate([crops] + [np.flip(crops, axis=2)] * (reps - 1))[:args.images]  # mirrored: new files
    model = load_model("default")
    target = args.target
    if target is None:
        import jax

        target = float(np.median(np.asarray(jax.jit(model.apply)(model.variables, crops.astype(np.float32))))) - 10.0
    settings = pipeline.Settings(target=target, quantize=args.quantize)
    engine = TimedEngine(pipeline.make_engine(model, settings))
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, c in enumerate(crops):
            paths.append(os.path.join(tmp, "in", f"img{i:03d}.png"))
            os.makedirs(os.path.dirname(paths[-1]), exist_ok=True)
            Image.fromarray(c).save(paths[-1])
        t0 = time.perf_counter()
        pipeline.run(paths[:args.batch], os.path.join(tmp, "warm"), model, settings, engine=engine,
                     batch_size=args.batch, progress=False, summary=False)
        warm_s, warm_engine_s = time.perf_counter() - t0, engine.seconds
        load0 = os.getloadavg()
        timed = {}
        for mode in (["on", "off"] if args.overlap == "both" else [args.overlap]):
            engine.seconds, engine.calls = 0.0, 0
            t0 = time.perf_counter()
            result = pipeline.run(paths, os.path.join(tmp, f"out-{mode}"), model, settings, engine=engine,
                                  batch_size=args.batch, progress=False, overlap=mode == "on")
            wall = time.perf_counter() - t0
            timed[mode] = {"wall_s": round(wall, 2), "engine_s": round(engine.seconds, 2), "engine_calls": engine.calls,
                           "outside_engine_s": round(wall - engine.seconds, 2),
                           "outside_share": round((wall - engine.seconds) / wall, 4), "exit_code": result.exit_code}
    report = {"benchmark": "qcamo attack: time outside the engine", "images": args.images, "size": [h, w],
              "batch": args.batch, "model": "default (qcamo-small)", "method": settings.method,
              "quantize": settings.quantize, "survive": settings.survive, "target": round(target, 2),
              "warmup_incl_compile_s": round(warm_s, 1), "warmup_engine_s": round(warm_engine_s, 1),
              "overlap": timed, "loadavg_start": [round(v, 2) for v in load0],
              "loadavg_end": [round(v, 2) for v in os.getloadavg()]}
    return emit(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
