"""Respira training toolkit: audio I/O, the log-mel front-end, corpora, models and evaluation."""

__version__ = "0.1.0"
