"""Time the README quick start and write its per-photo table (docs/quickstart.json, docs/cli.md's table).

Runs exactly the README's main command, ``qcamo attack examples/ --out DIR`` (default model, default
``--survive common``; ``--log-json`` added to read the compile time), as a fresh process, and records
its wall time (start-up, compilation and the real re-encodings included), the compilation's share
(``compile_end`` events: first call of the shape until its first model evaluation), exit code, and per photo: original score, score as saved, the worst score
after the real re-encoders of the set (and which one), PSNR and SSIM, all read from ``DIR/report.json``.

Usage (the numbers in docs/cli.md, "Measured: the quick start")::

    python scripts/measure_quickstart.py --json docs/quickstart.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(out: Path) -> dict:
    """Run the quick start into ``out`` and return its timing and per-photo rows."""
    qcamo = Path(sys.executable).with_name("qcamo")
    events = out.parent / "events.jsonl"  # the run's own compile timing (compile_end events)
    argv = [str(qcamo), "attack", "examples/", "--out", str(out), "--quiet", "--log-json", str(events)]
    # A first run, as a new user has it: an empty compile cache (qcamo_jax/compile_cache.py), not this
    # machine's ~/.cache/qcamo_jax/xla.
    env = {**os.environ, "QCAMO_COMPILE_CACHE": str(out.parent / "xla-cache")}
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    compile_s = sum(e.get("seconds", 0.0) for e in map(json.loads, events.read_text().splitlines())
                    if e.get("event") == "compile_end")
    report = json.loads((out / "report.json").read_text())
    rows = []
    for r in report["images"] if isinstance(report, dict) else report:
        row = {k: r.get(k) for k in ("path", "original_score", "final_score", "worst_score",
                                     "worst_reencoder", "success", "psnr", "ssim", "error")}
        # File sizes: the written file's price (docs/quantize.md); the input is the camera/phone JPEG.
        row["input_bytes"] = (ROOT / r["path"]).stat().st_size if (ROOT / r["path"]).is_file() else None
        row["output_bytes"] = (ROOT / r["output"]).stat().st_size if r.get("output") else None
        rows.append(row)
    return {"command": "qcamo attack examples/ --out OUT --quiet", "exit_code": proc.returncode,
            "wall_seconds": round(seconds, 1), "compile_seconds": round(compile_s, 1), "last_line": proc.stderr.strip().splitlines()[-1:],
            "cpu_count": os.cpu_count(), "load_average_before": None, "machine": platform.machine(), "rows": rows}


def table(result: dict) -> str:
    """The markdown table of docs/cli.md."""
    lines = ["| photo | original | saved | worst after the set (re-encoder) | PSNR (dB) | SSIM | success |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        name = Path(r["path"]).stem
        if r["error"]:
            lines.append(f"| {name} | error: {r['error']} | | | | | |")
            continue
        lines.append(f"| {name} | {r['original_score']:.2f} | {r['final_score']:.2f} | {r['worst_score']:.2f} "
                     f"({r['worst_reencoder']}) | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['success']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default=None, help="write the measurement here (e.g. docs/quickstart.json)")
    args = p.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="qcamo_quickstart_") as tmp:
        result = measure(Path(tmp) / "out")
    result["load_average_before"] = load
    result["generated_by"] = "python scripts/measure_quickstart.py" + (f" --json {args.json}" if args.json else "")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    print(table(result))
    if args.json:
        from qcamo_jax.fileio import atomic_write

        with atomic_write(Path(args.json), "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
