"""Trivial detectors reported beside the model, fitted on the same normal training sessions.

Strong on clean HDFS (Landauer et al., FSE 2024), so every report shows them:
    new_template    count of events whose template never occurs in normal training sessions
    count_vector    L1 distance of the session's template-count vector to the nearest normal one
    ngram           share of the session's 3-grams (with a start marker) never seen in training
    exact_sequence  1 if the exact sequence never occurs in normal training, else 0
Each gives a score (higher = more anomalous); thresholds come from normal validation sessions at
the same percentile as the model's. With `paper=True`, three detectors from the literature, each with
its paper's own decision rule (RULES: the score must exceed it):
    deeplog     events outside the top-g next keys of an LSTM (logad.deeplog; Du et al., CCS 2017)
    pca         SPE / Q_alpha on TF-IDF count vectors (logad.invariants; Xu et al., SOSP 2009)
    invariants  violated mined count invariants (logad.invariants; Lou et al., USENIX ATC 2010)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NAMES = ("new_template", "count_vector", "ngram", "exact_sequence")
PAPER_NAMES = ("deeplog", "pca", "invariants")
RULES = {"new_template": 0.0, "exact_sequence": 0.0, "deeplog": 0.0, "pca": 1.0, "invariants": 0.0}


class Baselines:
    def __init__(self, train: Sequence[Sequence[int]], vocab_size: int, n: int = 3, paper: bool = False) -> None:
        self.n = n
        self.paper = None
        if paper:
            from logad.deeplog import DeepLog
            from logad.invariants import InvariantsMiner, PCADetector
            self.paper = {"deeplog": DeepLog(vocab_size).fit(train), "pca": PCADetector(train, vocab_size),
                          "invariants": InvariantsMiner(train, vocab_size)}
        self.vocab_size = vocab_size
        self.seen = {i for s in train for i in s}
        self.sequences = {tuple(s) for s in train}
        self.ngrams = {g for s in train for g in self._grams(s)}
        self.counts = np.unique(np.stack([self._cv(s) for s in train]), axis=0) if train else np.zeros((0, vocab_size))

    def _grams(self, s: Sequence[int]) -> list[tuple[int, ...]]:
        p = (-1,) * (self.n - 1) + tuple(s)
        return [p[i:i + self.n] for i in range(len(s))]

    def _cv(self, s: Sequence[int]) -> np.ndarray:
        return np.bincount(np.asarray(s, dtype=np.int64), minlength=self.vocab_size).astype(np.float32)[: self.vocab_size]

    def score(self, sessions: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        out = {k: np.zeros(len(sessions)) for k in NAMES}
        for i, s in enumerate(sessions):
            out["new_template"][i] = sum(1 for e in s if e not in self.seen)
            grams = self._grams(s)
            out["ngram"][i] = sum(g not in self.ngrams for g in grams) / len(grams) if grams else 0.0
            out["exact_sequence"][i] = float(tuple(s) not in self.sequences)
        if len(sessions) and len(self.counts):
            cv = np.stack([self._cv(s) for s in sessions])  # (N, V)
            for a in range(0, len(cv), 512):  # (chunk, M) L1 distances, memory-bounded
                d = np.abs(cv[a:a + 512, None, :] - self.counts[None, :, :]).sum(-1)
                out["count_vector"][a:a + 512] = d.min(1)
        for name, det in (self.paper or {}).items():
            out[name] = det.score(sessions)
        return out
