r"""``DiscreteHSMM``: a hidden semi-Markov model with explicit durations, its path marginalized.

.. math::

    s_1 \sim \mathrm{Cat}(\pi), \quad d_n \mid s_n \sim p_{s_n}(d),\ d = 1..D_{\max}, \quad
    s_{n+1} \mid s_n \sim \mathrm{Cat}(A[s_n]),\ s_{n+1} \ne s_n, \quad
    y_t \mid z_t = s_n \sim p_{\mathrm{emission}}(\cdot \mid s_n, t)

for the segments ``n = 1, 2, ...`` laid end to end over the ``T`` steps (``z_t`` is the state of
the segment covering step ``t``). ``log_prob(y)`` is ``log p(y_{1:T})`` computed by the forward
algorithm of :mod:`numpyro_ssm.ops.hsmm` in O(T K (K + D_max)).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from numpyro.distributions import constraints
from numpyro.distributions.util import lazy_property

from numpyro_ssm.distributions._emission import StateEmissionMixin, emission_shapes, shape_of
from numpyro_ssm.distributions._hsmm_posterior import HSMMPosteriorMixin
from numpyro_ssm.distributions._hsmm_shapes import duration_support, hsmm_shapes, joint_table
from numpyro_ssm.distributions._shapes import check_plates
from numpyro_ssm.distributions._ssm import StateSpaceModel
from numpyro_ssm.distributions._validation import (
    check_bool_mask,
    check_real,
    log_probability_vector,
    validate_concrete_args,
)
from numpyro_ssm.ops import hsmm as hsmm_ops
from numpyro_ssm.ops.hmm import safe_log
from numpyro_ssm.ops.hsmm._common import CENSORING, _safe_log_normalize

__all__ = ["DiscreteHSMM"]

_stochastic_matrix = constraints.independent(constraints.simplex, 1)
_logits_matrix = constraints.independent(log_probability_vector, 1)


class DiscreteHSMM(HSMMPosteriorMixin, StateEmissionMixin, StateSpaceModel):
    r"""Hidden semi-Markov model: explicit state durations, the segmentation summed out exactly.

    .. math::

        s_1 \sim \mathrm{Cat}(\pi),\quad d_n \sim p_{s_n},\quad
        s_{n+1} \sim \mathrm{Cat}(A[s_n]),\quad y_t \mid z_t = k \sim \mathrm{emission}_{t, k},
        \qquad \log p(y_{1:T}) = \log \sum_{\text{segmentations}} p(\text{segments}, y_{1:T}).

    A segment of state ``k`` lasts ``d = 1..D_max`` steps with probability ``p_k(d)``; an HMM is
    the special case of geometric durations. Durations come from a table or from any scalar
    NumPyro discrete distribution, truncated to ``1..max_duration`` and renormalized:

    - ``duration_dist``: ``d = duration_offset + X`` with ``X ~ duration_dist`` (batch ``(K,)``,
      or ``(...)`` to share one). The usual count distributions start at 0: pass
      ``duration_offset=1`` for ``d - 1 ~ Poisson(rate)`` or ``NegativeBinomial``; a support
      that reaches below ``d = 1`` is an error that says so.
    - ``duration_probs`` | ``duration_logits``: shape ``(..., K, D_max)``, ``[k, d - 1] =
      p_k(d)``.

    **Self-transitions.** The diagonal of ``transition_matrix`` is dropped and each row
    renormalized over the other states, ``p(j | i) = A[i, i'] / (1 - A[i, i])``: a segment's
    length belongs to its duration, so a Dirichlet draw of a full matrix can be passed as it is.
    With ``K = 1`` segments of the one state follow each other.

    **The last segment** (``censoring``): ``"right"`` (default) treats the segment in progress at
    the last step as cut off by the end of the data: its duration contributes the survival
    function ``P(d >= steps seen)``. ``"none"`` makes it end at the last step that counts:
    ``log_prob`` is then ``log p(y, a segment ends there)``, the likelihood of the data and of
    that boundary (it does not integrate to one over ``y``), and ``sample`` draws from the
    process conditioned on the boundary.

    Time is the rightmost batch-like axis of ``emission_dist`` and ``obs_mask``; transitions and
    durations are homogeneous. ``transition_matrix`` has shape ``(K, K)`` or ``(..., 1, K, K)``
    (a batch of ``B`` matrices is ``(B, 1, K, K)``, as for :class:`~numpyro_ssm.DiscreteHMM`).

    Args:
        initial_probs: shape ``(..., K)``, ``p(z_1 = k)``. Or give ``initial_logits`` or
            ``first_segment_probs``.
        transition_matrix: shape ``(K, K)`` or ``(..., 1, K, K)``, ``[i, j] = p(next segment's
            state j | a segment of i ended)``. Or give ``transition_logits``.
        emission_dist: a NumPyro distribution whose rightmost batch axis is the ``K`` states:
            batch ``(K,)`` or ``(..., T | 1, K)`` (time-varying), any event shape ``E``.
        duration_dist: scalar discrete NumPyro distribution with batch ``(..., K)`` (or a
            shared one), needs ``max_duration``. Or give ``duration_probs``/``duration_logits``.
        initial_logits: shape ``(..., K)``, unnormalized log ``initial_probs``.
        transition_logits: shape like ``transition_matrix``, unnormalized log-probabilities.
        duration_probs: shape ``(..., K, D_max)``, rows summing to one.
        duration_logits: shape ``(..., K, D_max)``, unnormalized; ``-inf`` marks impossible
            durations.
        max_duration: ``D_max >= 1``, the longest segment; required with ``duration_dist``,
            read from the last axis of a table.
        duration_offset: with ``duration_dist``, ``d = duration_offset + X``.
        first_segment_probs: shape ``(..., K, D_max)``, ``p(z_1 = k, the first segment covers
            steps 1..d)``, summing to one: a start in the middle of a segment (what
            :meth:`forecast` passes), instead of ``initial_probs``.
        censoring: ``"right"`` or ``"none"``, see above.
        num_steps: ``T``; required only when no argument carries a time axis.
        obs_mask: bool, shape ``(..., T)``, True where a step is observed; other steps (and
            steps whose float observation has a NaN entry) contribute nothing.
        parallel: the block-parallel schedule of :mod:`numpyro_ssm.ops.hsmm` (for accelerators).
        validate_args: check the parameters' constraints and observations' support.

    Example:
        >>> def model(y):
        ...     rates = numpyro.sample("rates", dist.Gamma(2.0, 0.2).expand([2]).to_event(1))
        ...     dwell = numpyro.sample("dwell", dist.Gamma(2.0, 0.2).expand([2]).to_event(1))
        ...     hsmm = DiscreteHSMM(
        ...         jnp.ones(2) / 2, jnp.array([[0.0, 1.0], [1.0, 0.0]]), dist.Poisson(rates),
        ...         dist.Poisson(dwell), duration_offset=1, max_duration=60, num_steps=len(y))
        ...     numpyro.sample("y", hsmm, obs=y)
    """

    arg_constraints = {
        "initial_probs": constraints.simplex,
        "initial_logits": log_probability_vector,
        "first_segment_probs": joint_table,
        "transition_matrix": _stochastic_matrix,
        "transition_logits": _logits_matrix,
        "duration_probs": _stochastic_matrix,
        "duration_logits": _logits_matrix,
    }
    pytree_data_fields = (
        "initial_probs",
        "initial_logits",
        "first_segment_probs",
        "transition_matrix",
        "transition_logits",
        "duration_probs",
        "duration_logits",
        "duration_dist",
        "emission_dist",
        "obs_mask",
    )
    pytree_aux_fields = (
        "num_steps",
        "num_states",
        "max_duration",
        "duration_offset",
        "censoring",
        "parallel",
    )

    def __init__(
        self,
        initial_probs=None,
        transition_matrix=None,
        emission_dist=None,
        duration_dist=None,
        *,
        initial_logits=None,
        transition_logits=None,
        duration_probs=None,
        duration_logits=None,
        max_duration=None,
        duration_offset=0,
        first_segment_probs=None,
        censoring="right",
        num_steps=None,
        obs_mask=None,
        parallel=False,
        validate_args=None,
    ):
        given = {
            "initial": (initial_probs, initial_logits, first_segment_probs),
            "transition": (transition_matrix, transition_logits),
            "duration": (duration_dist, duration_probs, duration_logits),
        }
        names = {
            "initial": "initial_probs, initial_logits and first_segment_probs",
            "transition": "transition_matrix and transition_logits",
            "duration": "duration_dist, duration_probs and duration_logits",
        }
        for key, values in given.items():
            if sum(v is not None for v in values) != 1:
                raise ValueError(f"DiscreteHSMM: give exactly one of {names[key]}.")
        if emission_dist is None:
            raise ValueError("DiscreteHSMM: emission_dist is required.")
        if censoring not in CENSORING:
            raise ValueError(
                f"DiscreteHSMM: censoring must be one of {CENSORING}, got {censoring!r}."
            )
        arrays = {
            "initial_probs": initial_probs,
            "initial_logits": initial_logits,
            "first_segment_probs": first_segment_probs,
            "transition_matrix": transition_matrix,
            "transition_logits": transition_logits,
            "duration_probs": duration_probs,
            "duration_logits": duration_logits,
        }
        for name, arg in arrays.items():
            check_real(name, arg, "DiscreteHSMM")
            if arg is not None:
                setattr(self, name, jnp.asarray(arg))
        self.obs_mask = check_bool_mask(obs_mask, "DiscreteHSMM")
        self.emission_dist = emission_dist
        self.duration_dist = duration_dist
        self.duration_offset = int(duration_offset)
        self.censoring = censoring
        self.parallel = bool(parallel)
        shape_args = {name: shape_of(arg) for name, arg in arrays.items()}
        batch_shape, event_shape, self.num_steps, self.num_states, source, parts = (
            self.infer_shapes(
                emission_dist=emission_dist,
                duration_dist=duration_dist,
                max_duration=max_duration,
                num_steps=num_steps,
                obs_mask=shape_of(obs_mask),
                _with_sizes=True,
                **shape_args,
            )
        )
        self.max_duration = self._max_duration(max_duration, duration_probs, duration_logits)
        if duration_dist is not None:
            duration_support(duration_dist, self.duration_offset, self.max_duration)
        check_plates(parts, "DiscreteHSMM")
        self._time_source = source
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    @staticmethod
    def _max_duration(max_duration, duration_probs=None, duration_logits=None):
        """``D_max`` from the table or the argument, checked."""
        table = duration_probs if duration_probs is not None else duration_logits
        if table is not None:
            from_table = shape_of(table)[-1] if len(shape_of(table)) >= 1 else 0
            if max_duration is not None and int(max_duration) != from_table:
                raise ValueError(
                    f"DiscreteHSMM: max_duration={max_duration} disagrees with the duration "
                    f"table's last axis ({from_table}); give one or the other."
                )
            max_duration = from_table
        if max_duration is None:
            raise ValueError(
                "DiscreteHSMM: max_duration (D_max, the longest segment) is required with "
                "duration_dist."
            )
        if int(max_duration) != max_duration or int(max_duration) < 1:
            raise ValueError(
                f"DiscreteHSMM: max_duration must be an integer D_max >= 1, got {max_duration}."
            )
        return int(max_duration)

    def validate_args(self, strict: bool = True) -> None:
        """Check the concrete parameters' constraints (traced ones are skipped).

        Beyond :func:`~numpyro_ssm.distributions._validation.validate_concrete_args`: every row
        of the transition matrix needs mass off its diagonal (``K >= 2``).
        """
        validate_concrete_args(self, strict)
        matrix = self._given("transition_matrix")
        matrix = self._given("transition_logits") if matrix is None else matrix
        if self.num_states < 2 or isinstance(matrix, jax.core.Tracer):
            return
        with jax.ensure_compile_time_eval():
            log_trans = np.asarray(self._log_transitions())
        dead = ~np.isfinite(log_trans).any(-1)
        if dead.any():
            rows = [tuple(int(i) for i in r) for r in np.argwhere(dead)[:3]]
            raise ValueError(
                f"DiscreteHSMM got invalid transition_matrix: rows {rows} have no mass off the "
                "diagonal, so a segment of that state could never be followed (the diagonal is "
                "dropped: durations decide how long a state lasts)."
            )

    @classmethod
    def infer_shapes(
        cls,
        initial_probs=None,
        transition_matrix=None,
        emission_dist=None,
        duration_dist=None,
        *,
        initial_logits=None,
        transition_logits=None,
        duration_probs=None,
        duration_logits=None,
        max_duration=None,
        first_segment_probs=None,
        num_steps=None,
        obs_mask=None,
        _with_sizes=False,
        **kwargs,
    ):
        """Infer ``(batch_shape, event_shape)`` from argument shapes, without arrays.

        Args:
            initial_probs: shape tuple (or ``initial_logits`` or ``first_segment_probs``).
            transition_matrix: shape tuple (or ``transition_logits``).
            emission_dist: a distribution, or a ``(batch_shape, event_shape)`` pair.
            duration_dist: a distribution, or a ``(batch_shape, event_shape)`` pair (or give
                ``duration_probs`` or ``duration_logits``).
            initial_logits: shape tuple.
            transition_logits: shape tuple.
            duration_probs: shape tuple.
            duration_logits: shape tuple.
            max_duration: ``D_max`` (with ``duration_dist``).
            first_segment_probs: shape tuple.
            num_steps: ``T`` when no argument carries time.
            obs_mask: shape tuple of ``obs_mask``, or None.
            _with_sizes: also return ``T``, ``K``, the time source and the batch parts
                (internal).
            **kwargs: ignored (``duration_offset``, ``censoring``, ``parallel``, ...).

        Returns:
            ``(batch_shape, event_shape)``.
        """
        initial = initial_probs if initial_probs is not None else initial_logits
        transition = transition_matrix if transition_matrix is not None else transition_logits
        table = duration_probs if duration_probs is not None else duration_logits
        if (initial is None and first_segment_probs is None) or transition is None:
            raise ValueError(
                "DiscreteHSMM needs initial_probs|initial_logits|first_segment_probs, "
                "transition_matrix|transition_logits, emission_dist and durations."
            )
        if emission_dist is None or (table is None and duration_dist is None):
            raise ValueError(
                "DiscreteHSMM needs emission_dist and one of duration_dist, duration_probs and "
                "duration_logits."
            )
        duration = tuple(table) if table is not None else emission_shapes(duration_dist)[0]
        max_duration = cls._max_duration(max_duration, duration_probs, duration_logits)
        shapes = hsmm_shapes(
            None if initial is None else tuple(initial),
            None if first_segment_probs is None else tuple(first_segment_probs),
            tuple(transition),
            duration,
            table is not None,
            emission_shapes(emission_dist),
            None if obs_mask is None else tuple(obs_mask),
            num_steps,
            max_duration,
        )
        return shapes if _with_sizes else shapes[:2]

    # -- parameters -------------------------------------------------------------------------------

    def _given(self, name):
        """The array the user gave for ``name``, or None.

        Reads ``__dict__``, never a lazy property, which would cache an attribute and change the
        pytree.
        """
        return self.__dict__.get(name)

    @lazy_property
    def initial_probs(self):
        """Shape ``(..., K)``: ``p(z_1 = k)``."""
        return jnp.sum(jnp.exp(self._log_params()[0]), axis=-1)

    @lazy_property
    def initial_logits(self):
        """Shape ``(..., K)``: ``log p(z_1 = k)``."""
        return safe_log(self.initial_probs)

    @lazy_property
    def first_segment_probs(self):
        """Shape ``(..., K, D_max)``: ``p(z_1 = k, d_1 = d)``."""
        return jnp.exp(self._log_params()[0])

    @lazy_property
    def transition_matrix(self):
        """Shape like ``transition_logits``: as given (before the self-transition rule)."""
        return jax.nn.softmax(self.transition_logits, axis=-1)

    @lazy_property
    def transition_logits(self):
        """Shape like ``transition_matrix``: its logarithm (before the self-transition rule)."""
        return safe_log(self.transition_matrix)

    @lazy_property
    def duration_probs(self):
        """Shape ``(..., K, D_max)``: ``p_k(d)``, truncated to ``1..D_max`` and renormalized."""
        return jnp.exp(self._log_durations())

    @lazy_property
    def duration_logits(self):
        """Shape ``(..., K, D_max)``: ``log p_k(d)``."""
        return self._log_durations()

    def _log_transitions(self):
        """``log A`` after the self-transition rule, shape ``(..., K, K)``."""
        if self._given("transition_logits") is not None:
            log_trans = self._given("transition_logits")
        else:
            log_trans = safe_log(self._given("transition_matrix"))
        if log_trans.ndim >= 3:
            log_trans = log_trans[..., 0, :, :]
        return hsmm_ops.switch_log_probs(log_trans)

    def _log_durations(self):
        """``log p_k(d)``, shape ``(..., K, D_max)``: the table, or ``duration_dist`` truncated."""
        if self._given("duration_logits") is not None:
            return _safe_log_normalize(self._given("duration_logits"))
        if self._given("duration_probs") is not None:
            return safe_log(self._given("duration_probs"))
        duration = self.duration_dist
        batch = tuple(duration.batch_shape)
        values = jnp.arange(1, self.max_duration + 1) - self.duration_offset
        values = jnp.broadcast_to(values.reshape((-1,) + (1,) * len(batch)), values.shape + batch)
        inside = duration.support(values)
        safe = jnp.where(inside, values, duration.support.feasible_like(values))
        log_pmf = jnp.where(inside, duration.log_prob(safe), -jnp.inf)
        log_pmf = jnp.moveaxis(log_pmf, 0, -1)
        if not batch or batch[-1] == 1:
            log_pmf = jnp.broadcast_to(
                log_pmf.reshape(batch[:-1] + (1, self.max_duration)),
                batch[:-1] + (self.num_states, self.max_duration),
            )
        return _safe_log_normalize(log_pmf)

    def _op_kwargs(self):
        """The parameters as keyword arguments of the :mod:`numpyro_ssm.ops.hsmm` functions."""
        kwargs = {
            "transition_logits": self._log_transitions(),
            "duration_logits": self._log_durations(),
            "censoring": self.censoring,
        }
        if self._given("first_segment_probs") is not None:
            kwargs["first_segment_probs"] = self._given("first_segment_probs")
        elif self._given("initial_logits") is not None:
            kwargs["initial_logits"] = self._given("initial_logits")
        else:
            kwargs["initial_logits"] = safe_log(self._given("initial_probs"))
        return kwargs

    def _log_params(self):
        """``(log p(z_1, d_1) (..., K, D), log A (..., K, K), log p_k(d) (..., K, D))``."""
        kwargs = self._op_kwargs()
        log_dur = kwargs["duration_logits"]
        if "first_segment_probs" in kwargs:
            log_first = safe_log(kwargs["first_segment_probs"])
        else:
            log_first = jax.nn.log_softmax(kwargs["initial_logits"], -1)[..., None] + log_dur
        return log_first, kwargs["transition_logits"], log_dur

    # -- likelihood and prior ----------------------------------------------------------------------

    def log_prob(self, value):
        """``log p(y_{1:T})`` by :func:`~numpyro_ssm.ops.hsmm_log_marginal` (see ``censoring``).

        Args:
            value: observations, shape ``sample_shape + batch_shape + (T,) + E`` (leading axes
                broadcast). NaN entries in float observations mark missing steps.

        Returns:
            Shape ``sample_shape + batch_shape``.
        """
        return self._run_op(hsmm_ops.hsmm_log_marginal, value)

    def _prior_log_likelihoods(self):
        return jnp.zeros(self.batch_shape + (self.num_steps, self.num_states))

    def _state_marginals(self):
        """Prior ``p(z_t = k)`` (given the last boundary with ``censoring="none"``)."""
        return hsmm_ops.hsmm_smoother(
            log_likelihoods=self._prior_log_likelihoods(),
            parallel=self.parallel,
            **self._op_kwargs(),
        ).smoothed_probs

    def _sample_states(self, key, sample_shape):
        """Prior state paths, shape ``sample_shape + batch_shape + (T,)``.

        ``censoring="right"``: the segment process simulated forward (state and steps left).
        ``censoring="none"``: backward sampling with no observations, which conditions the
        paths on a segment ending at the last step (exact).
        """
        if self.censoring == "none":
            return hsmm_ops.hsmm_posterior_sample(
                key,
                log_likelihoods=self._prior_log_likelihoods(),
                parallel=self.parallel,
                sample_shape=tuple(sample_shape),
                **self._op_kwargs(),
            )
        shape = tuple(sample_shape) + self.batch_shape
        num_states, max_duration = self.num_states, self.max_duration
        log_first, log_trans, log_dur = self._log_params()
        first_key, step_key = jax.random.split(key)
        flat = log_first.reshape(log_first.shape[:-2] + (num_states * max_duration,))
        first = jax.random.categorical(first_key, jnp.broadcast_to(flat, shape + flat.shape[-1:]))
        log_trans = jnp.broadcast_to(log_trans, shape + (num_states, num_states))
        log_dur = jnp.broadcast_to(log_dur, shape + (num_states, max_duration))

        def row(table, index):
            return jnp.take_along_axis(table, index[..., None, None], axis=-2)[..., 0, :]

        def step(carry, key_t):
            state, left = carry  # left: steps of the segment after this one
            switch_key, duration_key = jax.random.split(key_t)
            following = jax.random.categorical(switch_key, row(log_trans, state))
            duration = jax.random.categorical(duration_key, row(log_dur, following))
            ends = left == 0
            state = jnp.where(ends, following, state)
            return (state, jnp.where(ends, duration, left - 1)), state

        start = (first // max_duration, first % max_duration)
        keys = jax.random.split(step_key, self.num_steps - 1)
        _, rest = lax.scan(step, start, keys)
        return jnp.moveaxis(jnp.concatenate([start[0][None], rest], axis=0), 0, -1)
