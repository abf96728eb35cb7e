"""Chart geometry (backend.web.charts): axes, boxes, points and lines land where their numbers say."""

from __future__ import annotations

import itertools
import math
import re
import uuid

import pytest
from web_helpers import px_to_value

from backend.trends import box_stats
from backend.web.charts import (
    Frame,
    Scale,
    box_plot,
    comparison_box_plot,
    jitter,
    marker_path,
    nice_domain,
    nice_step,
    pulse_chart,
    scatter,
    stage_chart,
    weekly_lines,
)


def distribution(values: list[float]) -> dict:
    return {**box_stats(values), "points": values, "workout_ids": [str(uuid.uuid4()) for _ in values]}


def test_nice_steps_are_round_numbers() -> None:
    assert nice_step(30, 5) == 10
    assert nice_step(7, 5) == 2
    assert nice_step(1.1, 5) == 0.25
    assert nice_step(900, 6) == 200


@pytest.mark.parametrize(
    ("values", "floor"),
    [([10, 13, 14, 15.5], 0.0), ([62, 181], 0.0), ([3.2], None), ([], 0.0), ([-4.0, 7.5], None)],
)
def test_nice_domain_covers_the_values_with_evenly_spaced_ticks(
    values: list[float], floor: float | None
) -> None:
    lo, hi, ticks = nice_domain(values, floor=floor)
    assert lo < hi and ticks[0] == lo and math.isclose(ticks[-1], hi)
    assert all(lo <= v <= hi for v in values)
    steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1
    if floor is not None:
        assert lo >= floor


def test_scale_maps_both_ways_and_publishes_its_mapping() -> None:
    y = Scale(0.0, 40.0, 200.0, 10.0)  # a y axis: bigger values higher up
    assert y(0.0) == 200.0 and y(40.0) == 10.0 and y(20.0) == 105.0
    assert px_to_value(y(13.37), y.attrs("y")) == pytest.approx(13.37, abs=0.01)


def test_box_plot_draws_the_papers_example_where_the_numbers_say() -> None:
    # docs/api.md: points 10, 13, 14, 15.5 give q1 12.25, median 13.5, q3 14.375, whiskers 10 and 15.5.
    stages = [
        {"stage": n, "rr": distribution([10, 13, 14, 15.5] if n == 1 else []), "pulse": distribution([])}
        for n in (1, 2, 3, 4)
    ]
    chart = box_plot(stages, "rr")
    (box,) = chart.boxes
    plot = chart.plot_attrs
    drawn = {
        "q1": px_to_value(box.q1_px, plot),
        "median": px_to_value(box.median_px, plot),
        "q3": px_to_value(box.q3_px, plot),
        "whisker_low": px_to_value(box.whisker_low_px, plot),
        "whisker_high": px_to_value(box.whisker_high_px, plot),
    }
    expected = {"q1": 12.25, "median": 13.5, "q3": 14.375, "whisker_low": 10, "whisker_high": 15.5}
    assert drawn == pytest.approx(expected, abs=0.01)
    assert box.q3_px < box.median_px < box.q1_px  # higher values are drawn higher up
    assert sorted(px_to_value(p.y, plot) for p in chart.points) == pytest.approx([10, 13, 14, 15.5], abs=0.01)
    assert [b[2] for b in chart.bands] == ["n = 4", "n = 0", "n = 0", "n = 0"]
    band = (chart.frame.x1 - chart.frame.x0) / 4
    assert all(abs(p.x - box.x) <= band / 4 + 0.01 for p in chart.points)  # points stay in their stage's band


def test_jitter_is_deterministic_and_bounded() -> None:
    spread = [jitter(i, 50) for i in range(50)]
    assert spread == [jitter(i, 50) for i in range(50)]
    assert all(-0.5 <= s < 0.5 for s in spread) and len(set(spread)) == 50
    assert jitter(0, 1) == 0.0


