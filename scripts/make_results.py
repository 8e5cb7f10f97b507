"""Measure what the camouflage survives and write docs/results.md (and docs/results.json).

For each target T and each re-encoder set (``--survive imagemagick``: the paper's single encoder;
``--survive common``: the default threat model), it runs ``qcamo attack``'s library function
(:func:`qcamo_jax.pipeline.run`, default method ``pgd`` + ``dct``) on the photo set, then re-encodes
every output with the REAL libraries of a fixed evaluation panel (the 9 encoders of ``qcamo evaluate``
at quality 90, Pillow 4:2:0 at 75 and 95, mozjpeg 4:2:0 at 90) and scores each version. A photo is
used for T only if the model scores it >= T. Reported per configuration: P_png (below T as saved),
P_jpg per encoder with a Wilson 95% interval, the pipeline's own ``success`` (every member of the set),
mean PSNR / SSIM with bootstrap 95% intervals, and the time per image.

``--jpeg-inputs`` adds a run on JPEG inputs (each photo saved by Pillow in one of q75 4:2:0, q85 4:4:4,
q95 4:2:0 progressive, q90 4:2:0, cycling; plus ``tests/data/cases``-style social JPEG if given with
``--extra``), as a phone or a site leaves them.

Usage (the command recorded in docs/results.md)::

    python scripts/make_results.py --targets 50 30 --survive common imagemagick --jpeg-inputs \
        --extra tests/data/cases/social_q75_420.jpg --work /tmp/qcamo_results  # rerun resumes
    python scripts/make_results.py --limit 4 --targets 50 --survive common      # a quick look
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tests/photos.py: scikit-image's bundled photos

#: The evaluation panel: (registry name, quality) of real encoders, run by their own libraries.
PANEL = (
    ("imagemagick", 90), ("pillow-444", 90), ("pillow-420", 90), ("pillow-420", 75), ("pillow-420", 95),
    ("libjpeg6b-islow-444", 90), ("libjpeg6b-ifast-444", 90), ("libjpeg9f-islow-444", 90),
    ("libjpeg9f-ifast-444", 90), ("libjpegturbo210-islow-444", 90), ("libjpegturbo210-ifast-444", 90),
    ("mozjpeg-420", 90),
)
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
PHOTO_DIRS = (ROOT / "tests" / "data" / "heldout", ROOT / "tests" / "data" / "corpus512")
#: (quality, subsampling, progressive) of the JPEG inputs, cycled over the photos.
JPEG_INPUTS = ((75, 2, False), (85, 0, False), (95, 2, True), (90, 2, False))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--targets", nargs="+", type=float, default=[30.0, 50.0])
    p.add_argument("--survive", nargs="+", default=["imagemagick", "common"])
    p.add_argument("--jpeg-inputs", action="store_true", help="also run --survive common at the first T named on JPEG inputs")
    p.add_argument("--extra", nargs="*", default=[], help="more input files for the JPEG-input run")
    p.add_argument("--limit", type=int, default=None, help="use only the first N photos (quick looks)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--search", default=None, choices=("thorough", "fast", "paper"),
                   help="qcamo attack --search (the budget search's preset); given, each run's label ends in -NAME")
    p.add_argument("--work", default=None, help="folder for the attacked files (default: a temporary folder)")
    p.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    p.add_argument("--cached-only", action="store_true",
                   help="render only the configurations already measured in --work; list the others as not run")
    return p.parse_args(argv)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (95% for ``z = 1.96``)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def bootstrap_mean(v, reps: int = 10000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``v`` and its percentile-bootstrap 95% interval (fixed seed: the table is reproducible)."""
    v = np.asarray([x for x in v if x is not None and np.isfinite(x)], np.float64)
    if v.size == 0:
        return (float("nan"),) * 3
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, (reps, v.size))].mean(1)
    return float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def prepare_photos(folder: Path, limit: int | None) -> list[Path]:
    """The photo set as 384 x 512 PNGs in ``folder`` (scikit-image's held-out four are made here)."""
    from PIL import Image

    import photos

    folder.mkdir(parents=True, exist_ok=True)
    for name in SKIMAGE_PHOTOS:
        Image.fromarray(photos.photo(name, (384, 512))).save(folder / f"{name}.png")
    for d in PHOTO_DIRS:
        for p in sorted(d.glob("*.png")):
            (folder / p.name).write_bytes(p.read_bytes())
    files = sorted(folder.glob("*.png"))
    return files[:limit] if limit else files


