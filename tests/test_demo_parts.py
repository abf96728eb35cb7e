"""The demo's parts on their own, fast: the quiet console (one line per step, third-party output kept
out of sight until a step fails, then shown whole), the summary naming only what exists, and the
simulated app's plan."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import os
import sys
from pathlib import Path

import pytest

from demo.app_simulator import Plan, fitness
from demo.console import TQDM_UPDATE, Console, StepFailed, shown
from demo.steps import Settings, summary


def test_a_step_keeps_what_its_commands_print_and_shows_it_whole_when_it_fails(tmp_path: Path) -> None:
    out = io.StringIO()
    console = Console(tmp_path / "logs", stream=out)
    noisy = "import sys, warnings; print('lots of chatter'); warnings.warn('third-party warning')"
    with console.step("quiet") as step:
        printed = step.run([sys.executable, "-c", noisy])
    assert "lots of chatter" in printed and "third-party warning" in printed
    assert out.getvalue() == ""  # nothing reached the console; the step's own line is the runner's
    log = (tmp_path / "logs" / "quiet.log").read_text()
    assert log.startswith("$ python -c ") and "third-party warning" in log

    failing = (
        "import sys; print('step 1 of 2 done'); print('Traceback: it broke', file=sys.stderr); sys.exit(3)"
    )
    with pytest.raises(StepFailed), console.step("broken") as step:
        step.run([sys.executable, "-c", failing])
    shown_text = out.getvalue()
    assert "[broken]" in shown_text and "exited with status 3" in shown_text
    assert "step 1 of 2 done" in shown_text and "Traceback: it broke" in shown_text  # whole output
    assert str(tmp_path / "logs" / "broken.log") in shown_text


def test_a_step_that_prints_nothing_keeps_its_last_log(tmp_path: Path) -> None:
    """Re-running skips what is up to date: the skipped step's log of the run that made it stays."""
    console = Console(tmp_path / "logs", stream=io.StringIO())
    with console.step("made") as step:
        step.run([sys.executable, "-c", "print('made it')"])
    with console.step("made"):
        pass  # skipped: up to date
    assert "made it" in (tmp_path / "logs" / "made.log").read_text()


def test_quiet_captures_what_python_code_and_its_children_print(tmp_path: Path) -> None:
    out = io.StringIO()
    console = Console(tmp_path / "logs", stream=out)
    with console.step("inproc") as step, step.quiet():
        print("from this process")
        os.system(f"{sys.executable} -c \"import sys; print('from a child', file=sys.stderr)\"")
    log = (tmp_path / "logs" / "inproc.log").read_text()
    assert "from this process" in log and "from a child" in log and out.getvalue() == ""


def test_progress_follows_a_childs_tqdm_bar(tmp_path: Path) -> None:
    match = TQDM_UPDATE.search("epoch 3:  45%|####5     | 12/27 [00:03<00:04,  3.1it/s, loss=0.5]")
    assert match and (match["desc"], match["n"], match["total"]) == ("epoch 3", "12", "27")
    assert TQDM_UPDATE.search("synth: 100%|██████████| 600/600 [00:09<00:00]")["n"] == "600"
    assert TQDM_UPDATE.search("epoch   1  lr 0.01  loss 1.430  val CCC(RR) 0.742") is None
    assert shown([sys.executable, "-m", "x", "a b"]) == "python -m x 'a b'"


def test_summary_names_only_what_exists(tmp_path: Path) -> None:
    s = Settings.make(quick=True, workdir=tmp_path, port=1)  # no server listens on port 1
    assert summary(s) == []
    s.checkpoint.parent.mkdir(parents=True)
    s.checkpoint.write_bytes(b"x")
    assert [line.split()[0] for line in summary(s)] == ["checkpoint"]
    s.packages["explicit"].mkdir(parents=True)
    s.report.parent.mkdir(parents=True)
    s.report.write_text("# report")
    lines = summary(s)
    assert [line.split()[0] for line in lines] == ["Core", "report", "checkpoint"]
    assert "RespiraStateful" not in lines[0]  # not exported: not named


def test_the_simulated_people_get_fitter_and_the_plan_is_stable() -> None:
    plan = Plan(
        ("demo", "alex"),
        weeks=3,
        workouts_per_week=2,
        stage_s=30.0,
        model_version="m@1",
        first_day=dt.date(2026, 11, 2),
    )
    jobs = plan.jobs()
    assert len(jobs) == 12 and len({j["id"] for j in jobs}) == 12
    assert [j["id"] for j in jobs] == [j["id"] for j in plan.jobs()]  # ids are stable: uploads are idempotent
    # the others join for the plan's last weeks only (the full demo: 'demo' 8 weeks, the others 1)
    short = dataclasses.replace(plan, users=("demo", "alex", "sam"), others_weeks=1)
    weeks = {(j["user"], j["week"]) for j in short.jobs()}
    assert len(short.jobs()) == 3 * 2 + 2 * 2
    assert weeks == {("demo", 0), ("demo", 1), ("demo", 2), ("alex", 2), ("sam", 2)}
    first, last = fitness(0, 0, 0), fitness(0, 5, 0)
    assert last[0][1] < first[0][1] and last[0][3] < first[0][3]  # lower resting and cooling-down RR
    assert last[1]["after_4"] < first[1]["after_4"]


