"""The main job, end to end: data -> model -> report -> Core ML -> backend -> the app's uploads -> dashboard.

    scripts/demo [--quick] [--step STEP ...] [--port 8000] [--workdir DIR] [--stop]

Steps (each also runs alone with ``--step NAME``; a step whose inputs have not changed since its last
successful run is skipped, so re-running is cheap):

1. ``data``      build the synthetic corpus; import ``../shared/data/rrujo`` when it is there
2. ``train``     train the default TC-LSTM-32 (``python -m training train``)
3. ``evaluate``  the evaluation report (``python -m training evaluate``)
4. ``export``    both ``.mlpackage`` variants (``python -m coreml export``)
5. ``verify``    stream audio through both packages with the interpreter (``python -m coreml verify``)
6. ``serve``     migrate an SQLite database, create the demo users and device tokens, start gunicorn
7. ``simulate``  act as the iOS app: for a few synthetic people over several weeks of workouts, stream
                 each stage's audio chunk by chunk through the exported package (the interpreter stands
                 in for the phone), turn the readings into stage segments, add Apple Watch pulse
                 readings, and upload each workout over the REST API with the user's device token

It ends by printing the dashboard URL, the demo login, and where the package and the report are; the
server keeps running (``scripts/demo --stop`` stops it). Every command it runs is printed first, so
each step can be reproduced by hand.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

# The interpreter multiplies tiny matrices per 100 ms chunk: BLAS threads only add contention (20x
# slower on a busy machine). Set before numpy is imported here or in the worker processes.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
SHARED_RRUJO = ROOT.parent / "shared" / "data" / "rrujo"
PY = sys.executable
STEPS = ("data", "train", "evaluate", "export", "verify", "serve", "simulate")
DEMO_PASSWORD = "respira-demo"
USERS = ("demo", "alex", "sam")


@dataclasses.dataclass(frozen=True)
class Settings:
    quick: bool
    workdir: Path
    port: int
    segments: int
    epochs: int | None
    users: tuple[str, ...]
    weeks: int
    workouts_per_week: int
    stage_s: float

    @classmethod
    def make(cls, quick: bool, workdir: Path | None, port: int) -> Settings:
        if quick:
            return cls(
                True,
                workdir or ROOT / "artifacts" / "demo-quick",
                port,
                segments=600,
                epochs=4,
                users=USERS[:2],
                weeks=2,
                workouts_per_week=1,
                stage_s=30.0,
            )
        return cls(
            False,
            workdir or ROOT / "artifacts" / "demo",
            port,
            segments=3000,
            epochs=None,
            users=USERS,
            weeks=6,
            workouts_per_week=2,
            stage_s=60.0,
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def path(self, *parts: str) -> Path:
        return self.workdir.joinpath(*parts)


# -- running things and knowing what is up to date --------------------------------------------------------


def say(message: str) -> None:
    print(message, flush=True)


def run(cmd: list[str], env: dict | None = None, capture: bool = False, stdin: str | None = None) -> str:
    """Run a command from the repository root, printing it first; stop the demo if it fails."""
    shown = " ".join(str(c) if " " not in str(c) else repr(str(c)) for c in cmd)
    say(f"  $ {shown.replace(PY, 'python')}")
    proc = subprocess.run(
        [str(c) for c in cmd],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        text=True,
        input=stdin,
        stdout=subprocess.PIPE if capture else None,
    )
    if proc.returncode != 0:
        raise SystemExit(f"demo: command failed with status {proc.returncode}: {shown}")
    return proc.stdout or ""


def fingerprint(*parts: object) -> str:
    """Hash of the settings and input files that decide a step's output."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path) and part.is_file():
            digest.update(part.read_bytes())
        else:
            digest.update(json.dumps(part, default=str, sort_keys=True).encode())
    return digest.hexdigest()


