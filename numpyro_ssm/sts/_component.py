"""The block a structural component builds, and the checks every builder shares.

A :class:`Component` is one block of a linear-Gaussian state space model: its own states (with
their initial distribution, transition and noise), its columns of the emission row, and its
share of the emission bias and noise. :mod:`numpyro_ssm.sts._model` stacks blocks into one
model.
"""

import functools
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_ssm.ops.kalman import LGSSMParams

__all__ = ["Component"]


@dataclass(frozen=True, eq=False)
class Component:
    """One structural component: a block of a linear-Gaussian state space model.

    Built by the functions of :mod:`numpyro_ssm.sts` (never by hand, though nothing stops
    you); ``a + b`` stacks components into a :class:`~numpyro_ssm.sts.StructuralTimeSeries`.

    Attributes:
        name: the component's name (the ``component`` coordinate of a decomposition).
        params: the block as :class:`~numpyro_ssm.ops.LGSSMParams` with ``s`` states and one
            observed series: ``initial_mean (s,)``, ``initial_scale_tril (s, s)``,
            ``transition_matrix`` ``(s, s)`` or ``(T' - 1, s, s)``, ``transition_scale_tril``
            ``(s, q)`` or ``(T' - 1, s, q)`` (one column per noise: ``q = 1`` for a dummy
            seasonal or an AR(p), ``0`` for a block without states), ``emission_matrix``
            ``(1, s)`` or ``(T', 1, s)`` (the component's columns of the emission row),
            ``emission_scale_tril (1, 1)`` (zero but for the observation noise) and
            ``emission_bias`` None, ``(1,)`` or ``(T', 1)`` (a static regression's effect).
            ``T'`` is the length of the covariates: it may run past the observed series into
            the forecast horizon.
        diffuse_states: ``(s,)`` bools, True for states with a diffuse initial distribution.
        state_names: ``(s,)`` names of the states, e.g. ``("level", "slope")``.
        weak_dtype: True when the block was built from Python numbers only: it then takes the
            dtype of the components it is added to.
        observation_noise: True for the observation noise (:func:`~numpyro_ssm.sts.irregular`),
            whose ``emission_scale_tril`` is the model's.
    """

    name: str
    params: LGSSMParams
    diffuse_states: tuple
    state_names: tuple
    weak_dtype: bool = field(default=False)
    observation_noise: bool = field(default=False)

    @property
    def num_states(self) -> int:
        """``s``, the number of states of the block."""
        return int(np.shape(self.params.initial_mean)[0])

    @property
    def dtype(self):
        """The floating dtype of the block's arrays."""
        return jnp.result_type(self.params.transition_matrix)

    def __add__(self, other):
        from numpyro_ssm.sts._model import StructuralTimeSeries

        return StructuralTimeSeries((self,)) + other

    def __radd__(self, other):
        if other == 0:  # sum([...]) starts from 0
            from numpyro_ssm.sts._model import StructuralTimeSeries

            return StructuralTimeSeries((self,))
        return NotImplemented


