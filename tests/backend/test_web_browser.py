"""The dashboard in headless Chromium: real pages, real clicks, what is drawn compared with the API.

One server (SQLite, seeded through the API) and one browser serve the whole module. Screenshots of every
page go to test-artifacts/screenshots/ (paths printed; `pytest -s` shows them). Skipped, saying why, where
Chromium or its driver is missing; scripts/system-deps installs both.
"""

from __future__ import annotations

import json
import statistics
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from api_helpers import Api, app_config, empty_database, make_user
from browser_helpers import bbox, chromium, chromium_paths, live_server, screenshot
from flask import Flask
from web_helpers import COOKIE, PASSWORD, aged_cookie, px_to_value, seed_workouts, set_password

from backend import create_app, migrate
from backend.db import EXTENSION_KEY, Database

pytestmark = pytest.mark.browser
PHONE = {"width": 375, "height": 812, "deviceScaleFactor": 2, "mobile": True}


@dataclass
class Site:
    app: Flask
    base: str
    workout_ids: list[str]
    token: str  # alice's device token, to ask the API for the numbers a page should draw


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    chromium_paths()  # skip before building anything when there is no browser
    with empty_database("sqlite", tmp_path_factory.mktemp("browser-db")) as url:
        db = Database(url)
        migrate.upgrade(db)
        db.dispose()
        app = create_app(app_config(url))
        alice_id, alice_token = make_user(app, "alice", "Alice's iPhone")
        set_password(app, alice_id)
        bob_id, _ = make_user(app, "bob", None)  # logs in, has nothing uploaded yet
        set_password(app, bob_id)
        ids = seed_workouts(Api(app, alice_token, alice_id), count=12)
        with live_server(app) as base:
            yield Site(app, base, ids, alice_token)
        app.extensions[EXTENSION_KEY].dispose()


@pytest.fixture(scope="module")
def driver(site: Site) -> Iterator[Any]:
    with chromium() as browser:
        yield browser


