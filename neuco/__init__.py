"""NeuCo-Bench scoring of embeddings, without QGIS.

The evaluator reads an embeddings CSV and a folder of ``<task>__<type>.csv``
label files the way NeuCo-Bench (github.com/embed2scale/NeuCo-Bench) reads
them and probes every task on 40 shuffle splits. It writes per-task Q scores,
a run summary, a leaderboard over all runs of a phase and an HTML report. Two
probes exist: ``neuco`` repeats the reference protocol (an AdamW-trained
linear layer) with the splits of a task trained as one batched model, and
``ridge`` fits closed-form ridge models. torch, pandas and matplotlib are
imported inside the functions that need them.

Command line: ``python -m fusedeo.neuco --help``.
"""

from .evaluate import EvaluationConfig, EvaluationResult, evaluate

__all__ = ["EvaluationConfig", "EvaluationResult", "evaluate"]
