"""Independent reference implementations used by the tests (NumPy/SciPy, no numpyro_ssm code).

- ``hmm_brute_force``: enumerates all K^T latent paths of a small HMM.
- Dense references for linear-Gaussian state space models (float64): the whole model is one
  Gaussian. Stack the states ``z = c + G eps`` by unrolling the recursion, then
  ``y = H z + d + noise``. Conditioning that joint Gaussian on the observed entries gives the
  exact log marginal and the exact filtered / smoothed moments, with missing entries simply
  dropped (marginalized) from the joint (``dense_*``); ``random_lgssm`` draws parameters and
  ``statsmodels_filter`` runs statsmodels' Kalman filter on them.
"""

import itertools
from typing import NamedTuple

import numpy as np
from scipy.stats import multivariate_normal


class BruteForceHMM(NamedTuple):
    log_marginal: float
    filtered_probs: np.ndarray  # (T, K)
    predicted_probs: np.ndarray  # (T, K)
    smoothed_probs: np.ndarray  # (T, K)
    expected_transitions: np.ndarray  # (K, K)
    log_likelihood_increments: np.ndarray  # (T,)
    mode: np.ndarray  # (T,)
    paths: np.ndarray  # (K^T, T)
    path_log_probs: np.ndarray  # (K^T,), log p(z_{1:T} | y_{1:T})


def _logsumexp(x):
    x = np.asarray(x, dtype=float)
    m = np.max(x)
    if not np.isfinite(m):
        return m
    return m + np.log(np.sum(np.exp(x - m)))


def hmm_brute_force(initial_probs, transition_matrix, log_likelihoods, obs_mask=None):
    """Enumerate every path z_{1:T} of a small HMM.

    Args:
        initial_probs: (K,).
        transition_matrix: (K, K) or (T-1, K, K).
        log_likelihoods: (T, K).
        obs_mask: (T,) bool or None; masked steps get zero log-likelihood.
    """
    pi = np.asarray(initial_probs, dtype=float)
    ll = np.array(log_likelihoods, dtype=float)
    T, K = ll.shape
    A = np.asarray(transition_matrix, dtype=float)
    if A.ndim == 2:
        A = np.broadcast_to(A, (max(T - 1, 1), K, K))
    if obs_mask is not None:
        ll[~np.asarray(obs_mask, dtype=bool)] = 0.0
    with np.errstate(divide="ignore"):
        log_pi, log_A = np.log(pi), np.log(A)
    paths = np.array(list(itertools.product(range(K), repeat=T)))
    # prefix_log_joint[n, t] = log p(z_{1:t+1}, y_{1:t+1}) for path n
    prefix = np.zeros((len(paths), T))
    for n, z in enumerate(paths):
        acc = log_pi[z[0]] + ll[0, z[0]]
        prefix[n, 0] = acc
        for t in range(1, T):
            acc = acc + log_A[t - 1, z[t - 1], z[t]] + ll[t, z[t]]
            prefix[n, t] = acc
    log_joint = prefix[:, -1]
    log_marginal = _logsumexp(log_joint)
    post = np.exp(log_joint - log_marginal)
    smoothed = np.zeros((T, K))
    expected = np.zeros((K, K))
    for n, z in enumerate(paths):
        smoothed[np.arange(T), z] += post[n]
        for t in range(T - 1):
            expected[z[t], z[t + 1]] += post[n]
    # filtering needs p(z_t, y_{1:t}): marginalize the prefix joint over z_{1:t-1}. Paths share
    # prefixes, so take each prefix once: paths whose later states are all 0.
    filtered = np.zeros((T, K))
    log_evidence = np.zeros(T)
    for t in range(T):
        unique = np.all(paths[:, t + 1 :] == 0, axis=1)
        lp = prefix[unique, t]
        log_evidence[t] = _logsumexp(lp)
        for k in range(K):
            sel = paths[unique, t] == k
            filtered[t, k] = np.exp(_logsumexp(lp[sel]) - log_evidence[t]) if sel.any() else 0.0
    predicted = np.zeros((T, K))
    predicted[0] = pi
    for t in range(1, T):
        predicted[t] = filtered[t - 1] @ A[t - 1]
    increments = np.diff(log_evidence, prepend=0.0)
    return BruteForceHMM(
        log_marginal,
        filtered,
        predicted,
        smoothed,
        expected,
        increments,
        paths[np.argmax(log_joint)],
        paths,
        log_joint - log_marginal,
    )


