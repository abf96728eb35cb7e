"""Auth-failure limits counted in a store every worker shares (the database, or Redis), per client
address and per account, behind a reverse proxy configured in one place; and gunicorn's own error
answers as problem+json. The last tests run a real gunicorn with several workers."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from api_helpers import app_config, make_user, wipe
from flask import Flask
from test_faults import free_port, gunicorn, request, wait_for
from web_helpers import login, set_password

import backend.models
import backend.web.auth
from backend import create_app
from backend.db import EXTENSION_KEY

LIST = "/api/v1/workouts"
BAD = {"Authorization": "Bearer rsp_guess"}
REDIS_URL = "redis://127.0.0.1:6379/0"


def workers(database_url: str, count: int = 2, **config: Any) -> list[Flask]:
    """`count` apps on one database, as gunicorn's workers are: nothing shared but the stores."""
    apps = [
        create_app(app_config(database_url, AUTH_FAILURE_LIMIT="5 per minute", **config))
        for _ in range(count)
    ]
    wipe(apps[0].extensions[EXTENSION_KEY])
    return apps


def dispose(apps: list[Flask]) -> None:
    for app in apps:
        app.extensions[EXTENSION_KEY].dispose()


def statuses(apps: list[Flask], n: int, address: str, headers: dict[str, str]) -> list[int]:
    """n requests from one address, spread round-robin over the workers."""
    out = []
    for i in range(n):
        client = apps[i % len(apps)].test_client()
        client.environ_base["REMOTE_ADDR"] = address
        out.append(client.get(LIST, headers=headers).status_code)
    return out


def test_workers_share_the_count_in_the_database(database_url: str) -> None:
    apps = workers(database_url, 3)
    assert statuses(apps, 8, "203.0.113.7", BAD) == [401] * 5 + [429] * 3
    _, token = make_user(apps[0], "honest")
    assert statuses(apps, 3, "198.51.100.1", {"Authorization": f"Bearer {token}"}) == [200] * 3
    dispose(apps)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    try:
        client = redis.Redis.from_url(REDIS_URL)
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    prefix = f"respira-test-{uuid.uuid4().hex[:8]}:"
    yield prefix
    for key in client.scan_iter(f"*{prefix}*"):
        client.delete(key)


