"""The full-information bound's logistic regression, on seeded synthetic data."""

from __future__ import annotations

import numpy as np

from bench.prompt_signal import fit_logistic, length_matrix


def test_logistic_fit_finds_the_signal_and_the_penalty_shrinks_it() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = (rng.random(400) < 1 / (1 + np.exp(-(2 * x[:, 0] - 0.5)))).astype(float)
    loose, tight = fit_logistic(x, y, 0.01), fit_logistic(x, y, 1_000.0)
    assert 1.5 < loose[0] < 2.6 and abs(loose[1]) < 0.3 and abs(loose[2]) < 0.3
    assert -0.8 < loose[-1] < -0.2
    assert abs(tight[0]) < 0.2 * loose[0]


def test_prompt_length_is_log_words() -> None:
    assert length_matrix(["", "one two three"]).tolist() == [[0.0], [np.log1p(3) / 10]]