def random_lgssm(rng, S, D, T, *, time_varying=True, stable=True):
    """Random model parameters (keyword names of the ops), time-varying or homogeneous."""

    def tril(n, lead=()):
        a = rng.normal(size=lead + (n, n)) * 0.3
        a = np.tril(a)
        idx = np.arange(n)
        a[..., idx, idx] = 0.5 + rng.uniform(size=lead + (n,))
        return a

    lead_t = (T - 1,) if time_varying else ()
    lead_e = (T,) if time_varying else ()
    F = rng.normal(size=lead_t + (S, S))
    if stable:
        F = 0.9 * F / np.linalg.norm(F, ord=2, axis=(-2, -1), keepdims=True)
    return dict(
        initial_mean=rng.normal(size=(S,)),
        initial_scale_tril=tril(S),
        transition_matrix=F,
        transition_scale_tril=tril(S, lead_t),
        emission_matrix=rng.normal(size=lead_e + (D, S)),
        emission_scale_tril=tril(D, lead_e),
        transition_bias=rng.normal(size=lead_t + (S,)) * 0.5,
        emission_bias=rng.normal(size=lead_e + (D,)) * 0.5,
    )


def _full(params, T):
    """Parameters with explicit time axes (T-1 transitions, T emissions), as NumPy."""
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items() if v is not None}
    S = p["initial_mean"].shape[0]
    D = p["emission_matrix"].shape[-2]
    p.setdefault("transition_bias", np.zeros(S))
    p.setdefault("emission_bias", np.zeros(D))
    # a thin (S, q) transition factor as the square one with zero columns: the same Q
    L = p["transition_scale_tril"]
    p["transition_scale_tril"] = np.concatenate(
        [L, np.zeros(L.shape[:-1] + (S - L.shape[-1],))], axis=-1
    )
    base = {
        "transition_matrix": 2,
        "transition_scale_tril": 2,
        "transition_bias": 1,
        "emission_matrix": 2,
        "emission_scale_tril": 2,
        "emission_bias": 1,
    }
    out = dict(p)
    for name, nd in base.items():
        n = T - 1 if name.startswith("transition") else T
        a = p[name]
        if a.ndim == nd:
            a = a[None]
        out[name] = np.broadcast_to(a, (n,) + a.shape[1:])
    return out


def dense_joint(params, T):
    """Means and covariances of the stacked states ``(T*S,)`` and observations ``(T*D,)``."""
    p = _full(params, T)
    S = p["initial_mean"].shape[0]
    D = p["emission_matrix"].shape[-2]
    G = np.zeros((T * S, T * S))
    c = np.zeros(T * S)
    c[:S] = p["initial_mean"]
    G[:S, :S] = p["initial_scale_tril"]
    for t in range(T - 1):
        F = p["transition_matrix"][t]
        rows, prev = slice((t + 1) * S, (t + 2) * S), slice(t * S, (t + 1) * S)
        c[rows] = F @ c[prev] + p["transition_bias"][t]
        G[rows] = F @ G[prev]
        G[rows, rows] += p["transition_scale_tril"][t]
    Hbig = np.zeros((T * D, T * S))
    Rbig = np.zeros((T * D, T * D))
    dbig = np.zeros(T * D)
    for t in range(T):
        Hbig[t * D : (t + 1) * D, t * S : (t + 1) * S] = p["emission_matrix"][t]
        L = p["emission_scale_tril"][t]
        Rbig[t * D : (t + 1) * D, t * D : (t + 1) * D] = L @ L.T
        dbig[t * D : (t + 1) * D] = p["emission_bias"][t]
    cov_z = G @ G.T
    mean_y = Hbig @ c + dbig
    cov_y = Hbig @ cov_z @ Hbig.T + Rbig
    cov_zy = cov_z @ Hbig.T
    return c, cov_z, mean_y, cov_y, cov_zy


def dense_log_marginal(params, y, observed=None):
    """``log p(y_obs)`` from the dense joint, marginalized onto the observed entries."""
    y = np.asarray(y, dtype=np.float64)
    T = y.shape[0]
    obs = ~np.isnan(y) if observed is None else np.asarray(observed) & ~np.isnan(y)
    _, _, mean_y, cov_y, _ = dense_joint(params, T)
    o = obs.reshape(-1)
    if not o.any():
        return 0.0
    return multivariate_normal(mean_y[o], cov_y[np.ix_(o, o)]).logpdf(y.reshape(-1)[o])


