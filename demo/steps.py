"""The demo's steps, each a function of the settings and its console :class:`~demo.console.Step`.

Each step runs the project's own commands (``python -m training ...``, ``python -m coreml ...``,
``flask --app backend ...``), so what it does can be repeated by hand (the commands are in
``<workdir>/logs/<step>.log``), and a step whose inputs have not changed since its last successful run is
skipped. A step returns the one line the console prints for it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import secrets
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from demo.console import ROOT, Step

SHARED_RRUJO = ROOT.parent / "shared" / "data" / "rrujo"
PY = sys.executable
STEPS = ("data", "train", "evaluate", "export", "verify", "serve", "simulate")
# The demo's own users and their dashboard password: set through `users create --password-stdin`, so
# nothing is ever asked at a terminal; printed in the summary.
DEMO_PASSWORD = "respira-demo"
USERS = ("demo", "alex", "sam")


@dataclasses.dataclass(frozen=True)
class Settings:
    quick: bool
    workdir: Path
    port: int
    segments: int
    epochs: int
    users: tuple[str, ...]
    weeks: int
    workouts_per_week: int
    stage_s: float
    others_weeks: int | None  # weeks of workouts of the users other than 'demo' (None: as many)

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
                others_weeks=None,
            )
        return cls(
            False,
            workdir or ROOT / "artifacts" / "demo",
            port,
            segments=3000,
            epochs=8,  # the shipped model's recipe (scripts/train-default-model)
            users=USERS,
            # 'demo' (who logs in): eight weeks, so the dashboard's period comparison has two whole
            # four-week periods; the two others a week each (they show that accounts are kept apart)
            weeks=8,
            workouts_per_week=2,
            stage_s=60.0,
            others_weeks=1,
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def path(self, *parts: str) -> Path:
        return self.workdir.joinpath(*parts)

    # what the steps make, named once
    @property
    def checkpoint(self) -> Path:
        return self.path("model", "tclstm32.pt")

    @property
    def report(self) -> Path:
        return self.path("report", "report.md")

    @property
    def packages(self) -> dict[str, Path]:
        return {
            "explicit": self.path("coreml", "Respira.mlpackage"),
            "stateful": self.path("coreml", "RespiraStateful.mlpackage"),
        }

    @property
    def verify_audio_dir(self) -> Path:
        return self.path("verify-audio")

    def corpora(self) -> list[Path]:
        dirs = [self.path("data", "synth")]
        if SHARED_RRUJO.is_dir():
            dirs.append(self.path("data", "rrujo"))
        return dirs


# -- knowing what is up to date -----------------------------------------------------------------------


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
    return (
        stamp.is_file()
        and json.loads(stamp.read_text()).get("key") == key
        and all(p.exists() for p in outputs)
    )


def mark_done(s: Settings, step: str, key: str) -> None:
    stamp = s.path(".stamps", f"{step}.json")
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"key": key, "finished": dt.datetime.now(dt.timezone.utc).isoformat()}))


SKIPPED = "up to date, skipped"


# -- steps ----------------------------------------------------------------------------------------------


def step_data(s: Settings, step: Step) -> str:
    key = fingerprint("data", s.segments, SHARED_RRUJO.is_dir(), ROOT / "training" / "synth.py")
    if up_to_date(s, "data", key, [c / "manifest.csv" for c in s.corpora()]):
        return SKIPPED
    synth = s.path("data", "synth")
    step.run([PY, "-m", "training", "data", "synth", "--out", synth, "--segments", s.segments, "--seed", 0])
    if SHARED_RRUJO.is_dir():
        step.run(
            [PY, "-m", "training", "data", "import", "rrujo", SHARED_RRUJO, "--out", s.path("data", "rrujo")]
        )
    step.run([PY, "-m", "training", "data", "stats", synth])
    mark_done(s, "data", key)
    return f"{s.segments} synthetic segments" + (
        f" and the RRuJO recordings in {SHARED_RRUJO}" if SHARED_RRUJO.is_dir() else " (no RRuJO beside it)"
    )


def step_train(s: Settings, step: Step) -> str:
    manifests = [c / "manifest.csv" for c in s.corpora()]
    key = fingerprint(
        "train",
        s.epochs,
        *manifests,
        ROOT / "training" / "config.py",
        ROOT / "training" / "models.py",
        ROOT / "training" / "train.py",
    )
    if up_to_date(s, "train", key, [s.checkpoint]):
        return SKIPPED
    cmd = [PY, "-m", "training", "train", "--out", s.checkpoint, "--model", "tclstm", "--units", "32"]
    for corpus in s.corpora():
        cmd += ["--data", corpus]
    # the shipped model's recipe: a fixed number of epochs with a cosine learning-rate decay
    cmd += ["--epochs", str(s.epochs), "--set", "lr_schedule=cosine"]
    if s.quick:  # few long windows for the phase head
        for setting in ("phase_synth_windows=48", "phase_noise_windows=8", "paced_hop_s=40"):
            cmd += ["--set", setting]
    # two torch threads, whatever the machine: nothing else runs during this step, two threads train a
    # quarter faster than one on this project's 2-core machine, and a fixed count keeps the checkpoint the
    # same everywhere (the weights depend on how many threads share the sums; two runs with two threads
    # gave identical weights). scripts/train-default-model, the shipped model's recipe, uses one.
    out = step.run(cmd, env={"OMP_NUM_THREADS": "2"})
    # its last line: "wrote PATH (best epoch 4, validation CCC of RR 0.804, 152 s)"
    best = re.search(r"best epoch (\d+), validation CCC of RR (-?[\d.]+)", out)
    mark_done(s, "train", key)
    if best is None:
        return f"TC-LSTM-32 -> {_rel(s.checkpoint)}"
    return f"TC-LSTM-32, best epoch {best[1]}, validation CCC(RR) {best[2]} -> {_rel(s.checkpoint)}"


def step_evaluate(s: Settings, step: Step) -> str:
    key = fingerprint("evaluate", s.checkpoint, *[c / "manifest.csv" for c in s.corpora()])
    if up_to_date(s, "evaluate", key, [s.report]):
        return SKIPPED
    cmd = [PY, "-m", "training", "evaluate", "--checkpoint", s.checkpoint, "--out", s.path("report")]
    for corpus in s.corpora():
        cmd += ["--data", corpus]
    step.run(cmd)
    mark_done(s, "evaluate", key)
    return f"evaluation report -> {_rel(s.report)}"


def step_export(s: Settings, step: Step) -> str:
    key = fingerprint("export", s.checkpoint, ROOT / "coreml" / "export.py", ROOT / "coreml" / "streaming.py")
    if up_to_date(s, "export", key, list(s.packages.values())):
        return SKIPPED
    step.run_together(
        [
            [PY, "-m", "coreml", "export", "--checkpoint", s.checkpoint, "--out", path, "--variant", variant]
            for variant, path in s.packages.items()
        ],
        list(s.packages),
    )
    cost = step.run([PY, "-m", "coreml", "cost", s.packages["explicit"], "--json"])
    report = json.loads(cost[cost.index("{") :])
    mark_done(s, "export", key)
    return (
        f"{s.packages['explicit'].name} (iOS 16+) and {s.packages['stateful'].name} (iOS 18+), "
        f"{report['package_bytes'] / 1024:.0f} KiB, {report['multiply_adds_per_second_of_audio'] / 1e6:.0f}M "
        f"multiply-adds per second of audio"
    )


def verification_audio(s: Settings) -> list[Path]:
    """A resting and a heavy synthetic stage, plus two real recordings when RRuJO is there; with
    ``--quick`` the heavy stage alone (each file is streamed for 60 s through both packages, and
    through torch twice: the step's cost grows with every file)."""
    import numpy as np
    import soundfile as sf

    from training.frontend import SAMPLE_RATE_HZ
    from training.synth import make_participant, synth_recording

    folder = s.verify_audio_dir
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    participant = make_participant("verify", seed=7)
    for stage in (2,) if s.quick else (1, 2):
        path = folder / f"synthetic-stage{stage}.wav"
        if not path.is_file():
            rec = synth_recording(participant, stage, 20.0, np.random.default_rng(stage))
            sf.write(path, rec.audio, SAMPLE_RATE_HZ, subtype="FLOAT")
        files.append(path)
    if SHARED_RRUJO.is_dir() and not s.quick:
        files += sorted((SHARED_RRUJO / "thinklabs" / "12").glob("*.flac"))[:1]
        files += sorted((SHARED_RRUJO / "rrinervas" / "18").glob("*.flac"))[:1]
    return files


def step_verify(s: Settings, step: Step) -> str:
    key = fingerprint("verify", *[p / "Data/com.apple.CoreML/model.mlmodel" for p in s.packages.values()])
    if up_to_date(s, "verify", key, []):
        return SKIPPED
    with step.quiet():
        audio = verification_audio(s)
    outs = step.run_together(
        [
            [PY, "-m", "coreml", "verify", path, "--checkpoint", s.checkpoint, "--audio", *audio]
            for path in s.packages.values()
        ],
        [path.name for path in s.packages.values()],
    )
    verdicts = [re.search(r"(\d+) of (\d+) files within tolerance", out)[0] for out in outs]
    mark_done(s, "verify", key)
    return "streamed through both packages like torch: " + "; ".join(verdicts)


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


def stop_server(s: Settings, wait_s: float = 30.0) -> bool:
    """Stop the demo's gunicorn and wait (up to `wait_s`) until it no longer answers."""
    pid_file = s.path("gunicorn.pid")
    if not pid_file.is_file():
        return False
    with contextlib.suppress(ProcessLookupError, ValueError):
        os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
    pid_file.unlink(missing_ok=True)
    deadline = time.monotonic() + wait_s
    while server_alive(s) and time.monotonic() < deadline:
        time.sleep(0.2)
    return True


def step_serve(s: Settings, step: Step) -> str:
    env = server_env(s)
    flask = [PY, "-m", "flask", "--app", "backend"]
    tokens_file = s.path("tokens.json")
    step.run([*flask, "db", "upgrade"], env=env)
    made_users = not tokens_file.is_file()
    if made_users:
        tokens = {}
        # a serve step cut short may have created some users already: those keep their password
        listed = step.run([*flask, "users", "list"], env=env)
        existing = {line.split("\t")[1] for line in listed.splitlines() if line.count("\t") >= 2}
        for name in s.users:
            if name not in existing:
                step.run(
                    [*flask, "users", "create", name, "--password-stdin"], env=env, stdin=DEMO_PASSWORD + "\n"
                )
            created = step.run([*flask, "tokens", "create", name, "--label", f"{name}'s iPhone"], env=env)
            tokens[name] = created.strip().splitlines()[-1]
        tokens_file.write_text(json.dumps(tokens))
    users = f"users {', '.join(s.users)}" + (" created" if made_users else "")
    if server_alive(s):
        return f"{users}; already serving at {s.base_url}"
    if not port_free(s.port):
        raise step.fail(f"port {s.port} is taken by another program; pass --port")
    step.run(
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
    for _ in range(300):  # up to ~30 s for the workers to boot on a busy machine
        if server_alive(s):
            return f"SQLite database, {users}, gunicorn at {s.base_url}"
        time.sleep(0.1)
    raise step.fail(f"the server did not become ready; see {s.path('gunicorn.log')}")


# -- the app, simulated -----------------------------------------------------------------------------------


def step_simulate(s: Settings, step: Step) -> str:
    from demo import app_simulator

    package = s.packages["explicit"]
    real_noise = app_simulator.real_noise_dir()
    key = fingerprint(
        "simulate",
        dataclasses.asdict(s),
        package / "Data/com.apple.CoreML/model.mlmodel",
        {"real_noise": real_noise, "payload": 2},  # 2: readings without a rate and confidences (issue 19)
    )
    if up_to_date(s, "simulate", key, []):
        return SKIPPED
    if not server_alive(s):
        raise step.fail(f"no server at {s.base_url}; run the serve step first")
    if not package.exists():
        raise step.fail(f"no {package}; run the export step first")
    plan = app_simulator.Plan(
        users=s.users,
        weeks=s.weeks,
        workouts_per_week=s.workouts_per_week,
        stage_s=s.stage_s,
        model_version="respira-tclstm32@" + fingerprint(s.checkpoint)[:12],
        first_day=dt.date.today() - dt.timedelta(weeks=s.weeks),
        real_noise_dir=real_noise,
        others_weeks=s.others_weeks,
    )
    tokens = json.loads(s.path("tokens.json").read_text())
    step.progress(0, len(plan.jobs()), "workouts")
    try:
        with step.quiet():
            outcome = app_simulator.run_app(
                package, plan, s.base_url, tokens, lambda done, total: step.progress(done, total, "workouts")
            )
    except app_simulator.UploadRefused as exc:
        raise step.fail(str(exc)) from exc
    mark_done(s, "simulate", key)
    noise = f" ({outcome.in_real_noise} in real noise)" if outcome.in_real_noise else ""
    return (
        f"{outcome.uploaded} workouts{noise} of {len(s.users)} people over {s.weeks} weeks streamed through "
        f"{package.name} and uploaded; stage medians heard within {outcome.mean_error_bpm:.1f} "
        f"breaths/min of the truth on average; {outcome.without_rate} of {outcome.readings} readings "
        f"without a rate, {outcome.stages_not_heard} stages not heard enough"
    )


STEP_FUNCTIONS: dict[str, Callable[[Settings, Step], str]] = {
    "data": step_data,
    "train": step_train,
    "evaluate": step_evaluate,
    "export": step_export,
    "verify": step_verify,
    "serve": step_serve,
    "simulate": step_simulate,
}


def _rel(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def summary(s: Settings) -> list[str]:
    """What the demo left behind, naming only what exists (after ``--step serve`` alone too)."""
    lines = []
    if server_alive(s):
        lines.append(f"dashboard    {s.base_url}/   (log in as 'demo', password '{DEMO_PASSWORD}')")
        lines.append(f"API docs     {s.base_url}/api/v1/docs")
    if s.packages["explicit"].exists():
        extra = f", {s.packages['stateful'].name} (iOS 18+)" if s.packages["stateful"].exists() else ""
        lines.append(f"Core ML      {_rel(s.packages['explicit'])} (iOS 16+){extra}")
    if s.report.exists():
        lines.append(f"report       {_rel(s.report)}")
    if s.checkpoint.exists():
        lines.append(f"checkpoint   {_rel(s.checkpoint)}")
    if s.path("logs").is_dir():
        lines.append(f"logs         {_rel(s.path('logs'))}/<step>.log (every command run, and its output)")
    if s.path("gunicorn.pid").is_file():
        lines.append("stop server  scripts/demo --stop" + (" --quick" if s.quick else ""))
    return lines
