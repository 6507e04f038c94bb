"""Scorer cost per window in CPU time, indexed scorer against the exhaustive one (logad.exhaustive)
in the same run (bench/scorer.py's first part; not a bench itself).

    scorer_cost(det, windows)   CPU us per window of Detector.score_windows (score cache off, details
                                on, as the streaming scorer calls it), best of --repeat, and its parts:
                                model (distinct-prefix forward + per-event scores), count scores,
                                alignment scores
    growth(det, sizes)          count + alignment cost per window as the normal reference grows to
                                `sizes` distinct windows (the bundle's, then perturbed copies of them),
                                and the alignment's by the window's distance to the nearest one
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence


def cpu_us(fn: Callable[[], object], n: int, repeat: int) -> float:
    """Best of `repeat` CPU times of fn(), in microseconds per item (n items)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best / max(1, n) * 1e6


def exhaustive(det):
    """The same detector with the exhaustive scorer and no de-duplication: the baseline."""
    from logad.exhaustive import ExhaustiveWindowScorer

    s = det.scorer
    det.scorer = ExhaustiveWindowScorer(s.model, s.reference, bos=s.bos, pad=s.pad, topk=s.topk, device=s.device,
                                        instability=s.instability)
    det.dedupe = False
    return det


def perturb(ids: Sequence[int], rate: float, rng: random.Random) -> tuple[int, ...]:
    """Each event dropped, duplicated or swapped with the next at `rate` (a third each)."""
    out = list(ids)
    i = 0
    while i < len(out):
        if rng.random() < rate:
            op = rng.randrange(3)
            if op == 0 and len(out) > 1:
                del out[i]
                continue
            if op == 1:
                out.insert(i, out[i])
                i += 2
                continue
            if i + 1 < len(out):
                out[i], out[i + 1] = out[i + 1], out[i]
        i += 1
    return tuple(out)


def parts(scorer, windows: Sequence, repeat: int, model_too: bool = True) -> dict[str, float]:
    """CPU us per window of each part of WindowScorer.score_ids on these windows (in batches of 64,
    as the streaming scorer runs them)."""
    import torch

    batches = [[(w.ids, w.n_context) for w in windows[a:a + 64]] for a in range(0, len(windows), 64)]

    def model() -> None:
        with torch.inference_mode():
            for b in batches:
                scorer._log_probs(b)

    counts = [scorer._count_vectors([ids for ids, _ in b]) for b in batches]
    novel = [(c[:, ~scorer._seen] > 0).any(-1) for c in counts]

    def count() -> None:
        for c, nv in zip(counts, novel):
            scorer._count_scores(c, nv)

    def align() -> None:
        for b, nv in zip(batches, novel):
            scorer._traces.scores([ids for ids, _ in b], nv.tolist())

    n = len(windows)
    out = {"count": cpu_us(count, n, repeat), "alignment": cpu_us(align, n, repeat)}
    return {"model": cpu_us(model, n, repeat), **out} if model_too else out


def diverse(windows: Sequence, rate: float, seed: int = 7) -> list:
    """The windows with their ids perturbed at `rate` (mostly distinct, as a real stream's misses), no
    longer than they were (the model's context)."""
    import dataclasses

    rng = random.Random(seed)
    return [dataclasses.replace(w, ids=perturb(w.ids, rate, rng)[: len(w.ids)], n_context=0) for w in windows]


def growth(det, queries: Sequence, sizes: Sequence[int], repeat: int, seed: int = 0) -> list[dict]:
    """Count + alignment CPU us per window against normal references of `sizes` distinct windows:
    the bundle's own, then copies perturbed at 5 % (distinct, normal-looking), indexed vs exhaustive."""
    from logad.exhaustive import ExhaustiveWindowScorer
    from logad.scoring import WindowScorer, build_reference

    rng = random.Random(seed)
    base = det.reference.trace_list()
    refs = list(dict.fromkeys(tuple(t) for t in base))
    while len(refs) < max(sizes):
        refs = list(dict.fromkeys(refs + [perturb(rng.choice(base), 0.05, rng) for _ in range(max(sizes))]))
    s, V, unk = det.scorer, det.bundle.model.cfg.vocab_size, det.bundle.vocab.UNK
    out = []
    for size in sizes:
        ref = build_reference(refs[:size], V, unk)
        row = {"size": size, "count_vectors": len(ref.counts)}
        scorers = {name: cls(s.model, ref, bos=s.bos, pad=s.pad, topk=s.topk, instability=s.instability)
                   for name, cls in (("indexed", WindowScorer), ("exhaustive", ExhaustiveWindowScorer))}
        ops = scorers["exhaustive"]._traces.scores([w.ids for w in queries], [False] * len(queries))[2]
        # the windows by their distance to the nearest normal window: 0 (a normal window), 1, 2, 3 or more
        by = {k: [w for w, o in zip(queries, ops) if min(int(o), 3) == k] for k in range(4)}
        row["by_distance"] = {k: len(v) for k, v in by.items()}
        for name, sc in scorers.items():
            row[name] = parts(sc, queries, repeat, model_too=False)
            row[name]["by_distance"] = {k: parts(sc, v, repeat, model_too=False)["alignment"] if v else float("nan")
                                        for k, v in by.items()}
        out.append(row)
    return out