def dense_posterior(params, y, observed=None, upto=None):
    """Moments of the states given the observed entries of ``y[:upto]`` (all by default).

    Returns ``(means (T, S), covariances (T, S, S), cross (T-1, S, S))`` where
    ``cross[t] = Cov(z_t, z_{t+1} | y)``.
    """
    y = np.asarray(y, dtype=np.float64)
    T, D = y.shape
    obs = ~np.isnan(y) if observed is None else np.asarray(observed) & ~np.isnan(y)
    if upto is not None:
        obs = obs.copy()
        obs[upto:] = False
    c, cov_z, mean_y, cov_y, cov_zy = dense_joint(params, T)
    S = c.shape[0] // T
    o = obs.reshape(-1)
    if o.any():
        gain = np.linalg.solve(cov_y[np.ix_(o, o)], cov_zy[:, o].T).T
        mean = c + gain @ (y.reshape(-1)[o] - mean_y[o])
        cov = cov_z - gain @ cov_zy[:, o].T
    else:
        mean, cov = c, cov_z
    means = mean.reshape(T, S)
    covs = np.stack([cov[t * S : (t + 1) * S, t * S : (t + 1) * S] for t in range(T)])
    cross = (
        np.stack([cov[t * S : (t + 1) * S, (t + 1) * S : (t + 2) * S] for t in range(T - 1)])
        if T > 1
        else np.zeros((0, S, S))
    )
    return means, covs, cross


def dense_filtered(params, y, observed=None):
    """Filtered moments ``E[z_t | y_{1:t}]`` and covariances, one dense conditioning per t."""
    T = np.asarray(y).shape[0]
    means, covs = [], []
    for t in range(T):
        m, c, _ = dense_posterior(params, y, observed, upto=t + 1)
        means.append(m[t])
        covs.append(c[t])
    return np.stack(means), np.stack(covs)


def statsmodels_filter(params, y):
    """statsmodels' ``KalmanFilter`` for the homogeneous model ``params``, bound to ``y``.

    Known initialization and no burn-in, so that its log-likelihood is ours; NaN entries of
    ``y`` are missing. Call ``.filter()`` or ``.loglike()`` on it.
    """
    from statsmodels.tsa.statespace.kalman_filter import KalmanFilter

    S, D = params["initial_mean"].shape[0], params["emission_matrix"].shape[-2]
    cov = lambda L: L @ L.T  # noqa: E731
    kf = KalmanFilter(k_endog=D, k_states=S, k_posdef=S, loglikelihood_burn=0)
    kf.bind(np.asarray(y))
    kf["design"] = params["emission_matrix"]
    kf["obs_intercept"] = params["emission_bias"][:, None]
    kf["obs_cov"] = cov(params["emission_scale_tril"])
    kf["transition"] = params["transition_matrix"]
    kf["state_intercept"] = params["transition_bias"][:, None]
    kf["selection"] = np.eye(S)
    kf["state_cov"] = cov(params["transition_scale_tril"])
    kf.initialize_known(params["initial_mean"], cov(params["initial_scale_tril"]))
    return kf


# ------------------------------------------------------------------------------------------------
# Switching and autoregressive models (issue 19): per-path enumeration with SciPy densities.


def arhmm_log_likelihoods(A, b, Q, y, num_lags, counted, *, initial_lags=None, initial_logpdf=None):
    """``[t, k] = log p(y_t | z_t = k, lags)`` by explicit loops, zero where ``counted`` is False.

    Args:
        A: (K, D, L*D), lag blocks most recent first.
        b: (K, D).
        Q: (K, D, D) covariances.
        y: (T, D).
        num_lags: L.
        counted: (T,) bool, the steps that count (written out by the test).
        initial_lags: (L, D) observations before y_1 in time order, or None.
        initial_logpdf: function (y_t, k) -> log density for t < L, or None.
    """
    y = np.asarray(y, dtype=float)
    T, D = y.shape
    K = np.shape(A)[0]
    L = num_lags
    history = np.zeros((L, D)) if initial_lags is None else np.asarray(initial_lags, dtype=float)
    full = np.concatenate([history, y])
    out = np.zeros((T, K))
    for t in range(T):
        if not counted[t]:
            continue
        for k in range(K):
            if initial_logpdf is not None and t < L:
                out[t, k] = initial_logpdf(y[t], k)
                continue
            mean = np.asarray(b[k], dtype=float).copy()
            for lag in range(1, L + 1):
                block = np.asarray(A[k])[:, (lag - 1) * D : lag * D]
                mean += block @ full[L + t - lag]
            out[t, k] = multivariate_normal(mean, np.asarray(Q[k])).logpdf(y[t])
    return out


