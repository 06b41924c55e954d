r"""Hamilton's (1989) Markov-switching autoregression with a switching mean, as an ARHMM.

.. math::

    y_t - \mu_{s_t} = \sum_{i=1}^{p} \phi_i \big(y_{t-i} - \mu_{s_{t-i}}\big) + \varepsilon_t,
    \qquad \varepsilon_t \sim \mathcal N(0, \sigma^2),

with a Markov chain ``s_t`` of ``R`` regimes. The lags depend on *past* regimes through their
means, so the model is an :class:`~numpyro_ssm.AutoregressiveHMM` over the ``R^{p+1}`` tuples
``(s_t, s_{t-1}, ..., s_{t-p})``: the AR matrix is ``[φ_1, ..., φ_p]`` in every tuple, the bias
is ``μ_{s_t} - Σ_i φ_i μ_{s_{t-i}}``, and a tuple can only move to the tuples that shift it by
one (a transition matrix with structural zeros). The chain starts from the tuples' stationary
distribution and the first ``p`` observations are conditioned on, as in Hamilton (1989) and
statsmodels' ``MarkovAutoregression``.
"""

import itertools

import jax.numpy as jnp
import numpy as np

from numpyro_ssm.distributions.arhmm import AutoregressiveHMM
from numpyro_ssm.ops.hmm import stationary_distribution

__all__ = ["mean_switching_autoregression"]


def mean_switching_autoregression(
    transition_matrix, means, ar_coefficients, noise_variance, *, num_steps, parallel=False
):
    """Build Hamilton's mean-switching AR(p) as an :class:`~numpyro_ssm.AutoregressiveHMM`.

    Args:
        transition_matrix: shape ``(R, R)``, the regimes' ``p(s_{t+1} = j | s_t = i)``.
        means: shape ``(R,)``, ``μ_r``.
        ar_coefficients: shape ``(p,)``, ``φ_1, ..., φ_p``.
        noise_variance: ``σ² > 0``.
        num_steps: ``T``, the length of the observed series (the first ``p`` are conditioned
            on).
        parallel: use the associative scans.

    Returns:
        ``(model, regimes)``: an :class:`~numpyro_ssm.AutoregressiveHMM` over ``R^{p+1}``
        tuple states with ``event_shape (T, 1)``, and an int array ``(R^{p+1},)`` with the
        current regime ``s_t`` of each tuple (sum the smoothed probabilities over the tuples of
        a regime to get ``p(s_t = r | y)``).
    """
    P = jnp.asarray(transition_matrix)
    mu = jnp.asarray(means)
    phi = jnp.asarray(ar_coefficients)
    R, order = P.shape[-1], phi.shape[-1]
    tuples = np.array(list(itertools.product(range(R), repeat=order + 1)))  # (s_t, ..., s_{t-p})
    index = {tuple(t): i for i, t in enumerate(tuples)}
    n = len(tuples)
    source, target, regime_from, regime_to = [], [], [], []
    for i, t in enumerate(tuples):
        for nxt in range(R):
            source.append(i)
            target.append(index[(nxt,) + tuple(t[:-1])])
            regime_from.append(t[0])
            regime_to.append(nxt)
    expanded = (
        jnp.zeros((n, n), P.dtype)
        .at[np.array(source), np.array(target)]
        .set(P[np.array(regime_from), np.array(regime_to)])
    )
    stationary = stationary_distribution(P)
    # p(s_t, ..., s_{t-p}) = pi(s_{t-p}) prod_j P[s_{t-j-1}, s_{t-j}]
    initial = stationary[tuples[:, -1]]
    for j in range(order):
        initial = initial * P[tuples[:, j + 1], tuples[:, j]]
    bias = mu[tuples[:, 0]] - (phi * mu[tuples[:, 1:]]).sum(-1)
    model = AutoregressiveHMM(
        initial,
        expanded,
        jnp.broadcast_to(phi, (n, 1, order)),
        ar_bias=bias[:, None],
        ar_cov=jnp.broadcast_to(jnp.reshape(noise_variance, (1, 1, 1)), (n, 1, 1)),
        num_steps=num_steps,
        parallel=parallel,
    )
    return model, jnp.asarray(tuples[:, 0])
