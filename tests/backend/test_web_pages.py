"""Dashboard pages through Flask's test client: lists, detail, tokens, trends drawn from the API's numbers."""

from __future__ import annotations

import pytest
from api_helpers import Api
from flask import Flask
from flask.testing import FlaskClient
from interop_helpers import FULL_SHAPE_SKIPPED, full_shape_export, upload
from web_helpers import Element, csrf_token, elements, login, px_to_value, seed_workouts, set_password

from backend.web import workouts as workout_pages


@pytest.fixture
def alice_web(app: Flask, alice: Api) -> FlaskClient:
    set_password(app, alice.user_id)
    client = app.test_client()
    assert login(client, "alice").status_code == 302
    return client


@pytest.fixture
def seeded(alice: Api) -> list[str]:
    return seed_workouts(alice, count=6)


def text(response: object) -> str:
    return response.get_data(as_text=True)  # type: ignore[attr-defined]


def test_empty_state_says_how_to_upload_the_first_workout(alice_web: FlaskClient) -> None:
    for path in ("/workouts", "/trends"):
        page = text(alice_web.get(path))
        assert "No workouts yet" in page
        assert 'href="/tokens"' in page and 'href="/api/v1/docs"' in page
        assert "Authorization: Bearer" in page and "PUT" in page


def test_workouts_list_newest_first_with_links(alice_web: FlaskClient, seeded: list[str]) -> None:
    page = text(alice_web.get("/workouts"))
    rows = [e.attrs["data-workout-id"] for e in elements(page, tag="tr") if "data-workout-id" in e.attrs]
    assert rows == list(reversed(seeded))
    assert f'href="/workouts/{seeded[0]}"' in page and "No workouts yet" not in page


def test_filters_narrow_the_list_and_bad_filters_are_explained(
    alice_web: FlaskClient, seeded: list[str]
) -> None:
    # seed_workouts: workout i is running/biking/hiit by i % 3, on 2026-10-05 + 7 (i // 3) + 2 (i % 3) days.
    page = text(alice_web.get("/workouts?activity=biking"))
    rows = [e.attrs["data-workout-id"] for e in elements(page, tag="tr") if "data-workout-id" in e.attrs]
    assert rows == [seeded[4], seeded[1]]
    page = text(alice_web.get("/workouts?from=2026-10-12&to=2026-10-14"))
    rows = [e.attrs["data-workout-id"] for e in elements(page, tag="tr") if "data-workout-id" in e.attrs]
    assert rows == [seeded[4], seeded[3]]
    assert 'value="2026-10-12"' in page  # the form shows the filter in force

    none = text(alice_web.get("/workouts?from=2027-01-01"))
    assert "No workouts match these filters." in none and "No workouts yet" not in none

    for query, message in [
        ("from=2026-13-01", "Not a valid date value."),
        ("from=2026-10-20&to=2026-10-01", "“To” is before “From”."),
        ("activity=swimming", "Not a valid choice."),
    ]:
        for path in ("/workouts", "/trends"):
            response = alice_web.get(f"{path}?{query}")
            assert response.status_code == 400, (path, query)
            assert message in text(response) and 'aria-invalid="true"' in text(response)