def arhmm_path_moments(initial_probs, transition_matrix, A, b, Q, initial_lags, T):
    """Exact ``E[y_t]`` and ``Var[y_t]`` (per entry) of an ARHMM by enumerating all K^T paths.

    Given a path the observations are jointly Gaussian; their means and per-step covariances
    follow from unrolling the recursion with the stacked lag vector, path by path.
    """
    pi = np.asarray(initial_probs, dtype=float)
    P = np.asarray(transition_matrix, dtype=float)
    A, b, Q = (np.asarray(x, dtype=float) for x in (A, b, Q))
    K, D, LD = A.shape
    s0 = np.asarray(initial_lags, dtype=float)[::-1].reshape(-1)  # most recent first
    mean = np.zeros((T, D))
    second = np.zeros((T, D))
    for z in itertools.product(range(K), repeat=T):
        prob = pi[z[0]] * np.prod([P[z[t], z[t + 1]] for t in range(T - 1)])
        if prob == 0:
            continue
        m, C = s0.copy(), np.zeros((LD, LD))
        for t in range(T):
            k = z[t]
            F = np.zeros((LD, LD))
            F[:D] = A[k]
            F[D:, : LD - D] = np.eye(LD - D)
            c = np.zeros(LD)
            c[:D] = b[k]
            N = np.zeros((LD, LD))
            N[:D, :D] = Q[k]
            m, C = F @ m + c, F @ C @ F.T + N
            mean[t] += prob * m[:D]
            second[t] += prob * (np.diag(C[:D, :D]) + m[:D] ** 2)
    return mean, second - mean**2


def slds_dense_given_path(A, b, Q, z, C, d, R, m0, P0, T):
    """The joint Gaussian of an SLDS given its discrete path, by unrolling the AR recursion.

    Latents ``u = [x_{2-L}, ..., x_0, x_1, ..., x_T]`` with ``[x_1; x_0; ...; x_{2-L}] ~ N(m0,
    P0)`` and ``x_t = sum_l A[z_t]_l x_{t-l} + b[z_t] + N(0, Q[z_t])`` for ``t >= 2``;
    ``y_t = C x_t + d + N(0, R)``. Returns ``(mean_x (T, D), cov_x (T*D, T*D), mean_y (T*Dy,),
    cov_y, cov_xy)`` with ``x`` the steps ``1..T``.
    """
    A, b, Q = (np.asarray(a, dtype=float) for a in (A, b, Q))
    K, D, LD = A.shape
    L = LD // D
    n = L - 1 + T  # latents x_{2-L} .. x_T; index i <-> x_{i - L + 2}
    noise_dim = LD + (T - 1) * D
    c = np.zeros(n * D)
    G = np.zeros((n * D, noise_dim))
    chol0 = np.linalg.cholesky(np.asarray(P0, dtype=float))
    m0 = np.asarray(m0, dtype=float)
    for j in range(L):  # block j of s_1 is x_{1-j}, index L - 1 - j
        i = L - 1 - j
        c[i * D : (i + 1) * D] = m0[j * D : (j + 1) * D]
        G[i * D : (i + 1) * D, :LD] = chol0[j * D : (j + 1) * D]
    for t in range(2, T + 1):
        i = t + L - 2
        k = z[t - 1]
        rows = slice(i * D, (i + 1) * D)
        c[rows] = b[k]
        for lag in range(1, L + 1):
            block = A[k][:, (lag - 1) * D : lag * D]
            prev = slice((i - lag) * D, (i - lag + 1) * D)
            c[rows] += block @ c[prev]
            G[rows] += block @ G[prev]
        col = LD + (t - 2) * D
        G[rows, col : col + D] = np.linalg.cholesky(Q[k])
    cov_u = G @ G.T
    first = (L - 1) * D
    mean_x, cov_x = c[first:], cov_u[first:, first:]
    C = np.asarray(C, dtype=float)
    Hbig = np.kron(np.eye(T), C)
    mean_y = Hbig @ mean_x + np.tile(np.asarray(d, dtype=float), T)
    cov_y = Hbig @ cov_x @ Hbig.T + np.kron(np.eye(T), np.asarray(R, dtype=float))
    return mean_x.reshape(T, D), cov_x, mean_y, cov_y, cov_x @ Hbig.T


