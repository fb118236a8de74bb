"""Frame metrics for open-loop video prediction: MSE, PSNR and SSIM on uint8 RGB frames.

Runtime needs numpy and scipy only. SSIM reproduces
``skimage.metrics.structural_similarity(a, b, channel_axis=-1, data_range=255)`` (7x7 uniform
window, K1=0.01, K2=0.03, sample covariance, reflect padding, border of 3 px cropped, mean over
channels); the tests check the agreement to 1e-6.

Conventions (the results file and the report rely on them):
- ``mse`` is on intensities scaled to [0, 1] (raw uint8 MSE / 255**2), so it reads the same at
  any bit depth; ``psnr`` uses ``data_range`` on the raw values, matching
  ``skimage.metrics.peak_signal_noise_ratio``.
- PSNR of identical frames is +inf. Any *mean* of PSNRs (``clip_metrics``, the report) first
  caps every value at ``PSNR_CAP`` = 100 dB, so means stay finite and JSON-safe. The smallest
  non-zero error on a 64x64 frame (one level on one pixel) already gives 89 dB, so the cap only
  ever replaces exact predictions at the frame sizes used here.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter

PSNR_CAP = 100.0
SSIM_WIN = 7
_K1, _K2 = 0.01, 0.03
_CHUNK = 64  # frames per SSIM batch: bounds the float64 temporaries


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a pair of uint8 (H, W, 3) or (N, H, W, 3) frame arrays."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"frame shapes differ: {a.shape} vs {b.shape}")
    if a.ndim not in (3, 4) or a.shape[-1] != 3:
        raise ValueError(f"frames must be (H, W, 3) or (N, H, W, 3), got shape {a.shape}")
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {a.dtype} and {b.dtype}")
    return a, b


def _raw_mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    diff = a.astype(np.float64) - b.astype(np.float64)
    return np.mean(diff * diff, axis=(-3, -2, -1))


def _scalar_or_batch(values: np.ndarray, batched: bool) -> float | np.ndarray:
    return values if batched else float(np.asarray(values).reshape(-1)[0])


def mse(a: np.ndarray, b: np.ndarray) -> float | np.ndarray:
    """Mean squared error of intensities in [0, 1]; a float, or (N,) for (N, H, W, 3) input."""
    a, b = _pair(a, b)
    return _scalar_or_batch(_raw_mse(a, b) / 255.0**2, a.ndim == 4)


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255) -> float | np.ndarray:
    """Peak signal-to-noise ratio in dB (+inf for identical frames); float or (N,)."""
    a, b = _pair(a, b)
    err = _raw_mse(a, b)
    with np.errstate(divide="ignore"):
        out = 10.0 * np.log10(float(data_range) ** 2 / err)
    return _scalar_or_batch(out, a.ndim == 4)


def _ssim_batch(a: np.ndarray, b: np.ndarray, data_range: float) -> np.ndarray:
    """SSIM of (N, H, W, C) float64 stacks, per frame; filters act on H and W only."""
    size = (1, SSIM_WIN, SSIM_WIN, 1)
    ux, uy = uniform_filter(a, size=size), uniform_filter(b, size=size)
    uxx = uniform_filter(a * a, size=size)
    uyy = uniform_filter(b * b, size=size)
    uxy = uniform_filter(a * b, size=size)
    n = SSIM_WIN**2
    cov_norm = n / (n - 1)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (SSIM_WIN - 1) // 2
    cropped = s[:, pad:-pad, pad:-pad, :]
    # skimage: mean over each channel's cropped map, then mean over channels.
    return cropped.mean(axis=(1, 2), dtype=np.float64).mean(axis=-1)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255) -> float | np.ndarray:
    """Mean structural similarity (skimage defaults, see module doc); float or (N,)."""
    a, b = _pair(a, b)
    if min(a.shape[-3], a.shape[-2]) < SSIM_WIN:
        raise ValueError(f"frames must be at least {SSIM_WIN}x{SSIM_WIN} for SSIM, got {a.shape}")
    batched = a.ndim == 4
    a4, b4 = (a, b) if batched else (a[None], b[None])
    out = np.concatenate(
        [
            _ssim_batch(
                a4[i : i + _CHUNK].astype(np.float64),
                b4[i : i + _CHUNK].astype(np.float64),
                float(data_range),
            )
            for i in range(0, len(a4), _CHUNK)
        ]
    )
    return _scalar_or_batch(out, batched)


def cap_psnr(values: np.ndarray | float) -> np.ndarray:
    """PSNR values with +inf (and anything above) replaced by ``PSNR_CAP``, for averaging."""
    return np.minimum(np.asarray(values, dtype=np.float64), PSNR_CAP)


def clip_metrics(truth: np.ndarray, pred: np.ndarray) -> dict[str, list[float] | float]:
    """Per-step and overall metrics of C predicted clips against the truth, both (C, H, S, S, 3).

    Returns the video fields of a results line: ``mse``/``psnr``/``ssim`` per step (mean over
    clips, PSNR capped at ``PSNR_CAP`` before averaging) and their ``*_mean`` over steps.
    """
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.ndim != 5 or truth.shape != pred.shape:
        raise ValueError(
            f"clips must both be (clips, horizon, H, W, 3), got {truth.shape} and {pred.shape}"
        )
    c, h = truth.shape[:2]
    flat_t, flat_p = truth.reshape(c * h, *truth.shape[2:]), pred.reshape(c * h, *pred.shape[2:])
    per = {
        "mse": mse(flat_t, flat_p),
        "psnr": cap_psnr(psnr(flat_t, flat_p)),
        "ssim": ssim(flat_t, flat_p),
    }
    out: dict[str, list[float] | float] = {}
    for name, values in per.items():
        steps = np.asarray(values).reshape(c, h).mean(axis=0)
        out[name] = [float(v) for v in steps]
        out[f"{name}_mean"] = float(steps.mean())
    return out