def test_workouts_list_sorts_by_its_numbers_across_pages(
    alice_web: FlaskClient, alice: Api, seeded: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sorted by RR recovery, all workouts take part (not just one page), those without it come last;
    the numbers are the API detail's stage medians. On both databases (NULLS LAST, medians in SQL)."""
    monkeypatch.setattr(workout_pages, "PAGE_SIZE", 4)
    recovery = {}
    for workout_id in seeded:
        stages = {s["stage"]: s for s in alice.get(f"/api/v1/workouts/{workout_id}").json["stages"]}
        rr = {n: sorted(seg["rr_bpm"] for seg in s["segments"]) for n, s in stages.items()}
        median = {n: (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2 for n, v in rr.items()}
        recovery[workout_id] = median[3] - median[4] if 4 in median else None
    want = sorted((w for w in seeded if recovery[w] is not None), key=lambda w: -recovery[w])
    want += [w for w in seeded if recovery[w] is None]
    shown, url = [], "/workouts?sort=-rr_recovery_bpm"
    while url:
        page = text(alice_web.get(url))
        for row in (e for e in elements(page, tag="tr") if "data-workout-id" in e.attrs):
            shown.append(row.attrs["data-workout-id"])
            value = row.attrs["data-rr-recovery-bpm"]
            expected = recovery[row.attrs["data-workout-id"]]
            assert (value == "") if expected is None else float(value) == pytest.approx(expected)
        # the "Next page" link is the one with a page number (the first page's has none)
        nexts = [e.attrs["href"] for e in elements(page, tag="a") if "page=" in e.attrs.get("href", "")]
        url = nexts[0] if nexts else None
    assert shown == want
    assert alice_web.get("/workouts?sort=shoe_size").status_code == 400
    assert alice_web.get("/workouts?sort=rr1&page=0").status_code == 400


def test_workouts_list_pages_with_the_apis_cursor(
    alice_web: FlaskClient, seeded: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workout_pages, "PAGE_SIZE", 4)
    first = text(alice_web.get("/workouts"))
    older = [e.attrs["href"] for e in elements(first, tag="a") if "cursor=" in e.attrs.get("href", "")]
    assert len(older) == 1
    second = text(alice_web.get(older[0].replace("&amp;", "&")))
    rows = [e.attrs["data-workout-id"] for e in elements(second, tag="tr") if "data-workout-id" in e.attrs]
    assert rows == [seeded[1], seeded[0]]
    bad = alice_web.get("/workouts?cursor=not-a-cursor")
    assert bad.status_code == 400 and "not valid any more" in text(bad)


def test_workout_detail_draws_every_segment_and_pulse_point(
    alice_web: FlaskClient, alice: Api, seeded: list[str]
) -> None:
    workout = alice.get(f"/api/v1/workouts/{seeded[0]}").json
    page = text(alice_web.get(f"/workouts/{seeded[0]}"))
    for stage in workout["stages"]:
        svg = elements(page, tag="svg", data_chart=f"stage-{stage['stage']}")
        assert len(svg) == 1
    drawn = elements(page, tag="g", cls="segment")
    stored = [seg for stage in workout["stages"] for seg in stage["segments"]]
    assert [float(g.attrs["data-rr-bpm"]) for g in drawn] == [seg["rr_bpm"] for seg in stored]
    assert [g.attrs["data-breath-class"] for g in drawn] == [seg["breath_class"] for seg in stored]
    assert [float(g.attrs["data-noise-prob"]) for g in drawn] == [seg["noise_prob"] for seg in stored]
    pulse = elements(page, cls="pulse-point")
    assert [(p.attrs["data-point"], float(p.attrs["data-bpm"])) for p in pulse] == [
        (r["point"], r["bpm"]) for r in workout["pulse"]
    ]


def test_another_users_workout_is_not_found(app: Flask, bob: Api, alice_web: FlaskClient) -> None:
    (bobs,) = seed_workouts(bob, count=1)
    response = alice_web.get(f"/workouts/{bobs}")
    assert response.status_code == 404
    assert alice_web.get("/workouts/not-a-uuid").status_code == 404
    assert bobs not in text(alice_web.get("/workouts")) and bobs not in text(alice_web.get("/trends"))


def pooled(found: list[Element]) -> list[Element]:
    """The pooled box plots' marks (the period comparison's carry data-period)."""
    return [e for e in found if "data-period" not in e.attrs]


def test_trends_page_draws_the_apis_numbers(alice_web: FlaskClient, alice: Api, seeded: list[str]) -> None:
    for query in ("", "?activity=running", "?from=2026-10-12"):
        api = alice.get(f"/api/v1/trends/stages{query}").json["stages"]
        page = text(alice_web.get(f"/trends{query}"))
        for kind in ("rr", "pulse"):
            (plot,) = elements(page, tag="g", cls="plot", data_chart=f"box-{kind}")
            for stage in api:
                dist = stage[kind]
                boxes = pooled(
                    elements(page, tag="rect", cls="box", data_kind=kind, data_stage=str(stage["stage"]))
                )
                if dist["n"] == 0:
                    assert boxes == []
                    continue
                (box,) = boxes
                y, height = float(box.attrs["y"]), float(box.attrs["height"])
                assert px_to_value(y, plot.attrs) == pytest.approx(dist["q3"], abs=0.01)
                assert px_to_value(y + height, plot.attrs) == pytest.approx(dist["q1"], abs=0.01)
                for key in ("median", "whisker_low", "whisker_high"):
                    assert float(box.attrs["data-" + key.replace("_", "-")]) == dist[key]
                where = {"data_kind": kind, "data_stage": str(stage["stage"])}
                (median,) = pooled(elements(page, tag="line", cls="median", **where))
                assert px_to_value(float(median.attrs["y1"]), plot.attrs) == pytest.approx(
                    dist["median"], abs=0.01
                )
                (whisker,) = pooled(elements(page, tag="line", cls="whisker", **where))
                assert px_to_value(float(whisker.attrs["y1"]), plot.attrs) == pytest.approx(
                    dist["whisker_high"], abs=0.01
                )
                assert px_to_value(float(whisker.attrs["y2"]), plot.attrs) == pytest.approx(
                    dist["whisker_low"], abs=0.01
                )
                points = pooled(
                    elements(page, tag="circle", cls="point", data_kind=kind, data_stage=str(stage["stage"]))
                )
                assert [p.attrs["data-workout-id"] for p in points] == dist["workout_ids"]
                assert [px_to_value(float(p.attrs["cy"]), plot.attrs) for p in points] == pytest.approx(
                    dist["points"], abs=0.01
                )


def test_scatter_and_weekly_lines_match_their_endpoints(
    alice_web: FlaskClient, alice: Api, seeded: list[str]
) -> None:
    page = text(alice_web.get("/trends"))
    pairs = alice.get("/api/v1/trends/rr-vs-pulse").json["stages"]
    drawn = elements(page, cls="pair")
    expected = [(s["stage"], p["workout_id"], p["rr_bpm"], p["pulse_bpm"]) for s in pairs for p in s["pairs"]]
    got = [
        (
            int(d.attrs["data-stage"]),
            d.attrs["data-workout-id"],
            float(d.attrs["data-rr-bpm"]),
            float(d.attrs["data-pulse-bpm"]),
        )
        for d in drawn
    ]
    assert got == expected and len(got) == sum(s["n"] for s in pairs)
    for s in pairs:
        if s["pearson_r"] is not None:
            assert f"Stage {s['stage']} " in page and f"r = {s['pearson_r']:.2f}, n = {s['n']}" in page

    weeks = alice.get("/api/v1/trends/weekly").json["weeks"]
    for metric in ("resting_rr_bpm", "rr_recovery_bpm", "hr_recovery_bpm", "heavy_share"):
        points = elements(page, cls="week-point", data_metric=metric)
        scale = 100.0 if metric == "heavy_share" else 1.0
        expected_points = [(w["week"], w[metric] * scale) for w in weeks if w[metric] is not None]
        assert [p.attrs["data-week"] for p in points] == [week for week, _ in expected_points]
        assert [float(p.attrs["data-value"]) for p in points] == pytest.approx(
            [v for _, v in expected_points]
        )


def test_token_is_shown_once_works_and_can_be_revoked(app: Flask, alice_web: FlaskClient) -> None:
    page = text(alice_web.get("/tokens"))
    assert "Alice&#39;s iPhone" in page  # the fixture's token is listed, without its secret
    created = alice_web.post("/tokens", data={"label": "Alice's iPad", "csrf_token": csrf_token(page)})
    assert created.status_code == 200 and created.headers["Cache-Control"] == "no-store"
    (field,) = elements(text(created), tag="input", cls="token")
    token = field.attrs["value"]
    assert token.startswith("rsp_") and field.attrs.get("readonly") is not None
    assert token not in text(alice_web.get("/tokens"))  # shown only on the answer to the POST

    api = app.test_client()
    assert api.get("/api/v1/workouts", headers={"Authorization": f"Bearer {token}"}).status_code == 200

    page = text(alice_web.get("/tokens"))
    ipad = next(
        e for e in elements(page, tag="tr") if "data-token-id" in e.attrs and e.attrs["class"] == "live"
    )
    revoked = alice_web.post(
        f"/tokens/{ipad.attrs['data-token-id']}/revoke", data={"csrf_token": csrf_token(page)}
    )
    assert revoked.status_code == 303
    after = text(alice_web.get("/tokens"))
    assert "Revoked the token for Alice&#39;s iPad" in after
    # the Status column says in words what each token is; the button sits in a column of its own
    assert after.count('<td class="status">Revoked ') == 1
    assert after.count('<td class="status">Live: uploads with it are accepted</td>') == 1
    assert api.get("/api/v1/workouts", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_token_form_checks_its_label(alice_web: FlaskClient) -> None:
    page = text(alice_web.get("/tokens"))
    response = alice_web.post("/tokens", data={"label": "  ", "csrf_token": csrf_token(page)})
    assert response.status_code == 400 and "Name the device" in text(response)
    response = alice_web.post("/tokens", data={"label": "x" * 101, "csrf_token": csrf_token(page)})
    assert response.status_code == 400 and "100 characters" in text(response)


def test_another_users_token_cannot_be_revoked(app: Flask, alice_web: FlaskClient, bob: Api) -> None:
    page = text(alice_web.get("/tokens"))
    bob_web = app.test_client()  # bob's token id, as his own page shows it
    set_password(app, bob.user_id)
    login(bob_web, "bob")
    bob_page = text(bob_web.get("/tokens"))
    (row,) = [e for e in elements(bob_page, tag="tr") if "data-token-id" in e.attrs]
    response = alice_web.post(
        f"/tokens/{row.attrs['data-token-id']}/revoke", data={"csrf_token": csrf_token(page)}
    )
    assert response.status_code == 404
    assert bob.get("/api/v1/workouts").status_code == 200  # bob's device still works


# ---- issue 16: the import report, fitness markers in the weekly view ----------------------------------


def test_import_report_shows_what_was_stored_and_every_skip_with_its_reason(
    alice_web: FlaskClient, alice: Api
) -> None:
    empty = text(alice_web.get("/imports"))
    assert "No imports yet" in empty and 'aria-current="page"' in empty
    job = upload(alice, full_shape_export()).json
    page = text(alice_web.get("/imports"))
    (section,) = elements(page, tag="section", cls="import-report")
    assert section.attrs["data-import-id"] == job["id"] and section.attrs["data-status"] == "succeeded"
    skipped = [
        (row.attrs["data-type"], int(row.attrs["data-count"]))
        for row in elements(page, tag="tr")
        if "data-type" in row.attrs
    ]
    assert skipped == [(row["type"], row["count"]) for row in FULL_SHAPE_SKIPPED]
    for row in FULL_SHAPE_SKIPPED:
        assert row["reason"].replace("'", "&#39;") in page
    stored = [row.attrs["data-kind"] for row in elements(page, tag="tr") if "data-kind" in row.attrs]
    assert stored == [row["kind"] for row in job["stored"]] and "vo2_max" in stored
    assert "28 records counted, 19 skipped." in page
    assert "RestingHeartRate record of 2026-11-25" in page  # the unusable record, described


def test_weekly_view_draws_the_fitness_markers_beside_rr(
    alice_web: FlaskClient, alice: Api, seeded: list[str]
) -> None:
    assert upload(alice, full_shape_export()).status_code == 201
    page = text(alice_web.get("/trends"))
    weeks = alice.get("/api/v1/trends/weekly").json["weeks"]
    for metric in ("resting_hr_bpm", "hrv_sdnn_ms", "vo2_max_ml_kg_min", "walking_hr_bpm", "resting_rr_bpm"):
        points = elements(page, cls="week-point", data_metric=metric)
        expected = [(w["week"], w[metric]) for w in weeks if w[metric] is not None]
        assert expected, metric
        assert [p.attrs["data-week"] for p in points] == [week for week, _ in expected]
        assert [float(p.attrs["data-value"]) for p in points] == pytest.approx([v for _, v in expected])
    assert "VO2 max" in page and "Resting heart rate" in page and "44.7" in page  # the table of numbers