def slds_brute_force(initial_probs, transition_matrix, A, b, Q, C, d, R, m0, P0, y):
    """Enumerate the K^T discrete paths of a tiny SLDS, each an exact Gaussian model.

    Returns ``(log_marginal, paths (K^T, T), path_posterior (K^T,), posterior_mean_x (T, D))``.
    """
    y = np.asarray(y, dtype=float)
    T = y.shape[0]
    pi = np.asarray(initial_probs, dtype=float)
    P = np.asarray(transition_matrix, dtype=float)
    K = pi.shape[0]
    paths = np.array(list(itertools.product(range(K), repeat=T)))
    log_joint = np.zeros(len(paths))
    means = []
    for n, z in enumerate(paths):
        mean_x, _, mean_y, cov_y, cov_xy = slds_dense_given_path(A, b, Q, z, C, d, R, m0, P0, T)
        log_prior = np.log(pi[z[0]]) + sum(np.log(P[z[t], z[t + 1]]) for t in range(T - 1))
        resid = y.reshape(-1) - mean_y
        log_joint[n] = log_prior + multivariate_normal(mean_y, cov_y).logpdf(y.reshape(-1))
        means.append(mean_x.reshape(-1) + cov_xy @ np.linalg.solve(cov_y, resid))
    log_marginal = _logsumexp(log_joint)
    post = np.exp(log_joint - log_marginal)
    mean = (post[:, None] * np.array(means)).sum(0).reshape(T, -1)
    return log_marginal, paths, post, mean


# ---------------------------------------------------------------------------------------------
# Simulation-based calibration: Monte Carlo references for the rank-uniformity tests
# ---------------------------------------------------------------------------------------------


def ecdf_min_tail_statistic(ranks, num_draws, thresholds):
    """The simultaneous ECDF test's statistic, computed directly from its definition.

    For each threshold ``j``, the count ``c = #(ranks < j)`` and its two-sided tail probability
    ``min(1, 2 min(P(X <= c), P(X >= c)))`` with ``X ~ Binomial(N, j / (L + 1))``; the statistic
    is the smallest of them. ``ranks`` may carry leading axes (one statistic per row).
    """
    from scipy import stats

    ranks = np.asarray(ranks)
    N = ranks.shape[-1]
    z = np.asarray(thresholds) / (num_draws + 1)
    counts = np.sum(ranks[..., None, :] < np.asarray(thresholds)[:, None], axis=-1)
    tails = np.minimum(
        1.0, 2.0 * np.minimum(stats.binom.cdf(counts, N, z), stats.binom.sf(counts - 1, N, z))
    )
    return tails.min(axis=-1)


def uniform_rank_sets(rng, num_sets, num_replications, num_draws):
    """``(num_sets, N)`` independent sets of ranks, each uniform on ``0..num_draws``."""
    return rng.integers(0, num_draws + 1, size=(num_sets, num_replications))


# ------------------------------------------------------------------------------------------------
# Hidden semi-Markov models (explicit durations)
#
# - ``hsmm_brute_force``: enumerates every sequence of segments (state, drawn duration) that
#   covers T steps: exact marginals, expected counts, the MAP segmentation and each state path's
#   posterior probability.
# - ``hsmm_expanded_hmm``: the same model as an HMM on the time-left expanded state (k, r), whose
#   transition matrix is (K D) x (K D); any HMM code then gives the HSMM's likelihood.
# - ``negative_binomial_chain_hmm``: an HSMM whose durations are r + NegativeBinomial(r, q) as an
#   HMM with r sub-states per state in series, each left with probability 1 - q.


class BruteForceHSMM(NamedTuple):
    log_marginal: float
    smoothed_probs: np.ndarray  # (T, K)
    segment_start_probs: np.ndarray  # (T, K)
    expected_transitions: np.ndarray  # (K, K)
    expected_durations: np.ndarray  # (K, D), drawn durations, every segment
    mode: np.ndarray  # (T,), the MAP segmentation's state path
    path_probs: dict  # state path (tuple) -> posterior probability


def _segment_sequences(K, D, T):
    """Every list of segments ``[(state, duration), ...]`` whose durations first cover T steps.

    Consecutive segments have different states (unless K == 1)."""
    out = []

    def grow(segments, covered):
        if covered >= T:
            out.append(list(segments))
            return
        for k in range(K):
            if segments and K > 1 and k == segments[-1][0]:
                continue
            for d in range(1, D + 1):
                segments.append((k, d))
                grow(segments, covered + d)
                segments.pop()

    grow([], 0)
    return out


