"""The README's main job in its quick form, end to end: it must finish with the dashboard serving the
demo users' workouts, uploaded through the REST API after streaming through the exported package."""

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, token: str | None = None):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.read().decode()


def test_quick_demo_ends_serving_the_uploaded_workouts(tmp_path):
    port = _free_port()
    cmd = [sys.executable, "scripts/demo.py", "--quick", "--workdir", str(tmp_path), "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        out = proc.stdout
        assert f"dashboard:      http://127.0.0.1:{port}/" in out
        for path in (
            "coreml/Respira.mlpackage",
            "coreml/RespiraStateful.mlpackage",
            "report/report.md",
            "model/tclstm32.pt",
        ):
            assert (tmp_path / path).exists(), path
        assert out.count("files within tolerance") == 2 and "FAIL" not in out

        tokens = json.loads((tmp_path / "tokens.json").read_text())
        status, body = _get(f"http://127.0.0.1:{port}/api/v1/workouts?limit=50", tokens["demo"])
        listed = json.loads(body)["workouts"]
        assert status == 200 and len(listed) == 2  # quick: 2 weeks x 1 workout for each person
        status, body = _get(f"http://127.0.0.1:{port}/api/v1/trends/stages", tokens["demo"])
        stages = {s["stage"]: s for s in json.loads(body)["stages"]}
        assert stages[1]["rr"]["n"] == 2 and stages[2]["pulse"]["n"] == 2
        # resting RR (stage 1) well below RR near the end of exercise (stage 2), as the audio says
        assert stages[1]["rr"]["median"] + 8 < stages[2]["rr"]["median"]
        status, _ = _get(f"http://127.0.0.1:{port}/")
        assert status == 200

        # re-running skips every step that is up to date
        again = subprocess.run(
            [*cmd, "--stop-at-end"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )
        assert again.returncode == 0, again.stderr[-2000:]
        for step in ("data", "train", "evaluate", "export", "verify", "simulate"):
            assert f"[{step}] up to date, skipped" in again.stdout
    finally:
        subprocess.run([*cmd, "--stop"], cwd=ROOT, env=env, capture_output=True)
