"""benchmarks/validation_noise.py: posterior draws of the validation recall ART allocates by."""

import numpy as np
import pytest
from scipy import stats

from benchmark_helpers import load_benchmark


@pytest.fixture(scope="module")
def noise():
    return load_benchmark("validation_noise")


def test_draws_follow_the_jeffreys_posterior_of_each_scored_predicate(noise):
    recall = {"carrying": 1.0, "riding": 0.5, "on": 0.25, "never scored": 0.0, "no validation": 0.4}
    support = {"carrying": 1, "riding": 2, "on": 200, "never scored": 3}
    scored = {"carrying", "riding", "on", "no validation"}
    rng = np.random.default_rng(0)
    draws = [noise.posterior_recall(recall, support, scored, 1, rng) for _ in range(4000)]
    # unscored predicates and predicates without validation positives keep the measured recall
    assert {draw["never scored"] for draw in draws} == {0.0} and {draw["no validation"] for draw in draws} == {0.4}
    for predicate, recalled, count in (("carrying", 1, 1), ("riding", 1, 2), ("on", 50, 200)):
        values = np.array([draw[predicate] for draw in draws])
        posterior = stats.beta(recalled + 0.5, count - recalled + 0.5)
        assert abs(values.mean() - posterior.mean()) < 4 * posterior.std() / np.sqrt(len(values))
        assert stats.kstest(values, posterior.cdf).pvalue > 0.001
    assert np.std([draw["carrying"] for draw in draws]) > 0.1  # one relation says little


def test_a_larger_split_narrows_the_draws_around_the_same_recall(noise):
    recall, support = {"standing on": 1 / 3}, {"standing on": 3}
    rng = np.random.default_rng(1)
    spread = {}
    for factor in (1, 5):
        values = np.array([noise.posterior_recall(recall, support, {"standing on"}, factor, rng)["standing on"] for _ in range(4000)])
        spread[factor] = values.std()
        expected = stats.beta(factor + 0.5, 2 * factor + 0.5)
        assert values.std() == pytest.approx(expected.std(), rel=0.05)
    assert spread[5] < 0.55 * spread[1]