def wait_for_new_page(driver: Any, action: Any) -> None:
    """Do `action` (a click, a submit) and wait until the browser has loaded the page it leads to."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.wait import WebDriverWait

    old = driver.find_element("tag name", "html")

    def replaced(_: Any) -> bool:
        # Chromium reports an element of a replaced document either as stale or, while the new
        # document is being attached, as "Node with given id does not belong to the document"
        # (a plain WebDriverException, which selenium's staleness_of does not count as stale).
        try:
            old.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    action()
    WebDriverWait(driver, 15).until(replaced)
    WebDriverWait(driver, 15).until(lambda d: d.execute_script("return document.readyState") == "complete")


def log_in(driver: Any, site: Site, name: str = "alice", password: str = PASSWORD) -> None:
    driver.delete_all_cookies()
    driver.get(site.base + "/login")
    driver.find_element("id", "username").send_keys(name)
    driver.find_element("id", "password").send_keys(password)
    wait_for_new_page(driver, driver.find_element("css selector", "main form button[type=submit]").click)
    open_page(driver, driver.current_url)  # the redirect after the POST has settled before the test goes on


def open_page(driver: Any, url: str) -> None:
    """``driver.get`` and wait until that very document has loaded, so that no element found next
    can belong to a document still being replaced (Chromium then answers "Node ... does not belong
    to the document")."""
    wait_for_new_page(driver, lambda: driver.get(url))


def api_get(site: Site, path: str, token: str) -> Any:
    request = urllib.request.Request(site.base + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def attrs(driver: Any, element: Any) -> dict[str, str]:
    return driver.execute_script(
        "const out = {}; for (const a of arguments[0].attributes) out[a.name] = a.value; return out;", element
    )


def test_failed_login_then_login(driver: Any, site: Site) -> None:
    driver.delete_all_cookies()
    driver.get(site.base + "/workouts")
    assert "/login?next=/workouts" in driver.current_url
    screenshot(driver, "login")
    driver.find_element("id", "username").send_keys("alice")
    driver.find_element("id", "password").send_keys("not the password")
    wait_for_new_page(driver, driver.find_element("css selector", "main form button[type=submit]").click)
    error = driver.find_element("id", "login-error")
    assert error.text == "Wrong username or password." and error.get_attribute("role") == "alert"
    assert driver.find_element("id", "username").get_attribute("value") == "alice"
    screenshot(driver, "login-failed")

    driver.find_element("id", "password").send_keys(PASSWORD)
    wait_for_new_page(driver, driver.find_element("css selector", "main form button[type=submit]").click)
    assert driver.current_url == site.base + "/workouts"  # back where the login was asked for


def test_trends_draw_the_numbers_of_the_api(driver: Any, site: Site) -> None:
    log_in(driver, site)
    # A token made on the tokens page, used to fetch the API's numbers from the same server.
    driver.get(site.base + "/tokens")
    driver.find_element("id", "label").send_keys("Browser test")
    wait_for_new_page(driver, driver.find_element("css selector", "form.inline-form button").click)
    token = driver.find_element("id", "new-token").get_attribute("value")
    assert token.startswith("rsp_")
    screenshot(driver, "tokens-new-token")
    stages = api_get(site, "/api/v1/trends/stages", token)["stages"]
    pairs = api_get(site, "/api/v1/trends/rr-vs-pulse", token)["stages"]

    open_page(driver, site.base + "/trends")
    screenshot(driver, "trends")
    checked_boxes = checked_points = 0
    for kind in ("rr", "pulse"):
        plot = attrs(driver, driver.find_element("css selector", f"g.plot[data-chart='box-{kind}']"))
        for stage in stages:
            dist, n = stage[kind], stage["stage"]
            where = f"[data-kind='{kind}'][data-stage='{n}']"
            chart = f"g.plot[data-chart='box-{kind}'] "  # the pooled chart, not the period comparison
            boxes = driver.find_elements("css selector", f"{chart}rect.box{where}")
            if dist["n"] == 0:
                assert boxes == []
                continue
            (box,) = boxes
            assert box.is_displayed()
            drawn = bbox(driver, box)
            assert px_to_value(drawn["y"], plot) == pytest.approx(dist["q3"], abs=0.01)
            assert px_to_value(drawn["y"] + drawn["height"], plot) == pytest.approx(dist["q1"], abs=0.01)
            median = bbox(driver, driver.find_element("css selector", f"{chart}line.median{where}"))
            assert px_to_value(median["y"], plot) == pytest.approx(dist["median"], abs=0.01)
            whisker = bbox(driver, driver.find_element("css selector", f"{chart}line.whisker{where}"))
            assert px_to_value(whisker["y"], plot) == pytest.approx(dist["whisker_high"], abs=0.01)
            assert px_to_value(whisker["y"] + whisker["height"], plot) == pytest.approx(
                dist["whisker_low"], abs=0.01
            )
            points = driver.find_elements("css selector", f"{chart}circle.point{where}")
            assert [p.get_attribute("data-workout-id") for p in points] == dist["workout_ids"]
            centres = [bbox(driver, p) for p in points]
            drawn_values = [px_to_value(c["y"] + c["height"] / 2, plot) for c in centres]
            assert drawn_values == pytest.approx(dist["points"], abs=0.01)
            checked_boxes, checked_points = checked_boxes + 1, checked_points + len(points)
    assert checked_boxes == 8 and checked_points == sum(s[k]["n"] for s in stages for k in ("rr", "pulse"))

    plot = attrs(driver, driver.find_element("css selector", "g.plot[data-chart='rr-vs-pulse']"))
    drawn_pairs = []
    for marker in driver.find_elements("css selector", "path.pair"):
        box = bbox(driver, marker)
        drawn_pairs.append(
            (
                int(marker.get_attribute("data-stage")),
                round(px_to_value(box["x"] + box["width"] / 2, plot, "x"), 1),
                round(px_to_value(box["y"] + box["height"] / 2, plot), 1),
            )
        )
    expected = [
        (s["stage"], round(p["pulse_bpm"], 1), round(p["rr_bpm"], 1)) for s in pairs for p in s["pairs"]
    ]
    assert len(drawn_pairs) == len(expected)
    for got, want in zip(drawn_pairs, expected, strict=True):
        assert got[0] == want[0] and got[1:] == pytest.approx(want[1:], abs=0.11)


def drawn_box(driver: Any, plot: dict[str, str], box: Any) -> tuple[float, float]:
    """(q1, q3) read back from where the browser drew a box."""
    drawn = bbox(driver, box)
    return px_to_value(drawn["y"] + drawn["height"], plot), px_to_value(drawn["y"], plot)


def test_period_comparison_draws_both_periods_of_the_api(driver: Any, site: Site) -> None:
    """This period's stage distributions beside the previous period's, each as the API gives it for
    that period's dates; the headline's RR recovery is the median of the API's per-workout stage 3
    minus stage 4."""
    log_in(driver, site)
    open_page(driver, site.base + "/trends")
    select = driver.find_element("id", "weeks")
    assert select.get_attribute("value") == "4"
    driver.find_element("css selector", "#weeks option[value='2']").click()
    wait_for_new_page(driver, driver.find_element("css selector", "form.compare-form button").click)
    assert driver.current_url.endswith("/trends?weeks=2")
    section = attrs(driver, driver.find_element("css selector", "section.compare"))
    # the seeded workouts end on Fri 30 Oct 2026 (local): two weeks to it, and the two before
    assert (section["data-current-from"], section["data-current-to"]) == ("2026-10-17", "2026-10-30")
    assert (section["data-previous-from"], section["data-previous-to"]) == ("2026-10-03", "2026-10-16")
    screenshot(driver, "trends-compare")
    checked = 0
    api = {}
    for period in ("previous", "current"):
        query = f"from={section[f'data-{period}-from']}&to={section[f'data-{period}-to']}"
        api[period] = api_get(site, f"/api/v1/trends/stages?{query}", site.token)["stages"]
    for kind in ("rr", "pulse"):
        plot = attrs(driver, driver.find_element("css selector", f"g.plot[data-chart='compare-{kind}']"))
        for period, stages in api.items():
            for stage in stages:
                dist = stage[kind]
                where = f"[data-kind='{kind}'][data-stage='{stage['stage']}'][data-period='{period}']"
                boxes = driver.find_elements(
                    "css selector", f"g.plot[data-chart='compare-{kind}'] rect.box{where}"
                )
                assert len(boxes) == (dist["n"] > 0)
                if not boxes:
                    continue
                assert drawn_box(driver, plot, boxes[0]) == pytest.approx((dist["q1"], dist["q3"]), abs=0.01)
                points = driver.find_elements(
                    "css selector", f"g.plot[data-chart='compare-{kind}'] circle.point{where}"
                )
                assert [p.get_attribute("data-workout-id") for p in points] == dist["workout_ids"]
                centres = [bbox(driver, p) for p in points]
                drawn = [px_to_value(c["y"] + c["height"] / 2, plot) for c in centres]
                assert drawn == pytest.approx(dist["points"], abs=0.01)
                checked += 1
    assert checked == 16  # 4 stages x 2 measures x 2 periods, all with workouts
    # previous boxes sit left of this period's, stage by stage
    for n in (1, 2, 3, 4):
        left, right = (
            bbox(
                driver,
                driver.find_element(
                    "css selector",
                    f"g.plot[data-chart='compare-rr'] rect.box[data-stage='{n}'][data-period='{p}']",
                ),
            )
            for p in ("previous", "current")
        )
        assert left["x"] + left["width"] <= right["x"]

    def recovery(stages: list[dict[str, Any]]) -> float:
        rr = {s["stage"]: dict(zip(s["rr"]["workout_ids"], s["rr"]["points"], strict=True)) for s in stages}
        return statistics.median(v - rr[4][w] for w, v in rr[3].items() if w in rr[4])

    headline = driver.find_element("css selector", "p.headline")
    numbers = attrs(driver, headline)
    assert float(numbers["data-recovery-previous"]) == pytest.approx(recovery(api["previous"]))
    assert float(numbers["data-recovery-current"]) == pytest.approx(recovery(api["current"]))
    assert f"{recovery(api['current']):.1f} breaths/min" in headline.text
    change = recovery(api["current"]) - recovery(api["previous"])
    assert ("recovering faster" in headline.text) == (change > 0.5)


def test_weekly_charts_keep_a_minimum_span_and_shade_the_typical_range(driver: Any, site: Site) -> None:
    log_in(driver, site)
    open_page(driver, site.base + "/trends")
    weeks = api_get(site, "/api/v1/trends/weekly", site.token)["weeks"]
    min_span = {"resting_rr_bpm": 8.0, "rr_recovery_bpm": 8.0, "hr_recovery_bpm": 20.0, "heavy_share": 100.0}
    for metric, span in min_span.items():
        plot = attrs(
            driver,
            driver.find_element("css selector", f"g.plot[data-chart='weekly-{metric.replace('_', '-')}']"),
        )
        assert float(plot["data-y-hi"]) - float(plot["data-y-lo"]) >= span, metric
        values = [w[metric] * (100 if metric == "heavy_share" else 1) for w in weeks if w[metric] is not None]
        band = driver.find_elements("css selector", f"rect.typical[data-metric='{metric}']")
        if len(values) < 3:
            assert band == []
            continue
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
        assert drawn_box(driver, plot, band[0]) == pytest.approx((q1, q3), abs=0.01), metric


def test_workouts_list_shows_each_workouts_numbers_and_sorts_by_them(driver: Any, site: Site) -> None:
    """Per workout: each stage's median RR, RR recovery and peak pulse, as computed from the API's own
    detail of that workout; sorting by a heading orders all of them, workouts without the number last."""
    log_in(driver, site)
    expected = {}
    for workout_id in site.workout_ids:
        detail = api_get(site, f"/api/v1/workouts/{workout_id}", site.token)
        rr = {s["stage"]: statistics.median(seg["rr_bpm"] for seg in s["segments"]) for s in detail["stages"]}
        expected[workout_id] = {
            **{f"rr{n}": rr.get(n) for n in (1, 2, 3, 4)},
            "rr_recovery_bpm": rr[3] - rr[4] if 3 in rr and 4 in rr else None,
            "peak_pulse_bpm": max(p["bpm"] for p in detail["pulse"]),
        }

    def table() -> list[tuple[str, dict[str, str]]]:
        rows = driver.find_elements("css selector", "tr[data-workout-id]")
        return [
            (
                r.get_attribute("data-workout-id"),
                {
                    c.get_attribute("data-col"): c.text
                    for c in r.find_elements("css selector", "td[data-col]")
                },
            )
            for r in rows
        ]

    driver.get(site.base + "/workouts")
    shown = table()
    assert [w for w, _ in shown] == list(reversed(site.workout_ids))
    for workout_id, cells in shown:
        for key, want in expected[workout_id].items():
            digits = 0 if key == "peak_pulse_bpm" else 1
            assert cells[key] == ("—" if want is None else f"{want:.{digits}f}"), (workout_id, key)
    screenshot(driver, "workouts-numbers")

    wait_for_new_page(
        driver, driver.find_element("css selector", "a.sort[data-sort='rr_recovery_bpm']").click
    )
    header = driver.find_element("xpath", "//th[a[@data-sort='rr_recovery_bpm']]")
    assert header.get_attribute("aria-sort") == "descending"
    with_value = sorted(
        (w for w in site.workout_ids if expected[w]["rr_recovery_bpm"] is not None),
        key=lambda w: -expected[w]["rr_recovery_bpm"],
    )
    without = [w for w in site.workout_ids if expected[w]["rr_recovery_bpm"] is None]
    assert without and [w for w, _ in table()] == with_value + without
    wait_for_new_page(
        driver, driver.find_element("css selector", "a.sort[data-sort='rr_recovery_bpm']").click
    )
    assert (
        driver.find_element("xpath", "//th[a[@data-sort='rr_recovery_bpm']]").get_attribute("aria-sort")
        == "ascending"
    )
    assert [w for w, _ in table()] == list(reversed(with_value)) + without
    wait_for_new_page(driver, driver.find_element("css selector", "a.sort[data-sort='peak_pulse_bpm']").click)
    peaks = [float(c["peak_pulse_bpm"]) for _, c in table()]
    assert peaks == sorted(peaks, reverse=True)


def test_api_docs_inside_the_dashboard_frame_with_a_way_back(driver: Any, site: Site) -> None:
    log_in(driver, site)
    open_page(driver, site.base + "/trends")
    wait_for_new_page(driver, driver.find_element("link text", "API docs").click)
    assert driver.current_url == site.base + "/api/v1/docs"
    assert (
        driver.find_element("css selector", "header.site-header nav a[aria-current=page]").text == "API docs"
    )
    sheet = driver.execute_script("return [...document.styleSheets].map(s => s.href)")
    assert sheet == [site.base + "/static/web/dashboard.css"]
    method = driver.find_element("css selector", ".api-docs .method")
    assert driver.execute_script("return getComputedStyle(arguments[0]).fontWeight", method) == "700"
    screenshot(driver, "api-docs")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**PHONE, "width": 390})
    driver.get(site.base + "/api/v1/docs")
    assert driver.execute_script("return document.documentElement.scrollWidth") <= 390
    screenshot(driver, "api-docs-phone", **{**PHONE, "width": 390})
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    wait_for_new_page(driver, driver.find_element("link text", "← Back to the dashboard").click)
    assert driver.current_url == site.base + "/workouts"