@pytest.fixture(scope="module")
def shipped_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from coreml.export import export_package
    from training.checkpoint import DEFAULT_CHECKPOINT

    if not DEFAULT_CHECKPOINT.is_file():
        pytest.skip("no shipped default model in this checkout")
    out = tmp_path_factory.mktemp("sim") / "Respira.mlpackage"
    return export_package(out, DEFAULT_CHECKPOINT, "explicit", 1600, "float32")


def test_the_simulated_app_reads_rates_with_the_one_estimator(shipped_package: Path) -> None:
    """One stream through the package per stage, read as the app reads it (the package's own rolling
    estimator): a reading every 5 s once the 30 s window is full, each near the rate breathed; a stage
    without breathing gives readings without a number, each saying "no breathing"."""
    import numpy as np

    import demo.app_simulator as sim
    from training.synth import make_participant, synth_recording

    sim._load_package(str(shipped_package))
    person = make_participant("sim-test", seed=3)
    for stage, rate in ((1, 14.0), (2, 40.0)):
        rec = synth_recording(person, stage, 45.0, np.random.default_rng(stage), rate_bpm=rate)
        readings = sim.stream_stage(rec.audio)
        assert [r["start_s"] for r in readings] == [0.0, 5.0, 10.0, 15.0]  # windows ending at 30-45 s
        assert all(r["duration_s"] == 30.0 for r in readings)
        assert all(abs(r["rr_bpm"] - rate) < 1.5 for r in readings), readings
        # the package counts breaths once it answers (from 4 s on): the first window misses its first 4 s
        heard_s = [r["duration_s"] - max(0.0, 4.0 - r["start_s"]) for r in readings]
        assert all(
            abs(r["respiration_count"] - rate * s / 60) <= 2 for r, s in zip(readings, heard_s, strict=True)
        ), readings
    # a stage without breathing: every window answered "no breathing", uploaded as such (issue 19)
    silent = synth_recording(person, None, 45.0, np.random.default_rng(9), rate_bpm=0.0)
    readings = sim.stream_stage(silent.audio)
    assert [r["start_s"] for r in readings] == [0.0, 5.0, 10.0, 15.0]
    assert all(r["rr_bpm"] is None and r["reason"] == "no_breathing" for r in readings), readings
    assert all(r["respiration_count"] is None and 0 <= r["rr_confidence"] <= 1 for r in readings)
    assert sim.heard_median(readings) is None  # the backend's rule: not enough breathing heard


def test_some_workouts_are_recorded_in_real_noise_and_their_payload_is_what_the_backend_takes(
    shipped_package: Path,
) -> None:
    """Every third workout of a plan is mixed with the real recordings of ../shared/data/noise; what the
    app uploads for it (readings without a rate included) passes the backend's validation as is."""
    import demo.app_simulator as sim
    from backend.schemas import WorkoutIn
    from backend.workouts import check_workout
    from training.real_noise import DEFAULT_NOISE_DIR

    if sim.real_noise_dir() is None:
        pytest.skip(f"the recorded noises are not in {DEFAULT_NOISE_DIR}")
    plan = Plan(
        ("demo", "alex"),
        weeks=2,
        workouts_per_week=1,
        stage_s=30.0,
        model_version="m@1",
        first_day=dt.date(2026, 11, 2),
        real_noise_dir=sim.real_noise_dir(),
    )
    jobs = plan.jobs()
    noisy = [j for j in jobs if j["real_noise_dir"]]
    assert [(j["user"], j["week"]) for j in noisy] == [("demo", 1), ("alex", 0)]
    sim._load_package(str(shipped_package))
    result = sim.simulate_workout(noisy[0])
    assert set(result["real_noise"]) == {1, 2, 3, 4}
    body = WorkoutIn.model_validate_json(json.dumps(result["body"]))
    assert check_workout(body) == []
    readings = [seg for stage in result["body"]["stages"] for seg in stage["segments"]]
    assert all(("reason" in seg) == (seg["rr_bpm"] is None) for seg in readings)
    # the bike at -10 dB during exercise: the estimator hears no breathing there (measured, module doc)
    stage_2 = result["body"]["stages"][1]["segments"]
    assert [seg["reason"] for seg in stage_2] == ["no_breathing"]