def hsmm_brute_force(
    first_segment_probs, transition_matrix, duration_probs, log_likelihoods, *, end_at=None
):
    """Enumerate every segmentation of a small HSMM (NumPy, float64).

    The last segment's drawn duration may run past T (right censoring: summing over it gives
    the survival function). With ``end_at = tau`` only segmentations with a segment ending
    exactly at step ``tau`` (0-based) count (``censoring="none"``).

    Args:
        first_segment_probs: (K, D), p(z_1 = k, d_1 = d).
        transition_matrix: (K, K), zero diagonal (K >= 2).
        duration_probs: (K, D).
        log_likelihoods: (T, K), zero at masked steps.
        end_at: None, or the step where a segment must end.
    """
    first = np.asarray(first_segment_probs, dtype=float)
    A = np.asarray(transition_matrix, dtype=float)
    P = np.asarray(duration_probs, dtype=float)
    ll = np.asarray(log_likelihoods, dtype=float)
    T, K = ll.shape
    D = P.shape[1]
    records = []
    for segments in _segment_sequences(K, D, T):
        k0, d0 = segments[0]
        prob = first[k0, d0 - 1]
        for (i, _), (j, d) in zip(segments[:-1], segments[1:], strict=True):
            prob *= A[i, j] * P[j, d - 1]
        if prob == 0:
            continue
        path = np.concatenate([np.full(d, k) for k, d in segments])[:T]
        ends = np.cumsum([d for _, d in segments]) - 1
        if end_at is not None and end_at not in ends:
            continue
        log_joint = np.log(prob) + ll[np.arange(T), path].sum()
        records.append((segments, path, log_joint))
    log_joints = np.array([r[2] for r in records])
    log_marginal = _logsumexp(log_joints)
    weights = np.exp(log_joints - log_marginal)
    smoothed = np.zeros((T, K))
    starts = np.zeros((T, K))
    switches = np.zeros((K, K))
    durations = np.zeros((K, D))
    path_probs: dict = {}
    segmentation_probs: dict = {}
    for (segments, path, _), w in zip(records, weights, strict=True):
        smoothed[np.arange(T), path] += w
        begin = 0
        for n, (k, d) in enumerate(segments):
            if begin < T:
                starts[begin, k] += w
            durations[k, d - 1] += w
            if n:
                switches[segments[n - 1][0], k] += w
            begin += d
        path_probs[tuple(path)] = path_probs.get(tuple(path), 0.0) + w
        seen = tuple((k, min(d, T - b)) for (k, d), b in _with_begins(segments))
        segmentation_probs[seen] = segmentation_probs.get(seen, 0.0) + w
    best = max(segmentation_probs, key=segmentation_probs.get)
    mode = np.concatenate([np.full(d, k) for k, d in best])
    return BruteForceHSMM(log_marginal, smoothed, starts, switches, durations, mode, path_probs)


def _with_begins(segments):
    begin = 0
    for k, d in segments:
        yield (k, d), begin
        begin += d


def hsmm_expanded_hmm(first_segment_probs, transition_matrix, duration_probs):
    """The HSMM as an HMM on the time-left state (k, r), r = 1..D, index k * D + r - 1.

    Returns:
        ``(initial (K D,), transition (K D, K D))``: (k, r) -> (k, r - 1) for r >= 2, and
        (i, 1) -> (j, d) with probability A[i, j] p_j(d). Emissions of (k, r) are state k's.
    """
    first = np.asarray(first_segment_probs, dtype=float)
    A = np.asarray(transition_matrix, dtype=float)
    P = np.asarray(duration_probs, dtype=float)
    K, D = P.shape
    M = np.zeros((K * D, K * D))
    for k in range(K):
        for r in range(1, D):
            M[k * D + r, k * D + r - 1] = 1.0
        for j in range(K):
            M[k * D, j * D : (j + 1) * D] += A[k, j] * P[j]
    return first.reshape(-1), M


def negative_binomial_chain_hmm(initial_probs, transition_matrix, stages, stay_probs):
    """An HMM whose dwell time in state k is ``stages[k] + NegativeBinomial(stages[k], q_k)``.

    State k becomes ``stages[k]`` sub-states in series; each is kept with probability
    ``q_k = stay_probs[k]`` and left for the next with ``1 - q_k``; the last one leaves to the
    first sub-state of j with ``(1 - q_k) A[k, j]``. A dwell time is then a sum of
    ``stages[k]`` geometric times on {1, 2, ...}: ``d - r`` counts the stays, negative binomial
    with ``r`` "failures" (moves) and stay probability ``q``.

    Returns:
        ``(initial (S,), transition (S, S), owner (S,))`` with ``owner[s]`` the HSMM state of
        sub-state s (emissions of s are owner[s]'s).
    """
    A = np.asarray(transition_matrix, dtype=float)
    K = A.shape[0]
    offsets = np.concatenate([[0], np.cumsum(stages)])
    S = offsets[-1]
    M = np.zeros((S, S))
    init = np.zeros(S)
    owner = np.zeros(S, dtype=int)
    for k in range(K):
        q = stay_probs[k]
        init[offsets[k]] = initial_probs[k]
        for i in range(stages[k]):
            s = offsets[k] + i
            owner[s] = k
            M[s, s] = q
            if i + 1 < stages[k]:
                M[s, s + 1] = 1 - q
            else:
                for j in range(K):
                    M[s, offsets[j]] += (1 - q) * A[k, j]
    return init, M, owner


