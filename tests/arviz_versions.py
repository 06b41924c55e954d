"""What the tests ask of ArviZ, under both majors: 0.2x (Python 3.11) and 1.x (Python >= 3.12).

ArviZ 1.x returns an ``xarray.DataTree`` where 0.2x had ``InferenceData``, ``ELPDData`` objects
with attributes where 0.2x had a pandas Series, and has no WAIC.
"""

import arviz as az

ARVIZ_1 = int(az.__version__.split(".")[0]) >= 1


def group_names(idata):
    """The groups of an ``InferenceData`` or the child nodes of a ``DataTree``."""
    return set(idata.children) if ARVIZ_1 else set(idata.groups())


def loo(idata):
    """``(elpd_loo, n_data_points)`` of ``az.loo``."""
    result = az.loo(idata)
    if ARVIZ_1:
        return result.elpd, result.n_data_points
    return result["elpd_loo"], result["n_data_points"]


def waic_elpd(idata):
    """``elpd_waic`` (ArviZ 0.2x), or the PSIS-LOO elpd where ArviZ 1.x has no WAIC."""
    return az.waic(idata)["elpd_waic"] if not ARVIZ_1 else loo(idata)[0]