@pytest.mark.parametrize("shape", ["circle", "ring", "square", "triangle", "diamond", "cross"])
def test_markers_are_centred_on_their_point(shape: str) -> None:
    path = marker_path(shape, 100.0, 50.0, 4.0)
    if shape in ("circle", "ring"):
        assert path.startswith("M96.00,50.00a4.0,4.0")  # starts one radius left of the centre, arcs around it
        return
    coords = [tuple(map(float, pair)) for pair in re.findall(r"(-?[\d.]+),(-?[\d.]+)", path)]
    if shape == "square":  # relative h/v moves after the first corner
        assert coords[0] == pytest.approx((100 - 3.6, 50 - 3.6))
        return
    xs, ys = [c[0] for c in coords], [c[1] for c in coords]
    assert (min(xs) + max(xs)) / 2 == pytest.approx(100.0) and (min(ys) + max(ys)) / 2 == pytest.approx(50.0)


def test_unknown_marker_shape_is_an_error() -> None:
    with pytest.raises(ValueError, match="hexagon"):
        marker_path("hexagon", 0, 0)


def test_scatter_places_each_pair_and_labels_each_stage() -> None:
    stages = [
        {
            "stage": 1,
            "n": 2,
            "pearson_r": 0.5,
            "pairs": [
                {
                    "workout_id": "a",
                    "started_at": "2026-11-21T07:30:00-08:00",
                    "rr_bpm": 14.0,
                    "pulse_bpm": 70.0,
                },
                {
                    "workout_id": "b",
                    "started_at": "2026-11-22T07:30:00-08:00",
                    "rr_bpm": 16.0,
                    "pulse_bpm": 75.0,
                },
            ],
        },
        {"stage": 2, "n": 0, "pearson_r": None, "pairs": []},
    ]
    chart = scatter(stages)
    assert chart.x is not None
    for point, pair in zip(chart.points, stages[0]["pairs"], strict=True):
        assert px_to_value(point.y, chart.plot_attrs) == pytest.approx(pair["rr_bpm"], abs=0.01)
        assert px_to_value(point.x, chart.plot_attrs, "x") == pytest.approx(pair["pulse_bpm"], abs=0.01)
    assert [e.label for e in chart.legend] == [
        "Stage 1 (before): r = 0.50, n = 2",
        "Stage 2 (during): r not defined, n = 0",
    ]


def test_weekly_lines_break_where_a_week_has_no_value() -> None:
    weeks = [
        {
            "week": f"2026-W{w}",
            "week_start": start,
            "workouts": 1,
            "resting_rr_bpm": rr,
            "peak_rr_bpm": None,
            "rr_recovery_bpm": None,
            "hr_recovery_bpm": 30.0,
            "heavy_share": 0.25,
            "resting_hr_bpm": None,
            "hrv_sdnn_ms": None,
            "vo2_max_ml_kg_min": 45.0,
            "walking_hr_bpm": None,
        }
        for w, start, rr in [
            (41, "2026-10-05", 14.0),
            (42, "2026-10-12", None),
            (43, "2026-10-19", 13.0),
            (44, "2026-10-26", 12.5),
        ]
    ]
    charts = {c.metric: c for c in weekly_lines(weeks)}
    resting = charts["resting_rr_bpm"]
    assert [p.week for p in resting.points] == ["2026-W41", "2026-W43", "2026-W44"]
    assert len(resting.paths) == 1  # W41 stands alone; W43-W44 is the one line
    assert charts["rr_recovery_bpm"].empty and not charts["rr_recovery_bpm"].points
    heavy = charts["heavy_share"]
    assert {p.value for p in heavy.points} == {25.0}  # shown in percent
    assert (heavy.y.lo, heavy.y.hi) == (0.0, 100.0)
    xs = [p.x for p in charts["hr_recovery_bpm"].points]
    assert xs == sorted(xs) and xs[1] - xs[0] == pytest.approx(xs[2] - xs[1], abs=0.02)  # weeks evenly apart