# ---------------------------------------------------------------------------------------------
# Exact diffuse initialization and structural time series (statsmodels)
# ---------------------------------------------------------------------------------------------


def statsmodels_diffuse_smoother(params, y, num_diffuse):
    """statsmodels' exact diffuse Kalman smoother for the homogeneous model ``params``.

    The first ``num_diffuse`` entries of ``z_1`` are diffuse; the others are known with the
    corresponding block of the initial mean and covariance. NaN entries of ``y`` are missing.
    Returns statsmodels' smoother results (``llf``, ``llf_obs``, ``filtered_state``,
    ``smoothed_state``, ... with time last).
    """
    from statsmodels.tsa.statespace.initialization import Initialization
    from statsmodels.tsa.statespace.kalman_smoother import KalmanSmoother

    S, D = params["initial_mean"].shape[0], params["emission_matrix"].shape[-2]
    cov = lambda L: np.asarray(L) @ np.asarray(L).T  # noqa: E731
    ks = KalmanSmoother(k_endog=D, k_states=S, k_posdef=S)
    ks.bind(np.asarray(y, dtype=float))
    ks["design"] = params["emission_matrix"]
    ks["obs_intercept"] = np.asarray(params.get("emission_bias", np.zeros(D)))[:, None]
    ks["obs_cov"] = cov(params["emission_scale_tril"])
    ks["transition"] = params["transition_matrix"]
    ks["state_intercept"] = np.asarray(params.get("transition_bias", np.zeros(S)))[:, None]
    ks["selection"] = np.eye(S)
    ks["state_cov"] = cov(params["transition_scale_tril"])
    init = Initialization(S)
    init.set((0, num_diffuse), "diffuse")
    if num_diffuse < S:
        P0 = cov(params["initial_scale_tril"])
        init.set(
            (num_diffuse, S),
            "known",
            constant=np.asarray(params["initial_mean"])[num_diffuse:],
            stationary_cov=P0[num_diffuse:, num_diffuse:],
        )
    ks.initialization = init
    return ks.smooth()


# ---------------------------------------------------------------------------------------------
# Nonlinear state space models and particle filters: a grid filter, the MAP path by L-BFGS
# ---------------------------------------------------------------------------------------------


def grid_filter_1d(y, initial_logpdf, transition_logpdf, emission_logpdf, grid):
    """Point-mass (grid) filter of a model with a scalar state: ``log p(y_{1:T})`` by quadrature.

    The densities live on an equally spaced ``grid`` of G points and every integral over the
    state is a Riemann sum with the grid's spacing ``h``. For smooth densities that have
    decayed to ~0 at both ends of the grid this is the trapezoid rule on (effectively) the whole
    line, whose error falls geometrically in ``1 / h``; checked against the Kalman filter in
    ``tests/ops/nonlinear/test_oracles.py`` and ``tests/ops/particle/test_filter.py``.

    Args:
        y: ``(T,)`` or ``(T, D)`` observations; a step with a NaN is missing (no update).
        initial_logpdf: ``x (G,) -> (G,)``, ``log p(z_1 = x)``.
        transition_logpdf: ``(x_next (G, 1), x (1, G), t) -> (G, G)``,
            ``log p(z_{t+1} = x_next | z_t = x)`` for the transition out of step ``t``
            (0-based).
        emission_logpdf: ``(y_t, x (G,), t) -> (G,)``, ``log p(y_t | z_t = x)``.
        grid: ``(G,)`` equally spaced points.

    Returns:
        ``(log_marginal, filtered_densities (T, G))``: the densities integrate to one with the
        Riemann weights ``h``.
    """
    grid = np.asarray(grid, dtype=np.float64)
    h = grid[1] - grid[0]
    y = np.asarray(y, dtype=np.float64)
    log_pred = np.asarray(initial_logpdf(grid), dtype=np.float64)
    log_marginal = 0.0
    filtered = []
    for t in range(y.shape[0]):
        if np.all(np.isnan(y[t])):
            log_filt = log_pred
        else:
            joint = log_pred + emission_logpdf(y[t], grid, t)
            log_c = _logsumexp(joint) + np.log(h)
            log_marginal += log_c
            log_filt = joint - log_c
        filtered.append(np.exp(log_filt))
        if t + 1 < y.shape[0]:
            kernel = transition_logpdf(grid[:, None], grid[None, :], t)  # (next, prev)
            terms = kernel + log_filt[None, :] + np.log(h)
            top = terms.max(axis=1, keepdims=True)
            log_pred = (top + np.log(np.exp(terms - top).sum(axis=1, keepdims=True)))[:, 0]
    return log_marginal, np.stack(filtered)