def up_to_date(s: Settings, step: str, key: str, outputs: list[Path]) -> bool:
    stamp = s.path(".stamps", f"{step}.json")
    if (
        stamp.is_file()
        and json.loads(stamp.read_text()).get("key") == key
        and all(p.exists() for p in outputs)
    ):
        say(f"[{step}] up to date, skipped")
        return True
    return False


def mark_done(s: Settings, step: str, key: str) -> None:
    stamp = s.path(".stamps", f"{step}.json")
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"key": key, "finished": dt.datetime.now(dt.timezone.utc).isoformat()}))


# -- steps --------------------------------------------------------------------------------------------------


def corpora(s: Settings) -> list[Path]:
    dirs = [s.path("data", "synth")]
    if SHARED_RRUJO.is_dir():
        dirs.append(s.path("data", "rrujo"))
    return dirs


def step_data(s: Settings) -> None:
    key = fingerprint("data", s.segments, SHARED_RRUJO.is_dir(), ROOT / "training" / "synth.py")
    if up_to_date(s, "data", key, [c / "manifest.csv" for c in corpora(s)]):
        return
    say("[data] synthetic corpus" + (" and RRuJO import" if SHARED_RRUJO.is_dir() else ""))
    run(
        [
            PY,
            "-m",
            "training",
            "data",
            "synth",
            "--out",
            s.path("data", "synth"),
            "--segments",
            str(s.segments),
            "--seed",
            "0",
        ]
    )
    if SHARED_RRUJO.is_dir():
        run([PY, "-m", "training", "data", "import", "rrujo", SHARED_RRUJO, "--out", s.path("data", "rrujo")])
    else:
        say(f"  (no {SHARED_RRUJO}: training on synthetic data only)")
    run([PY, "-m", "training", "data", "stats", s.path("data", "synth")])
    mark_done(s, "data", key)


def checkpoint(s: Settings) -> Path:
    return s.path("model", "tclstm32.pt")


def step_train(s: Settings) -> None:
    manifests = [c / "manifest.csv" for c in corpora(s)]
    key = fingerprint(
        "train",
        s.epochs,
        *manifests,
        ROOT / "training" / "config.py",
        ROOT / "training" / "models.py",
        ROOT / "training" / "train.py",
    )
    if up_to_date(s, "train", key, [checkpoint(s)]):
        return
    say("[train] the default TC-LSTM-32")
    cmd = [PY, "-m", "training", "train", "--out", checkpoint(s), "--model", "tclstm", "--units", "32"]
    for corpus in corpora(s):
        cmd += ["--data", corpus]
    if s.epochs:  # --quick: few epochs and few long windows for the phase head
        cmd += ["--epochs", str(s.epochs)]
        for setting in ("phase_synth_windows=48", "phase_noise_windows=8", "paced_hop_s=40"):
            cmd += ["--set", setting]
    started = time.monotonic()
    run(cmd)
    say(f"  trained in {time.monotonic() - started:.0f} s")
    mark_done(s, "train", key)


def step_evaluate(s: Settings) -> None:
    key = fingerprint("evaluate", checkpoint(s), *[c / "manifest.csv" for c in corpora(s)])
    report = s.path("report", "report.md")
    if up_to_date(s, "evaluate", key, [report]):
        return
    say("[evaluate] report")
    cmd = [
        PY,
        "-m",
        "training",
        "evaluate",
        "--checkpoint",
        checkpoint(s),
        "--out",
        s.path("report"),
        "--quiet",
    ]
    for corpus in corpora(s):
        cmd += ["--data", corpus]
    run(cmd, capture=True)  # the whole report is in report.md; keep the console short
    say(f"  wrote {report}")
    mark_done(s, "evaluate", key)


def packages(s: Settings) -> dict[str, Path]:
    return {
        "explicit": s.path("coreml", "Respira.mlpackage"),
        "stateful": s.path("coreml", "RespiraStateful.mlpackage"),
    }


