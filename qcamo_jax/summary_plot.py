"""The ``summary.png`` pages of an attack run: every image, its scores, and where it was changed.

Data contract: ``records`` are the run's report records (:data:`qcamo_jax.pipeline.FIELDS`; read here:
``path``, ``output``, ``error``, ``original_score``, ``final_score``, ``worst_score`` (the highest
score after the re-encoder set), ``success``, ``psnr``), images are read back from ``path`` and ``output`` as ``uint8 [H, W, 3]``
RGB pixels, and differences are in pixel levels (0-255).

Each page (``summary.png``, then ``summary-2.png``, ``summary-3.png`` ... with :data:`PER_PAGE` images
each) shows:

* a header with the run's totals;
* a score chart, one row per image: the original's score, the output's as saved and its worst
  score over the re-encoder set (green below the target T, red above), and the dashed target line;
* one card per image: a heat map of the per-pixel ``|output - original|`` (largest over R, G, B), in
  pixel levels with its colour bar, showing where the image was changed, with the zoom window
  outlined; and the zoom window, the 32 x 32 pixels where the change is strongest (largest sum of
  ``|difference|``, :func:`strongest_window`), original and output side by side, each pixel a
  square. A refused input or a missing output gets a card saying so.

Names are shortened in the middle to fit (:func:`qcamo_jax.display.ellipsize`); sizes are W x H.
The chart is drawn with matplotlib's object API on an Agg canvas (no pyplot state, no GUI backend);
the cards are pasted into the page array and the text is written with matplotlib's DejaVu fonts.
"""

from __future__ import annotations

import io
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from qcamo_jax import fileio
from qcamo_jax.display import ellipsize, format_size

#: Images per page: 6 rows of 2 cards, a 1600 x 2400 pixel page.
PER_PAGE = 12
#: Side of the zoom window, in image pixels.
ZOOM = 32
#: Pixels per inch of the chart and of the text sizes (points).
DPI = 100
_GOOD, _BAD, _GREY = "#1a9850", "#d73027", "#7f7f7f"


class SummaryPage(NamedTuple):
    """One written page: its file, and the ``path`` of each record drawn on it (in order)."""

    path: Path
    images: tuple[str, ...]


def page_path(first: str | os.PathLike, number: int) -> Path:
    """The file of page ``number`` (1-based): ``summary.png``, ``summary-2.png``, ``summary-3.png`` ..."""
    first = Path(first)
    return first if number == 1 else first.with_name(f"{first.stem}-{number}{first.suffix}")


def is_page_stem(stem: str, first_stem: str = "summary") -> bool:
    """Whether a file stem is one of the pages' (``summary``, ``summary-2``, ...): output names must avoid
    these, and readers of an output folder (``qcamo evaluate``) must skip them."""
    return re.fullmatch(rf"{re.escape(first_stem)}(-[1-9][0-9]*)?", stem) is not None


def write_pages(first: str | os.PathLike, records: Sequence[Mapping[str, Any]], target: float,
                totals: Mapping[str, Any], *, per_page: int = PER_PAGE) -> list[SummaryPage]:
    """Draw the summary pages of a run and write them atomically.

    Args:
      first: path of the first page (``DIR/summary.png``); later pages are :func:`page_path`.
      records: one per input, in report order (refused ones included).
      target: the score T the attack aimed below.
      totals: the run's aggregate numbers (:func:`qcamo_jax.report.summarize`).
      per_page: images per page.

    Returns:
      The pages written, with the records on each. Pages of an earlier, longer run in the same folder
      (``summary-<k>.png`` beyond the last page) are deleted, unless they are an output of this run.

    Raises:
      OSError: a page cannot be written.
    """
    from PIL import Image

    n_pages = max(1, math.ceil(len(records) / per_page))
    pages = []
    for k in range(n_pages):
        chunk = list(records[k * per_page:(k + 1) * per_page])
        page = _draw_page(chunk, k * per_page, len(records), k + 1, n_pages, target, totals)
        buf = io.BytesIO()
        Image.fromarray(page).save(buf, "PNG", optimize=False, compress_level=6)
        path = page_path(first, k + 1)
        fileio.atomic_write_bytes(path, buf.getvalue())
        pages.append(SummaryPage(path, tuple(str(r.get("path")) for r in chunk)))
    outputs = {Path(r["output"]).name for r in records if r.get("output")}
    number = n_pages + 1
    while (stale := page_path(first, number)).exists() and stale.name not in outputs:
        stale.unlink()
        number += 1
    return pages


