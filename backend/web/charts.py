"""Geometry of the dashboard's charts, drawn server-side as SVG by `templates/web/_charts.html`.

Python decides where everything goes (scales, ticks, boxes, points, lines); the templates only write the
elements out. Every drawn mark carries the number it stands for in `data-*` attributes, and every plot
area carries its axis mapping (`data-y-lo`, `data-y-hi`, `data-y-px-lo`, `data-y-px-hi`, same for x), so
tests (and curious people with devtools) can turn a drawn pixel back into the value it claims to show.

Coordinates are SVG user units inside a fixed `viewBox`; CSS scales the whole picture to the screen.
Marker shapes differ per stage and breath class (not colour alone), so the charts read in greyscale too.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from backend.domain import is_confident

STAGE_NAMES = {1: "before", 2: "during", 3: "right after", 4: "cooling down"}
STAGE_SHAPES = {1: "circle", 2: "square", 3: "triangle", 4: "diamond"}
BREATH_SHAPES = {"none": "ring", "normal": "circle", "heavy": "triangle", None: "cross"}
PULSE_POINTS = ("before_1", "before_2", "before_3", "after_3", "before_4", "after_4")


# ---- scales and ticks ---------------------------------------------------------------------------------


def nice_step(span: float, count: int) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) giving about `count` intervals over `span`."""
    raw = span / max(count, 1)
    magnitude: float = 10 ** math.floor(math.log10(raw))  # (an int for steps of 1 and up)
    for factor in (1, 2, 2.5, 5, 10):
        if factor * magnitude >= raw:
            return factor * magnitude
    return 10 * magnitude


def nice_domain(
    values: Iterable[float],
    *,
    count: int = 5,
    floor: float | None = None,
    ceiling: float | None = None,
    min_span: float = 1.0,
) -> tuple[float, float, list[float]]:
    """Bounds that include every value with a little room, rounded out to ticks; and those ticks.

    `floor` and `ceiling` stop the padding at physical limits (0 breaths per minute, 100 %);
    `min_span` keeps a single value, or identical values, from producing a zero-height axis.
    """
    data = [float(v) for v in values]
    lo, hi = (min(data), max(data)) if data else (0.0, min_span)
    if hi - lo < min_span:
        middle = (lo + hi) / 2
        lo, hi = middle - min_span / 2, middle + min_span / 2
    pad = (hi - lo) * 0.05
    lo, hi = lo - pad, hi + pad
    if floor is not None and lo < floor:
        lo = floor
    if ceiling is not None and hi > ceiling:
        hi = ceiling
    step = nice_step(hi - lo, count)
    lo, hi = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
    ticks = [round(lo + i * step, 10) for i in range(round((hi - lo) / step) + 1)]
    return lo, hi, ticks


@dataclass(frozen=True)
class Scale:
    """Linear map from data values [lo, hi] to pixels [px_lo, px_hi] (px_hi < px_lo for a y axis)."""

    lo: float
    hi: float
    px_lo: float
    px_hi: float

    def __call__(self, value: float) -> float:
        return round(self.px_lo + (value - self.lo) * (self.px_hi - self.px_lo) / (self.hi - self.lo), 2)

    def attrs(self, axis: str) -> dict[str, str]:
        """The `data-*` attributes by which a reader maps pixels back to values."""
        return {
            f"data-{axis}-lo": fmt(self.lo),
            f"data-{axis}-hi": fmt(self.hi),
            f"data-{axis}-px-lo": fmt(self.px_lo),
            f"data-{axis}-px-hi": fmt(self.px_hi),
        }


def fmt(value: float | None) -> str:
    """Numbers in attributes: exact enough to compare with the API (repr of the float), '' for None."""
    return "" if value is None else repr(float(value))