def test_weekly_axes_keep_a_minimum_span_and_the_typical_range_is_the_middle_half() -> None:
    """Resting RR of 14.0, 14.4, 14.2, 14.6: a 0.6 breaths/min wobble must not fill the chart."""
    rates = [14.0, 14.4, 14.2, 14.6]
    weeks = [
        {
            "week": f"2026-W{41 + i}",
            "week_start": f"2026-10-{5 + 7 * i:02d}",
            "workouts": 1,
            "resting_rr_bpm": rr,
            "peak_rr_bpm": None,
            "rr_recovery_bpm": None if i else 9.0,
            "hr_recovery_bpm": 30.0 + i,
            "heavy_share": 0.25,
            **dict.fromkeys(("resting_hr_bpm", "hrv_sdnn_ms", "vo2_max_ml_kg_min", "walking_hr_bpm")),
        }
        for i, rr in enumerate(rates)
    ]
    charts = {c.metric: c for c in weekly_lines(weeks)}
    resting = charts["resting_rr_bpm"]
    assert resting.y.hi - resting.y.lo >= 8.0 and resting.y.lo <= 14.0 and resting.y.hi >= 14.6
    assert charts["hr_recovery_bpm"].y.hi - charts["hr_recovery_bpm"].y.lo >= 20.0
    assert resting.typical == pytest.approx((14.15, 14.45))  # quartiles, type 7
    top, bottom = resting.typical_px
    assert (px_to_value(bottom, resting.plot_attrs), px_to_value(top, resting.plot_attrs)) == pytest.approx(
        (14.15, 14.45), abs=0.01
    )
    assert charts["rr_recovery_bpm"].typical is None  # one week is no range


def test_comparison_box_plot_puts_the_previous_period_left_of_the_current_one() -> None:
    def stages(values: dict[int, list[float]]) -> list[dict]:
        return [
            {"stage": n, "rr": distribution(values.get(n, [])), "pulse": distribution([])}
            for n in (1, 2, 3, 4)
        ]

    previous = stages({1: [15.0, 16.0, 17.0], 3: [30.0, 32.0]})
    current = stages({1: [13.0, 14.0], 3: [28.0]})
    chart = comparison_box_plot(previous, current, "rr", ("the 4 weeks before", "the 4 weeks to 1 Nov"))
    by = {(b.stage, b.period): b for b in chart.boxes}
    assert set(by) == {(1, "previous"), (1, "current"), (3, "previous"), (3, "current")}
    for n in (1, 3):
        left, right = by[n, "previous"], by[n, "current"]
        assert left.x + left.half_width < right.x - right.half_width  # side by side, not overlapping
    plot = chart.plot_attrs
    assert px_to_value(by[1, "previous"].median_px, plot) == pytest.approx(16.0, abs=0.01)
    assert px_to_value(by[1, "current"].median_px, plot) == pytest.approx(13.5, abs=0.01)
    assert chart.y.lo <= 13.0 and chart.y.hi >= 32.0  # one axis for both periods
    assert [b[2] for b in chart.bands] == ["n = 3 | 2", "n = 0 | 0", "n = 2 | 1", "n = 0 | 0"]
    periods = [p.extra["data-period"] for p in chart.points]
    assert periods.count("previous") == 5 and periods.count("current") == 3
    assert chart.periods == [("previous", "the 4 weeks before"), ("current", "the 4 weeks to 1 Nov")]


def test_stage_chart_draws_segments_in_time_and_noise_as_bar_height() -> None:
    stage = {
        "stage": 2,
        "duration_s": 60.0,
        "segments": [
            {"start_s": 0.0, "duration_s": 6.0, "rr_bpm": 30.0, "breath_class": "heavy", "noise_prob": 0.0},
            {"start_s": 54.0, "duration_s": 6.0, "rr_bpm": 36.0, "breath_class": None, "noise_prob": 1.0},
            {"start_s": 30.0, "duration_s": 6.0, "rr_bpm": 33.0, "breath_class": "none", "noise_prob": None},
        ],
    }
    chart = stage_chart(stage, 40.0, frame=Frame(width=420, height=250, bottom=78))
    assert chart.x is not None
    first, last, middle = chart.segments
    assert px_to_value(first.x_start, chart.plot_attrs, "x") == pytest.approx(0.0)
    assert px_to_value(last.x_end, chart.plot_attrs, "x") == pytest.approx(60.0)
    assert px_to_value(last.y, chart.plot_attrs) == pytest.approx(36.0, abs=0.01)
    assert first.noise_y == chart.noise_bottom and last.noise_y == chart.noise_top
    assert middle.noise_y is None


def test_pulse_chart_keeps_protocol_order_and_skips_missing_points() -> None:
    readings = [{"point": "after_3", "bpm": 140.0}, {"point": "before_1", "bpm": 68.0}]
    chart = pulse_chart(readings)
    assert [p.extra["data-point"] for p in chart.points] == ["before_1", "after_3"]
    assert chart.points[0].x < chart.points[1].x
    assert [px_to_value(p.y, chart.plot_attrs) for p in chart.points] == pytest.approx(
        [68.0, 140.0], abs=0.01
    )
