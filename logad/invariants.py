"""Count-vector baselines from their papers, fitted on normal training sessions.

PCA (Xu et al., SOSP 2009): the session x template count matrix, TF-IDF weighted and centred, is
split into a normal subspace (the top principal components, 95% of the variance) and its residual;
a session is anomalous when its squared prediction error (SPE, the squared norm of its projection on
the residual subspace) exceeds the Q-statistic threshold Q_alpha (Jackson & Mudholkar, 1979) at
alpha = 0.001: a threshold from the eigenvalues, not from labels or percentiles. Score: SPE / Q_alpha.

Invariants Mining (Lou et al., USENIX ATC 2010): sparse integer linear relations theta with
X theta = 0 that hold on (nearly) all normal sessions (e.g. #open = #close, #receive = 3 #allocate).
The dimension of the invariant space is the number of (near-)zero singular values of X; invariants
are searched among template subsets of growing size (up to MAX_SUPPORT), each the null vector of its
sub-matrix scaled to small integers, kept when it holds on at least SUPPORT of the sessions and is
independent of those found, until the space is spanned. Score: invariants a session violates (> 0:
anomalous).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

ALPHA_Z = 3.0902  # c_alpha, the standard normal's 1 - 0.001 quantile
MAX_SUPPORT = 3  # templates per invariant (the paper searches small supports first)
SUPPORT = 0.98  # share of normal sessions an invariant must hold on (tolerates a few noisy sessions)
MAX_TEMPLATES = 40  # search among the most frequent templates only (subsets grow as m^3)


def count_matrix(sessions: Sequence[Sequence[int]], vocab_size: int) -> np.ndarray:
    """(N, V) template counts."""
    out = np.zeros((len(sessions), vocab_size))
    for i, s in enumerate(sessions):
        if len(s):
            np.add.at(out[i], np.minimum(np.asarray(s, dtype=np.int64), vocab_size - 1), 1.0)
    return out


class PCADetector:
    def __init__(self, train: Sequence[Sequence[int]], vocab_size: int, variance: float = 0.95) -> None:
        x = count_matrix(train, vocab_size)  # (N, V)
        df = (x > 0).sum(0)  # (V,) sessions each template occurs in
        self.idf = np.log(max(len(x), 1) / np.maximum(df, 1))  # templates in every session weigh 0
        y = x * self.idf
        self.mean = y.mean(0)
        cov = np.cov(y - self.mean, rowvar=False) if len(y) > 1 else np.zeros((vocab_size, vocab_size))
        lam, vec = np.linalg.eigh(cov)  # ascending
        lam, vec = np.clip(lam[::-1], 0.0, None), vec[:, ::-1]
        total = lam.sum()
        k = int(np.searchsorted(np.cumsum(lam) / total, variance) + 1) if total > 0 else 0
        self.P = vec[:, :k]  # (V, k) normal subspace
        rest = lam[k:]
        phi = [float((rest ** i).sum()) for i in (1, 2, 3)]
        if phi[0] <= 0 or phi[1] <= 0:
            self.q = 1e-9  # no residual variance: any residual is anomalous
        else:
            h0 = 1.0 - 2.0 * phi[0] * phi[2] / (3.0 * phi[1] ** 2)
            h0 = h0 if abs(h0) > 1e-6 else 1e-6
            self.q = phi[0] * (ALPHA_Z * np.sqrt(2.0 * phi[1] * h0 ** 2) / phi[0] + 1.0
                               + phi[1] * h0 * (h0 - 1.0) / phi[0] ** 2) ** (1.0 / h0)

    def score(self, sessions: Sequence[Sequence[int]]) -> np.ndarray:
        """(N,) SPE / Q_alpha (> 1: anomalous)."""
        y = count_matrix(sessions, len(self.idf)) * self.idf - self.mean  # (N, V)
        resid = y - (y @ self.P) @ self.P.T  # (N, V) projection on the residual subspace
        return (resid ** 2).sum(1) / self.q


class InvariantsMiner:
    def __init__(self, train: Sequence[Sequence[int]], vocab_size: int) -> None:
        x = count_matrix(train, vocab_size)
        freq = (x > 0).sum(0)
        self.cols = [int(c) for c in np.argsort(-freq, kind="stable")[:MAX_TEMPLATES] if freq[c] > 0]
        self.vocab_size = vocab_size
        self.invariants: list[tuple[list[int], np.ndarray]] = []  # (template ids, integer coefficients)
        if not self.cols or len(x) < 2:
            return
        xs = x[:, self.cols]  # (N, m)
        sv = np.linalg.svd(xs, compute_uv=False)
        dim = int((sv < 1e-6 * max(sv[0], 1.0) + 1e-8 * len(xs)).sum()) + max(0, xs.shape[1] - len(sv))
        found = np.zeros((0, xs.shape[1]))
        for size in range(1, MAX_SUPPORT + 1):
            for sub in itertools.combinations(range(xs.shape[1]), size):
                if len(self.invariants) >= max(dim, 1) * 2:
                    break
                theta = self._null_vector(xs[:, sub])
                if theta is None or np.mean(np.abs(xs[:, sub] @ theta) < 1e-6) < SUPPORT:
                    continue
                full = np.zeros(xs.shape[1])
                full[list(sub)] = theta
                if np.linalg.matrix_rank(np.vstack([found, full])) <= len(found):
                    continue  # implied by the invariants already found
                found = np.vstack([found, full])
                self.invariants.append(([self.cols[j] for j in sub], theta))

    @staticmethod
    def _null_vector(m: np.ndarray) -> np.ndarray | None:
        """The sub-matrix's smallest right singular vector as small integers, or None."""
        _, s, vt = np.linalg.svd(m, full_matrices=False)
        if m.shape[1] > len(s):
            return None
        v = vt[-1]
        nz = np.abs(v) > 1e-9
        if not nz.all():
            return None  # a smaller support carries it
        v = v / np.abs(v).min()
        for scale in (1, 2, 3, 4, 6):
            t = np.round(v * scale)
            if np.allclose(v * scale, t, atol=0.05):
                return t
        return None

    def score(self, sessions: Sequence[Sequence[int]]) -> np.ndarray:
        """(N,) invariants violated (> 0: anomalous)."""
        x = count_matrix(sessions, self.vocab_size)
        out = np.zeros(len(sessions))
        for cols, theta in self.invariants:
            out += np.abs(x[:, cols] @ theta) > 1e-6
        return out
