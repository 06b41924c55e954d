"""The sum of structural components: one linear-Gaussian state space model.

Stacking blocks: the states are concatenated (initial means and factors, transitions and
transition noises block-diagonal), the emission rows concatenated, the emission biases summed
and the observation noise factors stacked. Time-varying blocks (covariates) carry ``T'`` rows,
which may run past the observed series into the forecast horizon; :meth:`params` cuts a window.
"""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_ssm.distributions import LinearGaussianSSM
from numpyro_ssm.ops.kalman import LGSSMParams
from numpyro_ssm.ops.linalg import tria
from numpyro_ssm.sts._component import Component, is_concrete

__all__ = ["StructuralTimeSeries", "sum_components"]


def sum_components(*components):
    """Stack components into one model; the same as ``components[0] + components[1] + ...``.

    Args:
        *components: :class:`~numpyro_ssm.sts.Component` or
            :class:`~numpyro_ssm.sts.StructuralTimeSeries` objects.

    Returns:
        A :class:`StructuralTimeSeries`.
    """
    flat = []
    for c in components:
        flat += list(c.components) if isinstance(c, StructuralTimeSeries) else [c]
    return StructuralTimeSeries(tuple(flat))


def _cast(params: LGSSMParams, dtype) -> LGSSMParams:
    return params._replace(
        **{k: None if v is None else jnp.asarray(v, dtype) for k, v in params._asdict().items()}
    )


def _time_length(component: Component):
    """``T'`` of a component with covariates, else None."""
    p = component.params
    if p.emission_matrix.ndim == 3:
        return p.emission_matrix.shape[0]
    if p.emission_bias is not None and p.emission_bias.ndim == 2:
        return p.emission_bias.shape[0]
    if p.transition_matrix.ndim == 3:
        return p.transition_matrix.shape[0] + 1
    return None


