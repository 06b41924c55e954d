"""Hidden Markov model inference: filter, smoother, Viterbi and FFBS, serial or parallel-in-time.

Model and conventions (as TFP, dynamax and Stan): ``z_1 ~ Categorical(initial_probs)``,
``z_{t+1} | z_t ~ Categorical(transition_matrix[t, z_t])`` for the ``T - 1`` transitions, and
``log_likelihoods[t, k] = log p(y_t | z_t = k)``. The core takes an array of log-likelihoods,
not an emission object, so one forward algorithm serves every emission family. A step with
``obs_mask[t] = False`` contributes nothing: its log-likelihoods are treated as zeros.

Every algorithm runs sequentially (``parallel=False``, O(T) depth) or as an associative scan
(``parallel=True``, O(log T) depth, Hassan, Särkkä & García-Fernández 2021), through
:func:`~numpyro_ssm.ops.scan.prefix_scan` or loops of its own; the tests hold the two schedules
equal, time-varying transitions and masks included.

Modules, one idea each:

- :mod:`~numpyro_ssm.ops.hmm.filtering`: the forward algorithm, :func:`hmm_filter` and
  :func:`hmm_log_marginal`.
- :mod:`~numpyro_ssm.ops.hmm.smoothing`: forward-backward, :func:`hmm_smoother`.
- :mod:`~numpyro_ssm.ops.hmm.paths`: Viterbi (:func:`hmm_posterior_mode`) and FFBS
  (:func:`hmm_posterior_sample`; :func:`sequential_posterior_sample`, its classic backward
  pass with one draw per step).
- :mod:`~numpyro_ssm.ops.hmm.markov`: :func:`stationary_distribution`.
- :mod:`~numpyro_ssm.ops.hmm.counts`: :func:`count_transitions` and the conjugate Dirichlet
  update of transition rows, :func:`sample_transition_matrix`.
- :mod:`~numpyro_ssm.ops.hmm.hdp`: the sticky weak-limit HDP's table counts and global weights.
- :mod:`~numpyro_ssm.ops.hmm.durations`: runs, durations and usages of paths, and the durations
  a sticky prior implies.

Numerics. Sequential loops carry messages in probability space, normalized at every step, with
each step's likelihoods scaled to peak at one and the scales added in log space. Parallel
elements are row-normalized matrices with log-normalizers built with ``logsumexp``, so exact
zeros in the transition matrix and log-likelihoods of ``-1e4`` neither underflow nor produce
NaN. The marginals are the derivatives of the log-marginal with respect to the log-potentials,
so the log-marginal's derivative (a custom JVP) is one forward-backward pass, not autodiff
through the scan. The parallel scans run in chunks that bound their working memory (about 256 MB
of K x K elements).

Batching: every function broadcasts over leading batch axes of its arguments (see each
``Args:``), so ``vmap`` is rarely needed.
"""

from numpyro_ssm.ops.hmm._common import safe_log
from numpyro_ssm.ops.hmm.counts import (
    count_transitions,
    sample_transition_matrix,
    sticky_concentration,
)
from numpyro_ssm.ops.hmm.durations import (
    StateRuns,
    duration_counts,
    expected_duration,
    state_runs,
    state_usage,
    stickiness_for_duration,
)
from numpyro_ssm.ops.hmm.filtering import HMMPosterior, hmm_filter, hmm_log_marginal
from numpyro_ssm.ops.hmm.hdp import (
    sample_global_weights,
    sample_hdp_transitions,
    sample_table_counts,
)
from numpyro_ssm.ops.hmm.markov import stationary_distribution
from numpyro_ssm.ops.hmm.paths import (
    hmm_posterior_mode,
    hmm_posterior_sample,
    sequential_posterior_sample,
)
from numpyro_ssm.ops.hmm.smoothing import hmm_smoother

__all__ = [
    "HMMPosterior",
    "StateRuns",
    "count_transitions",
    "duration_counts",
    "expected_duration",
    "hmm_filter",
    "hmm_log_marginal",
    "hmm_posterior_mode",
    "hmm_posterior_sample",
    "hmm_smoother",
    "safe_log",
    "sample_global_weights",
    "sample_hdp_transitions",
    "sample_table_counts",
    "sample_transition_matrix",
    "sequential_posterior_sample",
    "state_runs",
    "state_usage",
    "stationary_distribution",
    "stickiness_for_duration",
    "sticky_concentration",
]