def builder(fn):
    """Run a component builder eagerly where its inputs are concrete, even inside ``jit``.

    The parameter-free parts of a block (a trend's or a seasonal's transition, covariates) then
    stay concrete arrays, which lets the distribution follow the diffuse directions through
    missing steps (:mod:`numpyro_ssm.distributions._lgssm_diffuse`); anything computed from a
    traced parameter is traced as usual.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with jax.ensure_compile_time_eval():
            return fn(*args, **kwargs)

    return wrapper


# ---------------------------------------------------------------------------------------------
# Checks shared by the builders
# ---------------------------------------------------------------------------------------------


def is_concrete(x) -> bool:
    """Whether ``x`` has a value now (not a tracer inside ``jit``, ``grad`` or NUTS)."""
    return not isinstance(x, jax.core.Tracer)


def block_dtype(component, **arrays):
    """``(dtype, weak)`` of a builder's arguments: their common float dtype.

    Raises:
        TypeError: for complex or non-numeric arguments, naming the component and argument.
    """
    strong = []
    for name, value in arrays.items():
        if value is None:
            continue
        if isinstance(value, int | float) and not isinstance(value, bool):
            continue
        dtype = jnp.result_type(value)
        if not jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.complexfloating):
            raise TypeError(f"{component}: {name} must be real numbers, got dtype {dtype}.")
        if jnp.issubdtype(dtype, jnp.floating):
            strong.append(dtype)
    if not strong:
        return jnp.result_type(float), True
    return jnp.result_type(*strong), False


def checked_scale(component, argument, value, dtype, shape=()):
    """A non-negative scale (standard deviation) as an array of ``shape``, checked.

    Args:
        component: the builder's name, for the messages.
        argument: the argument's name.
        value: a number or array broadcastable to ``shape``.
        dtype: the block's dtype.
        shape: the shape the scale is broadcast to (``()`` or ``(s,)``).

    Returns:
        The scale, shape ``shape``.

    Raises:
        ValueError: for a shape that does not broadcast to ``shape``, or (when concrete) a
            negative or non-finite value.
    """
    arr = jnp.asarray(value, dtype)
    if arr.ndim > len(shape) or jnp.broadcast_shapes(arr.shape, shape) != tuple(shape):
        expected = "a scalar" if not shape else f"a scalar or shape {tuple(shape)}"
        raise ValueError(f"{component}: {argument} must be {expected}, got shape {arr.shape}.")
    if is_concrete(arr):
        values = np.asarray(arr)
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError(
                f"{component}: {argument} is a standard deviation and must be finite and >= 0, "
                f"got {values.tolist()}."
            )
    return jnp.broadcast_to(arr, shape)


def initial_block(component, initial_mean, initial_scale, dtype, num_states, default):
    """The block's initial mean, factor and diffuse flags from the builders' arguments.

    Args:
        component: the builder's name.
        initial_mean: a number or ``(s,)`` array (ignored for diffuse states).
        initial_scale: None (``default``), ``"diffuse"``, or a number or ``(s,)`` array of
            standard deviations (a proper normal start).
        dtype: the block's dtype.
        num_states: ``s``.
        default: what None means: ``"diffuse"``, or a callable returning the factor of a
            proper start (the stationary distribution).

    Returns:
        ``(initial_mean (s,), initial_scale_tril (s, s), diffuse_states tuple)``.
    """
    mean = jnp.asarray(initial_mean, dtype)
    if mean.ndim > 1 or jnp.broadcast_shapes(mean.shape, (num_states,)) != (num_states,):
        raise ValueError(
            f"{component}: initial_mean must be a scalar or shape ({num_states},), got "
            f"{mean.shape}."
        )
    mean = jnp.broadcast_to(mean, (num_states,))
    spec = default if initial_scale is None else initial_scale
    if isinstance(spec, str):
        if spec != "diffuse":
            raise ValueError(
                f"{component}: initial_scale must be None, 'diffuse' or standard deviations, "
                f"got {spec!r}."
            )
        return mean, jnp.zeros((num_states, num_states), dtype), (True,) * num_states
    if callable(spec):
        return mean, spec(), (False,) * num_states
    sd = checked_scale(component, "initial_scale", spec, dtype, (num_states,))
    return mean, jnp.diag(sd), (False,) * num_states


def time_varying_rows(component, argument, value, dtype, columns=None):
    """Covariates as a ``(T', k)`` array: one row per time step.

    Raises:
        ValueError: for anything but a 1-D ``(T',)`` or 2-D ``(T', k)`` array (with ``k``
            equal to ``columns`` when given).
    """
    arr = jnp.asarray(value, dtype)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] < 1 or (columns is not None and arr.shape[1] != columns):
        want = "(T, k)" if columns is None else f"(T, {columns})"
        raise ValueError(
            f"{component}: {argument} must have shape {want} (one row per time step), got "
            f"{jnp.shape(value)}."
        )
    return arr


def make_component(name, dtype, weak, *, initial, F, chol_Q, H, names, bias=None, chol_R=None):
    """A :class:`Component` from its arrays (``initial`` is what :func:`initial_block` returns)."""
    mean, chol_P0, diffuse = initial
    params = LGSSMParams(
        initial_mean=mean,
        initial_scale_tril=chol_P0,
        transition_matrix=F,
        transition_scale_tril=chol_Q,
        emission_matrix=H,
        emission_scale_tril=jnp.zeros((1, 1), dtype) if chol_R is None else chol_R,
        transition_bias=None,
        emission_bias=bias,
    )
    return Component(name, params, tuple(diffuse), tuple(names), weak, chol_R is not None)


def stateless_component(name, dtype, weak, *, bias=None, chol_R=None):
    """A :class:`Component` without states: a regression effect (``bias``) or the noise."""
    empty = jnp.zeros((0, 0), dtype)
    return make_component(
        name,
        dtype,
        weak,
        initial=(jnp.zeros((0,), dtype), empty, ()),
        F=empty,
        chol_Q=empty,
        H=jnp.zeros((1, 0), dtype),
        names=(),
        bias=bias,
        chol_R=chol_R,
    )


def block_diag(blocks):
    """The block-diagonal NumPy matrix of square ``blocks``."""
    n = sum(b.shape[0] for b in blocks)
    out = np.zeros((n, n))
    i = 0
    for b in blocks:
        out[i : i + b.shape[0], i : i + b.shape[0]] = b
        i += b.shape[0]
    return out