def step_export(s: Settings) -> None:
    key = fingerprint(
        "export", checkpoint(s), ROOT / "coreml" / "export.py", ROOT / "coreml" / "streaming.py"
    )
    if up_to_date(s, "export", key, list(packages(s).values())):
        return
    say("[export] Core ML packages")
    for variant, path in packages(s).items():
        run(
            [PY, "-m", "coreml", "export", "--checkpoint", checkpoint(s), "--out", path, "--variant", variant]
        )
    run([PY, "-m", "coreml", "cost", packages(s)["explicit"]])
    mark_done(s, "export", key)


def verification_audio(s: Settings) -> list[Path]:
    """A resting and a heavy synthetic stage, plus two real recordings when RRuJO is there."""
    import numpy as np
    import soundfile as sf

    from training.synth import make_participant, synth_recording

    folder = s.path("verify-audio")
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    participant = make_participant("verify", seed=7)
    for stage in (1, 2):
        path = folder / f"synthetic-stage{stage}.wav"
        if not path.is_file():
            rec = synth_recording(participant, stage, 20.0, np.random.default_rng(stage))
            sf.write(path, rec.audio, 16000, subtype="FLOAT")
        files.append(path)
    if SHARED_RRUJO.is_dir() and not s.quick:
        files += sorted((SHARED_RRUJO / "thinklabs" / "12").glob("*.flac"))[:1]
        files += sorted((SHARED_RRUJO / "rrinervas" / "18").glob("*.flac"))[:1]
    return files


def step_verify(s: Settings) -> None:
    key = fingerprint("verify", *[p / "Data/com.apple.CoreML/model.mlmodel" for p in packages(s).values()])
    if up_to_date(s, "verify", key, []):
        return
    say("[verify] stream audio through each package with the interpreter, compare with torch")
    audio = verification_audio(s)
    for path in packages(s).values():
        run([PY, "-m", "coreml", "verify", path, "--checkpoint", checkpoint(s), "--audio", *audio])
    mark_done(s, "verify", key)


# -- the backend ----------------------------------------------------------------------------------------


def server_env(s: Settings) -> dict[str, str]:
    secret = s.path("secret_key")
    if not secret.is_file():
        secret.parent.mkdir(parents=True, exist_ok=True)
        secret.write_text(secrets.token_hex(32))
    return {
        "DATABASE_URL": f"sqlite:///{s.path('respira.sqlite3')}",
        "RESPIRA_SECRET_KEY": secret.read_text(),
        "FLASK_APP": "backend",
    }


