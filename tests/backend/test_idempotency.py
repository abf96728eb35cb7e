"""Retries never duplicate: Idempotency-Key replays, key reuse with another body is rejected, and
identical requests arriving at the same moment (real threads against one app) leave exactly one copy."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from api_helpers import Api, sample_workout, workout_url
from sqlalchemy import func, select

from backend.db import EXTENSION_KEY
from backend.models import IdempotencyRecord, PulseReading, Segment, Workout

THREADS = 8
SEGMENTS = {
    "segments": [
        {"start_s": 12.0, "duration_s": 6.0, "rr_bpm": 16.0},
        {"start_s": 18.0, "duration_s": 6.0, "rr_bpm": 16.5},
    ]
}
NEW_STAGE = {
    "started_at": "2026-11-21T07:55:00-08:00",
    "segments": [{"start_s": 0.0, "duration_s": 6.0, "rr_bpm": 33.0}],
}


def count(api: Api, model: type, *where: Any) -> int:
    with api.app.extensions[EXTENSION_KEY].session() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def stored_workout(api: Api) -> str:
    url = workout_url(uuid.uuid4())
    assert api.put(url, json=sample_workout()).status_code == 201
    return url


def at_once(api: Api, send: Callable[[Any], Any], n: int = THREADS) -> list[Any]:
    """Run `send(client)` in n threads released together by a barrier; each thread has its own client."""
    barrier = threading.Barrier(n)

    def worker(_: int) -> Any:
        client = api.app.test_client()
        barrier.wait()
        return send(client)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(worker, range(n)))


def test_retry_with_the_same_key_replays_the_first_answer(alice: Api) -> None:
    url = stored_workout(alice)
    key = {"Idempotency-Key": "upload-stage-1-part-2"}
    first = alice.post(f"{url}/stages/1/segments", json=SEGMENTS, headers=key)
    again = alice.post(f"{url}/stages/1/segments", json=SEGMENTS, headers=key)
    assert first.status_code == again.status_code == 201
    assert (
        again.json
        == first.json
        == {"workout_id": url.rsplit("/", 1)[1], "stage": 1, "appended": 2, "segment_count": 4}
    )
    assert "Idempotent-Replayed" not in first.headers and again.headers["Idempotent-Replayed"] == "true"
    assert count(alice, Segment) == 5  # 3 from the PUT + 2, once


def test_same_body_with_other_key_order_and_spacing_is_the_same_request(alice: Api) -> None:
    url = stored_workout(alice)
    key = {"Idempotency-Key": "k", "Content-Type": "application/json"}
    first = alice.post(f"{url}/pulse", data='{"pulse": [{"point": "after_3", "bpm": 150}]}', headers=key)
    again = alice.post(f"{url}/pulse", data='{"pulse":[{"bpm":150.0,"point":"after_3"}]}', headers=key)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count(alice, PulseReading) == 4


def test_same_key_with_a_different_body_is_rejected(alice: Api) -> None:
    url = stored_workout(alice)
    key = {"Idempotency-Key": "k1"}
    assert alice.post(f"{url}/stages/1/segments", json=SEGMENTS, headers=key).status_code == 201
    other = {"segments": [{"start_s": 30.0, "duration_s": 6.0, "rr_bpm": 17.0}]}
    response = alice.post(f"{url}/stages/1/segments", json=other, headers=key)
    assert response.status_code == 422
    assert response.content_type == "application/problem+json"
    assert response.json["type"].endswith("#problem-idempotency-key-reused")
    assert response.json["errors"][0] == {
        "field": "Idempotency-Key",
        "in": "header",
        "detail": "already used with a different body",
    }
    # The same key on another endpoint or stage is a different request too.
    assert alice.post(f"{url}/stages/2/segments", json=SEGMENTS, headers=key).status_code == 422
    assert count(alice, Segment) == 5


def test_a_failed_request_does_not_use_up_its_key(alice: Api) -> None:
    url = stored_workout(alice)
    key = {"Idempotency-Key": "k2"}
    too_long = {"segments": [{"start_s": 58.0, "duration_s": 6.0, "rr_bpm": 16.0}]}
    assert alice.post(f"{url}/stages/1/segments", json=too_long, headers=key).status_code == 422
    assert count(alice, IdempotencyRecord) == 0
    assert alice.post(f"{url}/stages/1/segments", json=SEGMENTS, headers=key).status_code == 201


def test_keys_belong_to_their_user(alice: Api, bob: Api) -> None:
    alice_url, bob_url = stored_workout(alice), stored_workout(bob)
    key = {"Idempotency-Key": "shared-name"}
    assert alice.post(f"{alice_url}/stages/1/segments", json=SEGMENTS, headers=key).status_code == 201
    response = bob.post(f"{bob_url}/stages/1/segments", json=SEGMENTS, headers=key)
    assert response.status_code == 201 and "Idempotent-Replayed" not in response.headers


def test_bad_key_header_is_rejected(alice: Api) -> None:
    url = stored_workout(alice)
    response = alice.post(
        f"{url}/pulse",
        json={"pulse": [{"point": "after_3", "bpm": 150}]},
        headers={"Idempotency-Key": "x" * 256},
    )
    assert response.status_code == 422
    assert response.json["errors"][0]["field"] == "Idempotency-Key"


def test_concurrent_duplicate_segment_appends_store_exactly_once(alice: Api) -> None:
    url = stored_workout(alice)
    headers = alice.headers({"Idempotency-Key": "same-upload"})
    responses = at_once(alice, lambda c: c.post(f"{url}/stages/3/segments", json=NEW_STAGE, headers=headers))
    assert [r.status_code for r in responses] == [201] * THREADS
    assert all(r.json == responses[0].json for r in responses)
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == THREADS - 1
    workout = alice.get(url).json
    assert [s["stage"] for s in workout["stages"]] == [1, 2, 3]
    assert len(workout["stages"][2]["segments"]) == 1
    assert count(alice, IdempotencyRecord) == 1


def test_concurrent_duplicate_pulse_appends_store_exactly_once(alice: Api) -> None:
    url = stored_workout(alice)
    headers = alice.headers({"Idempotency-Key": "pulse-after-3"})
    body = {"pulse": [{"point": "after_3", "bpm": 151}, {"point": "before_4", "bpm": 120}]}
    responses = at_once(alice, lambda c: c.post(f"{url}/pulse", json=body, headers=headers))
    assert {r.status_code for r in responses} == {201}
    assert all(r.json == responses[0].json for r in responses)
    assert count(alice, PulseReading) == 5


def test_concurrent_appends_without_a_key_still_never_duplicate(alice: Api) -> None:
    """Without a key the database's unique (stage, start_s) decides: one 201, the rest 409."""
    url = stored_workout(alice)
    headers = alice.headers()
    responses = at_once(alice, lambda c: c.post(f"{url}/stages/3/segments", json=NEW_STAGE, headers=headers))
    assert sorted(r.status_code for r in responses) == [201] + [409] * (THREADS - 1)
    assert count(alice, Segment) == 4