def test_workouts_list_and_detail(driver: Any, site: Site) -> None:
    log_in(driver, site)
    driver.get(site.base + "/workouts")
    rows = driver.find_elements("css selector", "tr[data-workout-id]")
    assert [r.get_attribute("data-workout-id") for r in rows] == list(reversed(site.workout_ids))
    screenshot(driver, "workouts")
    link = rows[-1].find_element("tag name", "a")
    wait_for_new_page(driver, link.click)
    assert driver.current_url == f"{site.base}/workouts/{site.workout_ids[0]}"
    charts = driver.find_elements("css selector", "svg.chart-svg[data-chart^='stage-']")
    assert len(charts) == 4 and all(c.is_displayed() for c in charts)
    assert len(driver.find_elements("css selector", "g.segment")) == 40
    assert len(driver.find_elements("css selector", "rect.noise")) == 40
    assert len(driver.find_elements("css selector", "path.pulse-point")) == 6
    screenshot(driver, "workout-detail")

    driver.get(site.base + "/workouts?activity=hiit&from=2026-10-12")
    rows = driver.find_elements("css selector", "tr[data-workout-id]")
    assert [r.get_attribute("data-workout-id") for r in rows] == [site.workout_ids[i] for i in (11, 8, 5)]
    assert driver.find_element("id", "activity").get_attribute("value") == "hiit"