# Layout, in page pixels. The page is one RGB array: the score chart is drawn by matplotlib into its
# box, the pictures, heat maps and colour bars are pasted pixel for pixel, and the text is written with
# matplotlib's DejaVu fonts through Pillow. (Five matplotlib axes per card cost ~2 s of CPU a page.)
_W, _M = 1600, 30                      # page width, margin
_HEAD = 60                             # title lines
_CARD_W, _CARD_H, _GAP = 755, 272, 28  # card size, gap between cards
_PANEL_Y, _PANEL_H = 50, 200           # panels' top (from the card's top) and height
_HEAT = (0, 370)                       # heat map: x, width
_BAR_W = 10                            # colour bar strip, right of the heat map (tick labels to its right)
_ZOOM = ((430, 160), (595, 160))       # zoom windows, original and output: x, width
_ROW = 30                              # score chart: height per image
_BORDER, _OUTLINE = (200, 200, 200), (0, 229, 255)


def _chart_height(n: int) -> int:
    return 90 + _ROW * max(n, 1)


class _Text:
    """Text to write on a page array (Pillow, matplotlib's DejaVu Sans), sizes in points at :data:`DPI`."""

    def __init__(self):
        self.items: list[tuple] = []

    def __call__(self, x, y, s, size=9.0, colour="#000000", bold=False, anchor="lm"):
        self.items.append((x, y, s, size, colour, bold, anchor))

    def draw(self, page: np.ndarray) -> np.ndarray:
        import matplotlib
        from PIL import Image, ImageDraw, ImageFont

        fonts = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
        im = Image.fromarray(page)
        draw = ImageDraw.Draw(im)
        cache = {}
        for x, y, s, size, colour, bold, anchor in self.items:
            key = (round(size * DPI / 72), bold)
            if key not in cache:
                cache[key] = ImageFont.truetype(os.path.join(fonts, "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"),
                                                key[0])
            draw.text((round(x), round(y)), s, fill=colour, font=cache[key], anchor=anchor)
        return np.asarray(im)


def _draw_page(chunk, offset, total, page, n_pages, target, totals) -> np.ndarray:
    """One page as ``uint8 [H, 1600, 3]``."""
    rows = math.ceil(len(chunk) / 2)
    chart_h = _chart_height(len(chunk))
    cards_top = _M + _HEAD + chart_h + 45
    height = cards_top + max(rows * (_CARD_H + _GAP) - _GAP, 0) + _M
    canvas = np.full((height, _W, 3), 255, np.uint8)
    text = _Text()
    span = f"images {offset + 1}-{offset + len(chunk)} of {total}" if total else "no images"
    text(_M, _M, f"qcamo attack summary: {span} (page {page} of {n_pages})", size=15, bold=True, anchor="lt")
    text(_M, _M + 32, _totals_line(totals, target), size=10.5, anchor="lt")
    canvas[_M + _HEAD:_M + _HEAD + chart_h, _M:_W - _M] = _score_chart(chunk, offset, target, _W - 2 * _M, chart_h)
    for i, rec in enumerate(chunk):
        cx, cy = _M + (i % 2) * (_CARD_W + _GAP), cards_top + (i // 2) * (_CARD_H + _GAP)
        _card(canvas, lambda dx, dy, s, _x=cx, _y=cy, **kw: text(_x + dx, _y + dy, s, **kw), cx, cy, rec,
              offset + i + 1, target)
    return text.draw(canvas)


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.0f}%"