def test_concurrent_reuse_of_one_key_for_different_workouts(alice: Api) -> None:
    """Different rows, same key: the unique (user, key) lets exactly one in; the others are told the key
    was used for a different request."""
    urls = [stored_workout(alice) for _ in range(4)]
    headers = alice.headers({"Idempotency-Key": "reused"})
    body = {"pulse": [{"point": "after_4", "bpm": 99}]}
    targets = iter(urls)
    lock = threading.Lock()

    def send(client: Any) -> Any:
        with lock:
            target = next(targets)
        return client.post(f"{target}/pulse", json=body, headers=headers)

    responses = at_once(alice, send, n=len(urls))
    assert sorted(r.status_code for r in responses) == [201, 422, 422, 422]
    assert count(alice, PulseReading, PulseReading.point == "after_4") == 1


def test_concurrent_puts_of_a_new_workout_create_it_once(alice: Api) -> None:
    workout_id = uuid.uuid4()
    headers = alice.headers()
    responses = at_once(
        alice, lambda c: c.put(workout_url(workout_id), json=sample_workout(), headers=headers)
    )
    assert sorted(r.status_code for r in responses) == [200] * (THREADS - 1) + [201]
    assert count(alice, Workout) == 1
    assert count(alice, Segment) == 3 and count(alice, PulseReading) == 3
