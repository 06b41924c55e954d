"""Segments: every frame owned once, the AR steps that count preserved, and the way back."""

import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_ssm import AutoregressiveHMM
from numpyro_ssm.ops.switching import merge_segments, split_into_segments


def test_split_and_merge_round_trip_and_own_every_frame_once():
    rng = np.random.default_rng(0)
    recordings = [rng.normal(size=(n, 2)) for n in (23, 7, 10)]
    masks = [np.ones(n, bool) for n in (23, 7, 10)]
    masks[0][5] = False
    segs = split_into_segments(recordings, 5, context=2, masks=masks)
    assert segs.values.shape == (5 + 2 + 2, 7, 2)
    back = merge_segments(segs.values, segs)
    for r, (rec, m) in enumerate(zip(recordings, masks, strict=True)):
        np.testing.assert_array_equal(back[r][m], rec[m])
        assert np.isnan(back[r][~m]).all()
    frames = segs.start[:, None] + np.arange(7)
    for r in range(len(recordings)):
        owned = np.concatenate(
            [frames[n][np.asarray(segs.owned[n])] for n in np.flatnonzero(segs.recording == r)]
        )
        np.testing.assert_array_equal(np.sort(owned), np.flatnonzero(masks[r]))


def test_arhmm_counts_exactly_the_owned_steps_of_the_whole_recording():
    rng = np.random.default_rng(1)
    K, D, L = 2, 2, 2
    recording = rng.normal(size=(30, D))
    params = dict(
        initial_probs=np.ones(K) / K,
        transition_matrix=np.full((K, K), 0.5),
        ar_matrix=rng.normal(size=(K, D, L * D)) * 0.3,
        ar_cov=np.broadcast_to(np.eye(D), (K, D, D)),
    )
    whole = AutoregressiveHMM(**params, num_steps=30)
    log_lik, counted = whole._log_likelihoods(recording)
    segs = split_into_segments([recording], 8, context=L)
    model = AutoregressiveHMM(**params, num_steps=8 + L, obs_mask=segs.obs_mask)
    seg_log_lik, seg_counted = model._log_likelihoods(segs.values)
    np.testing.assert_array_equal(seg_counted, segs.owned & seg_counted)  # never a context frame
    merged_counted = merge_segments(seg_counted, segs, fill_value=False)[0]
    np.testing.assert_array_equal(merged_counted, counted)
    merged = merge_segments(seg_log_lik, segs)[0]
    np.testing.assert_allclose(merged[counted], log_lik[counted], rtol=1e-12)


def test_bad_arguments():
    with pytest.raises(ValueError, match="segment_length must be >= 1"):
        split_into_segments([np.zeros((4, 1))], 0)
    segs = split_into_segments([np.zeros((4, 1))], 2)
    with pytest.raises(ValueError, match="per_frame must have shape"):
        merge_segments(jnp.zeros((3, 2)), segs)
