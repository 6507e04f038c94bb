"""DeepLog's execution-path model (Du et al., CCS 2017), as a baseline.

A stacked LSTM reads the last h log keys and predicts the next one; an event is abnormal when its key
is not among the g most probable predictions, and a session is anomalous when any of its events is
(the paper's rule: no threshold to fit). Trained on normal training sessions only, as in the paper
(h = 10, g = 9, 2 layers of 64 units). Keys before the session start are a padding key, so the first
events are predicted from a short history (the paper starts at the h-th event; a truncated session
would otherwise never be judged). The paper's parameter-value models need parameter vectors the
prepared datasets do not keep, so only the key model is reproduced.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


class _Net(nn.Module):
    def __init__(self, n_keys: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(n_keys + 1, hidden)  # key n_keys: padding before the session start
        self.lstm = nn.LSTM(hidden, hidden, layers, batch_first=True)
        self.out = nn.Linear(hidden, n_keys)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, h) keys -> (B, n_keys) logits
        y, _ = self.lstm(self.embed(x))  # (B, h, hidden)
        return self.out(y[:, -1])


class DeepLog:
    def __init__(self, n_keys: int, h: int = 10, g: int = 9, hidden: int = 64, layers: int = 2,
                 epochs: int = 3, batch_size: int = 256, lr: float = 2e-3, seed: int = 0,
                 max_samples: int = 100_000) -> None:
        self.n_keys, self.h, self.g = n_keys, h, g
        self.epochs, self.batch_size, self.lr, self.seed, self.max_samples = epochs, batch_size, lr, seed, max_samples
        torch.manual_seed(seed)
        self.net = _Net(n_keys, hidden, layers)

    def _windows(self, sessions: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(K, h) histories, (K,) next keys and (K,) session index of every event of the sessions."""
        pad = self.n_keys
        hist, nxt, owner = [], [], []
        for k, s in enumerate(sessions):
            p = [pad] * self.h + [min(int(e), pad - 1) for e in s]
            for i in range(len(s)):
                hist.append(p[i:i + self.h])
                nxt.append(p[i + self.h])
                owner.append(k)
        return (np.asarray(hist, dtype=np.int64).reshape(-1, self.h), np.asarray(nxt, dtype=np.int64),
                np.asarray(owner, dtype=np.int64))

    def fit(self, sessions: Sequence[Sequence[int]]) -> DeepLog:
        x, y, _ = self._windows(sessions)
        rng = np.random.default_rng(self.seed)
        if len(x) > self.max_samples:  # bounded training cost for large training sets
            keep = rng.choice(len(x), self.max_samples, replace=False)
            x, y = x[keep], y[keep]
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        self.net.train()
        for _ in range(self.epochs):
            order = torch.from_numpy(rng.permutation(len(xt)))
            for a in range(0, len(order), self.batch_size):
                idx = order[a:a + self.batch_size]
                loss = nn.functional.cross_entropy(self.net(xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.net.eval()
        return self

    @torch.no_grad()
    def score(self, sessions: Sequence[Sequence[int]]) -> np.ndarray:
        """(N,) events per session whose key is outside the top-g predictions (> 0: anomalous)."""
        out = np.zeros(len(sessions))
        if not len(sessions):
            return out
        x, y, owner = self._windows(sessions)
        for a in range(0, len(x), 4096):
            logits = self.net(torch.from_numpy(x[a:a + 4096]))  # (b, n_keys)
            tgt = torch.from_numpy(y[a:a + 4096])
            rank = (logits > logits.gather(1, tgt.unsqueeze(1))).sum(1)  # (b,) keys ranked above the actual
            miss = (rank >= self.g).numpy()
            np.add.at(out, owner[a:a + 4096], miss)
        return out
