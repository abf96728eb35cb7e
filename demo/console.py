"""What the demo prints: one line per step (what it did, how long), one progress bar while a long step
runs (only in a terminal), and nothing else, unless a step fails: then everything that step's commands
and libraries printed is shown whole.

Every command a step runs, and all its output, also goes to ``<workdir>/logs/<step>.log``, so each step
can be reproduced and inspected by hand without the console getting noisy.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent

# A tqdm bar as a child process writes it: "epoch 3:  45%|####5     | 12/27 [00:03<00:04, ...]"
TQDM_UPDATE = re.compile(r"(?:(?P<desc>[^\r\n|]*?):\s*)?\d+%\|[^|\r\n]*\|\s*(?P<n>\d+)/(?P<total>\d+)")
NAME_WIDTH = 10


class StepFailed(Exception):
    """A step could not finish; ``output`` holds everything it printed, ``log`` where that was kept."""

    def __init__(self, step: str, message: str, output: str, log: Path) -> None:
        super().__init__(message)
        self.step, self.output, self.log = step, output, log


def shown(cmd: Sequence[object]) -> str:
    """A command as one would type it (the interpreter as ``python``)."""
    words = [str(c) for c in cmd]
    if words and words[0] == sys.executable:
        words[0] = "python"
    return " ".join(w if w and " " not in w and "'" not in w else repr(w) for w in words)


class Step:
    """One running step: runs its commands quietly, keeps their output, drives its progress bar."""

    def __init__(self, console: Console, name: str, log: Path) -> None:
        self.console, self.name, self.log = console, name, log
        self.output: list[str] = []
        self.bar = None
        self._log: IO[str] | None = None  # opened at the first output: a skipped step keeps its last log

    # -- output kept for the log and for a failure ----------------------------------------------------

    def keep(self, text: str) -> None:
        self.output.append(text)
        if self._log is None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log.open("w", encoding="utf-8")
        self._log.write(text)
        self._log.flush()

    def fail(self, message: str) -> StepFailed:
        return StepFailed(self.name, message, "".join(self.output), self.log)

    # -- progress -------------------------------------------------------------------------------------

    def progress(self, done: int, total: int, what: str = "") -> None:
        """Show ``done`` of ``total`` on this step's bar (a terminal only; nothing otherwise)."""
        if self.console.terminal is None:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                desc=f"[{self.name}]",
                file=self.console.terminal,
                leave=False,
                # a pseudo-terminal may report 0 columns (then tqdm draws nothing): fall back to 80
                ncols=min(shutil.get_terminal_size((80, 24)).columns, 100),
                bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]",
            )
        self.bar.total = total
        self.bar.n = done
        self.bar.set_description_str(f"[{self.name}] {what}".rstrip(), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self._log is not None:
            self._log.close()

    # -- running things -------------------------------------------------------------------------------

    def run(self, cmd: Sequence[object], env: dict[str, str] | None = None, stdin: str | None = None) -> str:
        """Run ``cmd`` from the repository root with stdout and stderr captured; its tqdm bars move this
        step's bar. Returns what it printed; a non-zero exit fails the step."""
        self.keep(f"$ {shown(cmd)}\n")
        code, out = _capture(cmd, env, stdin, self._follow_bars)
        self.keep(_final_bars(out))
        if code != 0:
            raise self.fail(f"{shown(cmd)} exited with status {code}")
        return out

    def run_together(
        self, cmds: Sequence[Sequence[object]], what: Sequence[str], env: dict[str, str] | None = None
    ) -> list[str]:
        """Run independent ``cmds`` at the same time, as many as there are cores, each on one thread
        (``OMP_NUM_THREADS=1``: two commands with two threads each would contend on two cores). The bar
        counts the commands finished (``what`` names each); the log keeps each command with its output.
        Returns what each printed, in order; any non-zero exit fails the step."""
        from concurrent.futures import ThreadPoolExecutor

        one_thread = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", **(env or {})}
        self.progress(0, len(cmds), ", ".join(what))
        results: list[tuple[int, str]] = []
        with ThreadPoolExecutor(max(1, min(len(cmds), os.cpu_count() or 1))) as pool:
            futures = [pool.submit(_capture, cmd, one_thread, None, None) for cmd in cmds]
            for done, future in enumerate(futures, 1):
                results.append(future.result())
                self.progress(done, len(cmds), what[done - 1])
        for cmd, (_, out) in zip(cmds, results, strict=True):
            self.keep(f"$ {shown(cmd)}\n")
            self.keep(_final_bars(out))
        for cmd, (code, _) in zip(cmds, results, strict=True):
            if code != 0:
                raise self.fail(f"{shown(cmd)} exited with status {code}")
        return [out for _, out in results]

    def _follow_bars(self, text: str) -> str:
        """Move the bar to the child's latest tqdm state; return the unfinished tail to parse later."""
        pieces = re.split(r"[\r\n]", text)
        for piece in reversed(pieces[:-1]):
            match = TQDM_UPDATE.search(piece)
            if match:
                self.progress(int(match["n"]), int(match["total"]), (match["desc"] or "").strip())
                break
        return pieces[-1][-4096:]

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Capture what Python code run in this process (and processes it starts) prints, at the file
        descriptor level and through ``sys.stdout``/``sys.stderr``: third-party warnings go to the
        step's log, not the console."""
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        with tempfile.TemporaryFile() as sink:
            text = open(os.dup(sink.fileno()), "w", buffering=1, encoding="utf-8", closefd=True)  # noqa: SIM115
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                    yield
            finally:
                text.close()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                os.close(saved[0])
                os.close(saved[1])
                sink.seek(0)
                self.keep(sink.read().decode("utf-8", errors="replace"))


def _capture(
    cmd: Sequence[object],
    env: dict[str, str] | None,
    stdin: str | None,
    follow: Callable[[str], str] | None,
) -> tuple[int, str]:
    """Run ``cmd`` from the repository root: its exit status and everything it printed (stdout and
    stderr together). ``follow`` sees the output as it comes and returns the unparsed tail."""
    proc = subprocess.Popen(
        [str(c) for c in cmd],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    if stdin is not None:
        feeder = threading.Thread(target=_feed, args=(proc.stdin, stdin.encode()), daemon=True)
        feeder.start()
    printed: list[str] = []
    assert proc.stdout is not None
    pending = ""
    for raw in iter(lambda: proc.stdout.read1(65536), b""):
        text = raw.decode("utf-8", errors="replace")
        printed.append(text)
        if follow is not None:
            pending = follow(pending + text)
    return proc.wait(), "".join(printed)


def _final_bars(out: str) -> str:
    """What a command printed, for the log: the final state of each progress bar, not every redraw."""
    return "\n".join(line.split("\r")[-1] for line in out.split("\n"))


def _feed(pipe: IO[bytes], data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError):
        pipe.write(data)
        pipe.close()


class Console:
    """The demo's console: step lines on ``stream``; progress bars only when it is a terminal."""

    def __init__(self, log_dir: Path, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout
        self.log_dir = log_dir
        # bars go to their own copy of the terminal, so that capturing fds 1 and 2 leaves them visible
        self.terminal: IO[str] | None = (
            os.fdopen(os.dup(self.stream.fileno()), "w", buffering=1) if _is_terminal(self.stream) else None
        )

    def say(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)

    def line(self, name: str, text: str, seconds: float | None = None, cpu_s: float | None = None) -> None:
        """``[name]  text  (wall s, CPU s)``: CPU time (this process and the commands it ran) is the
        steadier figure on a busy machine."""
        took = (
            ""
            if seconds is None
            else f"  ({seconds:.0f} s" + ("" if cpu_s is None else f", {cpu_s:.0f} s CPU") + ")"
        )
        self.say(f"{('[' + name + ']'):<{NAME_WIDTH + 2}} {text}{took}")

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[Step]:
        """Run one step: on success the step reports its own line; on failure its output is shown."""
        step = Step(self, name, self.log_dir / f"{name}.log")
        try:
            yield step
        except StepFailed as failure:
            step.close()
            self.line(name, f"FAILED: {failure}")
            self.say(f"---- everything the step printed (also in {failure.log}) ----")
            self.say(failure.output.rstrip())
            self.say("----")
            raise
        finally:
            step.close()


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of every child it has waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
