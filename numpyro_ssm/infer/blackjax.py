"""Run BlackJAX NUTS/HMC on a NumPyro model's unconstrained potential.

BlackJAX (the ``blackjax`` extra) is imported inside :func:`run_blackjax` only.
"""

from contextlib import nullcontext
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from numpyro.infer.util import initialize_model

__all__ = ["BlackJAXResult", "run_blackjax"]


class BlackJAXResult(NamedTuple):
    """What :func:`run_blackjax` returns.

    Attributes:
        samples: dict site name -> constrained draws of shape ``(chains, draws, ...)``, with
            the model's deterministic sites.
        sample_stats: dict of ``(chains, draws)`` arrays: ``diverging``, ``acceptance_rate``,
            ``n_steps`` (integration steps), ``lp`` (log density in the unconstrained space).
        inference_data: the ``arviz.InferenceData`` (an ``xarray.DataTree`` with ArviZ 1.x)
            from :func:`~numpyro_ssm.infer.to_inference_data` (None with
            ``return_inference_data=False``).
        adaptation: the adapted parameters per chain (``step_size``, ``inverse_mass_matrix``).
    """

    samples: dict
    sample_stats: dict
    inference_data: Any
    adaptation: dict


def run_blackjax(
    model,
    *model_args,
    key,
    num_warmup,
    num_samples,
    num_chains=1,
    algorithm="nuts",
    num_integration_steps=16,
    target_acceptance_rate=0.8,
    progress_bar=False,
    return_inference_data=True,
    coords=None,
    dims=None,
    **model_kwargs,
):
    """Sample a NumPyro model's parameters with BlackJAX, chains vectorized with ``vmap``.

    Steps: :func:`numpyro.infer.util.initialize_model` gives the unconstrained potential and
    ``postprocess_fn``; BlackJAX's Stan-style ``window_adaptation`` tunes the step size and a
    diagonal mass matrix for ``num_warmup`` steps; NUTS (or HMC with
    ``num_integration_steps``) draws ``num_samples``; the draws are mapped back to the
    constrained space (deterministic sites included).

    Args:
        model: a NumPyro model; SSM sites are marginalized, so all latent sites are continuous.
        *model_args: positional arguments of ``model``.
        key: a ``jax.random`` key (required, never defaulted).
        num_warmup: adaptation steps per chain.
        num_samples: draws kept per chain.
        num_chains: independent chains, run together with ``jax.vmap``.
        algorithm: ``"nuts"`` or ``"hmc"``.
        num_integration_steps: leapfrog steps per HMC proposal (``algorithm="hmc"`` only).
        target_acceptance_rate: the adaptation's target mean acceptance probability.
        progress_bar: show BlackJAX's progress bar (``blackjax.progress_bar``, which needs
            BlackJAX's ``progress`` extra, ``jaxtap``).
        return_inference_data: also build ArviZ's container (needs the ``arviz`` extra).
        coords: coordinates for the ``InferenceData``, e.g. ``{"time": years}``.
        dims: dims by variable name for the ``InferenceData``.
        **model_kwargs: keyword arguments of ``model``.

    Returns:
        A :class:`BlackJAXResult` ``(samples, sample_stats, inference_data, adaptation)``.

    Raises:
        ValueError: for an unknown ``algorithm``.
    """
    try:
        import blackjax
        from blackjax.util import run_inference_algorithm
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "run_blackjax needs the blackjax extra: pip install 'numpyro-ssm[blackjax]'."
        ) from err
    if algorithm not in ("nuts", "hmc"):
        raise ValueError(f"run_blackjax: algorithm must be 'nuts' or 'hmc', got {algorithm!r}.")
    init_key, warmup_key, sample_key = jax.random.split(key, 3)
    info = initialize_model(
        jax.random.split(init_key, num_chains),
        model,
        model_args=model_args,
        model_kwargs=model_kwargs,
    )
    potential_fn, postprocess_fn = info.potential_fn, info.postprocess_fn

    def logdensity_fn(position):
        return -potential_fn(position)

    if algorithm == "nuts":
        kernel, extra = blackjax.nuts, {}
    else:
        kernel, extra = blackjax.hmc, {"num_integration_steps": num_integration_steps}
    warmup = blackjax.window_adaptation(
        kernel, logdensity_fn, target_acceptance_rate=target_acceptance_rate, **extra
    )

    def one_chain(warm_key, draw_key, position):
        (state, parameters), _ = warmup.run(warm_key, position, num_steps=num_warmup)
        sampler = kernel(logdensity_fn, **{**extra, **parameters})

        def transform(state, info):
            return (
                state.position,
                state.logdensity,
                info.is_divergent,
                info.acceptance_rate,
                info.num_integration_steps,
            )

        _, trace = run_inference_algorithm(
            draw_key,
            sampler,
            num_samples,
            initial_state=state,
            transform=transform,
        )
        return trace, parameters

    chains = jax.jit(jax.vmap(one_chain))
    display = blackjax.progress_bar(label="run_blackjax") if progress_bar else nullcontext()
    with display:
        (positions, logdensity, divergent, acceptance, steps), parameters = chains(
            jax.random.split(warmup_key, num_chains),
            jax.random.split(sample_key, num_chains),
            info.param_info.z,
        )
    constrained = jax.vmap(jax.vmap(postprocess_fn))(positions)
    samples = {k: jnp.asarray(v) for k, v in constrained.items()}
    stats = {
        "diverging": divergent,
        "acceptance_rate": acceptance,
        "n_steps": jnp.broadcast_to(steps, divergent.shape),
        "lp": logdensity,
    }
    idata = None
    if return_inference_data:
        from numpyro_ssm.infer.arviz import to_inference_data

        idata = to_inference_data(
            samples,
            model,
            *model_args,
            coords=coords,
            dims=dims,
            sample_stats=stats,
            **model_kwargs,
        )
    return BlackJAXResult(samples, stats, idata, parameters)
