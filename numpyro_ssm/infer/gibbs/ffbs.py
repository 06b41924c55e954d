r"""An exact FFBS Gibbs step for the latent path under ``numpyro.infer.HMCGibbs``.

With a model that samples the latent path explicitly (a site ``z`` of shape ``(..., T)`` for a
discrete chain, or ``(..., T, S)`` for a Gaussian state sequence), ``HMCGibbs`` alternates

.. math::

    z_{1:T} \sim p(z_{1:T} \mid y_{1:T}, \theta) \quad \text{(exact, blocked: FFBS)}, \qquad
    \theta \sim p(\theta \mid z_{1:T}, y_{1:T}) \quad \text{(one NUTS/HMC step)}.

:func:`ffbs_gibbs_fn` builds the first half from a function of the HMC sites that returns the
same model with the path marginalized: a :class:`~numpyro_ssm.DiscreteHMM` or
:class:`~numpyro_ssm.LinearGaussianSSM` (or the HMM pieces). The marginalized model (``y ~
DiscreteHMM``, NUTS on :math:`\theta` only, paths from
:func:`~numpyro_ssm.infer.posterior_latents`) targets the same posterior and usually mixes
better; the Gibbs route is there when the path must be a site of the model (e.g. when other
parts of the model depend on it).
"""

from collections.abc import Callable

import jax.numpy as jnp

from numpyro_ssm.ops.hmm import hmm_posterior_sample

__all__ = ["ffbs_gibbs_fn"]


def ffbs_gibbs_fn(site: str, ssm_fn: Callable, observations=None, *, parallel=False):
    """Build ``gibbs_fn(rng_key, gibbs_sites, hmc_sites)`` drawing ``site`` by exact FFBS.

    Args:
        site: name of the model's latent-path sample site, the one Gibbs site.
        ssm_fn: maps ``hmc_sites`` (dict of the HMC sample sites' constrained values;
            deterministic sites are not included) to either

            - an SSM distribution with ``sample_posterior(key, observations)``:
              :class:`~numpyro_ssm.DiscreteHMM` (path ``(..., T)`` ints) or
              :class:`~numpyro_ssm.LinearGaussianSSM` (path ``(..., T, S)``); or
            - a tuple ``(initial_probs (..., K), transition_matrix (K, K) or (..., T-1 | 1, K,
              K), log_likelihoods (..., T, K))`` for
              :func:`~numpyro_ssm.ops.hmm_posterior_sample`, where ``log_likelihoods[t, k] =
              log p(y_t | z_t = k, theta)``; ``observations`` is then not needed.
        observations: the observed data ``y``, shape ``batch + (T,) + E``, passed to
            ``sample_posterior`` (first form only).
        parallel: with the tuple form, run FFBS with associative scans.

    Returns:
        ``gibbs_fn`` for ``numpyro.infer.HMCGibbs(NUTS(model), gibbs_fn=gibbs_fn,
        gibbs_sites=[site])``; the new path has the dtype of the current one.

    Raises:
        ValueError: when ``ssm_fn`` returns neither form, or the SSM form gets no
            ``observations``.

    Example:
        >>> def model(y):  # the path z is an explicit site
        ...     rates = numpyro.sample("rates", dist.Gamma(2.0, 0.2).expand([2]).to_event(1))
        ...     z = numpyro.sample("z", dist.Categorical(jnp.ones(2) / 2).expand([T]).to_event(1))
        ...     numpyro.factor("z_prior", jnp.log(A[z[:-1], z[1:]]).sum())
        ...     numpyro.sample("y", dist.Poisson(rates[z]).to_event(1), obs=y)
        >>> gibbs_fn = ffbs_gibbs_fn(
        ...     "z", lambda s: DiscreteHMM(jnp.ones(2) / 2, A, dist.Poisson(s["rates"]),
        ...                                num_steps=T), observations=y)
        >>> kernel = HMCGibbs(NUTS(model), gibbs_fn=gibbs_fn, gibbs_sites=["z"])
    """

    def gibbs_fn(rng_key, gibbs_sites, hmc_sites):
        model = ssm_fn(hmc_sites)
        if isinstance(model, tuple):
            if len(model) != 3:
                raise ValueError(
                    "ffbs_gibbs_fn: ssm_fn must return an SSM distribution or the tuple "
                    f"(initial_probs, transition_matrix, log_likelihoods); got {len(model)} items."
                )
            initial_probs, transition_matrix, log_likelihoods = model
            path = hmm_posterior_sample(
                rng_key, initial_probs, transition_matrix, log_likelihoods, parallel=parallel
            )
        elif callable(getattr(model, "sample_posterior", None)):
            if observations is None:
                raise ValueError(
                    "ffbs_gibbs_fn: ssm_fn returned a distribution; pass observations=y so "
                    "that its sample_posterior(key, y) can be called."
                )
            path = model.sample_posterior(rng_key, observations)
        else:
            raise ValueError(
                "ffbs_gibbs_fn: ssm_fn must return a state space model (with sample_posterior) or "
                "the tuple "
                f"(initial_probs, transition_matrix, log_likelihoods), got {type(model).__name__}."
            )
        current = gibbs_sites.get(site)
        if current is not None:
            path = jnp.asarray(path, dtype=jnp.result_type(current))
        return {site: path}

    return gibbs_fn
