"""CF-MESMO's acquisition: MESMO's closed form, the correlation-aware integral, pruning, function samples."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from vitforge.sw.coopt.acquisition import (
    AcquisitionConfig,
    RffSample,
    eg_information,
    keep_fidelity,
    mesmo_information,
)
from vitforge.sw.coopt.surrogate import fit_models

CFG = AcquisitionConfig(quad_points=401, quad_range=10.0)


def test_mesmo_information_closed_form():
    g = np.array([-1.0, 0.0, 2.0])
    want = g * norm.pdf(g) / (2 * norm.cdf(g)) - np.log(norm.cdf(g))
    np.testing.assert_allclose(mesmo_information(g), want, rtol=1e-12)


def test_eg_information_vanishes_without_correlation_and_grows_with_it():
    g = np.full(5, 0.3)
    info = eg_information(g, np.array([0.0, 0.3, 0.6, 0.9, 0.99]), CFG)
    assert info[0] == pytest.approx(0.0, abs=1e-6)
    assert np.all(np.diff(info) > 0)


def test_eg_information_approaches_mesmo_as_rho_goes_to_one():
    # At rho -> 1 the low-fidelity value is the top-fidelity value: the entropy of a Gaussian
    # truncated at gamma, i.e. MESMO's formula. The quadrature grid (0.05 wide) limits agreement.
    g = np.array([-0.5, 0.0, 0.5, 1.5])
    np.testing.assert_allclose(eg_information(g, np.full(4, 0.999), CFG), mesmo_information(g), atol=0.06)


def test_bad_acquisition_config():
    with pytest.raises(ValueError, match=r"info_gain must be one of .* not 'xx'"):
        AcquisitionConfig(info_gain="xx")
    with pytest.raises(ValueError, match="fidelity_levels must be >= 2"):
        AcquisitionConfig(fidelity_levels=1)


def test_pruning_keeps_the_top_fidelity_and_uncertain_cheap_fidelities():
    sd = np.array([[0.05, 0.01], [0.5, 0.01], [0.01, 0.01]])
    rel = np.array([0.01, 0.01, 1.0])
    top = np.array([False, False, True])
    np.testing.assert_array_equal(keep_fidelity(sd, rel, top, d=2, xi=0.5), [False, True, True])


def test_rff_samples_scatter_around_the_gp_posterior():
    rng = np.random.default_rng(0)
    x = np.hstack([rng.random((12, 2)), np.ones((12, 1))])
    y = np.stack([np.sin(5 * x[:, 0]) + x[:, 1], x[:, 0] ** 2], axis=1)
    models = fit_models(x, y, seed=0)
    test = np.hstack([rng.random((30, 2)), np.ones((30, 1))])
    mu, sd = models.predict(test)
    draws = np.stack([RffSample(models, 512, rng)(test) for _ in range(64)])  # standardized
    draws = models.y_mean + models.y_std * draws
    # 64 draws of a 512-feature approximation: the sample mean within 3 standard errors plus the
    # feature approximation's error (a tenth of the prior sd) of the GP's mean.
    err = np.abs(draws.mean(axis=0) - mu)
    assert np.all(err < 3 * sd / 8 + 0.1 * models.y_std)
