"""Side-by-side timings of the Kalman log-likelihood: numpyro_ssm against TFP, dynamax, statsmodels.

What is timed, for each (dtype, S, T) cell, on one shared problem:

- a linear-Gaussian SSM with state dim S and observation dim D = max(1, S // 2): random initial
  mean m0 (S,), lower-triangular initial scale L0 (S, S), a stable random transition matrix F
  (S, S) (spectral radius 0.95), transition scale LQ (S, S), bias b (S,), emission matrix H
  (D, S), emission scale LR (D, D), bias d (D,), and T observations simulated from it. These
  eight arrays are the parameters; every method turns them into its own representation *inside*
  the timed call (``cov = L Lᵀ`` where it wants covariances):

  - ``serial`` / ``parallel``: ``numpyro_ssm.LinearGaussianSSM(m0, F, H, initial_scale_tril=L0,
    transition_scale_tril=LQ, emission_scale_tril=LR, transition_bias=b, emission_bias=d,
    num_steps=T, parallel=...).log_prob(y)`` (square-root filter);
  - ``tfp``: ``tfd.LinearGaussianStateSpaceModel(T, F, MultivariateNormalTriL(b, LQ), H,
    MultivariateNormalTriL(d, LR), MultivariateNormalTriL(m0, L0)).log_prob(y)``, TFP's JAX
    substrate (covariance form);
  - ``dynamax`` / ``dynamax_parallel``: ``dynamax.linear_gaussian_ssm.inference.lgssm_filter`` and
    ``parallel_inference.lgssm_filter`` on ``make_lgssm_params(...)``, ``.marginal_loglik``;
  - ``statsmodels``: ``statsmodels.tsa.statespace.kalman_filter.KalmanFilter`` with the data bound
    once, known initialization and ``loglikelihood_burn=0``; the timed call sets the system
    matrices from the parameters and runs ``.loglike()`` (NumPy + Cython, float64, value only).

- "value" is the log-likelihood; "value+grad" is ``jax.value_and_grad`` with respect to all
  eight parameter arrays, compiled ahead of time with ``jax.jit``.
- Steady-state time is the median of repeated calls (``block_until_ready``), in µs per time step.
  "compile" is trace + lower + XLA compile of ``jax.jit(f)``, in seconds (``benchmarks/_timing``).
- Before the table is trusted, every method's log-likelihood is compared with numpyro_ssm
  serial: the "agrees" column says ``yes`` or gives the relative difference (rtol 1e-6 in
  float64, 1e-3 in float32).
- Ratio columns are numpyro_ssm's serial (parallel) time over the row's: above 1 means
  numpyro_ssm is slower.
- ``--isolate`` runs each cell's methods in a child process watched by
  ``benchmarks/_watchdog``: a method that deadlocks (dynamax's parallel filter at T = 10⁵ on
  jaxlib 0.10.2's CPU runtime) is reported as hung and the others go on. The methods of a cell
  still run side by side in one process.
- The default grid stops at T = 10³ because on a 2-core CPU compilation dominates the run: each
  parallel scan (ours and dynamax's) takes 10 to 100 s to compile, more for larger T (the
  associative scan unrolls about log2(T) levels).

Typical use::

    python benchmarks/lgssm.py --quick                       # S=2, T=1000: a smoke run
    python benchmarks/lgssm.py                               # S=2,8,32, T=1e3 (minutes)
    python benchmarks/lgssm.py --S 2 8 32 --T 1e3 1e4 1e5 --isolate   # the full grid (slow)
    python benchmarks/lgssm.py --S 8 --T 10000 --methods serial tfp dynamax --markdown
"""

import argparse
import sys
import time
import traceback
import warnings
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # float32 cells switch it off: _timing.precision

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from numpyro_ssm import LinearGaussianSSM  # noqa: E402

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._timing import (  # noqa: E402
    compile_and_time,
    fmt,
    fmt_steps,
    machine_lines,
    machine_meta,
    precision,
    print_table,
    ratio_record,
    time_calls,
    warm_up_compiler,
    write_json,
)
from benchmarks._watchdog import child_record, run_isolated  # noqa: E402

