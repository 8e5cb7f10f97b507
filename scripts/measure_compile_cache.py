"""What the persistent compile cache saves: the README quick start run twice on one fresh cache.

Runs ``qcamo attack examples/ --out DIR --quiet`` (the README's main command, progress off) twice as
fresh processes sharing a new, empty ``QCAMO_COMPILE_CACHE`` folder, then once more with ``--log-json``
(in-batch progress events on, as the bar on a terminal: the attack program then carries host callbacks,
which JAX never stores). Records each run's wall time, the compile seconds and cache hits/misses of
the ``--log-json`` run, the cache's size, and whether the three runs wrote byte-identical files.

Usage (the numbers in docs/cli.md, "Compiled programs are kept for the next run")::

    python scripts/measure_compile_cache.py --json docs/compile_cache.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(out: Path, cache: Path, *extra: str) -> tuple[float, int]:
    qcamo = Path(sys.executable).with_name("qcamo")
    env = {**os.environ, "QCAMO_COMPILE_CACHE": str(cache)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    t0 = time.perf_counter()
    proc = subprocess.run([str(qcamo), "attack", "examples/", "--out", str(out), "--quiet", *extra], cwd=ROOT,
                          capture_output=True, text=True, env=env)
    return round(time.perf_counter() - t0, 1), proc.returncode


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix in (".jpg", ".png") and p.stem != "summary"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default=None, help="write the measurement here (e.g. docs/compile_cache.json)")
    args = p.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="qcamo_cache_") as tmp:
        tmp = Path(tmp)
        cache = tmp / "xla"
        first = _run(tmp / "first", cache)
        size = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
        second = _run(tmp / "second", cache)
        events = tmp / "events.jsonl"
        logged = _run(tmp / "logged", cache, "--log-json", str(events))
        ends = [e for e in map(json.loads, events.read_text().splitlines()) if e["event"] == "compile_end"]
        same = _outputs(tmp / "first") == _outputs(tmp / "second") == _outputs(tmp / "logged")
        result = {
            "command": "qcamo attack examples/ --out OUT --quiet, twice on one empty QCAMO_COMPILE_CACHE; then with --log-json",
            "first_run": {"wall_seconds": first[0], "exit_code": first[1]},
            "second_run": {"wall_seconds": second[0], "exit_code": second[1]},
            "log_json_run": {"wall_seconds": logged[0], "exit_code": logged[1],
                             "compile_seconds": round(sum(e["seconds"] for e in ends), 1),
                             "cache_hits": sum(e["cache_hits"] for e in ends),
                             "cache_misses": sum(e["cache_misses"] for e in ends)},
            "cache_bytes_after_first_run": size, "outputs_identical": same,
            "cpu_count": os.cpu_count(), "load_average_before": load,
            "generated_by": "python scripts/measure_compile_cache.py" + (f" --json {args.json}" if args.json else ""),
        }
    print(json.dumps(result, indent=1))
    if args.json:
        sys.path.insert(0, str(ROOT))
        from qcamo_jax.fileio import atomic_write

        with atomic_write(Path(args.json), "w") as f:
            json.dump(result, f, indent=1)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
