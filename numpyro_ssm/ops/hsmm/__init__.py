r"""Explicit-duration hidden semi-Markov models: filter, smoother, MAP segmentation and FFBS.

**Model.** A segment process: the first segment's state ``z_1 ~ initial_probs`` and its duration
``d ~ p_{z_1}(d)``, ``d = 1..D_max``; when a segment of state ``i`` ends, the next one's state is
``j != i`` with probability ``transition_matrix[i, j]`` and its duration ``d ~ p_j(d)``; ``y_t``
is emitted from the state of the segment covering step ``t``, ``log_likelihoods[t, k] = log
p(y_t | z_t = k)``. The core takes an array of log-likelihoods, as :mod:`numpyro_ssm.ops.hmm`
does, so one algorithm serves every emission family. A step with ``obs_mask[t] = False``
contributes nothing (its log-likelihoods are treated as zeros; the segments go on through it).

**Self-transitions.** A segment's end is decided by its duration, so the diagonal of the
user's ``transition_matrix`` (or ``transition_logits``) is dropped and each row renormalized
over the other states: ``p(j | i) = A[i, j] / (1 - A[i, i])``. A zero-diagonal matrix is used as
it is; a Dirichlet draw of a full matrix works too, its diagonal ignored. With ``K = 1`` the
segments of the one state follow each other.

**The last segment** is right-censored by default (``censoring="right"``): the segment in
progress at step ``T`` may go on after it, so its duration contributes the survival function
``P(d >= steps seen)``. With ``censoring="none"`` it ends at the last step that counts (the last
step with ``obs_mask`` True), as when a sequence is known to stop at a segment boundary.

**Algorithms** run on an expanded state of shape ``(K, D_max)`` (:mod:`._sum`: state and time
left in the segment; :mod:`._max`: state and time spent, for Viterbi) with its structure
exploited: a step shifts the time axis and adds the segments that start, O(K (K + D_max)) work,
never a dense (K D) x (K D) product, so a pass costs O(T K (K + D_max)).

**Serial or parallel** (:mod:`._blocks`, the one place where the choice is made). The steps are
cut into blocks of ``C = max(D_max, ceil(sqrt(T)))`` steps.

- ``parallel=False``: a ``lax.scan`` over blocks, a ``lax.scan`` inside; the forward pass keeps
  one message per block, which the backward passes recompute the block from: memory
  O(T K + C K D_max).
- ``parallel=True``: each block becomes one (K D) x (K D) element (the block run from every
  basis state at once, O(C K D (K + D)) work per block, all blocks together), an associative scan
  over the ``T / C`` elements gives every block's entry message (and, in reverse, its exit
  backward message, or its boundary state for Viterbi and FFBS), and then all blocks run at
  once. Depth O(C + log(T / C)); work O(T K^2 D (K + D) + (T / C) (K D)^3) and memory
  O(T K D + (T / C) (K D)^2): the schedule for accelerators with long sequences and moderate
  ``K D``. Both schedules give the same numbers to rounding.

**Numerics.** Probability-space messages normalized at every step, each step's likelihoods
scaled to peak at one (sum-product); log-space scores shifted to peak at zero (max-product).
The log-marginal's derivative is a custom JVP computed by one forward-backward pass
(:mod:`._passes`), not autodiff through the scans.

Modules, one idea each: :mod:`.filtering` (:func:`hsmm_filter`, :func:`hsmm_log_marginal`),
:mod:`.smoothing` (:func:`hsmm_smoother`), :mod:`.paths` (:func:`hsmm_posterior_mode`,
:func:`hsmm_posterior_sample`).
"""

from numpyro_ssm.ops.hsmm._common import switch_log_probs
from numpyro_ssm.ops.hsmm.filtering import HSMMPosterior, hsmm_filter, hsmm_log_marginal
from numpyro_ssm.ops.hsmm.paths import hsmm_posterior_mode, hsmm_posterior_sample
from numpyro_ssm.ops.hsmm.smoothing import hsmm_smoother

__all__ = [
    "HSMMPosterior",
    "hsmm_filter",
    "hsmm_log_marginal",
    "hsmm_posterior_mode",
    "hsmm_posterior_sample",
    "hsmm_smoother",
    "switch_log_probs",
]