def jpeg_versions(files: list[Path], folder: Path, extra: list[str]) -> list[Path]:
    """Each photo saved as a JPEG the way phones and sites leave them (:data:`JPEG_INPUTS`, cycled)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, f in enumerate(files):
        q, sub, prog = JPEG_INPUTS[i % len(JPEG_INPUTS)]
        dst = folder / f"{f.stem}_q{q}_{'420' if sub == 2 else '444'}{'_prog' if prog else ''}.jpg"
        with Image.open(f) as im:
            im.convert("RGB").save(dst, quality=q, subsampling=sub, progressive=prog)
        out.append(dst)
    for e in extra:
        dst = folder / Path(e).name
        dst.write_bytes(Path(e).read_bytes())
        out.append(dst)
    return out


def panel_scores(paths: list[str], score) -> dict[str, np.ndarray]:
    """``"name:q" -> scores`` of every file after each real encoder of :data:`PANEL`."""
    from qcamo_jax.jpeg import encoders

    out = {}
    for name, q in PANEL:
        if not encoders.available(name):
            continue
        out[f"{name}:{q}"] = score([encoders.encode_file(name, p, q).pixels for p in paths])
    return out


def run_config(label, inputs, t, survive, work, model, score, batch_size, search=None):
    from qcamo_jax import pipeline

    settings = pipeline.Settings(target=t, survive=survive, attack_options={"search": search} if search else {})
    out = work / label
    t0 = time.perf_counter()
    result = pipeline.run(inputs, out, model, settings, batch_size=batch_size, progress=False, summary=False)
    seconds = time.perf_counter() - t0
    recs = [r for r in result.records if r["error"] is None]
    paths = [r["output"] for r in recs]
    panel = panel_scores(paths, score)
    n = len(recs)
    below = {k: int(np.sum(v < t)) for k, v in panel.items()}
    summary = {
        "label": label, "target": t, "survive": survive, "images": n, "seconds_per_image": seconds / max(1, len(result.records)),
        "P_png": sum(r["final_score"] < t for r in recs) / max(1, n),
        "P_png_ci": wilson(sum(r["final_score"] < t for r in recs), n),
        "success": sum(bool(r["success"]) for r in recs) / max(1, n),
        "success_ci": wilson(sum(bool(r["success"]) for r in recs), n),
        "already_below_target": sum(bool(r.get("already_below_target")) for r in recs),
        "P_jpg": {k: below[k] / max(1, n) for k in panel},
        "P_jpg_ci": {k: wilson(below[k], n) for k in panel},
        "psnr": bootstrap_mean([r["psnr"] for r in recs]),
        "ssim": bootstrap_mean([r["ssim"] for r in recs]),
        "worst_panel": bootstrap_mean([max(v[i] for v in panel.values()) for i in range(n)]) if panel else None,
    }
    files = [{"path": Path(r["path"]).name, "original": r["original_score"], "saved": r["final_score"],
              "success": r["success"], "psnr": r["psnr"], "panel": {k: float(v[i]) for k, v in panel.items()}}
             for i, r in enumerate(recs)]
    print(f"{label}: n={n} success {summary['success']:.2f} P_png {summary['P_png']:.2f} "
          f"min P_jpg {min(summary['P_jpg'].values(), default=float('nan')):.2f} PSNR {summary['psnr'][0]:.2f} "
          f"({seconds:.0f} s)", file=sys.stderr)
    return {"summary": summary, "files": files}


def main(argv=None) -> int:
    args = parse_args(argv)
    from qcamo_jax import evaluate
    from qcamo_jax.fileio import atomic_write
    from qcamo_jax.imageio import load_rgb
    from qcamo_jax.models.hub import load_model

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="qcamo_results_"))
    model = load_model(args.model)
    score = evaluate.make_scorer(model, batch_size=4)
    photos_all = prepare_photos(work / "originals", args.limit)
    clean = dict(zip((p.name for p in photos_all), score([load_rgb(p) for p in photos_all])))
    results, not_run = [], []

    def config(label, inputs, t, survive):
        label = f"{label}-{args.search}" if args.search else label
        # Each configuration's result is kept in the work folder: a rerun with the same --work resumes.
        cache = work / f"{label}.result.json"
        if cache.is_file():
            results.append(json.loads(cache.read_text()))
            return
        if args.cached_only:
            not_run.append(label)
            return
        result = run_config(label, inputs, t, survive, work, model, score, args.batch_size, args.search)
        with atomic_write(cache, "w") as f:
            json.dump(result, f, default=lambda v: None)
        results.append(result)

    for i, t in enumerate(args.targets):
        chosen = [p for p in photos_all if clean[p.name] >= t]
        folder = work / f"inputs-T{t:g}"
        folder.mkdir(parents=True, exist_ok=True)
        for p in chosen:
            (folder / p.name).write_bytes(p.read_bytes())
        for survive in args.survive:
            config(f"T{t:g}-{survive}", [folder], t, survive)
        if args.jpeg_inputs and i == 0:  # JPEG inputs at the first target named
            jpgs = jpeg_versions(chosen, work / "jpeg-inputs", args.extra)
            jclean = score([load_rgb(p) for p in jpgs])
            jpgs = [p for p, c in zip(jpgs, jclean) if c >= t]
            config(f"T{t:g}-common-jpeg-inputs", [str(p) for p in jpgs], t, "common")

    given = argv if argv is not None else sys.argv[1:]
    command = "python scripts/make_results.py " + " ".join(shlex.quote(a) for a in given if a != "--cached-only")
    md = render(args, model, photos_all, clean, results, command, not_run)
    out = Path(args.out)
    with atomic_write(out, "w") as f:
        f.write(md)
    with atomic_write(out.with_suffix(".json"), "w") as f:
        json.dump({"command": command, "model": model.name, "clean": {k: float(v) for k, v in clean.items()},
                   "results": results}, f, indent=1, default=lambda v: None)
    print(f"wrote {out} (work files in {work})", file=sys.stderr)
    return 0


def render(args, model, photos_all, clean, results, command, not_run=()) -> str:
    pct = lambda p, ci: f"{100 * p:.0f} ({100 * ci[0]:.0f}-{100 * ci[1]:.0f})"  # noqa: E731
    mean = lambda m: f"{m[0]:.2f} ({m[1]:.2f}-{m[2]:.2f})"  # noqa: E731
    lines = [
        "# Results: does the camouflage survive the JPEG re-encoders people use?",
        "",
        "Generated by `scripts/make_results.py`; do not edit by hand. Command:",
        "",
        f"    {command}",
        "",
        f"Model: `{model.name}` (`--model {args.model}`). Photos: {len(photos_all)} at 512 x 384 pixels (W x H): "
        "the 4 scikit-image held-out photos (`tests/photos.py`), `tests/data/heldout/` (4) and "
        "`tests/data/corpus512/` (20 Debian-packaged photographs; sources and licences in its README). "
        "A photo counts for T only if the model scores it >= T. Attack: `qcamo attack` defaults "
        "(`pgd` + `dct`, margin 1" + (f", `--search {args.search}`" if args.search else "")
        + ") with the `--survive` set named in each row.",
        "",
        "Every output is re-encoded by the **real** library of each panel encoder (ImageMagick `convert`, "
        "Pillow, jpeglib's libjpeg 6b / 9f / libjpeg-turbo 2.1 / mozjpeg 4.0.3) and scored. Percentages "
        "with Wilson 95% intervals; PSNR and SSIM means with bootstrap 95% intervals. `success` is the "
        "pipeline's own verdict (below T as saved and after every member of the set, measured with the "
        "real libraries). `-s`/`-f`: islow/ifast DCT; all panel encoders at quality 90 and 4:4:4 unless named.",
        "",
    ]
    keys = list(results[0]["summary"]["P_jpg"]) if results else []
    head = ["run", "n", "success", "P_png"] + [k.replace("libjpegturbo210", "turbo").replace("libjpeg", "")
                                                 for k in keys] + ["PSNR dB", "SSIM", "s/img"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for r in results:
        s = r["summary"]
        cells = [s["label"], str(s["images"]), pct(s["success"], s["success_ci"]), pct(s["P_png"], s["P_png_ci"])]
        cells += [pct(s["P_jpg"][k], s["P_jpg_ci"][k]) for k in keys]
        cells += [mean(s["psnr"]), mean(s["ssim"]), f"{s['seconds_per_image']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Photos the pipeline did not protect (its own verdict), with the panel encoders that undid them:", ""]
    for r in results:
        t = r["summary"]["target"]
        misses = [f"`{f['path']}` ({', '.join(f'{k} {v:.1f}' for k, v in f['panel'].items() if v >= t) or 'as saved'}; "
                  f"PSNR {f['psnr']:.1f} dB)" for f in r["files"] if not f["success"]]
        lines.append(f"* {r['summary']['label']}: " + ("; ".join(misses) if misses else "none"))
    if not_run:
        lines += ["", "Not run (no time on the machine that made this page; the command above measures them): "
                  + ", ".join(f"`{label}`" for label in not_run) + "."]
    lines += ["", "Clean scores of the photos: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(clean.items())), ""]
    notes = [f"`{r['summary']['label']}`: {r['summary']['time_note']}" for r in results if r["summary"].get("time_note")]
    lines += ["Time per image is wall time of the whole `pipeline.run` (compilation and the real re-encodings "
              "included) on the machine that ran the command, divided by its images."
              + "".join(f" {n}." for n in notes), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
