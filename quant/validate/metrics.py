"""Classification metrics: accuracy, agreement, top-5 overlap, KL divergence, SQNR.

All functions take plain arrays: ``outputs`` [N, C] (logits or probabilities, as the
model emits them) and integer ``labels`` [N] already in the model's output indexing.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

EPS = 1e-12


def to_probabilities(outputs: np.ndarray) -> np.ndarray:
    """Return softmax(outputs) unless the rows already are probability distributions."""
    outputs = outputs.astype(np.float64)
    sums = outputs.sum(axis=1)
    if outputs.min() >= 0 and np.allclose(sums, 1.0, atol=2e-2):
        return outputs / sums[:, None]
    shifted = outputs - outputs.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def top_k(outputs: np.ndarray, k: int) -> np.ndarray:
    """Return the indices [N, k] of the k largest outputs per row, best first.

    Ties are broken by the lower index, so identical outputs give identical rankings.
    """
    return np.argsort(-outputs, axis=1, kind="stable")[:, :k]


def accuracy(outputs: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Return the fraction of rows whose label is among the top ``k`` outputs."""
    hits = (top_k(outputs, k) == np.asarray(labels)[:, None]).any(axis=1)
    return float(hits.mean())


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Return the fraction of rows where both models have the same top-1 class."""
    return float((top_k(a, 1)[:, 0] == top_k(b, 1)[:, 0]).mean())


def top5_overlap(a: np.ndarray, b: np.ndarray, k: int = 5) -> float:
    """Return the mean fraction of shared classes between the two top-``k`` sets."""
    ta, tb = top_k(a, k), top_k(b, k)
    shared = [len(set(x) & set(y)) for x, y in zip(ta, tb, strict=True)]
    return float(np.mean(shared) / k)


def mean_kl(p_ref: np.ndarray, p_test: np.ndarray) -> float:
    """Return mean KL(p_ref || p_test) in nats over rows of probability arrays."""
    p = np.clip(p_ref, EPS, 1.0)
    q = np.clip(p_test, EPS, 1.0)
    return float(max(0.0, np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1))))


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Return the signal-to-quantization-noise ratio 10*log10(|ref|^2 / |ref - test|^2).

    Infinity when the arrays are equal.
    """
    reference = reference.astype(np.float64)
    noise = float(np.sum((reference - test.astype(np.float64)) ** 2))
    signal = float(np.sum(reference**2))
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(max(signal, EPS) / noise))


def disagreements(a: np.ndarray, b: np.ndarray, limit: int = 20) -> list[tuple[int, int, int]]:
    """Return the most frequent (class of a, class of b, count) top-1 disagreements."""
    return _disagreements(top_k(a, 1)[:, 0], top_k(b, 1)[:, 0], limit)


def _disagreements(classes_a: np.ndarray, classes_b: np.ndarray,
                   limit: int) -> list[tuple[int, int, int]]:
    """Return the most frequent (class a, class b, count) where the top-1 classes differ."""
    pairs = Counter((int(x), int(y)) for x, y in zip(classes_a, classes_b, strict=True)
                    if x != y)
    return [(x, y, n) for (x, y), n in pairs.most_common(limit)]


def compare_outputs(float_out: np.ndarray, int8_out: np.ndarray) -> dict[str, float]:
    """Return agreement, top-5 overlap, mean KL and output SQNR (on probabilities)."""
    p_float, p_int8 = to_probabilities(float_out), to_probabilities(int8_out)
    return {
        "agreement": agreement(p_float, p_int8),
        "top5_overlap": top5_overlap(p_float, p_int8),
        "kl_mean": mean_kl(p_float, p_int8),
        "output_sqnr_db": sqnr_db(p_float, p_int8),
    }


def accuracies(outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Return top-1 and top-5 accuracy."""
    return _accuracies(top_k(outputs, min(5, outputs.shape[1])), labels)


def classification_records(int8_out: np.ndarray,
                           float_out: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Return what the classification summary needs of each image, for a batch of outputs.

    Per image: the top-5 classes of each model (of its outputs, and of its probabilities, on
    which agreement and overlap are measured), and the row terms of the KL divergence and of
    the output SQNR. A batch's records do not depend on the other batches, so a set streamed
    in batches of any size gives the summary of the whole set at once.
    """
    k = min(5, int8_out.shape[1])
    records = {"int8_top": top_k(int8_out, k)}
    if float_out is None:
        return records
    p_float, p_int8 = to_probabilities(float_out), to_probabilities(int8_out)
    p, q = np.clip(p_float, EPS, 1.0), np.clip(p_int8, EPS, 1.0)
    records.update({
        "float_top": top_k(float_out, k),
        "float_ptop": top_k(p_float, k), "int8_ptop": top_k(p_int8, k),
        "kl": np.sum(p * (np.log(p) - np.log(q)), axis=1),
        "signal": np.sum(p_float.astype(np.float64) ** 2, axis=1),
        "noise": np.sum((p_float.astype(np.float64) - p_int8) ** 2, axis=1),
    })
    return records


def classification_summary(records: dict[str, np.ndarray],
                           labels: np.ndarray | None) -> dict[str, Any]:
    """Return the accuracies and the float / int8 comparison from all images' records.

    Keys: ``int8`` (and ``float``) ``{"top1", "top5"}`` when there are labels; with float
    records also ``agreement``, ``top5_overlap``, ``kl_mean``, ``output_sqnr_db`` and the
    top-1 ``disagreements`` as (float class, int8 class, count).
    """
    result: dict[str, Any] = {}
    if labels is not None:
        result["int8"] = _accuracies(records["int8_top"], labels)
    if "float_top" not in records:
        return result
    if labels is not None:
        result["float"] = _accuracies(records["float_top"], labels)
    float_p, int8_p = records["float_ptop"], records["int8_ptop"]
    shared = [len(set(a) & set(b)) for a, b in zip(float_p, int8_p, strict=True)]
    noise = float(np.sum(records["noise"]))
    result.update({
        "agreement": float((float_p[:, 0] == int8_p[:, 0]).mean()),
        "top5_overlap": float(np.mean(shared) / 5),
        "kl_mean": float(max(0.0, np.mean(records["kl"]))),
        "output_sqnr_db": (float("inf") if noise == 0 else
                           float(10 * np.log10(max(float(np.sum(records["signal"])), EPS)
                                               / noise))),
    })
    result["disagreements"] = _disagreements(records["float_top"][:, 0],
                                             records["int8_top"][:, 0], 20)
    return result


def _accuracies(top: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1 and top-5 accuracy from each row's top classes, best first."""
    hits = top == np.asarray(labels)[:, None]
    return {"top1": float(hits[:, :1].any(axis=1).mean()), "top5": float(hits.any(axis=1).mean())}
