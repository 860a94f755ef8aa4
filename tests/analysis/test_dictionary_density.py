"""The histogram of all features' densities, against numpy's histogram of their log10."""

import numpy as np
import pytest

from monosemantic.analysis.dictionary_density import density_histogram


@pytest.mark.parametrize(
    "densities",
    [
        [0.0, 0.0, 3e-5, 1e-4, 0.00037, 0.01, 0.0125, 0.2, 0.5, 1.0],  # edges exactly, and density 1
        list(np.random.default_rng(0).uniform(0, 1, 500) ** 6),
        [0.0, 0.0],
    ],
)
def test_counts_match_numpy_on_log_densities(densities):
    got = density_histogram(densities)
    fired = np.array([d for d in densities if d > 0])
    assert got["never"] == len(densities) - len(fired)
    assert got["log_edges"][-1] == 0 and np.allclose(np.diff(got["log_edges"]), 0.25)
    if len(fired):
        assert got["log_edges"][0] <= np.log10(fired.min()) < got["log_edges"][0] + 1
    want, _ = np.histogram(np.log10(fired), bins=got["log_edges"])  # numpy: the last bin holds its right edge
    assert got["counts"] == want.tolist() and sum(got["counts"]) == len(fired)