def map_path_lbfgs(
    y,
    initial_mean,
    initial_cov,
    transition_fn,
    transition_jac,
    transition_cov,
    emission_nll,
    emission_nll_grad,
    init_path,
):
    """The MAP state path of a model with Gaussian dynamics, by L-BFGS on ``-log p(z, y)``.

    ``-log p(z, y) = ½|z_1 - m_0|²_{P_0} + Σ_t ½|z_{t+1} - f(z_t)|²_Q + Σ_t nll(y_t, z_t)``,
    with its gradient assembled by hand from ``transition_jac`` and ``emission_nll_grad``
    (NumPy callables): an optimizer independent of the smoothers under test.

    Args:
        y: ``(T, ...)`` observations, passed to the emission callables step by step.
        initial_mean: ``(S,)``.
        initial_cov: ``(S, S)``.
        transition_fn: ``(z (S,), t) -> (S,)``, the mean of ``z_{t+1}``.
        transition_jac: ``(z, t) -> (S, S)``.
        transition_cov: ``(S, S)``.
        emission_nll: ``(y_t, z (S,), t) -> float``, ``-log p(y_t | z)`` (0 for a missing step).
        emission_nll_grad: ``(y_t, z, t) -> (S,)``.
        init_path: ``(T, S)`` starting point.

    Returns:
        ``(path (T, S), gradient norm at the path)``.
    """
    from scipy.optimize import minimize

    T, S = np.shape(init_path)
    P0_inv = np.linalg.inv(initial_cov)
    Q_inv = np.linalg.inv(transition_cov)

    def objective(flat):
        z = flat.reshape(T, S)
        grad = np.zeros((T, S))
        r0 = z[0] - initial_mean
        value = 0.5 * r0 @ P0_inv @ r0
        grad[0] += P0_inv @ r0
        for t in range(T - 1):
            r = z[t + 1] - transition_fn(z[t], t)
            g = Q_inv @ r
            value += 0.5 * r @ g
            grad[t + 1] += g
            grad[t] -= transition_jac(z[t], t).T @ g
        for t in range(T):
            value += emission_nll(y[t], z[t], t)
            grad[t] += emission_nll_grad(y[t], z[t], t)
        return value, grad.ravel()

    result = minimize(
        objective,
        np.asarray(init_path, dtype=np.float64).ravel(),
        jac=True,
        method="L-BFGS-B",
        options=dict(maxiter=20000, maxcor=50, ftol=1e-16, gtol=1e-11),
    )
    # L-BFGS-B's line search stops early on a badly conditioned objective (small process noise):
    # a few Newton steps with a central-difference Hessian of the gradient polish the optimum.
    x = result.x
    for _ in range(5):
        grad = objective(x)[1]
        step = 1e-6 * np.maximum(1.0, np.abs(x))
        hess = np.stack(
            [
                (objective(x + h * e)[1] - objective(x - h * e)[1]) / (2 * h)
                for h, e in zip(step, np.eye(x.size), strict=True)
            ]
        )
        x = x - np.linalg.solve(0.5 * (hess + hess.T), grad)
    return x.reshape(T, S), float(np.linalg.norm(objective(x)[1]))


def gaussian_moment(mean, cov, powers):
    """``E[Π_i z_i^{powers_i}]`` for ``z ~ N(mean, cov)``, exactly, by Stein's lemma.

    ``E[z_i f(z)] = m_i E[f(z)] + Σ_j C_ij E[∂_j f(z)]`` lowers the degree by one each time;
    for a monomial ``f`` the derivative is again a monomial.
    """
    mean = np.asarray(mean, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    cache = {}

    def moment(p):
        p = tuple(int(k) for k in p)
        if p in cache:
            return cache[p]
        if sum(p) == 0:
            return 1.0
        i = next(k for k, e in enumerate(p) if e > 0)
        rest = list(p)
        rest[i] -= 1
        value = mean[i] * moment(rest)
        for j, e in enumerate(rest):
            if e > 0:
                lowered = list(rest)
                lowered[j] -= 1
                value += cov[i, j] * e * moment(lowered)
        cache[p] = value
        return value

    return moment(powers)