@dataclass(frozen=True, eq=False)
class StructuralTimeSeries:
    """A sum of structural components: ``y_t = Σ_c x_t^(c) + ε_t``.

    Build it with ``+`` or :func:`sum_components`; :meth:`distribution` is the
    :class:`~numpyro_ssm.LinearGaussianSSM` to observe.

    Attributes:
        components: the components, in state order.
    """

    components: tuple

    def __post_init__(self):
        names = [c.name for c in self.components]
        for c in self.components:
            if not isinstance(c, Component):
                raise TypeError(
                    f"StructuralTimeSeries: cannot add a {type(c).__name__}; build components "
                    "with numpyro_ssm.sts (local_level, seasonal, regression, ...)."
                )
            if names.count(c.name) > 1:
                raise ValueError(
                    f"StructuralTimeSeries: two components are named {c.name!r}; pass name=... "
                    "to one of them."
                )
        strong = {c.name: jnp.dtype(c.dtype) for c in self.components if not c.weak_dtype}
        if len(set(strong.values())) > 1:
            listing = ", ".join(f"{n!r} is {d}" for n, d in strong.items())
            raise TypeError(
                f"StructuralTimeSeries: the components have different dtypes ({listing}); "
                "build them from arrays of one float dtype."
            )
        lengths = {c.name: _time_length(c) for c in self.components}
        lengths = {n: t for n, t in lengths.items() if t is not None}
        if len(set(lengths.values())) > 1:
            listing = ", ".join(f"{n!r} has {t}" for n, t in lengths.items())
            raise ValueError(
                f"StructuralTimeSeries: the components' covariates must have the same number of "
                f"rows (one per time step); {listing}."
            )

    def __add__(self, other):
        if isinstance(other, StructuralTimeSeries | Component):
            return sum_components(self, other)
        return NotImplemented

    def __radd__(self, other):
        return self if other == 0 else NotImplemented

    # -- structure ------------------------------------------------------------------------------

    @property
    def dtype(self):
        """The common float dtype of the components."""
        strong = [c.dtype for c in self.components if not c.weak_dtype]
        return strong[0] if strong else self.components[0].dtype

    @property
    def num_states(self) -> int:
        """``S``, the total number of states."""
        return sum(c.num_states for c in self.components)

    @property
    def state_slices(self) -> dict:
        """Component name -> ``slice`` of its states in the stacked state vector."""
        out, start = {}, 0
        for c in self.components:
            out[c.name] = slice(start, start + c.num_states)
            start += c.num_states
        return out

    @property
    def state_names(self) -> tuple:
        """``(S,)`` names ``"component.state"`` of the stacked states."""
        return tuple(f"{c.name}.{s}" for c in self.components for s in c.state_names)

    @property
    def diffuse_states(self) -> tuple:
        """``(S,)`` bools: the states with a diffuse start."""
        return tuple(d for c in self.components for d in c.diffuse_states)

    @property
    def covariate_steps(self):
        """``T'``, the rows of the components' covariates, or None without covariates."""
        lengths = [t for t in map(_time_length, self.components) if t is not None]
        return lengths[0] if lengths else None

    # -- the stacked model ----------------------------------------------------------------------

    def _window(self, arr, ndim, start, length, varying):
        """``arr`` cut to ``[start, start + length)`` along time, or broadcast when homogeneous."""
        if arr.ndim > ndim:
            return arr[start : start + length]
        return jnp.broadcast_to(arr, (length,) + arr.shape) if varying else arr

    def params(self, num_steps, start=0) -> LGSSMParams:
        """The stacked model over steps ``start + 1, ..., start + num_steps``.

        Args:
            num_steps: ``T``, the steps of the window.
            start: the window's first step (0 for the observed series).

        Returns:
            An :class:`~numpyro_ssm.ops.LGSSMParams` with ``S`` states and one observed series;
            time-varying parameters carry ``T`` (emission) and ``T - 1`` (transition) rows.
        """
        self._check_steps(start + num_steps)
        dtype, comps = self.dtype, self.components
        S = self.num_states
        ps = [_cast(c.params, dtype) for c in comps]
        varying_t = any(p.transition_matrix.ndim == 3 for p in ps)
        varying_e = any(p.emission_matrix.ndim == 3 for p in ps)
        n_t = max(num_steps - 1, 1)
        lead_t = (n_t,) if varying_t else ()
        F = jnp.zeros(lead_t + (S, S), dtype)
        # the noise factors side by side: (S, q) with one column per noise of a component
        widths = [p.transition_scale_tril.shape[-1] for p in ps]
        q = max(sum(widths), 1) if S else 0  # no states (regressions only): (0, 0)
        chol_Q = jnp.zeros(lead_t + (S, q), dtype)
        column = 0
        for c, p, width in zip(comps, ps, widths, strict=True):
            sl = self.state_slices[c.name]
            F = F.at[..., sl, sl].set(self._window(p.transition_matrix, 2, start, n_t, varying_t))
            chol_Q = chol_Q.at[..., sl, column : column + width].set(
                self._window(p.transition_scale_tril, 2, start, n_t, varying_t)
            )
            column += width
        H = jnp.concatenate(
            [self._window(p.emission_matrix, 2, start, num_steps, varying_e) for p in ps], axis=-1
        )
        biases = [p.emission_bias for p in ps if p.emission_bias is not None]
        bias = None
        if biases:
            varying_d = any(b.ndim == 2 for b in biases)
            bias = sum(self._window(b, 1, start, num_steps, varying_d) for b in biases)
        noise = [
            p.emission_scale_tril for c, p in zip(comps, ps, strict=True) if c.observation_noise
        ]
        if not noise:
            raise ValueError(
                "StructuralTimeSeries: the model has no observation noise; add "
                "numpyro_ssm.sts.irregular(scale)."
            )
        chol_R = noise[0] if len(noise) == 1 else tria(jnp.concatenate(noise, axis=1))
        chol_P0 = jnp.zeros((S, S), dtype)
        for c, p in zip(comps, ps, strict=True):
            sl = self.state_slices[c.name]
            chol_P0 = chol_P0.at[sl, sl].set(p.initial_scale_tril)
        return LGSSMParams(
            initial_mean=jnp.concatenate([p.initial_mean for p in ps]),
            initial_scale_tril=chol_P0,
            transition_matrix=F,
            transition_scale_tril=chol_Q,
            emission_matrix=H,
            emission_scale_tril=chol_R,
            transition_bias=None,
            emission_bias=bias,
        )

    def component_emissions(self, num_steps, start=0) -> dict:
        """Per component: its state slice, emission columns and bias over a window.

        Args:
            num_steps: the window's length.
            start: the window's first step.

        Returns:
            dict name -> ``(slice, H (T | 1, s), d (T | 1,))``: the component's contribution at
            step ``t`` is ``H[t] @ z_t[slice] + d[t]``.
        """
        self._check_steps(start + num_steps)
        out = {}
        for c in self.components:
            p = _cast(c.params, self.dtype)
            H = self._window(p.emission_matrix, 2, start, num_steps, False)
            H = H[:, 0, :] if H.ndim == 3 else H  # (T | 1, s)
            d = jnp.zeros((1,), self.dtype)
            if p.emission_bias is not None:
                d = self._window(p.emission_bias, 1, start, num_steps, False).reshape(-1)
            out[c.name] = (self.state_slices[c.name], H, d)
        return out

    def _check_steps(self, needed):
        rows = self.covariate_steps
        if rows is not None and rows < needed:
            names = [c.name for c in self.components if _time_length(c) is not None]
            raise ValueError(
                f"StructuralTimeSeries: component(s) {names} have covariates with {rows} rows, "
                f"but {needed} steps are needed (the series, plus the forecast horizon when "
                "forecasting): pass covariates with one row per step."
            )

    def num_diffuse_steps(self):
        """The exact initial filter's length, or None for the distribution's default.

        The number of diffuse states, plus the leading steps where a diffuse regression's
        covariates are all zero (known only for concrete covariates).

        Returns:
            An int, or None when no covariate delays the diffuse phase.
        """
        q = sum(self.diffuse_states)
        if q == 0:
            return None
        first = 0
        for c in self.components:
            H = c.params.emission_matrix
            if H.ndim == 3 and any(c.diffuse_states) and is_concrete(H):
                nonzero = np.any(np.asarray(H) != 0, axis=1)  # (T', s)
                first = max(first, int(np.max(np.argmax(nonzero, axis=0))))
        return q + first if first else None

    def distribution(
        self,
        num_steps=None,
        *,
        obs_mask=None,
        parallel=False,
        validate_args=None,
        num_diffuse_steps=None,
    ) -> LinearGaussianSSM:
        """The model as a :class:`~numpyro_ssm.LinearGaussianSSM` over ``num_steps`` steps.

        Diffuse states get the exact diffuse start. The distribution remembers this model (its
        attribute ``structural_model``) for :func:`~numpyro_ssm.sts.decompose` and
        :func:`~numpyro_ssm.sts.forecast_components`.

        Args:
            num_steps: ``T``; defaults to the covariates' rows (required without covariates).
                With more covariate rows than ``T`` the extra rows are the forecast horizon's.
            obs_mask: bool ``(T, 1)`` (or broadcastable), True where observed.
            parallel: associative scans.
            validate_args: NumPyro's argument validation.
            num_diffuse_steps: the exact initial filter's length (see
                :mod:`numpyro_ssm.ops.kalman.diffuse`); None picks one from the diffuse states
                and the covariates.

        Returns:
            A :class:`~numpyro_ssm.LinearGaussianSSM` with ``event_shape (T, 1)``.

        Raises:
            ValueError: without ``num_steps`` and covariates, with too few covariate rows, or
                for a model without states.
        """
        T = num_steps if num_steps is not None else self.covariate_steps
        if self.num_states == 0:
            raise ValueError(
                "StructuralTimeSeries.distribution: the model has no states (only static "
                "regressions and noise), which makes it a linear regression; add a component "
                "with states (e.g. numpyro_ssm.sts.local_level) or write the regression with "
                "numpyro.distributions.Normal."
            )
        if T is None:
            raise ValueError(
                "StructuralTimeSeries.distribution: pass num_steps=T (no component has "
                "covariates to tell the series' length)."
            )
        # Evaluated now where the inputs are concrete (inside jit too): the transitions of trends
        # and seasonals stay concrete, so the distribution can follow the diffuse directions
        # through missing steps when it picks its diffuse length.
        with jax.ensure_compile_time_eval():
            p = self.params(int(T))
        diffuse = self.diffuse_states
        ssm = LinearGaussianSSM(
            p.initial_mean,
            p.transition_matrix,
            p.emission_matrix,
            initial_scale_tril=p.initial_scale_tril,
            transition_scale_tril=p.transition_scale_tril,
            emission_scale_tril=p.emission_scale_tril,
            emission_bias=p.emission_bias,
            num_steps=int(T),
            obs_mask=obs_mask,
            parallel=parallel,
            validate_args=validate_args,
            diffuse_states=np.asarray(diffuse, bool) if any(diffuse) else None,
            num_diffuse_steps=(
                num_diffuse_steps
                if num_diffuse_steps is not None or not any(diffuse)
                else self.num_diffuse_steps()
            ),
        )
        ssm.structural_model = self
        return ssm