METHODS = ("serial", "parallel", "tfp", "dynamax", "dynamax_parallel", "statsmodels")
OURS = ("serial", "parallel")
LABELS = {
    "serial": "numpyro_ssm serial",
    "parallel": "numpyro_ssm parallel",
    "tfp": "TFP LinearGaussianStateSpaceModel",
    "dynamax": "dynamax lgssm_filter",
    "dynamax_parallel": "dynamax parallel lgssm_filter",
    "statsmodels": "statsmodels KalmanFilter.loglike",
}
EXTRA_VERSIONS = (
    ("tfp", "tensorflow_probability"),
    ("dynamax", "dynamax"),
    ("statsmodels", "statsmodels"),
    ("numpy", "numpy"),
)
# Rough peak memory of one call in units of T * S^2 * itemsize, (value, value+grad), with margin;
# used only to skip calls that would not fit in --max-gb.
MEMORY_FACTORS = {
    "serial": (1.0, 12.0),
    "parallel": (12.0, 60.0),
    "tfp": (1.0, 12.0),
    "dynamax": (1.0, 12.0),
    "dynamax_parallel": (12.0, 60.0),
    "statsmodels": (3.0, 0.0),
}


# ------------------------------------------------------------------------------------------------
# The shared problem.


def obs_dim(state_dim):
    """The observation dim used for state dim ``S``: ``max(1, S // 2)``."""
    return max(1, state_dim // 2)


def make_problem(state_dim, num_steps, dtype, seed=0):
    """Random parameters and simulated observations of a stable linear-Gaussian SSM.

    Returns:
        ``(params, y)`` with ``params = (m0 (S,), L0 (S, S), F (S, S), LQ (S, S), b (S,),
        H (D, S), LR (D, D), d (D,))`` as arrays of ``dtype`` (``L*`` lower-triangular with a
        positive diagonal) and ``y (T, D)``.
    """
    rng = np.random.default_rng(seed)
    S, D = state_dim, obs_dim(state_dim)

    def scale_tril(n, size):
        return np.tril(rng.normal(scale=0.1 * size, size=(n, n)), -1) + np.diag(
            rng.uniform(0.5, 1.0, size=n) * size
        )

    q, _ = np.linalg.qr(rng.normal(size=(S, S)))
    F = 0.95 * q
    m0, L0 = rng.normal(size=S), scale_tril(S, 1.0)
    LQ, b = scale_tril(S, 0.3), 0.1 * rng.normal(size=S)
    H = rng.normal(size=(D, S)) / np.sqrt(S)
    LR, d = scale_tril(D, 0.5), rng.normal(size=D)

    z = m0 + L0 @ rng.normal(size=S)
    y = np.empty((num_steps, D))
    for t in range(num_steps):
        y[t] = H @ z + d + LR @ rng.normal(size=D)
        z = F @ z + b + LQ @ rng.normal(size=S)
    params = tuple(jnp.asarray(x, dtype=dtype) for x in (m0, L0, F, LQ, b, H, LR, d))
    return params, jnp.asarray(y, dtype=dtype)


def _covariance(scale_tril):
    L = jnp.tril(scale_tril)
    return L @ L.T


# ------------------------------------------------------------------------------------------------
# The log-likelihood of each JAX method, as a function of (params, y).


def ours(parallel):
    """numpyro_ssm's ``LinearGaussianSSM.log_prob`` as a function of ``(params, y)``."""

    def log_likelihood(params, y):
        m0, L0, F, LQ, b, H, LR, d = params
        ssm = LinearGaussianSSM(
            m0,
            F,
            H,
            initial_scale_tril=jnp.tril(L0),
            transition_scale_tril=jnp.tril(LQ),
            emission_scale_tril=jnp.tril(LR),
            transition_bias=b,
            emission_bias=d,
            num_steps=y.shape[0],
            parallel=parallel,
        )
        return ssm.log_prob(y)

    return log_likelihood


def tfp_log_likelihood(params, y):
    """TFP's ``LinearGaussianStateSpaceModel.log_prob`` (JAX substrate)."""
    from tensorflow_probability.substrates import jax as tfp

    tfd = tfp.distributions
    m0, L0, F, LQ, b, H, LR, d = params
    model = tfd.LinearGaussianStateSpaceModel(
        num_timesteps=y.shape[0],
        transition_matrix=F,
        transition_noise=tfd.MultivariateNormalTriL(b, scale_tril=jnp.tril(LQ)),
        observation_matrix=H,
        observation_noise=tfd.MultivariateNormalTriL(d, scale_tril=jnp.tril(LR)),
        initial_state_prior=tfd.MultivariateNormalTriL(m0, scale_tril=jnp.tril(L0)),
    )
    return model.log_prob(y)


def _dynamax_params(params):
    from dynamax.linear_gaussian_ssm.inference import make_lgssm_params

    m0, L0, F, LQ, b, H, LR, d = params
    return make_lgssm_params(
        m0,
        _covariance(L0),
        F,
        _covariance(LQ),
        H,
        _covariance(LR),
        dynamics_bias=b,
        emissions_bias=d,
    )


def dynamax_log_likelihood(parallel):
    """dynamax's serial or parallel ``lgssm_filter(...).marginal_loglik``."""

    def log_likelihood(params, y):
        if parallel:
            from dynamax.linear_gaussian_ssm.parallel_inference import lgssm_filter
        else:
            from dynamax.linear_gaussian_ssm.inference import lgssm_filter
        return lgssm_filter(_dynamax_params(params), y).marginal_loglik

    return log_likelihood


JAX_METHODS = {
    "serial": ours(parallel=False),
    "parallel": ours(parallel=True),
    "tfp": tfp_log_likelihood,
    "dynamax": dynamax_log_likelihood(parallel=False),
    "dynamax_parallel": dynamax_log_likelihood(parallel=True),
}


def statsmodels_loglike(params, y):
    """A statsmodels ``KalmanFilter`` bound to ``y``; returns a call that sets it up and scores.

    The returned function converts the parameters to covariances and system matrices and runs
    ``loglike()``, as one likelihood evaluation inside an optimizer would.
    """
    from statsmodels.tsa.statespace.kalman_filter import KalmanFilter

    m0, L0, F, LQ, b, H, LR, d = (np.asarray(p, dtype=np.float64) for p in params)
    S, D = F.shape[0], H.shape[0]
    kf = KalmanFilter(k_endog=D, k_states=S, k_posdef=S, loglikelihood_burn=0)
    kf.bind(np.asarray(y, dtype=np.float64))
    kf["selection"] = np.eye(S)

    def call():
        kf["transition"] = F
        kf["state_intercept"] = b
        kf["state_cov"] = np.tril(LQ) @ np.tril(LQ).T
        kf["design"] = H
        kf["obs_intercept"] = d
        kf["obs_cov"] = np.tril(LR) @ np.tril(LR).T
        kf.initialize_known(m0, np.tril(L0) @ np.tril(L0).T)
        return kf.loglike()

    return call


# ------------------------------------------------------------------------------------------------
# Timing one cell.


def bench_method(method, params, y, args):
    """Time one method on one problem; return a result dict (times in seconds)."""
    num_steps, state_dim = y.shape[0], params[0].shape[0]
    itemsize = jnp.dtype(y.dtype).itemsize
    unit = num_steps * state_dim**2 * itemsize / 2**30
    value_gb, grad_gb = (f * unit for f in MEMORY_FACTORS[method])
    if value_gb > args.max_gb:
        return {"note": f"skipped: needs ~{value_gb:.0f} GB > --max-gb {args.max_gb:g}"}
    repeat = {"min_repeats": args.repeats, "max_repeats": 100 * args.repeats}
    repeat["min_total"] = args.min_time
    if method == "statsmodels":
        if y.dtype != jnp.float64:
            return {"omit": "statsmodels computes in float64 only: it has no float32 rows"}
        _, steady, out = time_calls(statsmodels_loglike(params, y), **repeat)
        return {"value": steady, "log_likelihood": float(out)}

    fn = JAX_METHODS[method]
    compile_s, steady, out = compile_and_time(fn, (params, y), **repeat)
    result = {"value": steady, "value_compile": compile_s, "log_likelihood": float(out)}
    if grad_gb > args.max_gb:
        result["grad_note"] = f"value+grad skipped: needs ~{grad_gb:.0f} GB > --max-gb"
        return result
    grad_fn = jax.value_and_grad(fn)
    compile_s, steady, (_, grads) = compile_and_time(grad_fn, (params, y), **repeat)
    result.update(grad=steady, grad_compile=compile_s)
    if not all(bool(jnp.all(jnp.isfinite(g))) for g in grads):
        result["note"] = "non-finite gradient"
    return result


def agreement(result, reference, dtype):
    """``"yes"`` when the log-likelihood matches the reference, else a warning string."""
    value = result.get("log_likelihood")
    if value is None or reference is None:
        return "—"
    rtol = 1e-6 if dtype == "float64" else 1e-3
    rel = abs(value - reference) / max(1.0, abs(reference))
    return "yes" if rel <= rtol else f"NO: rel. diff {rel:.1e}"


def run_methods(dtype, state_dim, num_steps, args):
    """Run ``args.methods`` on one cell in this process; return ``{method: result}``."""
    params, y = make_problem(state_dim, num_steps, dtype, seed=args.seed)
    results = {}
    for method in args.methods:
        tag = f"{dtype} S={state_dim} T={fmt_steps(num_steps)} {LABELS[method]}"
        start = time.perf_counter()
        try:
            with precision(dtype):
                res = bench_method(method, params, y, args)
        except Exception as err:  # noqa: BLE001 - a failing peer must not stop the others
            res = {"note": f"failed: {type(err).__name__}: {str(err)[:200]}"}
            traceback.print_exc(limit=2, file=sys.stderr)
        results[method] = res
        child_record(args.child_out, method, res)
        print(f"# {tag}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return results


def run_cell(dtype, state_dim, num_steps, args, notes):
    """Every method on one cell (in a watched child with ``--isolate``); ``{method: result}``."""
    if args.isolate:
        child = [sys.executable, str(Path(__file__).resolve()), "--dtype", dtype]
        child += ["--S", str(state_dim), "--T", str(num_steps), "--seed", str(args.seed)]
        child += ["--repeats", str(args.repeats), "--min-time", str(args.min_time)]
        child += ["--max-gb", str(args.max_gb)]
        raw = run_isolated(child, args.methods, args.timeout)
    else:
        raw = run_methods(dtype, state_dim, num_steps, args)
    results = {}
    for method, res in raw.items():
        if "omit" in res:
            if res["omit"] not in notes:
                notes.append(res["omit"])
            continue
        results[method] = res
        tag = f"{dtype} S={state_dim} T={fmt_steps(num_steps)} {LABELS[method]}"
        notes += [f"{tag}: {res[k]}" for k in ("note", "grad_note") if k in res]
    reference = results.get("serial", {}).get("log_likelihood")
    for res in results.values():
        res["agrees"] = agreement(res, reference, dtype)
    return results


# ------------------------------------------------------------------------------------------------
# Output.

COLUMNS = (
    "dtype",
    "S",
    "D",
    "T",
    "method",
    "value µs/step",
    "value+grad µs/step",
    "compile value s",
    "compile v+g s",
    "serial ÷ this (value, v+g)",
    "parallel ÷ this (value, v+g)",
    "log-lik agrees",
)


def _ratio_cell(mine, res):
    if not mine or res.get("value") is None:
        return "—"
    r_value = mine["value"] / res["value"] if mine.get("value") else None
    r_grad = mine["grad"] / res["grad"] if (mine.get("grad") and res.get("grad")) else None
    return f"{fmt(r_value, 2)}, {fmt(r_grad, 2)}"


def row_cells(dtype, state_dim, num_steps, method, res, results):
    """One table row of string cells."""
    per_step = 1e6 / num_steps
    value, grad = res.get("value"), res.get("grad")
    return [
        dtype,
        str(state_dim),
        str(obs_dim(state_dim)),
        fmt_steps(num_steps),
        LABELS[method],
        fmt(value * per_step) if value is not None else "—",
        fmt(grad * per_step) if grad is not None else "—",
        fmt(res.get("value_compile"), 2),
        fmt(res.get("grad_compile"), 2),
        _ratio_cell(results.get("serial"), res),
        _ratio_cell(results.get("parallel"), res),
        res.get("agrees", "—"),
    ]


def cell_ratios(dtype, state_dim, num_steps, results):
    """Ratio records (ours over peer) of one cell: µs/step and compile seconds."""
    case = f"{dtype} S={state_dim} T={fmt_steps(num_steps)}"
    per_step = 1e6 / num_steps
    metrics = (
        ("value", "value", per_step, "µs/step"),
        ("value+grad", "grad", per_step, "µs/step"),
        ("compile v+g", "grad_compile", 1.0, "s"),
    )
    records = []
    for ours_method in OURS:
        mine = results.get(ours_method, {})
        for peer in (m for m in results if m not in OURS):
            theirs = results[peer]
            for metric, key, scale, unit in metrics:
                if mine.get(key) is None or theirs.get(key) is None:
                    continue
                records.append(
                    ratio_record(
                        "lgssm",
                        case,
                        metric,
                        LABELS[ours_method],
                        mine[key] * scale,
                        LABELS[peer],
                        theirs[key] * scale,
                        unit,
                    )
                )
    return records


# ------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--S", type=int, nargs="+", default=[2, 8, 32], help="state dims")
    parser.add_argument("--T", type=float, nargs="+", default=[1e3], help="numbers of time steps")
    parser.add_argument("--dtype", nargs="+", default=["float64"], choices=["float64", "float32"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--repeats", type=int, default=5, help="minimum steady-state calls")
    parser.add_argument(
        "--min-time",
        type=float,
        default=0.5,
        help="keep repeating (up to 100x --repeats) until the calls add up to this many seconds",
    )
    parser.add_argument(
        "--max-gb", type=float, default=6.0, help="skip calls estimated to need more memory"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--json", help="also write the results and ratios to this JSON file")
    parser.add_argument("--quick", action="store_true", help="S=2, T=1000, 3 repeats (smoke run)")
    parser.add_argument(
        "--isolate",
        action="store_true",
        help="run each cell in a watched child process: a hung peer is reported, not waited on",
    )
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="--isolate: longest wait for one method, s"
    )
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.S, args.T, args.repeats, args.min_time = [2], [1e3], 3, 0.0
    args.T = [int(t) for t in args.T]
    return args


def main(argv=None):
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    if args.child_out:  # a watched child of --isolate: one cell, results to the file only
        warm_up_compiler()
        run_methods(args.dtype[0], args.S[0], args.T[0], args)
        return
    meta = machine_meta(EXTRA_VERSIONS)
    print("\n".join(machine_lines(meta)) + "\n", flush=True)
    warm_up_compiler()

    rows, notes, records, ratios = [], [], [], []
    for dtype in args.dtype:
        for state_dim in args.S:
            for num_steps in args.T:
                results = run_cell(dtype, state_dim, num_steps, args, notes)
                cell = {"dtype": dtype, "S": state_dim, "D": obs_dim(state_dim), "T": num_steps}
                new_rows = [
                    row_cells(dtype, state_dim, num_steps, method, res, results)
                    for method, res in results.items()
                ]
                records += [cell | {"method": m} | res for m, res in results.items()]
                ratios += cell_ratios(dtype, state_dim, num_steps, results)
                rows += new_rows
                if new_rows:
                    print_table(COLUMNS, new_rows)
                    print(flush=True)

    print("\nAll cells:\n")
    print_table(COLUMNS, rows, markdown=args.markdown)
    disagree = [r for r in records if r.get("agrees", "yes") not in ("yes", "—")]
    print(
        f"\n{len(disagree)} of {len(records)} log-likelihoods disagree with numpyro_ssm serial "
        "(rtol 1e-6 in float64, 1e-3 in float32)."
    )
    if notes:
        print("\nNotes:")
        for note in notes:
            print(f"- {note}")
    write_json(args.json, meta, records, ratios)


if __name__ == "__main__":
    main()