def test_keyboard_navigation_focus_and_labels(driver: Any, site: Site) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    log_in(driver, site)
    open_page(driver, site.base + "/trends")
    ActionChains(driver).send_keys(Keys.TAB).perform()
    skip = driver.switch_to.active_element
    assert skip.text == "Skip to content" and skip.get_attribute("href").endswith("#main")
    style = driver.execute_script(
        "const s = getComputedStyle(arguments[0]); const r = arguments[0].getBoundingClientRect();"
        "return {outline: s.outlineStyle, width: s.outlineWidth, top: r.top};",
        skip,
    )
    assert (
        style["outline"] != "none" and style["width"] != "0px" and style["top"] >= 0
    )  # visible when focused
    ActionChains(driver).send_keys(Keys.ENTER).perform()
    assert driver.switch_to.active_element.get_attribute("id") == "main"
    ActionChains(driver).send_keys(Keys.TAB).perform()
    assert (
        driver.switch_to.active_element.get_attribute("id") == "from"
    )  # straight into the page's own controls

    unlabelled_script = """
        const bad = [];
        for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea, button')) {
          const label = (el.labels && el.labels.length) || el.getAttribute('aria-label');
          if (!label && !el.textContent.trim()) bad.push(el.outerHTML);
        }
        for (const svg of document.querySelectorAll('svg[role=img]')) {
          const ids = (svg.getAttribute('aria-labelledby') || '').split(' ').filter(Boolean);
          const named = ids.length && ids.every(id => (document.getElementById(id) || {}).textContent);
          if (!named) bad.push(svg.dataset.chart);
        }
        return {bad, h1: document.querySelectorAll('h1').length, lang: document.documentElement.lang};
    """
    for path in ("/workouts", f"/workouts/{site.workout_ids[0]}", "/trends", "/tokens"):
        driver.get(site.base + path)
        found = driver.execute_script(unlabelled_script)
        assert found == {"bad": [], "h1": 1, "lang": "en"}, path
    driver.delete_all_cookies()
    driver.get(site.base + "/login")
    assert driver.execute_script(unlabelled_script) == {"bad": [], "h1": 1, "lang": "en"}


