"""The main job, end to end: data -> model -> report -> Core ML -> backend -> the app's uploads -> dashboard.

    scripts/demo [--quick] [--step STEP ...] [--port 8000] [--workdir DIR] [--stop] [--fresh]

Steps (each also runs alone with ``--step NAME``; a step whose inputs have not changed since its last
successful run is skipped, so re-running is cheap):

1. ``data``      build the synthetic corpus; import ``../shared/data/rrujo`` when it is there
2. ``train``     train the default TC-LSTM-32 (``python -m training train``)
3. ``evaluate``  the evaluation report (``python -m training evaluate``)
4. ``export``    both ``.mlpackage`` variants (``python -m coreml export``)
5. ``verify``    stream audio through both packages with the interpreter (``python -m coreml verify``)
6. ``serve``     migrate an SQLite database, create the demo users (passwords given on stdin, nothing is
                 asked) and device tokens, start gunicorn
7. ``simulate``  act as the iOS app (demo/app_simulator.py): synthetic people's workouts streamed through
                 the exported package and uploaded over the REST API

It prints one line per step and a progress bar while a long step runs; the commands each step ran, with
everything they printed, are in ``<workdir>/logs/<step>.log`` (and shown whole if the step fails). It
ends by naming what exists: the dashboard URL and login, the package, the report. The server keeps
running (``scripts/demo --stop`` stops it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

# Python puts this file's folder first on sys.path, where this very file would shadow the `demo` package
# (demo/: the console, the steps, the simulated app); the repository root goes there instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from demo.console import Console, StepFailed, cpu_seconds  # noqa: E402
from demo.steps import STEP_FUNCTIONS, STEPS, Settings, stop_server, summary  # noqa: E402


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
    console = Console(s.path("logs"))
    if args.stop:
        console.say("stopped" if stop_server(s) else "no demo server was running")
        return 0
    if args.fresh and s.workdir.exists():
        stop_server(s)
        shutil.rmtree(s.workdir)
    s.workdir.mkdir(parents=True, exist_ok=True)
    started, started_cpu = time.monotonic(), cpu_seconds()
    for name in args.step or STEPS:
        step_started, step_cpu = time.monotonic(), cpu_seconds()
        try:
            with console.step(name) as step:
                done = STEP_FUNCTIONS[name](s, step)
        except StepFailed:
            return 1
        console.line(name, done, time.monotonic() - step_started, cpu_seconds() - step_cpu)
    console.say(f"{'total':<12} {time.monotonic() - started:.0f} s, {cpu_seconds() - started_cpu:.0f} s CPU")
    if args.stop_at_end:
        stop_server(s)
    lines = summary(s)
    if lines:
        console.say("")
        console.say("Respira demo:" if args.step else "Respira demo is ready:")
        for line in lines:
            console.say(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
