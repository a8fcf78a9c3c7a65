import random

from router_service.observed_costs import ObservedCosts


def test_estimate_bounds_any_mix_of_input_and_output_for_linear_prices() -> None:
    rng = random.Random(3)
    p_in, p_out = 0.2e-6, 1.5e-6
    costs = ObservedCosts()
    assert costs.estimate("m", "x", 10, 10) is None
    for _ in range(20):
        inputs, outputs = rng.randint(1, 50_000), rng.randint(1, 5_000)
        costs.record("m", "x", p_in * inputs + p_out * outputs, inputs, outputs)
    for _ in range(200):
        inputs, outputs = rng.randint(0, 100_000), rng.randint(0, 10_000)
        estimate = costs.estimate("m", "x", inputs, outputs)
        assert estimate is not None and estimate >= p_in * inputs + p_out * outputs
    assert costs.estimate("m", "other-type", 100, 100) is not None, "falls back to the model"