def tick_label(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e6 else f"{value:.3g}"


@dataclass(frozen=True)
class Tick:
    px: float
    label: str


@dataclass(frozen=True)
class Frame:
    """The picture's size and the plot area inside its margins (room for tick labels and axis titles)."""

    width: float = 420
    height: float = 280
    left: float = 52
    right: float = 14
    top: float = 14
    bottom: float = 46

    @property
    def x0(self) -> float:
        return self.left

    @property
    def x1(self) -> float:
        return self.width - self.right

    @property
    def y0(self) -> float:
        return self.top

    @property
    def y1(self) -> float:
        return self.height - self.bottom

    @property
    def x_mid(self) -> float:
        return (self.x0 + self.x1) / 2


@dataclass
class Chart:
    """What every chart has: an id (for aria references), a title, a description, axes and a frame."""

    chart_id: str
    title: str
    description: str
    frame: Frame
    y: Scale
    y_ticks: list[Tick]
    y_label: str
    x_label: str
    x: Scale | None = None
    x_ticks: list[Tick] = field(default_factory=list)
    empty: bool = False

    @property
    def plot_attrs(self) -> dict[str, str]:
        attrs = self.y.attrs("y")
        if self.x is not None:
            attrs |= self.x.attrs("x")
        return attrs


def _y_axis(
    values: Iterable[float],
    frame: Frame,
    *,
    floor: float | None,
    min_span: float,
    ceiling: float | None = None,
) -> tuple[Scale, list[Tick]]:
    lo, hi, ticks = nice_domain(values, floor=floor, ceiling=ceiling, min_span=min_span)
    scale = Scale(lo, hi, frame.y1, frame.y0)
    return scale, [Tick(scale(t), tick_label(t)) for t in ticks]


def _x_axis(
    values: Iterable[float], frame: Frame, *, floor: float | None, min_span: float
) -> tuple[Scale, list[Tick]]:
    lo, hi, ticks = nice_domain(values, floor=floor, min_span=min_span)
    scale = Scale(lo, hi, frame.x0, frame.x1)
    return scale, [Tick(scale(t), tick_label(t)) for t in ticks]


# ---- marker shapes ------------------------------------------------------------------------------------


def marker_path(shape: str, cx: float, cy: float, r: float = 4.5) -> str:
    """An SVG path centred on (cx, cy): its bounding box is centred there too, whatever the shape."""
    if shape in ("circle", "ring"):
        return f"M{cx - r:.2f},{cy:.2f}a{r},{r} 0 1,0 {2 * r},0a{r},{r} 0 1,0 {-2 * r},0Z"
    if shape == "square":
        s = r * 0.9
        return f"M{cx - s:.2f},{cy - s:.2f}h{2 * s:.2f}v{2 * s:.2f}h{-2 * s:.2f}Z"
    if shape == "triangle":
        return f"M{cx:.2f},{cy - r:.2f}L{cx + r:.2f},{cy + r:.2f}L{cx - r:.2f},{cy + r:.2f}Z"
    if shape == "diamond":
        d = r * 1.15
        return f"M{cx:.2f},{cy - d:.2f}L{cx + d:.2f},{cy:.2f}L{cx:.2f},{cy + d:.2f}L{cx - d:.2f},{cy:.2f}Z"
    if shape == "cross":
        left, right, top, bottom = cx - r, cx + r, cy - r, cy + r
        return f"M{left:.2f},{top:.2f}L{right:.2f},{bottom:.2f}M{left:.2f},{bottom:.2f}L{right:.2f},{top:.2f}"
    raise ValueError(f"unknown marker shape {shape!r}")


def jitter(index: int, count: int) -> float:
    """A deterministic spread in [-0.5, 0.5) for point `index` of `count` (golden-ratio sequence)."""
    if count <= 1:
        return 0.0
    return ((index * 0.6180339887498949) % 1.0) - 0.5


# ---- box plots (the paper's Fig. 4) ----------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    stage: int
    x: float  # centre of the stage's band
    half_width: float
    stats: dict[str, Any]  # the API's distribution: median, q1, q3, whisker_low, whisker_high, n
    q1_px: float
    q3_px: float
    median_px: float
    whisker_low_px: float
    whisker_high_px: float
    period: str = ""  # in a period comparison: "previous" or "current"


@dataclass(frozen=True)
class Point:
    stage: int
    x: float
    y: float
    value: float
    workout_id: str
    shape: str = "circle"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return marker_path(self.shape, self.x, self.y, 3.8)


@dataclass
class BoxPlot(Chart):
    boxes: list[Box] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    bands: list[tuple[int, float, str]] = field(default_factory=list)  # stage, x centre, "n = 12"
    periods: list[tuple[str, str]] = field(default_factory=list)  # comparison: (period, label), in order


def _box_axes(kind: str) -> tuple[str, str, str]:
    """(unit, what a point is, the measure's name) of "rr" or "pulse"."""
    if kind == "rr":
        return "breaths/min", "Median RR per workout", "RR"
    return "beats/min", "Mean pulse per workout", "Pulse"


def _box_chart(
    chart_id: str, title: str, description: str, values: list[float], kind: str, frame: Frame
) -> BoxPlot:
    """An empty box-plot chart whose y axis holds `values` (stages are added by the caller)."""
    unit, _, measure = _box_axes(kind)
    y, y_ticks = _y_axis(values, frame, floor=0.0, min_span=4.0)
    return BoxPlot(
        chart_id=chart_id,
        title=title,
        description=description,
        frame=frame,
        y=y,
        y_ticks=y_ticks,
        y_label=f"{measure} ({unit})",
        x_label="Stage",
        empty=not values,
    )


def _add_stage_box(
    chart: BoxPlot,
    stage: int,
    dist: dict[str, Any],
    centre: float,
    half_width: float,
    spread: float,
    period: str = "",
) -> None:
    """One stage's box, whiskers and per-workout points (jittered over `spread` pixels) at `centre`."""
    if dist["n"] == 0:
        return
    y = chart.y
    chart.boxes.append(
        Box(
            stage=stage,
            x=centre,
            half_width=half_width,
            stats={k: dist[k] for k in ("median", "q1", "q3", "whisker_low", "whisker_high", "n")},
            q1_px=y(dist["q1"]),
            q3_px=y(dist["q3"]),
            median_px=y(dist["median"]),
            whisker_low_px=y(dist["whisker_low"]),
            whisker_high_px=y(dist["whisker_high"]),
            period=period,
        )
    )
    count = len(dist["points"])
    extra = {"data-period": period} if period else {}
    for j, (value, workout_id) in enumerate(zip(dist["points"], dist["workout_ids"], strict=True)):
        x = round(centre + jitter(j, count) * spread, 2)
        chart.points.append(Point(stage, x, y(value), value, str(workout_id), extra=extra))


def box_plot(stages: Sequence[dict[str, Any]], kind: str, *, frame: Frame | None = None) -> BoxPlot:
    """Box and points per stage from `/api/v1/trends/stages` output; `kind` is "rr" or "pulse"."""
    unit, what, measure = _box_axes(kind)
    chart = _box_chart(
        f"box-{kind}",
        f"{measure} per stage",
        f"{what} ({unit}) for each stage: the box spans the quartiles, the line inside is the "
        "median, the whiskers reach the furthest points within 1.5 IQR, and each dot is one workout.",
        [v for s in stages for v in s[kind]["points"]],
        kind,
        frame or Frame(),
    )
    frame = chart.frame
    band = (frame.x1 - frame.x0) / max(len(stages), 1)
    for i, stage in enumerate(stages):
        n, dist = stage["stage"], stage[kind]
        centre = round(frame.x0 + band * (i + 0.5), 2)
        chart.bands.append((n, centre, f"n = {dist['n']}"))
        _add_stage_box(chart, n, dist, centre, round(band * 0.28, 2), band * 0.5)
    return chart


def comparison_box_plot(
    previous: Sequence[dict[str, Any]],
    current: Sequence[dict[str, Any]],
    kind: str,
    labels: tuple[str, str],
    *,
    frame: Frame | None = None,
) -> BoxPlot:
    """Two `/api/v1/trends/stages` outputs side by side per stage: the previous period (left, light)
    and the current one (right, solid), on one axis, so a shift between them reads at a glance."""
    unit, what, measure = _box_axes(kind)
    chart = _box_chart(
        f"compare-{kind}",
        f"{measure} per stage: {labels[1]} against {labels[0]}",
        f"{what} ({unit}) for each stage, in two boxes: left (light) {labels[0]}, right "
        f"(solid) {labels[1]}. Boxes span the quartiles, the line inside is the median, each dot a workout.",
        [v for stages in (previous, current) for s in stages for v in s[kind]["points"]],
        kind,
        frame or Frame(),
    )
    chart.periods = [("previous", labels[0]), ("current", labels[1])]
    frame = chart.frame
    band = (frame.x1 - frame.x0) / max(len(current), 1)
    for i, (before, now) in enumerate(zip(previous, current, strict=True)):
        n = now["stage"]
        centre = frame.x0 + band * (i + 0.5)
        chart.bands.append((n, round(centre, 2), f"n = {before[kind]['n']} | {now[kind]['n']}"))
        half = round(band * 0.16, 2)
        _add_stage_box(chart, n, before[kind], round(centre - band * 0.2, 2), half, band * 0.3, "previous")
        _add_stage_box(chart, n, now[kind], round(centre + band * 0.2, 2), half, band * 0.3, "current")
    return chart


# ---- RR vs pulse scatter -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LegendEntry:
    stage: int
    label: str
    shape: str


@dataclass
class Scatter(Chart):
    points: list[Point] = field(default_factory=list)
    legend: list[LegendEntry] = field(default_factory=list)


def scatter(stages: Sequence[dict[str, Any]], *, frame: Frame | None = None) -> Scatter:
    """Per-workout (pulse, RR) pairs from `/api/v1/trends/rr-vs-pulse`, one marker shape per stage."""
    frame = frame or Frame(width=420, height=320)
    pairs = [(s["stage"], p) for s in stages for p in s["pairs"]]
    x, x_ticks = _x_axis((p["pulse_bpm"] for _, p in pairs), frame, floor=0.0, min_span=10.0)
    y, y_ticks = _y_axis((p["rr_bpm"] for _, p in pairs), frame, floor=0.0, min_span=4.0)
    chart = Scatter(
        chart_id="rr-vs-pulse",
        title="Median RR against mean pulse, per workout stage",
        description="Each marker is one workout stage: its median RR (breaths/min, up) against its mean "
        "pulse (beats/min, right), shaped and coloured by stage.",
        frame=frame,
        y=y,
        y_ticks=y_ticks,
        y_label="RR (breaths/min)",
        x=x,
        x_ticks=x_ticks,
        x_label="Pulse (beats/min)",
        empty=not pairs,
    )
    for stage, pair in pairs:
        chart.points.append(
            Point(
                stage,
                x(pair["pulse_bpm"]),
                y(pair["rr_bpm"]),
                pair["rr_bpm"],
                str(pair["workout_id"]),
                STAGE_SHAPES[stage],
                {"data-rr-bpm": fmt(pair["rr_bpm"]), "data-pulse-bpm": fmt(pair["pulse_bpm"])},
            )
        )
    for s in stages:
        r = s["pearson_r"]
        corr = "r not defined" if r is None else f"r = {r:.2f}"
        label = f"Stage {s['stage']} ({STAGE_NAMES[s['stage']]}): {corr}, n = {s['n']}"
        chart.legend.append(LegendEntry(s["stage"], label, STAGE_SHAPES[s["stage"]]))
    return chart


# ---- weekly lines --------------------------------------------------------------------------------------


WEEKLY_METRICS = (
    ("resting_rr_bpm", "Resting RR", "breaths/min", "Mean stage-1 RR of the week's workouts."),
    (
        "rr_recovery_bpm",
        "RR recovery",
        "breaths/min",
        "Drop in RR from stage 3 to stage 4: higher is better.",
    ),
    ("hr_recovery_bpm", "Heart-rate recovery", "beats/min", "Drop in pulse from after_3 to after_4."),
    ("heavy_share", "Heavy breathing", "% of segments", "Share of classified segments that were heavy."),
    # Fitness markers imported from health apps (Apple Health, Health Auto Export): weekly means.
    ("resting_hr_bpm", "Resting heart rate", "beats/min", "Mean resting heart rate: lower is fitter."),
    ("hrv_sdnn_ms", "Heart-rate variability", "ms (SDNN)", "Mean HRV (SDNN): higher is usually better."),
    ("vo2_max_ml_kg_min", "VO2 max", "mL/(kg·min)", "Mean estimated VO2 max: higher is fitter."),
    ("walking_hr_bpm", "Walking heart rate", "beats/min", "Mean walking heart rate: lower is fitter."),
)


# The least span each weekly axis shows, in the metric's unit: a few weeks that differ by a breath per
# minute must not fill the chart's height and look like a trend. Metrics not listed get DEFAULT_MIN_SPAN.
WEEKLY_MIN_SPAN = {
    "resting_rr_bpm": 8.0,
    "rr_recovery_bpm": 8.0,
    "hr_recovery_bpm": 20.0,
    "resting_hr_bpm": 20.0,
    "hrv_sdnn_ms": 40.0,
    "vo2_max_ml_kg_min": 10.0,
    "walking_hr_bpm": 20.0,
}
DEFAULT_MIN_SPAN = 2.0
# Weeks needed before a typical range (the middle half of the person's weeks) is drawn.
TYPICAL_MIN_WEEKS = 3


def typical_range(values: Sequence[float]) -> tuple[float, float] | None:
    """The person's own typical range: the quartiles (type 7, as everywhere here) of their weekly values."""
    if len(values) < TYPICAL_MIN_WEEKS:
        return None
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


@dataclass(frozen=True)
class LinePoint:
    x: float
    y: float
    value: float
    week: str


@dataclass
class LineChart(Chart):
    metric: str = ""
    points: list[LinePoint] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # one per run of consecutive weeks that have a value
    typical: tuple[float, float] | None = None  # the typical range's values (low, high)
    typical_px: tuple[float, float] | None = None  # its top and bottom in pixels


def weekly_lines(weeks: Sequence[dict[str, Any]], *, frame: Frame | None = None) -> list[LineChart]:
    """One small line chart per fitness metric of `/api/v1/trends/weekly`, weeks on a shared date axis."""
    frame = frame or Frame(width=420, height=220, bottom=40)
    starts = [date.fromisoformat(w["week_start"]) for w in weeks]
    origin = starts[0] if starts else date(2000, 1, 3)
    days = [(s - origin).days for s in starts]
    lo_day, hi_day = (min(days) - 3.5, max(days) + 3.5) if days else (0.0, 7.0)
    x = Scale(lo_day, hi_day, frame.x0 + 6, frame.x1 - 6)
    every = max(1, math.ceil(len(weeks) / 6))  # at most about six date labels
    x_ticks = [
        Tick(x(d), f"{s.day} {s:%b}")
        for i, (d, s) in enumerate(zip(days, starts, strict=True))
        if i % every == 0
    ]
    charts = []
    for metric, title, unit, note in WEEKLY_METRICS:
        scale_factor = 100.0 if metric == "heavy_share" else 1.0
        present = [
            (d, w["week"], w[metric] * scale_factor)
            for d, w in zip(days, weeks, strict=True)
            if w[metric] is not None
        ]
        floor = 0.0 if metric in ("resting_rr_bpm", "heavy_share") else None
        # A share is shown on its whole 0-100 % scale, so a few points of change do not look dramatic.
        share = metric == "heavy_share"
        y, y_ticks = _y_axis(
            [*(v for _, _, v in present), *((0.0, 100.0) if share else ())],
            frame,
            floor=floor,
            ceiling=100.0 if share else None,
            min_span=WEEKLY_MIN_SPAN.get(metric, DEFAULT_MIN_SPAN),
        )
        typical = typical_range([v for _, _, v in present])
        chart = LineChart(
            chart_id=f"weekly-{metric.replace('_', '-')}",
            title=title,
            description=f"{note} One point per ISO week ({unit})."
            + (
                ""
                if typical is None
                else f" The shaded band is your typical range, the middle half of your weeks "
                f"({typical[0]:.1f} to {typical[1]:.1f})."
            ),
            frame=frame,
            y=y,
            y_ticks=y_ticks,
            y_label=unit,
            x=x,
            x_ticks=x_ticks,
            x_label="Week starting",
            empty=not present,
            metric=metric,
            typical=typical,
            typical_px=None if typical is None else (y(typical[1]), y(typical[0])),
        )
        run: list[str] = []
        for d, w in zip(days, weeks, strict=True):
            if w[metric] is None:  # a week without the needed stages breaks the line
                if len(run) > 1:
                    chart.paths.append("M" + "L".join(run))
                run = []
                continue
            value = w[metric] * scale_factor
            point = LinePoint(x(d), y(value), value, w["week"])
            chart.points.append(point)
            run.append(f"{point.x},{point.y}")
        if len(run) > 1:
            chart.paths.append("M" + "L".join(run))
        charts.append(chart)
    return charts


# ---- one workout: RR over each stage, pulse at the protocol points ---------------------------------------


@dataclass(frozen=True)
class SegmentMark:
    x_start: float
    x_end: float
    y: float
    marker: str  # path of the breath-class marker at the segment's middle
    breath_class: str | None
    segment: dict[str, Any]  # the stored segment, for its data attributes
    noise_y: float | None  # top of the noise bar (None: no noise estimate)
    # Issue 19: "no-rate" (drawn on the time axis: no rate to place), "low-confidence" (drawn faded), or
    # None for a reading the stage median counts (backend.domain's confidence rule).
    left_out: str | None = None


@dataclass
class StageChart(Chart):
    stage: int = 0
    segments: list[SegmentMark] = field(default_factory=list)
    noise_top: float = 0.0
    noise_bottom: float = 0.0


def stage_chart(stage: dict[str, Any], rr_max_bpm: float, *, frame: Frame | None = None) -> StageChart:
    """RR of each segment over the stage's seconds, marked by breath class, with a noise strip below.

    All stages of a workout share `rr_max_bpm`, so their heights compare at a glance.
    """
    frame = frame or Frame(width=420, height=250, bottom=78)
    y, y_ticks = _y_axis([0.0, rr_max_bpm], frame, floor=0.0, min_span=4.0)
    duration = float(stage["duration_s"])
    step = nice_step(duration, 6)
    x = Scale(0.0, duration, frame.x0, frame.x1)
    x_ticks = [Tick(x(i * step), tick_label(i * step)) for i in range(int(duration / step + 1e-9) + 1)]
    noise_top, noise_bottom = frame.y1 + 30, frame.y1 + 52
    n = stage["stage"]
    chart = StageChart(
        chart_id=f"stage-{n}",
        title=f"Stage {n} ({STAGE_NAMES[n]})",
        description=f"RR of each estimate over the {duration:g} s of stage {n}; marker shape shows the "
        "breath class, the grey bars below the estimated probability of noise.",
        frame=frame,
        y=y,
        y_ticks=y_ticks,
        y_label="RR (breaths/min)",
        x=x,
        x_ticks=x_ticks,
        x_label="Seconds into the stage",
        empty=not stage["segments"],
        stage=n,
        noise_top=noise_top,
        noise_bottom=noise_bottom,
    )
    for seg in stage["segments"]:
        start, end = seg["start_s"], seg["start_s"] + seg["duration_s"]
        left_out: str | None
        if seg["rr_bpm"] is None:
            left_out, cy = "no-rate", y(0.0)
        else:
            confident = is_confident(seg["rr_bpm"], seg.get("rr_confidence"))
            left_out, cy = (None if confident else "low-confidence"), y(seg["rr_bpm"])
        cx = x((start + end) / 2)
        noise = seg["noise_prob"]
        chart.segments.append(
            SegmentMark(
                x_start=x(start),
                x_end=x(min(end, duration)),
                y=cy,
                marker=marker_path(BREATH_SHAPES[seg["breath_class"]], cx, cy, 4.0),
                breath_class=seg["breath_class"],
                segment=seg,
                noise_y=None
                if noise is None
                else round(noise_bottom - noise * (noise_bottom - noise_top), 2),
                left_out=left_out,
            )
        )
    return chart


@dataclass
class PulseChart(Chart):
    points: list[Point] = field(default_factory=list)
    path: str = ""
    categories: list[tuple[str, float]] = field(default_factory=list)


def pulse_chart(readings: Sequence[dict[str, Any]], *, frame: Frame | None = None) -> PulseChart:
    """Pulse at the six protocol points, in protocol order; points not measured are left out."""
    frame = frame or Frame(width=420, height=230, bottom=50)
    by_point = {r["point"]: float(r["bpm"]) for r in readings}
    y, y_ticks = _y_axis(by_point.values(), frame, floor=0.0, min_span=10.0)
    band = (frame.x1 - frame.x0) / len(PULSE_POINTS)
    centres = {p: round(frame.x0 + band * (i + 0.5), 2) for i, p in enumerate(PULSE_POINTS)}
    chart = PulseChart(
        chart_id="pulse",
        title="Pulse at the protocol points",
        description="Apple Watch pulse (beats/min) at each of the six protocol points, in protocol order.",
        frame=frame,
        y=y,
        y_ticks=y_ticks,
        y_label="Pulse (beats/min)",
        x_label="Protocol point",
        empty=not by_point,
        categories=[(p, centres[p]) for p in PULSE_POINTS],
    )
    for p in PULSE_POINTS:
        if p in by_point:
            stage = int(p[-1])
            chart.points.append(
                Point(
                    stage, centres[p], y(by_point[p]), by_point[p], "", STAGE_SHAPES[stage], {"data-point": p}
                )
            )
    if len(chart.points) > 1:
        chart.path = "M" + "L".join(f"{pt.x},{pt.y}" for pt in chart.points)
    return chart
