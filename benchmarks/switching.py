"""Side-by-side timings of switching models: AutoregressiveHMM vs dynamax, Gibbs vs jax-moseq.

Two comparisons (issue 19's performance targets):

1. **log_prob value+grad** of an autoregressive HMM with K = 10 states, D = 10 dimensions,
   L = 3 lags and T = 10⁴ steps: ``AutoregressiveHMM(...).log_prob(y)`` (serial and parallel)
   against dynamax's ``LinearAutoregressiveHMM.marginal_log_prob`` with its zero-padded lagged
   inputs, which is ``initial_lags=zeros`` here, so both compute the same number (checked).
   Both differentiate with respect to the initial and transition logits, the AR weights and
   biases and the noise scale factors; the lagged inputs are built inside the timed function.
   Time per step in µs, float64 and float32, in one process.
2. **One Gibbs sweep** of an ARHMM (K = 20, D = 10, L = 1, B = 5 sequences of 10⁴ frames, float32,
   weak-limit sticky HDP transitions, the same MNIW hyperparameters): our jitted
   :func:`numpyro_ssm.ops.switching.arhmm_gibbs_step` against jax-moseq's
   ``jax_moseq.models.arhmm.resample_model`` (transitions, AR parameters, paths; its table
   counts run on the host through numba). jax-moseq pins ``dynamax<1.0.3`` and cannot share our
   environment: with ``--moseq-venv PATH`` this script creates that venv (``pip install
   jax-moseq==0.3.7 'dynamax<1.0.3'``) if it does not exist, writes the problem to an ``.npz``
   file and times jax-moseq there with ``benchmarks/moseq_sweep.py``, right after timing ours
   (``benchmarks/.venv-moseq`` is used by default when it exists, e.g. under ``run_all.py``).
   Without a venv the jax-moseq row is left out.

Steady-state times are medians of repeated calls ended by ``block_until_ready``; ratios are ours
over the peer's (below 1: ours is faster). Typical use::

    python benchmarks/switching.py --moseq-venv benchmarks/.venv-moseq
    python benchmarks/switching.py --quick --json out/switching.json
    python benchmarks/switching.py --parts sweep --repeats 10   # the Gibbs sweep only
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # float32 cells switch it off: _timing.precision

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from numpyro_ssm import AutoregressiveHMM  # noqa: E402
from numpyro_ssm.ops.switching import (  # noqa: E402
    MNIWParams,
    TransitionPrior,
    arhmm_gibbs_step,
    init_arhmm_gibbs,
)

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._timing import (  # noqa: E402
    compile_and_time,
    fmt,
    machine_lines,
    machine_meta,
    precision,
    print_table,
    ratio_record,
    time_calls,
    warm_up_compiler,
    write_json,
)

HERE = Path(__file__).resolve().parent
EXTRA_VERSIONS = (("dynamax", "dynamax"), ("numpy", "numpy"))
MOSEQ_REQUIREMENTS = ("jax-moseq==0.3.7", "dynamax<1.0.3")

# ------------------------------------------------------------------------------------------------
# 1. log_prob value+grad against dynamax


def make_arhmm_problem(K, D, L, T, dtype, seed=0):
    """Parameters ``(initial logits, transition logits, weights, biases, trils)`` and ``y``."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(K, D, L * D)) * (0.4 / np.sqrt(L * D))
    weights[:, :, :D] += 0.5 * np.eye(D)
    biases = rng.normal(size=(K, D)) * 0.3
    trils = np.tril(rng.normal(size=(K, D, D)) * 0.05) + np.eye(D) * 0.5
    params = (
        rng.normal(size=K),
        rng.normal(size=(K, K)) + 3 * np.eye(K),
        weights,
        biases,
        trils,
    )
    y = np.zeros((T, D))
    z = rng.integers(K, size=T // 50 + 1).repeat(50)[:T]
    for t in range(1, T):
        lags = np.concatenate(
            [y[t - lag] if t - lag >= 0 else np.zeros(D) for lag in range(1, L + 1)]
        )
        y[t] = weights[z[t]] @ lags + biases[z[t]] + trils[z[t]] @ rng.normal(size=D)
    return tuple(jnp.asarray(p, dtype) for p in params), jnp.asarray(y, dtype)


def ours(parallel):
    def log_marginal(params, y):
        init, trans, weights, biases, trils = params
        L = weights.shape[-1] // weights.shape[-2]
        model = AutoregressiveHMM(
            initial_logits=init,
            transition_logits=trans,
            ar_matrix=weights,
            ar_bias=biases,
            ar_scale_tril=trils,
            initial_lags=jnp.zeros((L, y.shape[-1]), y.dtype),
            num_steps=y.shape[0],
            parallel=parallel,
        )
        return model.log_prob(y)

    return log_marginal


def dynamax_log_marginal(params, y):
    from dynamax.hidden_markov_model import LinearAutoregressiveHMM
    from dynamax.hidden_markov_model.models.arhmm import ParamsLinearAutoregressiveHMM
    from dynamax.hidden_markov_model.models.initial import ParamsStandardHMMInitialState
    from dynamax.hidden_markov_model.models.linreg_hmm import ParamsLinearRegressionHMMEmissions
    from dynamax.hidden_markov_model.models.transitions import ParamsStandardHMMTransitions

    init, trans, weights, biases, trils = params
    K, D, LD = weights.shape
    model = LinearAutoregressiveHMM(K, D, num_lags=LD // D)
    dyn_params = ParamsLinearAutoregressiveHMM(
        initial=ParamsStandardHMMInitialState(probs=jax.nn.softmax(init)),
        transitions=ParamsStandardHMMTransitions(transition_matrix=jax.nn.softmax(trans, -1)),
        emissions=ParamsLinearRegressionHMMEmissions(
            weights=weights, biases=biases, covs=trils @ jnp.swapaxes(trils, -1, -2)
        ),
    )
    return model.marginal_log_prob(dyn_params, y, model.compute_inputs(y))


LOG_PROB_METHODS = {
    "serial": ours(False),
    "parallel": ours(True),
    "dynamax": dynamax_log_marginal,
}
LABELS = {
    "serial": "numpyro_ssm serial",
    "parallel": "numpyro_ssm parallel",
    "dynamax": "dynamax LinearAutoregressiveHMM",
    "gibbs": "numpyro_ssm arhmm_gibbs_step",
    "moseq": "jax-moseq resample_model",
}


def bench_log_prob(dtype, K, D, L, T, args):
    params, y = make_arhmm_problem(K, D, L, T, dtype, seed=args.seed)
    repeat = {"min_repeats": args.repeats, "max_repeats": 10 * args.repeats, "min_total": 0.5}
    out = {}
    for method, fn in LOG_PROB_METHODS.items():
        row = {}
        try:
            compile_s, steady, value = compile_and_time(fn, (params, y), **repeat)
            row.update(value=steady, value_compile=compile_s, log_marginal=float(value))
            compile_s, steady, (_, grads) = compile_and_time(
                jax.value_and_grad(fn), (params, y), **repeat
            )
            row.update(grad=steady, grad_compile=compile_s)
            if not all(bool(jnp.all(jnp.isfinite(g))) for g in grads):
                row["note"] = "non-finite gradient"
        except Exception as err:  # noqa: BLE001 - a failing peer must not stop the run
            row["note"] = f"failed: {type(err).__name__}: {str(err)[:200]}"
        out[method] = row
        print(f"# log_prob {dtype} {LABELS[method]}: {row}", file=sys.stderr, flush=True)
    return out


# ------------------------------------------------------------------------------------------------
# 2. one Gibbs sweep against jax-moseq


def make_sweep_problem(K, D, B, T, seed=0):
    """Observations ``(B, T, D)`` from a sticky ARHMM with AR(1) dynamics near a random walk."""
    rng = np.random.default_rng(seed)
    A = 0.9 * np.eye(D) + rng.normal(size=(K, D, D)) * 0.05
    b = rng.normal(size=(K, D)) * 0.2
    y = np.zeros((B, T, D))
    for n in range(B):
        z = rng.integers(K, size=T // 20 + 1).repeat(20)[:T]
        for t in range(1, T):
            y[n, t] = A[z[t]] @ y[n, t - 1] + b[z[t]] + rng.normal(size=D) * 0.3
    return y


HYPER = {"alpha": 5.7, "kappa": 1e4, "gamma": 1e3, "S_0_scale": 0.01, "K_0_scale": 10.0}


def ours_sweep(y, K, L, dtype, args):
    D = y.shape[-1]
    P = L * D + 1
    prior = MNIWParams(
        jnp.zeros((D, P), dtype).at[:, :D].set(jnp.eye(D)),  # jax-moseq's M_0: I on the last lag
        jnp.eye(P, dtype=dtype) / HYPER["K_0_scale"],
        jnp.asarray(D + 2.0, dtype),
        HYPER["S_0_scale"] * jnp.eye(D, dtype=dtype),
    )
    transitions = TransitionPrior(
        HYPER["alpha"], HYPER["kappa"], jnp.ones(K, dtype) / K, gamma=HYPER["gamma"]
    )
    y = jnp.asarray(y, dtype)
    mask = jnp.ones(y.shape[:2], bool)
    state = init_arhmm_gibbs(
        jax.random.key(0),
        y,
        mask,
        num_states=K,
        num_lags=L,
        ar_prior=prior,
        transition_prior=transitions,
    )
    step = jax.jit(partial(arhmm_gibbs_step, ar_prior=prior, transition_prior=transitions))
    keys = iter(jax.random.split(jax.random.key(1), 10_000))
    holder = {"state": state}

    def call():
        holder["state"] = step(next(keys), holder["state"], y, mask)
        return holder["state"]

    start = time.perf_counter()
    call()
    compile_s = time.perf_counter() - start
    _, steady, _ = time_calls(call, min_repeats=args.repeats, max_repeats=args.repeats, min_total=0)
    return {"value": steady, "first_call": compile_s}


def ensure_moseq_venv(path):
    path = Path(path)
    python = path / "bin" / "python"
    if not python.exists():
        print(f"# creating jax-moseq's venv at {path} ...", file=sys.stderr, flush=True)
        subprocess.check_call([sys.executable, "-m", "venv", str(path)])
        subprocess.check_call([str(python), "-m", "pip", "install", "-q", *MOSEQ_REQUIREMENTS])
    return python


def moseq_sweep(y, K, L, dtype, args):
    python = ensure_moseq_venv(args.moseq_venv)
    with tempfile.TemporaryDirectory() as tmp:
        problem = Path(tmp) / "problem.npz"
        np.savez(
            problem,
            x=y,
            mask=np.ones(y.shape[:2]),
            num_states=K,
            num_lags=L,
            dtype=np.array(dtype),
            **{k: np.asarray(v) for k, v in HYPER.items()},
        )
        out = subprocess.run(
            [
                str(python),
                str(HERE / "moseq_sweep.py"),
                str(problem),
                "--repeats",
                str(args.repeats),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    if out.returncode != 0:
        return {"note": f"jax-moseq failed: {out.stderr[-400:]}"}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"value": result["median_s"], "first_call": result["first_s"], "moseq": result}


# ------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--moseq-venv",
        help="jax-moseq's venv, created if missing (default: benchmarks/.venv-moseq if it exists)",
    )
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--quick", action="store_true", help="T = 1000, B = 2, 3 repeats")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=("log_prob", "sweep"),
        default=("log_prob", "sweep"),
        help="which comparisons to run (default: both)",
    )
    args = parser.parse_args(argv)
    if args.moseq_venv is None and (HERE / ".venv-moseq" / "bin" / "python").exists():
        args.moseq_venv = str(HERE / ".venv-moseq")
    args.T, args.B = (1000, 2) if args.quick else (10_000, 5)
    if args.quick:
        args.repeats = 3
    return args


def log_prob_rows(args, rows, records, ratios):
    """Part 1 (``log_prob`` value+grad against dynamax): appends to the three lists."""
    K, D, L = 10, 10, 3
    for dtype in ("float64", "float32"):
        with precision(dtype):
            res = bench_log_prob(dtype, K, D, L, args.T, args)
        reference = res["serial"].get("log_marginal")
        case = f"{dtype} K={K} D={D} L={L} T={args.T}"
        for method, row in res.items():
            records.append({"benchmark": "log_prob", "case": case, "method": method, **row})
            if reference is not None and row.get("log_marginal") is not None:
                tol = 1e-8 if dtype == "float64" else 1e-3
                if abs(row["log_marginal"] - reference) > tol * abs(reference):
                    row["note"] = f"log marginal {row['log_marginal']} != serial {reference}"
            per_step = 1e6 / args.T
            rows.append(
                [
                    "log_prob",
                    case,
                    LABELS[method],
                    fmt(row["value"] * per_step) if "value" in row else "—",
                    fmt(row["grad"] * per_step) if "grad" in row else "—",
                    fmt(res["serial"].get("grad", np.nan) / row["grad"], 3)
                    if "grad" in row
                    else "—",
                    row.get("note", ""),
                ]
            )
        for ours_name in ("serial", "parallel"):
            for metric, key in (("value", "value"), ("value+grad", "grad")):
                mine, peer = res[ours_name].get(key), res["dynamax"].get(key)
                if mine and peer:
                    ratios.append(
                        ratio_record(
                            "switching",
                            case,
                            metric,
                            LABELS[ours_name],
                            mine * 1e6 / args.T,
                            LABELS["dynamax"],
                            peer * 1e6 / args.T,
                            "µs/step",
                        )
                    )


def sweep_rows(args, rows, records, ratios):
    """Part 2 (one Gibbs sweep against jax-moseq): appends to the three lists."""
    K, D, L = 20, 10, 1
    dtype = "float32"
    y = make_sweep_problem(K, D, args.B, args.T, seed=args.seed)
    case = f"{dtype} K={K} D={D} L={L} B={args.B} T={args.T}"
    with precision(dtype):
        mine = ours_sweep(y, K, L, jnp.float32, args)
    theirs = moseq_sweep(y, K, L, dtype, args) if args.moseq_venv else {"note": "no --moseq-venv"}
    for method, row in (("gibbs", mine), ("moseq", theirs)):
        records.append({"benchmark": "gibbs_sweep", "case": case, "method": method, **row})
        rows.append(
            [
                "gibbs sweep",
                case,
                LABELS[method],
                fmt(row["value"] * 1e3) + " ms" if "value" in row else "—",
                "—",
                fmt(mine["value"] / row["value"], 3) if "value" in row else "—",
                row.get("note", ""),
            ]
        )
    if "value" in theirs:
        ratios.append(
            ratio_record(
                "switching",
                case,
                "one Gibbs sweep",
                LABELS["gibbs"],
                mine["value"],
                LABELS["moseq"],
                theirs["value"],
                "s",
            )
        )


def main(argv=None):
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    meta = machine_meta(EXTRA_VERSIONS)
    for line in machine_lines(meta):
        print(line)
    warm_up_compiler()
    rows, ratios, records = [], [], []
    if "log_prob" in args.parts:
        log_prob_rows(args, rows, records, ratios)
    if "sweep" in args.parts:
        sweep_rows(args, rows, records, ratios)
    columns = (
        "what",
        "case",
        "method",
        "value µs/step",
        "value+grad µs/step",
        "ours ÷ this",
        "note",
    )
    print()
    print_table(columns, rows, markdown=args.markdown)
    print("\n'ours ÷ this': numpyro_ssm serial (value+grad, or the sweep) over the row's time.")
    write_json(args.json, meta, records, ratios)


if __name__ == "__main__":
    main()
