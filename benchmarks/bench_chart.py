"""What the loss chart costs on a long run: appending a step, and drawing the chart, at 100k and 1M steps.

    .venv/bin/python benchmarks/bench_chart.py                    # 100k and 1M steps
    .venv/bin/python benchmarks/bench_chart.py --steps 100000 --before b7a572b

The curve keeps at most 4096 blocks of steps (min, max, last step, NaN count; neighbours merge when the
run doubles), so a draw costs the same at 1M steps as at 100k. `--before REV` also appends the same
steps to the LossCurve of git revision REV (the averaging curve before the min/max blocks).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _baseline

from rich.style import Style
from rich.text import Text

from kbert_tui.state.chart import LossCurve, smoothed
from kbert_tui.tui.chart import Line, braille_chart, raw_line


def losses(steps: int) -> list[float]:
    """A falling, noisy loss with one spike and one NaN."""
    out = [2.0 * math.exp(-i / steps * 3) + 0.1 * math.sin(i * 0.37) for i in range(steps)]
    out[steps * 2 // 3] = 50.0
    out[steps // 3] = math.nan
    return out


def append_all(curve_class: type, values: list[float]) -> tuple[object, float, float]:
    """The curve, seconds per append (mean), and the slowest single append (a merge of all blocks)."""
    curve = curve_class()
    curve.started(0.0, 32)
    add = curve.add
    worst = 0.0
    start = time.perf_counter()
    for step, loss in enumerate(values, 1):
        if step & 0xFFF == 0:  # time a few appends one by one, the merges among them
            t = time.perf_counter()
            add(step, loss, step * 0.1)
            worst = max(worst, time.perf_counter() - t)
        else:
            add(step, loss, step * 0.1)
    return curve, (time.perf_counter() - start) / len(values), worst


def worst_merge(steps: int) -> float:
    """Seconds of the append that merges 4096 blocks into 2048 (once each time the run doubles)."""
    curve = LossCurve()
    curve.started(0.0, 32)
    for step in range(1, steps + 1):
        if len(curve.loss) == curve.limit - 1 and curve._acc_n == curve.stride - 1:
            t = time.perf_counter()
            curve.add(step, 1.0, step * 0.1)
            return time.perf_counter() - t
        curve.add(step, 1.0, step * 0.1)
    return math.nan


def draw(curve: LossCurve, width: int, height: int) -> list[Text]:
    """What the Training pane draws: the raw blocks (min to max, NaN marked) and the smoothed line."""
    points = curve.points()
    xs = points.x["step"]
    series = [raw_line(points, "step", Style(dim=True), Style(color="red")),
              Line(xs, smoothed(curve, 0.6), Style(color="blue"))]
    return braille_chart(series, width, height, Style(), marks_x=[xs[len(xs) // 2]])


def render_ms(curve: LossCurve, width: int, repeats: int = 20) -> float:
    """Median ms of a draw after one more step (so the curve's view is rebuilt, as in a live run)."""
    times = []
    step = int(curve.last[0]) if curve.last else 0
    for _ in range(repeats):
        step += 1
        curve.add(step, 1.0, step * 0.1)
        t = time.perf_counter()
        draw(curve, width, 8)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--before", metavar="REV", help="also time the LossCurve of this git revision")
    args = parser.parse_args()
    old_class = None
    if args.before:
        from _baseline import load_package_at

        old_class = load_package_at(args.before, "kbert_tui/state").chart.LossCurve
    for steps in args.steps:
        values = losses(steps)
        curve, per_add, worst = append_all(LossCurve, values)
        assert isinstance(curve, LossCurve)
        line = (f"{steps:>9,} steps: append {per_add * 1e6:.2f} µs/step (worst sampled {worst * 1e3:.2f} ms, "
                f"a 4096-block merge {worst_merge(min(steps, 1 << 14)) * 1e3:.2f} ms), "
                f"{len(curve)} blocks of {curve.stride}; draw 80 cols {render_ms(curve, 80):.2f} ms, "
                f"120 cols {render_ms(curve, 120):.2f} ms, 200 cols {render_ms(curve, 200):.2f} ms")
        print(line, flush=True)
        if old_class is not None:
            _, old_add, _ = append_all(old_class, values)
            print(f"{'':>9}  before ({args.before}): append {old_add * 1e6:.2f} µs/step", flush=True)


if __name__ == "__main__":
    main()
