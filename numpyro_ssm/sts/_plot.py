"""One figure of a structural model: data, fit, components and forecast (matplotlib, lazy)."""

import numpy as np

_NOT_PANELS = ("fit", "irregular", "observed")


def _band(ax, ds, component, color, label):
    sel = ds.sel(component=component)
    x = np.asarray(ds["time"])
    ax.plot(x, np.asarray(sel["mean"]), color=color, lw=1.2, label=label)
    ax.fill_between(x, np.asarray(sel["lower"]), np.asarray(sel["upper"]), color=color, alpha=0.3)


def plot_components(observations, decomposition, forecast=None, *, components=None, title=None):
    """Data with the fit, one panel per component, and the forecast when given, in one figure.

    Args:
        observations: the series, shape ``(T,)`` or ``(T, 1)`` (NaN where missing).
        decomposition: the ``xarray.Dataset`` of :func:`~numpyro_ssm.sts.decompose` over the
            same ``T`` steps (its ``time`` coordinate is the x axis).
        forecast: None, or the ``xarray.Dataset`` of
            :func:`~numpyro_ssm.sts.forecast_components`; its bands continue each panel.
        components: the component panels to draw, in order; by default every component of
            ``decomposition`` except ``fit`` and ``irregular``.
        title: the top panel's title.

    Returns:
        The ``matplotlib.figure.Figure`` (one column: the data panel, then the components).

    Raises:
        ImportError: without matplotlib (the ``plot`` extra).
        ValueError: when ``observations`` is not ``(T,)`` or ``(T, 1)`` with ``T`` the
            decomposition's length, or a requested component is missing.
    """
    import matplotlib.pyplot as plt

    y = np.asarray(observations, float)
    steps = decomposition.sizes["time"]
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (steps,):
        raise ValueError(
            f"plot_components: observations must have shape ({steps},) or ({steps}, 1) like the "
            f"decomposition, got {np.shape(observations)}."
        )
    names = [str(c) for c in decomposition.component.values]
    if components is None:
        components = [c for c in names if c not in _NOT_PANELS]
    missing = [c for c in components if c not in names]
    if missing:
        raise ValueError(f"plot_components: no component {missing} in the decomposition {names}.")
    fig, axes = plt.subplots(
        1 + len(components), 1, figsize=(10, 3 * (1 + len(components))), sharex=True, squeeze=False
    )
    axes = axes[:, 0]
    axes[0].plot(np.asarray(decomposition["time"]), y, ".", ms=2, color="k", label="data")
    _band(axes[0], decomposition, "fit", "C0", "fit")
    if forecast is not None:
        _band(axes[0], forecast, "observed", "C3", "forecast")
    if title is not None:
        axes[0].set_title(title)
    for i, (ax, name) in enumerate(zip(axes[1:], components, strict=True)):
        _band(ax, decomposition, name, f"C{(i + 1) % 10}", name)
        if forecast is not None:
            _band(ax, forecast, name, "C3", f"{name} forecast")
        ax.set_ylabel(name)
    for ax in axes:
        ax.legend(loc="upper left")
    axes[-1].set_xlabel("time")
    fig.tight_layout()
    return fig
