"""The paper's experiment grid, trained and evaluated into one report.

Table I compares sizes (TC-LSTM with 16, 32 and 64 units), Table II model types (LSTM-32 against
TC-LSTM-32, with the DSP baseline beside them), Table III training with and without augmentation
(TC-LSTM-32 on the corpus plus noisy copies of its training split at the paper's SNR bands). All runs
share the seed and the corpora; only the factor under study changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from training.config import TrainConfig
from training.evaluate import evaluate
from training.train import train

GRID = (
    ("tclstm", 16, False),
    ("tclstm", 32, False),
    ("tclstm", 64, False),
    ("lstm", 32, False),
    ("tclstm", 32, True),
)


def run_experiments(
    corpus_dirs: Sequence[Path | str],
    out_dir: Path | str,
    quick: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    from training.augment import augment_corpus

    out = Path(out_dir)
    corpus_dirs = [Path(c) for c in corpus_dirs]
    base = TrainConfig(seed=seed)
    if quick:
        base = dataclasses.replace(base, max_epochs=2, patience=2)
    augmented_dirs = []
    for i, corpus in enumerate(corpus_dirs):
        target = out / "data" / f"{corpus.name or i}-aug"
        if not (target / "manifest.csv").is_file():
            augment_corpus(corpus, target, copies=1, seed=seed, progress=progress)
        augmented_dirs.append(target)
    checkpoints = []
    for model_type, units, augmented in GRID:
        cfg = dataclasses.replace(base, model_type=model_type, units=units)
        path = out / "checkpoints" / f"{model_type}{units}{'-aug' if augmented else ''}.pt"
        if not path.is_file():
            train(cfg, augmented_dirs if augmented else corpus_dirs, path, progress=progress)
        checkpoints.append(path)
    # evaluation on the un-augmented corpora: val/test are identical in both, by construction
    return evaluate(
        checkpoints,
        corpus_dirs,
        out / "report",
        progress=progress,
        extra_notes=[f"grid: {len(GRID)} models, seed {seed}{', quick' if quick else ''}"],
    )