def server_alive(s: Settings) -> bool:
    try:
        with urllib.request.urlopen(f"{s.base_url}/readyz", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def stop_server(s: Settings) -> bool:
    pid_file = s.path("gunicorn.pid")
    if not pid_file.is_file():
        return False
    with contextlib.suppress(ProcessLookupError, ValueError):
        os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
    pid_file.unlink(missing_ok=True)
    return True


def step_serve(s: Settings) -> None:
    env = server_env(s)
    flask = [PY, "-m", "flask", "--app", "backend"]
    tokens_file = s.path("tokens.json")
    if not tokens_file.is_file():
        say("[serve] database, demo users and their device tokens")
        run([*flask, "db", "upgrade"], env=env)
        tokens = {}
        for name in s.users:
            # the password prompt reads stdin when it is not a terminal; its echo warnings are captured
            run(
                [*flask, "users", "create", name, "--password"],
                env=env,
                stdin=f"{DEMO_PASSWORD}\n" * 2,
                capture=True,
            )
            tokens[name] = (
                run([*flask, "tokens", "create", name, "--label", f"{name}'s iPhone"], env=env, capture=True)
                .strip()
                .splitlines()[-1]
            )
        tokens_file.write_text(json.dumps(tokens))
    else:
        run([*flask, "db", "upgrade"], env=env)
    if server_alive(s):
        say(f"[serve] already serving at {s.base_url}")
        return
    if not port_free(s.port):
        raise SystemExit(f"demo: port {s.port} is taken by another program; pass --port")
    say("[serve] gunicorn")
    run(
        [
            PY,
            "-m",
            "gunicorn",
            "-c",
            "gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{s.port}",
            "--workers",
            "2",
            "--daemon",
            "--pid",
            s.path("gunicorn.pid"),
            "--error-logfile",
            s.path("gunicorn.log"),
        ],
        env=env,
    )
    for _ in range(200):  # up to ~20 s for the workers to boot
        if server_alive(s):
            say(f"  serving at {s.base_url}")
            return
        time.sleep(0.1)
    raise SystemExit(f"demo: the server did not become ready; see {s.path('gunicorn.log')}")


# -- the app, simulated ---------------------------------------------------------------------------------

# Stage-typical rates (breaths/min) and pulse (beats/min) of an untrained person in week 0; every week of
# training lowers resting values and speeds recovery a little (see fitness()).
STAGE_RR = {1: 16.0, 2: 44.0, 3: 38.0, 4: 24.0}
PULSE = {"before_1": 74, "before_2": 162, "before_3": 160, "after_3": 138, "before_4": 128, "after_4": 108}
ACTIVITIES = ("running", "biking", "hiit", "incline_walking")


def fitness(user_index: int, week: int, workout: int) -> tuple[dict[int, float], dict[str, int]]:
    """Stage rates and protocol pulse for a person's workout: fitter every week, a little noise."""
    import numpy as np

    rng = np.random.default_rng([user_index, week, workout])
    gain = week * (0.6 + 0.2 * user_index)
    rates = {
        1: STAGE_RR[1] - 0.35 * gain + user_index,
        2: STAGE_RR[2] - 1.0 * gain - 2 * user_index,
        3: STAGE_RR[3] - 1.4 * gain - 2 * user_index,
        4: STAGE_RR[4] - 1.2 * gain,
    }
    ranges = {1: (10, 18), 2: (25, 50), 3: (25, 45), 4: (15, 28)}
    rates = {k: float(np.clip(v + rng.normal(0, 0.8), *ranges[k])) for k, v in rates.items()}
    drop = {
        "before_1": 0.6,
        "before_2": 1.0,
        "before_3": 1.0,
        "after_3": 2.0,
        "before_4": 2.2,
        "after_4": 2.5,
    }
    pulse = {
        p: round(float(v - drop[p] * gain - 3 * user_index + rng.normal(0, 2))) for p, v in PULSE.items()
    }
    return rates, pulse


_PACKAGE = None


def _load_package(path: str) -> None:
    global _PACKAGE
    from coreml.interpreter import load_package

    _PACKAGE = load_package(path)


def stream_stage(audio, chunk: int = 1600) -> list[dict]:
    """The app's two staggered streams (docs/ios.md): a 6 s reading every 3 s after the first 6 s."""
    from coreml.verify import PackageStreamer

    streams = [PackageStreamer(_PACKAGE), PackageStreamer(_PACKAGE)]
    heard = [0, 0]
    readings = []
    chunks_per_window, offset = 60, 30
    for index in range(len(audio) // chunk):
        piece = audio[index * chunk : (index + 1) * chunk]
        for k, stream in enumerate(streams):
            if k == 1 and index < offset:
                continue
            out = stream.push(piece)
            heard[k] += 1
            if heard[k] == chunks_per_window:
                probs = [float(p) for p in out["breath_probs"].ravel()]
                readings.append(
                    {
                        "start_s": round((index + 1 - chunks_per_window) * chunk / 16000, 3),
                        "duration_s": chunks_per_window * chunk / 16000,
                        "rr_bpm": round(float(out["rr_bpm"].ravel()[0]), 2),
                        "respiration_count": round(max(float(out["respiration_count"].ravel()[0]), 0.0), 2),
                        "breath_class": ("none", "normal", "heavy")[probs.index(max(probs))],
                        "breath_probs": [round(p, 4) for p in probs],
                        "noise_prob": round(float(out["noise_prob"].ravel()[0]), 4),
                    }
                )
                stream.reset()
                heard[k] = 0
    return sorted(readings, key=lambda r: r["start_s"])


def simulate_workout(job: dict) -> dict:
    """Audio for the four stages of one workout, streamed through the package -> the upload payload."""
    import numpy as np

    from training.synth import make_participant, synth_recording

    rates, pulse = fitness(job["user_index"], job["week"], job["workout"])
    participant = make_participant(job["user"], seed=1000 + job["user_index"])
    rng = np.random.default_rng([job["user_index"], job["week"], job["workout"], 1])
    tz = dt.timezone(dt.timedelta(hours=job["utc_offset_h"]))
    day = dt.date.fromisoformat(job["first_day"]) + dt.timedelta(weeks=job["week"], days=3 * job["workout"])
    start = dt.datetime.combine(day, dt.time(7, 30), tzinfo=tz)
    # stage start times: before; near the end of the exercise; right after; cooling down
    offsets_min = {1: 0.0, 2: 20.0, 3: 21.5, 4: 26.0}
    environment = job["environment"]
    stages = []
    for stage in (1, 2, 3, 4):
        noise_kind = None if rng.random() < 0.5 else ("fan" if environment == "indoor" else "wind")
        rec = synth_recording(
            participant,
            stage,
            job["stage_s"],
            rng,
            environment=environment,
            noise_kind=noise_kind,
            snr_db=float(rng.uniform(15, 35)) if noise_kind else None,
            rate_bpm=rates[stage],
        )
        stages.append(
            {
                "stage": stage,
                "started_at": (start + dt.timedelta(minutes=offsets_min[stage])).isoformat(),
                "duration_s": job["stage_s"],
                "segments": stream_stage(rec.audio),
            }
        )
    times = {
        "before_1": 0.0,
        "before_2": 19.5,
        "before_3": 21.0,
        "after_3": 21.5 + job["stage_s"] / 60,
        "before_4": 25.5,
        "after_4": 26.0 + job["stage_s"] / 60,
    }
    return {
        "id": job["id"],
        "user": job["user"],
        "true_rr": rates,
        "body": {
            "started_at": start.isoformat(),
            "activity": job["activity"],
            "environment": environment,
            "model_version": job["model_version"],
            "stages": stages,
            "pulse": [
                {
                    "point": p,
                    "bpm": pulse[p],
                    "measured_at": (start + dt.timedelta(minutes=times[p])).isoformat(),
                }
                for p in PULSE
            ],
        },
    }


def upload(s: Settings, token: str, workout_id: str, body: dict) -> int:
    request = urllib.request.Request(
        f"{s.base_url}/api/v1/workouts/{workout_id}",
        data=json.dumps(body).encode(),
        method="PUT",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        raise SystemExit(
            f"demo: upload of {workout_id} refused: {exc.code} {exc.read().decode()[:500]}"
        ) from exc


def step_simulate(s: Settings) -> None:
    key = fingerprint(
        "simulate", dataclasses.asdict(s), packages(s)["explicit"] / "Data/com.apple.CoreML/model.mlmodel"
    )
    if up_to_date(s, "simulate", key, []):
        return
    if not server_alive(s):
        raise SystemExit(f"demo: no server at {s.base_url}; run the serve step first")
    tokens = json.loads(s.path("tokens.json").read_text())
    model_version = "respira-tclstm32@" + fingerprint(checkpoint(s))[:12]
    first_day = (dt.date.today() - dt.timedelta(weeks=s.weeks)).isoformat()
    jobs = []
    for user_index, user in enumerate(s.users):
        for week in range(s.weeks):
            for workout in range(s.workouts_per_week):
                jobs.append(
                    {
                        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"respira-demo/{user}/{week}/{workout}")),
                        "user": user,
                        "user_index": user_index,
                        "week": week,
                        "workout": workout,
                        "utc_offset_h": (-8, 1, 10)[user_index % 3],
                        "first_day": first_day,
                        "activity": ACTIVITIES[(week + workout + user_index) % len(ACTIVITIES)],
                        "environment": ("outdoor", "indoor")[(week + workout) % 2],
                        "stage_s": s.stage_s,
                        "model_version": model_version,
                    }
                )
    say(
        f"[simulate] {len(jobs)} workouts of {len(s.users)} people over {s.weeks} weeks: each stage's audio "
        f"streamed in 100 ms chunks through {packages(s)['explicit'].name} by the interpreter, then uploaded"
    )
    errors = []
    workers = max(1, min(2, os.cpu_count() or 1))
    with concurrent.futures.ProcessPoolExecutor(
        workers, initializer=_load_package, initargs=(str(packages(s)["explicit"]),)
    ) as pool:
        for done, result in enumerate(pool.map(simulate_workout, jobs), start=1):
            status = upload(s, tokens[result["user"]], result["id"], result["body"])
            medians = []
            for stage in result["body"]["stages"]:
                rr = sorted(seg["rr_bpm"] for seg in stage["segments"])
                medians.append(rr[len(rr) // 2] if rr else float("nan"))
                errors.append(abs(medians[-1] - result["true_rr"][stage["stage"]]))
            say(
                f"  {done:3d}/{len(jobs)} {result['user']:<5} {result['body']['started_at'][:10]} "
                f"{result['body']['activity']:<15} HTTP {status}  stage RR (true -> heard): "
                + "  ".join(
                    f"{result['true_rr'][k]:.0f}->{m:.0f}" for k, m in zip((1, 2, 3, 4), medians, strict=True)
                )
            )
    say(f"  mean |heard - true| per stage median: {sum(errors) / len(errors):.1f} breaths/min")
    mark_done(s, "simulate", key)


# -- main -----------------------------------------------------------------------------------------------


def summary(s: Settings) -> None:
    say("")
    say("Respira demo is ready.")
    say(f"  dashboard:      {s.base_url}/   (log in as 'demo', password '{DEMO_PASSWORD}')")
    say(f"  API docs:       {s.base_url}/api/v1/docs")
    say(f"  Core ML:        {packages(s)['explicit']}  (iOS 16+), {packages(s)['stateful'].name} (iOS 18+)")
    say(f"  report:         {s.path('report', 'report.md')}")
    say(f"  checkpoint:     {checkpoint(s)}")
    say("  stop server:    scripts/demo --stop" + (" --quick" if s.quick else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small corpus, few epochs, few workouts")
    parser.add_argument("--step", action="append", choices=STEPS, help="run only these steps (repeatable)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("RESPIRA_DEMO_PORT", "8000")))
    parser.add_argument("--workdir", type=Path, help="where everything is written (default artifacts/demo)")
    parser.add_argument("--stop", action="store_true", help="stop the demo server and exit")
    parser.add_argument("--stop-at-end", action="store_true", help="stop the server when done (CI)")
    parser.add_argument("--fresh", action="store_true", help="delete the work folder first")
    args = parser.parse_args(argv)
    s = Settings.make(args.quick, args.workdir.resolve() if args.workdir else None, args.port)
    if args.stop:
        say("stopped" if stop_server(s) else "no demo server was running")
        return 0
    if args.fresh and s.workdir.exists():
        stop_server(s)
        shutil.rmtree(s.workdir)
    s.workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    for step in args.step or STEPS:
        t0 = time.monotonic()
        globals()[f"step_{step}"](s)
        say(f"[{step}] {time.monotonic() - t0:.0f} s")
    say(f"\ntotal {time.monotonic() - started:.0f} s")
    if args.stop_at_end:
        stop_server(s)
    else:
        summary(s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