def test_workers_share_the_count_in_redis(database_url: str, redis_prefix: str) -> None:
    apps = workers(database_url, 3, RATELIMIT_STORAGE_URI=REDIS_URL, RATELIMIT_KEY_PREFIX=redis_prefix)
    assert statuses(apps, 8, "203.0.113.7", BAD) == [401] * 5 + [429] * 3
    assert statuses(apps, 1, "198.51.100.1", BAD) == [401]  # another address has its own count
    dispose(apps)


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every password hash checked, whether for a real user or the dummy of an unknown one."""
    checked: list[str] = []
    real = backend.web.auth.check_password_hash

    def counting(pwhash: str, password: str) -> bool:
        checked.append(password)
        return real(pwhash, password)

    monkeypatch.setattr(backend.web.auth, "check_password_hash", counting)
    monkeypatch.setattr(backend.models, "check_password_hash", counting)
    return checked


def from_address(app: Flask, address: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def test_logins_are_limited_per_account_across_addresses_and_cost_no_hash_once_blocked(
    database_url: str, hashes: list[str]
) -> None:
    [app] = workers(database_url, 1, ACCOUNT_FAILURE_LIMIT="4 per 10 minutes")
    user_id, _ = make_user(app, "carol")
    set_password(app, user_id)
    # A botnet: each address guesses once, under its own limit, but the account's count fills up.
    answers = [
        login(from_address(app, f"203.0.113.{i}"), "carol", f"guess {i}").status_code for i in range(6)
    ]
    assert answers == [401] * 4 + [429] * 2
    assert len(hashes) == 4  # the blocked guesses were refused before any hash was computed
    blocked = login(from_address(app, "198.51.100.9"), "carol")
    assert blocked.status_code == 429 and "Too many failed log-ins" in blocked.get_data(as_text=True)
    # Other accounts are not affected, from any of those addresses.
    other_id, _ = make_user(app, "dave")
    set_password(app, other_id)
    assert login(from_address(app, "203.0.113.1"), "dave").status_code == 302
    dispose([app])


def test_a_blocked_address_costs_no_hash_either(database_url: str, hashes: list[str]) -> None:
    [app] = workers(database_url, 1)
    client = from_address(app, "203.0.113.7")
    assert [login(client, f"user{i}", "x").status_code for i in range(7)] == [401] * 5 + [429] * 2
    assert len(hashes) == 5  # the dummy hash for unknown users, only while not blocked
    dispose([app])


def test_forwarded_for_is_believed_only_from_the_configured_proxies(database_url: str) -> None:
    behind_proxy = workers(database_url, 2, TRUSTED_PROXY_COUNT=1)
    _, token = make_user(behind_proxy[0], "honest")

    def via_proxy(apps: list[Flask], client_address: str, headers: dict[str, str], n: int) -> list[int]:
        forwarded = {**headers, "X-Forwarded-For": client_address}
        return statuses(apps, n, "127.0.0.1", forwarded)  # every request comes from the proxy

    assert via_proxy(behind_proxy, "203.0.113.7", BAD, 7) == [401] * 5 + [429] * 2
    good = {"Authorization": f"Bearer {token}"}
    assert via_proxy(behind_proxy, "198.51.100.1", good, 2) == [200, 200]  # not locked out with it
    dispose(behind_proxy)

    direct = workers(database_url, 2)  # TRUSTED_PROXY_COUNT=0: a forged header changes nothing
    rotating = [
        statuses(direct, 1, "203.0.113.7", {**BAD, "X-Forwarded-For": f"10.0.0.{i}"})[0] for i in range(7)
    ]
    assert rotating == [401] * 5 + [429] * 2
    dispose(direct)


# ---- a real gunicorn: several workers, the proxy setting from the environment ----------------------


def raw_request(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.slow
def test_gunicorn_workers_behind_a_proxy_share_limits_and_answer_problem_json(
    database_url: str, tmp_path: Path
) -> None:
    [app] = workers(database_url, 1)
    _, token = make_user(app, "honest")
    dispose([app])
    env = {"RESPIRA_TRUSTED_PROXY_COUNT": "1", "RESPIRA_AUTH_FAILURE_LIMIT": "5 per minute"}
    with gunicorn(database_url, tmp_path / "gunicorn.log", 3, **env) as port:
        attacker = {"X-Forwarded-For": "203.0.113.7"}
        answers = [
            request(port, "GET", LIST, token="rsp_guess", headers=attacker)[0] for _ in range(12)
        ]  # new connections: spread over the 3 workers
        assert answers == [401] * 5 + [429] * 7
        honest = {"X-Forwarded-For": "198.51.100.1"}
        assert request(port, "GET", LIST, token=token, headers=honest)[0] == 200
        # A header with a control character is refused by gunicorn itself: still problem+json.
        status, headers, body = raw_request(
            port, b"GET /api/v1/workouts HTTP/1.1\r\nHost: x\r\nIdempotency-Key: a\x01b\r\n\r\n"
        )
        assert status == 400 and headers["content-type"] == "application/problem+json"
        assert json.loads(body)["status"] == 400 and headers["x-content-type-options"] == "nosniff"


# ---- behind a real nginx (Debian's package; scripts/system-deps installs it) -----------------------

NGINX_CONF = """
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""


@contextmanager
def nginx(upstream: int, folder: Path) -> Iterator[int]:
    """nginx as docs/deployment.md configures it, in front of 127.0.0.1:<upstream>; yields its port."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        pytest.skip("nginx is not installed (scripts/system-deps installs Debian's nginx-light)")
    port = free_port()
    conf = folder / "nginx.conf"
    conf.write_text(NGINX_CONF.format(folder=folder, port=port, upstream=upstream))
    proc = subprocess.Popen([binary, "-p", str(folder), "-c", str(conf)], stderr=subprocess.PIPE)

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"nginx exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            return request(port, "GET", "/readyz")[0] == 200
        except OSError:
            return False

    try:
        wait_for(ready, "nginx to answer /readyz", 30)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def from_source(port: int, source: str, token: str, headers: dict[str, str] | None = None) -> int:
    """GET the workouts from the loopback address `source` (127.0.0.2, ...): a distinct client."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        conn.request("GET", LIST, headers={"Authorization": f"Bearer {token}", **(headers or {})})
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.slow
def test_behind_nginx_each_client_has_its_own_count_and_cannot_forge_one(
    database_url: str, tmp_path: Path
) -> None:
    [app] = workers(database_url, 1)
    _, token = make_user(app, "honest")
    dispose([app])
    env = {"RESPIRA_TRUSTED_PROXY_COUNT": "1", "RESPIRA_AUTH_FAILURE_LIMIT": "5 per minute"}
    with (
        gunicorn(database_url, tmp_path / "gunicorn.log", 2, **env) as upstream,
        nginx(upstream, tmp_path) as port,
    ):
        # The attacker forges X-Forwarded-For to frame the honest client; nginx appends the real peer.
        framing = {"X-Forwarded-For": "127.0.0.3"}
        answers = [from_source(port, "127.0.0.2", "rsp_guess", framing) for _ in range(7)]
        assert answers == [401] * 5 + [429] * 2
        assert from_source(port, "127.0.0.3", token) == 200  # the honest client is not locked out
        assert from_source(port, "127.0.0.2", token) == 429  # the attacker is, even with a good token
