"""Frame metrics against scikit-image, and the report's statistics against hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import rankdata, spearmanr
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from embodied.metrics import (
    PSNR_CAP,
    Rate,
    clip_metrics,
    degradation,
    mse,
    ood_tell,
    psnr,
    spearman_bootstrap,
    ssim,
    wilson,
)
from embodied.metrics.stats import resample_ranks


def _ref_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return structural_similarity(a, b, channel_axis=-1, data_range=255)


def _structured(size: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs a video model produces: shifted, blurred-ish, brightened, noisy, flat, identical."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    grad = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1)
    grad = grad.astype(np.uint8)
    checker = (((yy // 4 + xx // 4) % 2) * 255).astype(np.uint8)[..., None].repeat(3, -1)
    rng = np.random.default_rng(1)
    noisy = np.clip(grad + rng.normal(0, 20, grad.shape), 0, 255).astype(np.uint8)
    flat = np.full_like(grad, 128)
    return [
        (grad, np.roll(grad, 3, axis=1)),
        (checker, np.roll(checker, 2, axis=0)),
        (grad, noisy),
        (grad, np.clip(grad.astype(int) + 40, 0, 255).astype(np.uint8)),
        (flat, np.full_like(grad, 130)),
        (flat, checker),
        (checker, checker),
    ]


@pytest.mark.parametrize("size", [(64, 64), (7, 7), (33, 50)])
def test_ssim_matches_skimage_on_random_and_structured_images(size):
    rng = np.random.default_rng(0)
    pairs = [
        (
            rng.integers(0, 256, (*size, 3), dtype=np.uint8),
            rng.integers(0, 256, (*size, 3), dtype=np.uint8),
        )
        for _ in range(3)
    ]
    base = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    pairs.append((base, np.clip(base + rng.integers(-10, 11, base.shape), 0, 255).astype(np.uint8)))
    pairs += _structured(size)
    for a, b in pairs:
        assert ssim(a, b) == pytest.approx(_ref_ssim(a, b), abs=1e-6)
    batch_a, batch_b = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    batched = ssim(batch_a, batch_b)
    assert batched.shape == (len(pairs),)
    np.testing.assert_allclose(batched, [_ref_ssim(a, b) for a, b in pairs], atol=1e-6, rtol=0)


def test_ssim_of_identical_frames_is_one_and_spans_chunks():
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (130, 16, 16, 3), dtype=np.uint8)  # > one 64-frame chunk
    np.testing.assert_allclose(ssim(frames, frames), 1.0, atol=1e-12)
    other = rng.integers(0, 256, frames.shape, dtype=np.uint8)
    got = ssim(frames, other)
    for i in (0, 63, 64, 129):
        assert got[i] == pytest.approx(_ref_ssim(frames[i], other[i]), abs=1e-6)


def test_psnr_and_mse_match_skimage():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    b = np.clip(a + rng.integers(-30, 31, a.shape), 0, 255).astype(np.uint8)
    ref_psnr = [peak_signal_noise_ratio(x, y, data_range=255) for x, y in zip(a, b, strict=True)]
    ref_mse = [mean_squared_error(x, y) / 255**2 for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(psnr(a, b), ref_psnr, rtol=1e-12)
    np.testing.assert_allclose(mse(a, b), ref_mse, rtol=1e-12)
    assert psnr(a[0], b[0]) == pytest.approx(ref_psnr[0], rel=1e-12)
    assert isinstance(mse(a[0], b[0]), float)
    # One grey level everywhere: MSE (1/255)^2, PSNR 20 log10(255).
    flat = np.full((8, 8, 3), 100, np.uint8)
    assert mse(flat, flat + 1) == pytest.approx(1 / 255**2)
    assert psnr(flat, flat + 1) == pytest.approx(20 * math.log10(255))


def test_psnr_of_identical_frames_is_inf_and_means_cap_it():
    rng = np.random.default_rng(4)
    truth = rng.integers(0, 256, (2, 3, 16, 16, 3), dtype=np.uint8)  # 2 clips x 3 steps
    pred = truth.copy()
    pred[1, 2] = np.clip(truth[1, 2].astype(int) + 5, 0, 255).astype(np.uint8)
    assert psnr(truth[0, 0], pred[0, 0]) == math.inf
    out = clip_metrics(truth, pred)
    step2 = (PSNR_CAP + psnr(truth[1, 2], pred[1, 2])) / 2  # exact clip capped at 100 dB
    assert out["psnr"] == pytest.approx([PSNR_CAP, PSNR_CAP, step2])
    assert out["psnr_mean"] == pytest.approx((2 * PSNR_CAP + step2) / 3)
    assert out["ssim"][:2] == pytest.approx([1.0, 1.0])
    assert out["mse"][2] == pytest.approx(mse(truth[1, 2], pred[1, 2]) / 2)
    assert all(math.isfinite(v) for v in out["psnr"])


def test_bad_frames_are_refused_with_the_expected_form():
    a = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        psnr(a, a.astype(np.float32))
    with pytest.raises(ValueError, match="differ"):
        mse(a, np.zeros((8, 9, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        ssim(a[..., 0], a[..., 0])
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim(a[:6, :6], a[:6, :6])


def test_wilson_matches_hand_computation():
    # Reference values worked out with 30-digit decimals from the textbook form:
    # (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), z = 1.96.
    assert wilson(0, 10) == pytest.approx((0.0, 0.277540), abs=1e-6)
    assert wilson(10, 10) == pytest.approx((0.722460, 1.0), abs=1e-6)
    assert wilson(5, 10) == pytest.approx((0.236590, 0.763410), abs=1e-6)
    assert wilson(34, 40) == pytest.approx((0.709274, 0.929389), abs=1e-6)
    assert wilson(1, 1000) == pytest.approx((0.000177, 0.005643), abs=1e-6)
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(7, 20, z=2.576)  # 99%: wider than 95%
    lo95, hi95 = wilson(7, 20)
    assert lo < lo95 < 0.35 < hi95 < hi
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson(5, 4)
    r = Rate(3, 12)
    assert r.value == 0.25 and r.ci == wilson(3, 12)
    assert math.isnan(Rate(0, 0).value)


def test_spearman_bootstrap_matches_scipy_and_is_seeded():
    rng = np.random.default_rng(5)
    x = rng.normal(size=25)
    y = 0.6 * x + rng.normal(size=25)
    y[3] = y[4]  # a tie
    rho, lo, hi = spearman_bootstrap(x, y, n_boot=1000, seed=0)
    assert rho == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert -1 <= lo < rho < hi <= 1
    assert spearman_bootstrap(x, y, n_boot=1000, seed=0) == (rho, lo, hi)
    assert spearman_bootstrap(x, y, n_boot=1000, seed=1) != (rho, lo, hi)
    assert spearman_bootstrap(x, 2 * x + 1, n_boot=200) == pytest.approx((1.0, 1.0, 1.0))
    # Non-finite pairs are dropped; too few pairs or a constant side give nan.
    xn = np.append(x, np.nan)
    assert spearman_bootstrap(xn, np.append(y, 0.0), n_boot=1000)[0] == pytest.approx(rho)
    assert all(math.isnan(v) for v in spearman_bootstrap([1.0, 2.0], [2.0, 1.0]))
    assert all(math.isnan(v) for v in spearman_bootstrap([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]))


def test_resample_ranks_equal_scipy_rankdata_with_ties():
    rng = np.random.default_rng(7)
    values = rng.integers(0, 6, size=40).astype(float)  # many ties
    idx = rng.integers(0, 40, size=(30, 40))
    groups = np.unique(values, return_inverse=True)[1]
    np.testing.assert_array_equal(resample_ranks(groups, idx), rankdata(values[idx], axis=1))


def test_spearman_bootstrap_interval_covers_the_truth_on_correlated_data():
    # Bivariate normal with correlation 0.5: Spearman's rho = (6/pi) asin(0.25) ~ 0.483.
    rng = np.random.default_rng(6)
    cov = [[1, 0.5], [0.5, 1]]
    xy = rng.multivariate_normal([0, 0], cov, size=400)
    rho, lo, hi = spearman_bootstrap(xy[:, 0], xy[:, 1], n_boot=500)
    true = 6 / math.pi * math.asin(0.25)
    assert lo < true < hi
    assert hi - lo < 0.25


def test_degradation_sign_convention():
    assert degradation(0.8, 0.2) == pytest.approx(0.75)  # success fell by 75%
    assert degradation(25.0, 20.0) == pytest.approx(0.2)  # PSNR fell by 20%
    assert degradation(0.5, 0.6) == pytest.approx(-0.2)  # better OOD: negative
    assert degradation(0.01, 0.03, higher_is_better=False) == pytest.approx(2.0)  # MSE tripled
    assert math.isnan(degradation(0.0, 0.5))
    assert math.isnan(degradation(None, 0.5))
    assert math.isnan(degradation(0.5, math.nan))


def test_ood_tell_floors_a_flat_video_metric():
    assert ood_tell(0.6, 0.06) == (pytest.approx(10.0), False)
    value, floored = ood_tell(0.5, 0.0)
    assert value == pytest.approx(50.0) and floored
    assert ood_tell(0.5, -0.1)[1]
    assert math.isnan(ood_tell(math.nan, 0.1)[0])
