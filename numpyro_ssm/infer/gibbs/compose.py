"""Gibbs steps that compose: one ``gibbs_fn`` for ``numpyro.infer.HMCGibbs`` from several.

``HMCGibbs`` takes a single ``gibbs_fn(rng_key, gibbs_sites, hmc_sites)``. A blocked Gibbs
sampler updates its blocks one after the other, each given the newest values of the others.
:func:`compose_gibbs` builds that ``gibbs_fn`` from *steps* ``step(rng_key, sites) -> updates``:
each step sees every site (HMC and Gibbs, the Gibbs ones as updated by the steps before it) and
returns new values for the sites it owns.
"""

from collections.abc import Callable

import jax

__all__ = ["compose_gibbs"]


def compose_gibbs(*steps: Callable) -> Callable:
    """Chain Gibbs steps into one ``gibbs_fn`` for ``numpyro.infer.HMCGibbs``.

    Args:
        *steps: callables ``step(rng_key, sites) -> dict`` of new values for some Gibbs sites,
            given ``sites``, a dict of every site's current value (e.g. the steps of
            :mod:`numpyro_ssm.infer.gibbs.switching`).

    Returns:
        ``gibbs_fn(rng_key, gibbs_sites, hmc_sites)`` returning the new values of all
        ``gibbs_sites`` (those no step updates keep their value).

    Raises:
        ValueError: when no step is given, or a step returns a site that is not a Gibbs site.

    Example:
        >>> gibbs_fn = compose_gibbs(path_step("z", arhmm_fn), transition_step("P", "z", ...))
        >>> kernel = HMCGibbs(NUTS(model), gibbs_fn=gibbs_fn, gibbs_sites=["z", "P"])
    """
    if not steps:
        raise ValueError("compose_gibbs: give at least one step.")

    def gibbs_fn(rng_key, gibbs_sites, hmc_sites):
        sites = {**hmc_sites, **gibbs_sites}
        new = {}
        for step, key in zip(steps, jax.random.split(rng_key, len(steps)), strict=True):
            updates = step(key, sites)
            unknown = set(updates) - set(gibbs_sites)
            if unknown:
                raise ValueError(
                    f"compose_gibbs: a step returned {sorted(unknown)}, which are not Gibbs "
                    f"sites (the Gibbs sites are {sorted(gibbs_sites)})."
                )
            sites.update(updates)
            new.update(updates)
        return {name: new.get(name, value) for name, value in gibbs_sites.items()}

    return gibbs_fn