def test_readable_at_phone_width(driver: Any, site: Site) -> None:
    log_in(driver, site)
    for name, path in [
        ("workouts-phone", "/workouts"),
        ("workout-detail-phone", f"/workouts/{site.workout_ids[0]}"),
        ("trends-phone", "/trends"),
        ("tokens-phone", "/tokens"),
    ]:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
        driver.get(site.base + path)
        layout = driver.execute_script(
            "const svg = document.querySelector('svg.chart-svg');"
            "const label = document.querySelector('svg.chart-svg text.tick-label');"
            "return {width: innerWidth, scroll: document.documentElement.scrollWidth,"
            " svg: svg ? svg.getBoundingClientRect().width : null,"
            " tick_px: label ? label.getBoundingClientRect().height : null};"
        )
        assert layout["width"] == 375
        assert layout["scroll"] <= 375, f"{path} scrolls sideways at phone width"
        if layout["svg"] is not None:  # charts fill the width and their labels stay legible
            assert 300 <= layout["svg"] <= 375 and layout["tick_px"] >= 9
        screenshot(driver, name, **PHONE)
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_axis_text_is_at_least_12_px_on_a_390_px_phone(driver: Any, site: Site) -> None:
    """Chart text is sized in the chart's units and the chart shrinks with the screen: what counts is the
    size the browser finally draws, for every axis label of every chart."""
    log_in(driver, site)
    phone = {**PHONE, "width": 390, "height": 844}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", phone)
    try:
        for path in ("/trends", f"/workouts/{site.workout_ids[0]}"):
            driver.get(site.base + path)
            sizes = driver.execute_script(
                """const out = [];
                for (const svg of document.querySelectorAll('svg.chart-svg')) {
                  const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
                  for (const t of svg.querySelectorAll('text.tick-label, text.axis-title, text.band-label'))
                    out.push([svg.dataset.chart, t.textContent,
                              parseFloat(getComputedStyle(t).fontSize) * scale]);
                }
                return out;"""
            )
            assert sizes, path
            small = [s for s in sizes if s[2] < 12]
            assert small == [], small[:5]
            screenshot(driver, f"phone-390{path.replace('/', '-')}", **phone)
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_expired_session_sends_back_to_login(driver: Any, site: Site) -> None:
    log_in(driver, site)
    cookie = driver.get_cookie(COOKIE)
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    lifetime_s = int(site.app.permanent_session_lifetime.total_seconds())
    aged = aged_cookie(site.app, cookie["value"], lifetime_s + 5)
    assert aged != cookie["value"]
    driver.delete_cookie(COOKIE)
    driver.add_cookie({**cookie, "value": aged})
    open_page(driver, site.base + "/trends")
    assert "/login?next=/trends" in driver.current_url, driver.current_url
    flashes = driver.find_elements("css selector", ".flashes")
    assert flashes and "Your session expired. Please log in again." in flashes[0].text, driver.page_source
    screenshot(driver, "session-expired")


