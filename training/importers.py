"""Importers of real breath-audio corpora into the manifest format, so a downloaded corpus trains as is.

Both corpora hold recordings at a paced, constant rate, so every segment of a recording gets that
rate, ``respiration_count = rr_bpm * duration_s / 60`` and :func:`breath_class_for` of it; the audio is
clean (``noisy`` 0), indoor and outside the workout protocol (``stage`` empty). Each recording is cut
into consecutive random 4-7 s segments (:func:`random_segments`, seeded per recording so that adding or
dropping a file does not move the cuts of the others) and the splits are dealt by participant
(:func:`assign_splits`), so no person is in two splits even when recorded on several devices.

Audio (``convert=True``, the default): every recording is decoded once, resampled to 16 kHz mono and
written as 16-bit FLAC under ``out_dir/audio/``, and the manifest names those copies with paths relative
to ``out_dir``. The corpus is then self-contained like a synthetic one, the source folder is only read,
and training reads 16 kHz PCM with no resampling. A copy whose resampled peak exceeds full scale
(resampler overshoot on clipped originals) is scaled down to fit; labels do not depend on level.
With ``convert=False`` the manifest points at the original files by absolute path instead.

A file that cannot be used (bad name, bad CSV row, unreadable or silent audio, shorter than one segment)
is skipped with a logged warning naming it and counted in the :class:`ImportReport`; a folder that is not
the expected layout, or holds nothing usable, raises :class:`CorpusImportError`.

Layouts:
- RRuJO (``../shared/data/rrujo``): ``recordings.csv`` with columns ``path, subject, device, rr_bpm``
  (and ``sex``), paths relative to the folder. Participant ``rrujo-<subject>`` is the same for both
  devices; ``source`` is ``rrujo/<device>``; recording ids are ``rrujo/<path without suffix>``.
- BreathMY: folders ``D_A``..``D_D`` holding ``<RR>RR_<distance>cm_<yyyy>_<mm>_<dd>_<subject>.wav``.
  ``source`` is ``breathmy/<folder>/<distance>cm`` (microphone distance matters acoustically); the date
  stays in the recording id ``breathmy/<folder>/<file stem>``. Participant ``breathmy-<subject>`` is
  shared across folders: if one subject code did name different people in different folders, their
  segments only land in the same split, which costs balance but can never leak a person across splits.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import logging
import re
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import numpy as np
import soundfile as sf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from training.audio import AudioError, load_audio
from training.frontend import SAMPLE_RATE_HZ
from training.manifest import Segment, assign_splits, breath_class_for, random_segments, write_manifest

logger = logging.getLogger(__name__)

AUDIO_DIR = "audio"
MAX_RR_BPM = 120.0
RRUJO_COLUMNS = ("path", "subject", "device", "rr_bpm")
SEXES = {"f": "female", "female": "female", "m": "male", "male": "male"}
BREATHMY_FOLDER = re.compile(r"D_[A-Z]")
BREATHMY_NAME = re.compile(
    r"(?P<rr>\d+(?:\.\d+)?)RR_(?P<distance>\d+(?:\.\d+)?)cm_"
    r"(?P<year>\d{4})_(?P<month>\d{2})_(?P<day>\d{2})_(?P<subject>[A-Za-z0-9][A-Za-z0-9-]*)\.wav",
    re.IGNORECASE,
)
BREATHMY_PATTERN = "<RR>RR_<distance>cm_<yyyy>_<mm>_<dd>_<subject>.wav"


class CorpusImportError(ValueError):
    """The source folder is missing, is not the expected layout, or holds no usable recording."""


@dataclasses.dataclass
class Recording:
    """One source file and the labels shared by all of its segments."""

    path: Path
    recording: str  # corpus-unique id, also the name of the converted copy
    rr_bpm: float
    participant: str
    source: str
    gender: str = ""


@dataclasses.dataclass
class ImportReport:
    """What an import produced and what it had to leave out (``skipped``: one 'file: reason' each)."""

    corpus_dir: Path
    segments: list[Segment]
    recordings: int
    skipped: list[str]

    def summary(self) -> str:
        hours = sum(s.duration_s for s in self.segments) / 3600
        participants = len({s.participant for s in self.segments})
        lines = [
            f"{len(self.segments)} segments ({hours:.2f} h) from {self.recordings} recordings of "
            f"{participants} participants -> {self.corpus_dir / 'manifest.csv'}",
            f"skipped {len(self.skipped)} file(s)" + (":" if self.skipped else ""),
        ]
        lines += [f"  {reason}" for reason in self.skipped]
        return "\n".join(lines)


def _parse_rr(text: str) -> float:
    rr_bpm = float(text)
    if not 0.0 <= rr_bpm <= MAX_RR_BPM:
        raise ValueError(f"rr_bpm {rr_bpm:g} outside 0-{MAX_RR_BPM:g}")
    return rr_bpm


def _require_folder(src_dir: Path, layout: str) -> None:
    if not src_dir.exists():
        raise CorpusImportError(f"{src_dir}: no such folder (expected the {layout} corpus)")
    if not src_dir.is_dir():
        raise CorpusImportError(f"{src_dir}: not a folder (expected the {layout} corpus)")


def rrujo_recordings(src_dir: Path) -> tuple[list[Recording], list[str]]:
    """The recordings listed in ``src_dir/recordings.csv``, and the rows that had to be skipped."""
    _require_folder(src_dir, "RRuJO")
    table = src_dir / "recordings.csv"
    if not table.is_file():
        raise CorpusImportError(f"{src_dir}: no recordings.csv here; is this the RRuJO folder?")
    try:
        with table.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in RRUJO_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise CorpusImportError(f"{table}: missing columns {', '.join(missing)}")
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:  # found by tests/training/test_fuzz_inputs.py
        raise CorpusImportError(f"{table}: not a readable UTF-8 CSV table ({exc})") from exc
    recordings, skipped = [], []
    for line, row in enumerate(rows, start=2):
        where = f"{table}:{line}"
        rel = PurePosixPath((row["path"] or "").strip())
        subject, device = (row["subject"] or "").strip(), (row["device"] or "").strip()
        if not rel.name or rel.is_absolute() or ".." in rel.parts:
            skipped.append(f"{where}: path {str(rel)!r} is not a file inside the corpus folder")
            continue
        if not subject or not device:
            skipped.append(f"{where}: empty subject or device")
            continue
        try:
            rr_bpm = _parse_rr(row["rr_bpm"])
        except (TypeError, ValueError) as exc:
            skipped.append(f"{where}: bad rr_bpm {row['rr_bpm']!r} ({exc})")
            continue
        recordings.append(
            Recording(
                path=src_dir / rel,
                recording=f"rrujo/{rel.with_suffix('')}",
                rr_bpm=rr_bpm,
                participant=f"rrujo-{subject}",
                source=f"rrujo/{device}",
                gender=SEXES.get((row.get("sex") or "").strip().lower(), ""),
            )
        )
    return recordings, skipped


def breathmy_recordings(src_dir: Path) -> tuple[list[Recording], list[str]]:
    """The recordings in the ``D_A``..``D_D`` folders, and the files whose names do not parse."""
    _require_folder(src_dir, "BreathMY")
    folders = sorted(d for d in src_dir.iterdir() if d.is_dir() and BREATHMY_FOLDER.fullmatch(d.name))
    if not folders:
        raise CorpusImportError(
            f"{src_dir}: no D_A..D_D folders here; the BreathMY layout is D_A..D_D/{BREATHMY_PATTERN}"
        )
    recordings, skipped = [], []
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
            match = BREATHMY_NAME.fullmatch(path.name)
            if match is None:
                skipped.append(f"{path}: name does not match {BREATHMY_PATTERN}")
                continue
            try:
                rr_bpm = _parse_rr(match["rr"])
                datetime.date(int(match["year"]), int(match["month"]), int(match["day"]))
            except ValueError as exc:
                skipped.append(f"{path}: bad name ({exc})")
                continue
            recordings.append(
                Recording(
                    path=path,
                    recording=f"breathmy/{folder.name}/{path.relative_to(folder).with_suffix('').as_posix()}",
                    rr_bpm=rr_bpm,
                    participant=f"breathmy-{match['subject']}",
                    source=f"breathmy/{folder.name}/{float(match['distance']):g}cm",
                )
            )
    return recordings, skipped


LAYOUTS: dict[str, Callable[[Path], tuple[list[Recording], list[str]]]] = {
    "rrujo": rrujo_recordings,
    "breathmy": breathmy_recordings,
}


def _write_copy(audio: np.ndarray, target: Path) -> None:
    peak = float(np.max(np.abs(audio)))
    if peak >= 1.0:  # PCM would clip: scale the copy instead (labels do not depend on level)
        audio = audio * (0.999 / peak)
    target.parent.mkdir(parents=True, exist_ok=True)
    sf.write(target, audio, SAMPLE_RATE_HZ, format="FLAC", subtype="PCM_16")


def _segments_of(rec: Recording, audio: np.ndarray, manifest_path: str, seed: int) -> list[Segment]:
    rng = np.random.default_rng([seed, zlib.crc32(rec.recording.encode())])
    segments = []
    for start_s, end_s in random_segments(len(audio) / SAMPLE_RATE_HZ, rng):
        segments.append(
            Segment(
                path=manifest_path,
                start_s=start_s,
                end_s=end_s,
                rr_bpm=rec.rr_bpm,
                respiration_count=rec.rr_bpm * (end_s - start_s) / 60.0,
                breath_class=breath_class_for(rec.rr_bpm),
                noisy=0,
                stage=None,
                participant=rec.participant,
                gender=rec.gender,
                environment="indoor",
                source=rec.source,
                recording=rec.recording,
            )
        )
    return segments


def import_corpus(
    layout: str,
    src_dir: Path | str,
    out_dir: Path | str,
    seed: int = 0,
    limit: int | None = None,
    convert: bool = True,
    progress: bool = False,
) -> ImportReport:
    """Import the corpus at ``src_dir`` (``layout``: rrujo | breathmy) into ``out_dir/manifest.csv``.

    ``limit`` keeps only the first recordings (in listing order), for quick looks and tests. The
    manifest is written last, so a failed import leaves any previous manifest in ``out_dir`` as it was.
    """
    if layout not in LAYOUTS:
        raise CorpusImportError(f"unknown corpus layout {layout!r}; known: {', '.join(LAYOUTS)}")
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    recordings, skipped = LAYOUTS[layout](src_dir)
    for reason in skipped:
        logger.warning("skipped %s", reason)
    if limit is not None:
        recordings = recordings[:limit]

    segments: list[Segment] = []
    used = 0
    with logging_redirect_tqdm():
        for rec in tqdm(recordings, desc=f"import {layout}", unit="file", disable=not progress):
            try:
                audio = load_audio(rec.path, SAMPLE_RATE_HZ)
            except AudioError as exc:
                skipped.append(str(exc))
                logger.warning("skipped %s", exc)
                continue
            if convert:
                target = out_dir / AUDIO_DIR / f"{rec.recording}.flac"
                _write_copy(audio, target)
                manifest_path = target.relative_to(out_dir).as_posix()
            else:
                manifest_path = str(rec.path.resolve())
            new = _segments_of(rec, audio, manifest_path, seed)
            if not new:
                reason = f"{rec.path}: {len(audio) / SAMPLE_RATE_HZ:.2f} s is shorter than one segment"
                skipped.append(reason)
                logger.warning("skipped %s", reason)
                continue
            segments.extend(new)
            used += 1
    if not segments:
        raise CorpusImportError(
            f"{src_dir}: no usable recordings ({len(recordings)} found, {len(skipped)} skipped)"
        )
    assign_splits(segments, seed)
    write_manifest(segments, out_dir)
    return ImportReport(corpus_dir=out_dir, segments=segments, recordings=used, skipped=skipped)
