r"""State durations and usages of sampled paths, and the durations a sticky prior implies.

**Runs.** A *run* is a maximal stretch of valid steps in one state. :func:`state_runs` marks
where runs start, their lengths and whether they are *censored* (cut by the start or end of the
valid region, so their length is a lower bound). Everything is vectorized over leading axes
(posterior draws, sequences) and jittable; :func:`duration_counts` and :func:`state_usage` reduce
the runs to histograms.

**Prior durations.** Under a sticky Dirichlet row ``P_k ~ Dir(α w + κ e_k)`` the
self-transition probability is ``P_kk ~ Beta(a, b)`` with ``a = α w_k + κ`` and ``b = α Σ_{j≠k}
w_j``, and a visit to ``k`` lasts a geometric number of steps with mean ``1 / (1 - P_kk)``.
Averaged over the prior,

.. math::

    \mathrm E[\text{duration}] = \mathrm E\Big[\frac{1}{1 - P_{kk}}\Big] = \frac{a + b - 1}{b - 1}
    \quad (b > 1),

and infinite for ``b <= 1``. It is linear in ``κ``, so :func:`stickiness_for_duration` inverts
it: the ``κ`` whose prior expected duration is a target (users tune ``κ`` that way).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from numpyro_ssm.ops.hmm.counts import concrete_check

__all__ = [
    "StateRuns",
    "duration_counts",
    "expected_duration",
    "state_runs",
    "state_usage",
    "stickiness_for_duration",
]


class StateRuns(NamedTuple):
    """Runs of equal states in paths of shape ``(..., T)``; every field has that shape.

    Attributes:
        starts: bool, True where a run starts.
        lengths: int, the length of the run starting at ``t`` (0 where none starts).
        censored: bool, True at the start of a run that touches the start or the end of the
            valid region (its true duration may be longer).
        states: int, the state of the run starting at ``t`` (the path itself).
    """

    starts: jax.Array
    lengths: jax.Array
    censored: jax.Array
    states: jax.Array


def state_runs(states, *, mask=None) -> StateRuns:
    """Find the runs of equal states in paths.

    Args:
        states: int, shape ``(..., T)``.
        mask: bool, broadcasting to ``(..., T)``, True where a step is valid; a masked step
            ends a run (and censors it).

    Returns:
        A :class:`StateRuns`.
    """
    z = jnp.asarray(states)
    T = z.shape[-1]
    valid = jnp.ones(z.shape, bool) if mask is None else jnp.broadcast_to(mask, z.shape)
    false = jnp.zeros(z.shape[:-1] + (1,), bool)
    same_as_previous = jnp.concatenate([false, (z[..., 1:] == z[..., :-1]) & valid[..., :-1]], -1)
    starts = valid & ~same_as_previous
    continues = jnp.concatenate([same_as_previous[..., 1:] & valid[..., 1:], false], -1)
    position = jnp.arange(T)
    # the last step of the run through t: the first t' >= t that does not continue
    last = lax.cummin(jnp.where(continues, T, position), axis=z.ndim - 1, reverse=True)
    lengths = jnp.where(starts, last - position + 1, 0)
    previous_valid = jnp.concatenate([false, valid[..., :-1]], -1)
    end = jnp.clip(last, 0, T - 1)
    next_valid = jnp.take_along_axis(jnp.concatenate([valid[..., 1:], false], -1), end, -1)
    censored = starts & (~previous_valid | ~next_valid)
    return StateRuns(starts, lengths, censored, z)


def duration_counts(states, num_states, max_duration, *, mask=None, include_censored=False):
    """Histogram of run lengths per state: ``[..., k, d - 1]`` runs of state ``k`` lasting ``d``.

    Args:
        states: int, shape ``(..., T)``.
        num_states: ``K``.
        max_duration: the number of bins; longer runs go into the last bin.
        mask: bool, broadcasting to ``(..., T)``, True where valid.
        include_censored: also count runs cut by the valid region's boundaries.

    Returns:
        int32, shape ``(..., K, max_duration)``.
    """
    runs = state_runs(states, mask=mask)
    counted = runs.starts & (include_censored | ~runs.censored)
    duration = jnp.clip(runs.lengths, 1, max_duration) - 1
    one_state = jax.nn.one_hot(runs.states, num_states, dtype=jnp.int32)
    one_duration = jax.nn.one_hot(duration, max_duration, dtype=jnp.int32)
    return jnp.einsum("...tk,...td->...kd", one_state * counted[..., None], one_duration)


def state_usage(states, num_states, *, mask=None, by="steps"):
    """How often each state is used: the fraction of valid steps (or of runs) in each state.

    Args:
        states: int, shape ``(..., T)``.
        num_states: ``K``.
        mask: bool, broadcasting to ``(..., T)``, True where valid.
        by: ``"steps"`` (frequency of time steps) or ``"runs"`` (frequency of visits, the
            "usage" of keypoint-MoSeq's syllables).

    Returns:
        Shape ``(..., K)``, summing to one over ``K`` (zeros for a path with nothing valid).
    """
    if by not in ("steps", "runs"):
        raise ValueError(f"state_usage: by must be 'steps' or 'runs', got {by!r}.")
    z = jnp.asarray(states)
    valid = jnp.ones(z.shape, bool) if mask is None else jnp.broadcast_to(mask, z.shape)
    weight = state_runs(z, mask=valid).starts if by == "runs" else valid
    counts = jnp.einsum("...tk,...t->...k", jax.nn.one_hot(z, num_states), weight.astype(float))
    total = counts.sum(-1, keepdims=True)
    return counts / jnp.where(total > 0, total, 1.0)


def _beta_parameters(fn_name, concentration, stickiness, num_states, weights):
    concrete_check("concentration", concentration, lambda a: a > 0, "(α) must be > 0", fn_name)
    if stickiness is not None:
        concrete_check("stickiness", stickiness, lambda a: a >= 0, "(κ) must be >= 0", fn_name)
    if weights is None:
        if num_states is None:
            raise ValueError(f"{fn_name}: give num_states (or weights of shape (..., K)).")
        weights = jnp.ones(int(num_states))
    w = jnp.asarray(weights)
    alpha = jnp.asarray(concentration)[..., None]
    return alpha * w, alpha * (w.sum(-1, keepdims=True) - w)


def expected_duration(concentration, stickiness, num_states=None, *, weights=None):
    """The prior expected duration of a visit to each state, ``E[1 / (1 - P_kk)]``.

    Rows ``P_k ~ Dir(α w + κ e_k)`` (module docstring): ``(a + b - 1) / (b - 1)`` with
    ``a = α w_k + κ`` and ``b = α Σ_{j≠k} w_j``; ``inf`` where ``b <= 1`` (the prior puts so
    much mass near ``P_kk = 1`` that the mean diverges).

    Args:
        concentration: ``α > 0``, shape ``(...)``.
        stickiness: ``κ >= 0``, shape ``(...)``.
        num_states: ``K``, when ``weights`` is not given (then ``w = 1``).
        weights: shape ``(..., K)``; the global weights ``β`` of a weak-limit HDP (the
            duration is then conditional on them).

    Returns:
        Shape ``(..., K)``, in time steps.
    """
    own, other = _beta_parameters(
        "expected_duration", concentration, stickiness, num_states, weights
    )
    a = own + jnp.asarray(stickiness)[..., None]
    finite = other > 1
    return jnp.where(finite, (a + other - 1) / jnp.where(finite, other - 1, 1.0), jnp.inf)


def stickiness_for_duration(duration, concentration, num_states=None, *, weights=None):
    """The ``κ`` whose prior expected duration (:func:`expected_duration`) is ``duration``.

    Args:
        duration: the target expected duration in steps, broadcasting against ``(..., K)``
            (one target, or one per state); at least ``(α w_k + b - 1) / (b - 1)``, the
            duration at ``κ = 0``.
        concentration: ``α > 0``.
        num_states: ``K``, when ``weights`` is not given.
        weights: shape ``(..., K)``, as in :func:`expected_duration`.

    Returns:
        Shape ``(..., K)``: ``κ`` per state (all equal when ``w`` is uniform); NaN where the
        target is below the ``κ = 0`` duration or ``b <= 1``.
    """
    own, other = _beta_parameters(
        "stickiness_for_duration", concentration, None, num_states, weights
    )
    d = jnp.asarray(duration)
    kappa = d * (other - 1) - other + 1 - own
    return jnp.where((other > 1) & (kappa >= 0), kappa, jnp.nan)