def test_post_without_csrf_token_is_rejected(driver: Any, site: Site) -> None:
    log_in(driver, site)
    driver.get(site.base + "/tokens")
    before = len(driver.find_elements("css selector", "tr[data-token-id]"))
    forge = """
        const form = document.createElement('form');
        form.method = 'post'; form.action = '/tokens';
        const label = document.createElement('input');
        label.name = 'label'; label.value = 'Forged device';
        form.appendChild(label); document.body.appendChild(form); form.submit();
    """
    wait_for_new_page(driver, lambda: driver.execute_script(forge))
    assert driver.find_element("tag name", "h1").text == "Form not accepted"
    screenshot(driver, "csrf-rejected")
    driver.get(site.base + "/tokens")
    assert len(driver.find_elements("css selector", "tr[data-token-id]")) == before
    assert "Forged device" not in driver.page_source


def test_empty_state_and_logout(driver: Any, site: Site) -> None:
    log_in(driver, site, "bob")
    empty = driver.find_element("css selector", ".empty-state")
    assert "No workouts yet" in empty.text
    assert empty.find_element("link text", "Devices & tokens").get_attribute("href") == site.base + "/tokens"
    assert empty.find_element("link text", "API reference").get_attribute("href").endswith("/api/v1/docs")
    screenshot(driver, "workouts-empty")
    wait_for_new_page(driver, driver.find_element("css selector", "form.logout button").click)
    assert driver.current_url == site.base + "/login"
    assert "You are logged out." in driver.page_source
    driver.get(site.base + "/workouts")
    assert "/login" in driver.current_url


def test_no_request_leaves_the_server(driver: Any, site: Site) -> None:
    """Offline: every resource a page loads comes from this server (no CDN, no web fonts)."""
    log_in(driver, site)
    for path in ("/workouts", f"/workouts/{site.workout_ids[0]}", "/trends", "/tokens"):
        driver.get(site.base + path)
        urls = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert urls and all(u.startswith(site.base + "/static/") for u in urls), urls
    assert Path(__file__).resolve().parents[2].joinpath("backend/static/web/dashboard.css").is_file()