def _totals_line(t: Mapping[str, Any], target: float) -> str:
    parts = [f"{t.get('attacked', 0)} attacked, {t.get('refused', 0)} refused",
             f"below T = {target:g}: {_pct(t.get('success_saved'))} as saved, "
             f"{_pct(t.get('success'))} after every re-encoder"]
    if t.get("mean_psnr") is not None:
        parts.append(f"mean PSNR {t['mean_psnr']:.1f} dB")
    if t.get("mean_ssim") is not None:
        parts.append(f"mean SSIM {t['mean_ssim']:.3f}")
    return "   ·   ".join(parts)


def _label(rec: Mapping[str, Any], number: int, width: int) -> str:
    name = Path(rec.get("output") or rec.get("path") or "?").name
    return f"{number}. {ellipsize(name, width - len(str(number)) - 2)}"


def _done(rec: Mapping[str, Any]) -> bool:
    return rec.get("error") is None and rec.get("final_score") is not None


def _score_chart(chunk, offset, target, width: int, height: int) -> np.ndarray:
    """The score chart as ``uint8 [height, width, 3]``: one row per record, the target as a dashed line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((290 / width, 45 / height, 880 / width, (height - 75) / height))
    ys = np.arange(len(chunk))
    for y, rec in zip(ys, chunk):
        if not _done(rec):
            why = rec.get("error") or "not processed"
            ax.text(0.01, y, ellipsize(f"refused: {why}", 90), transform=ax.get_yaxis_transform(), va="center",
                    ha="left", color=_BAD, fontsize=8.5)
            continue
        s0, s1, s2 = rec.get("original_score"), rec.get("final_score"), rec.get("worst_score")
        ax.plot([s0, s1], [y, y], color="#bdbdbd", lw=2, zorder=1, solid_capstyle="round")
        ax.scatter([s0], [y], s=40, facecolors="white", edgecolors=_GREY, linewidths=1.5, zorder=3)
        ax.scatter([s1], [y], s=55, marker="|", color="#2c7bb6", linewidths=2.2, zorder=4)
        if s2 is not None:
            ax.scatter([s2], [y], s=34, color=_GOOD if s2 < target else _BAD, zorder=5)
    ax.axvline(target, color="k", ls="--", lw=1.2, zorder=2)
    ax.set_yticks(ys)
    ax.set_yticklabels([_label(r, offset + i + 1, 30) for i, r in enumerate(chunk)], fontsize=9)
    for tick, rec in zip(ax.get_yticklabels(), chunk):
        if not _done(rec):
            tick.set_color(_BAD)
    ax.set_ylim(max(len(chunk), 1) - 0.5, -0.5)
    scores = [v for r in chunk if _done(r) for v in (r.get("original_score"), r.get("final_score"),
                                                      r.get("worst_score")) if v is not None]
    lo, hi = min(scores + [target]), max(scores + [target])
    pad = max(2.0, 0.06 * (hi - lo))
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_xlabel("quality score (model scale, 0-100; lower = judged worse)", fontsize=9)
    ax.grid(axis="x", color="#eeeeee", zorder=0)
    ax.tick_params(axis="x", labelsize=8.5)
    ax.set_title("scores before and after, per image", fontsize=11, loc="left")
    handles = [
        Line2D([], [], ls="", marker="o", mfc="white", mec=_GREY, mew=1.5, ms=7, label="original"),
        Line2D([], [], ls="", marker="|", color="#2c7bb6", mew=2.2, ms=10, label="output as saved"),
        Line2D([], [], ls="", marker="o", color=_GOOD, ms=6, label="worst re-encoder, below T"),
        Line2D([], [], ls="", marker="o", color=_BAD, ms=6, label="worst re-encoder, not below T"),
        Line2D([], [], ls="--", color="k", lw=1.2, label=f"target T = {target:g}"),
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.03, 1.0), fontsize=9, frameon=False)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:height, :width, :3].copy()


def _card(canvas, text, cx, cy, rec, number, target):
    """Draw one card into ``canvas`` at ``(cx, cy)``; ``text(dx, dy, s, ...)`` writes at card pixel ``(dx, dy)``."""
    label, colour, detail = _card_title(rec, number, target)
    text(0, 14, label, size=10.5, bold=True, colour=colour, anchor="lm")
    text(_CARD_W, 14, detail, size=9.5, colour=colour, anchor="rm")
    pixels, problem = _load_pair(rec) if _done(rec) else (None, rec.get("error") or "not processed")
    if pixels is None:
        _frame(canvas, cy + 32, cx, _CARD_H - 36, _CARD_W)
        text(16, 32 + (_CARD_H - 36) / 2, ellipsize(problem, 110), size=9.5, colour=_BAD, anchor="lm")
        return
    original, output = pixels
    h, w = original.shape[:2]
    diff = np.abs(output.astype(np.int16) - original.astype(np.int16)).max(axis=2).astype(np.uint8)
    zy, zx, z = strongest_window(diff, ZOOM)
    top = cy + _PANEL_Y
    # Heat map of |difference| in pixel levels, the zoom window outlined, and its colour bar.
    vmax = max(1, int(np.ceil(np.percentile(diff, 99.5))))
    heat, scale, k = _fit_heat(diff, _HEAT[1], _PANEL_H)
    x0, y0 = _paste(canvas, _colour(heat, vmax), top, cx + _HEAT[0], _HEAT[1], centre=False)
    _rect(canvas, y0 + round(zy * scale), x0 + round(zx * scale), max(3, round(z * scale)))
    text(0, _PANEL_Y - 4, "where it changed: |output - original| in levels", size=8.5, anchor="ld")
    how = "" if k == 1 else f", each dot the largest of {k} x {k}"
    text(0, _PANEL_Y + _PANEL_H + 4, f"{format_size(w, h)}{how}", size=8, colour="#555555", anchor="lt")
    bar_x, bar_h = heat.shape[1] + 10, _PANEL_H - 10
    strip = _colour(np.repeat(np.linspace(vmax, 0, bar_h)[:, None], _BAR_W, 1), vmax)
    canvas[top + 5:top + 5 + bar_h, cx + bar_x:cx + bar_x + _BAR_W] = strip
    for v in sorted({0, vmax // 2, vmax}):
        label = f"≥{v}" if v == vmax and diff.max() > vmax else f"{v}"
        text(bar_x + _BAR_W + 3, _PANEL_Y + 5 + (bar_h - 1) * (1 - v / vmax), label, size=7.5, anchor="lm")
    # The zoom window, original and output side by side, each pixel a square.
    zoom = max(1, min(_ZOOM[0][1], _PANEL_H) // z)
    for (zx0, zw), (img, name) in zip(_ZOOM, ((original, "original"), (output, "output"))):
        crop = np.repeat(np.repeat(img[zy:zy + z, zx:zx + z], zoom, 0), zoom, 1)
        _paste(canvas, crop, top, cx + zx0, zw)
        text(zx0 + zw / 2, _PANEL_Y - 4, f"{name}, zoom", size=8.5, anchor="md")
    text((_ZOOM[0][0] + _ZOOM[1][0] + _ZOOM[1][1]) / 2, _PANEL_Y + _PANEL_H + 4,
         f"{z} x {z} pixels at x = {zx}, y = {zy}: the strongest change", size=8, colour="#555555", anchor="mt")


def _card_title(rec, number, target) -> tuple[str, str, str]:
    """``(name, colour, scores)`` of a card: green when below T after every re-encoder, red otherwise."""
    label = _label(rec, number, 36)
    if not _done(rec):
        return label, _BAD, "refused"
    s0, s1, s2 = rec.get("original_score"), rec.get("final_score"), rec.get("worst_score")
    ok = bool(rec.get("success")) if rec.get("success") is not None else (s2 is not None and s2 < target)
    q90 = "n/a" if s2 is None else f"{s2:.1f}"
    psnr = rec.get("psnr")
    psnr = "identical" if psnr is None else f"PSNR {psnr:.1f} dB"
    return label, _GOOD if ok else _BAD, f"{s0:.1f} → {s1:.1f} saved → {q90} worst {'✓' if ok else '✗'}   {psnr}"


def _load_pair(rec) -> tuple[tuple[np.ndarray, np.ndarray] | None, str]:
    from qcamo_jax.errors import ImageFileError
    from qcamo_jax.imageio import load_rgb

    if not rec.get("output"):
        return None, "no output file recorded"
    try:
        original, output = load_rgb(rec["path"]), load_rgb(rec["output"])
    except ImageFileError as exc:
        return None, f"cannot draw: {exc}"
    if original.shape != output.shape:
        return None, (f"cannot draw: output {format_size(output.shape[1], output.shape[0])} differs from the "
                      f"original's {format_size(original.shape[1], original.shape[0])}")
    return (original, output), ""


def strongest_window(diff: np.ndarray, size: int) -> tuple[int, int, int]:
    """Where an image changed most: the ``size`` x ``size`` window with the largest sum of ``diff``.

    Args:
      diff: ``[H, W]`` non-negative differences (pixel levels).
      size: window side in pixels (reduced to ``min(H, W)`` for a smaller image).

    Returns:
      ``(top, left, side)`` of the window (the first one in row-major order on ties).
    """
    h, w = diff.shape
    z = min(size, h, w)
    s = np.zeros((h + 1, w + 1), np.int64)
    s[1:, 1:] = np.cumsum(np.cumsum(diff, 0, dtype=np.int64), 1)
    sums = s[z:, z:] - s[:-z, z:] - s[z:, :-z] + s[:-z, :-z]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y), int(x), z


def _fit_heat(diff: np.ndarray, box_w: int, box_h: int) -> tuple[np.ndarray, float, int]:
    """``diff [H, W]`` scaled to fill a box, nearest neighbour: ``(map, scale, k)``.

    Enlarged, every pixel is drawn (``k = 1``); reduced, each drawn pixel shows the largest difference
    in the ``k x k`` pixels around it (a sliding maximum before sampling), so that no strong change
    disappears.
    """
    h, w = diff.shape
    fit = min(box_w / w, box_h / h)
    k = max(1, math.ceil(1 / fit - 1e-9))
    grown = diff
    for axis in (0, 1) if k > 1 else ():  # separable sliding maximum over a k-wide window
        padded = np.pad(grown, [(k // 2, k - 1 - k // 2) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
        n = grown.shape[axis]
        grown = np.max([np.take(padded, np.arange(i, i + n), axis=axis) for i in range(k)], axis=0)
    out_h, out_w = max(1, round(h * fit)), max(1, round(w * fit))
    rows = np.minimum(((np.arange(out_h) + 0.5) / fit).astype(int), h - 1)
    cols = np.minimum(((np.arange(out_w) + 0.5) / fit).astype(int), w - 1)
    return grown[rows][:, cols], fit, k


def _colour(levels: np.ndarray, vmax: float) -> np.ndarray:
    """``uint8 [..., 3]`` colours of the ``inferno`` map for values ``0..vmax`` (clipped above)."""
    from matplotlib import colormaps

    rgba = colormaps["inferno"](np.clip(np.asarray(levels, np.float64) / vmax, 0, 1))
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def _paste(canvas: np.ndarray, img: np.ndarray, top: int, left: int, box_w: int, centre: bool = True) -> tuple[int, int]:
    """Paste ``img`` in the box ``[top, top + _PANEL_H) x [left, left + box_w)`` (centred, or at its left),
    framed; return its top-left corner."""
    h, w = img.shape[:2]
    y0, x0 = top + (_PANEL_H - h) // 2, left + ((box_w - w) // 2 if centre else 0)
    canvas[y0:y0 + h, x0:x0 + w] = img
    _frame(canvas, y0 - 1, x0 - 1, h + 2, w + 2)
    return x0, y0


def _frame(canvas, y, x, h, w, colour=_BORDER):
    canvas[y, x:x + w] = canvas[y + h - 1, x:x + w] = colour
    canvas[y:y + h, x] = canvas[y:y + h, x + w - 1] = colour


def _rect(canvas, y, x, size):
    """A 2-pixel outline of the zoom window (outside it, so the window's pixels stay visible)."""
    for d in (1, 2):
        _frame(canvas, y - d, x - d, size + 2 * d, size + 2 * d, _OUTLINE)
