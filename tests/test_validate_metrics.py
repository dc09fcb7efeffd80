"""Classification metrics and layer alignment on hand-made cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from quant.validate import layers, metrics


def test_identical_outputs() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 7))
    result = metrics.compare_outputs(logits, logits.copy())
    assert result["agreement"] == 1.0 and result["top5_overlap"] == 1.0
    assert result["kl_mean"] == pytest.approx(0.0, abs=1e-12)
    assert math.isinf(result["output_sqnr_db"])


def test_accuracy_and_drop() -> None:
    outputs = np.array([[0.1, 0.7, 0.2], [0.8, 0.1, 0.1], [0.3, 0.3, 0.4], [0.2, 0.5, 0.3]])
    labels = np.array([1, 0, 0, 2])
    assert metrics.accuracy(outputs, labels, 1) == 0.5
    assert metrics.accuracy(outputs, labels, 2) == 1.0
    # Ties go to the lower index: row 2 ranks class 0 before class 1.
    assert metrics.top_k(outputs, 2)[2].tolist() == [2, 0]


def test_agreement_overlap_and_disagreements() -> None:
    a = np.eye(4)[[0, 1, 2, 3]] + 0.01 * np.arange(4)
    b = np.eye(4)[[0, 1, 1, 3]] + 0.01 * np.arange(4)
    assert metrics.agreement(a, b) == 0.75
    assert metrics.disagreements(a, b) == [(2, 1, 1)]
    assert metrics.top5_overlap(a, b, k=2) == pytest.approx((2 + 2 + 1 + 2) / 8)


def test_kl_known_value() -> None:
    p = np.array([[0.5, 0.5]])
    q = np.array([[0.9, 0.1]])
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert metrics.mean_kl(p, q) == pytest.approx(expected)


def test_probabilities_detected_and_softmaxed() -> None:
    probs = np.array([[0.25, 0.75], [1.0, 0.0]])
    assert np.allclose(metrics.to_probabilities(probs), probs)
    logits = np.array([[0.0, math.log(3.0)]])
    assert np.allclose(metrics.to_probabilities(logits), [[0.25, 0.75]])


def test_sqnr_known_value() -> None:
    ref = np.array([3.0, 4.0])  # signal energy 25
    test = np.array([3.0, 3.0])  # noise energy 1
    assert metrics.sqnr_db(ref, test) == pytest.approx(10 * math.log10(25))


def _op(position: int, op: str, shape: tuple[int, ...]) -> layers._Op:
    return layers._Op(position, op, position, f"t{position}", shape)


def test_align_ops_skips_unmatched() -> None:
    float_ops = [_op(0, "CONV_2D", (1, 8, 8, 4)), _op(1, "ADD", (1, 8, 8, 4)),
                 _op(2, "MEAN", (1, 4))]
    int8_ops = [_op(0, "CONV_2D", (1, 8, 8, 4)), _op(1, "PAD", (1, 9, 9, 4)),
                _op(2, "ADD", (1, 8, 8, 4)), _op(3, "MEAN", (1, 4))]
    pairs = layers.align_ops(float_ops, int8_ops)
    assert [(f.position, q.position) for f, q in pairs] == [(0, 0), (1, 2), (2, 3)]
