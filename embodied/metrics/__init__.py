"""Metrics: frame metrics for video prediction, and the statistics the report quotes."""

from embodied.metrics.stats import Rate, degradation, ood_tell, spearman_bootstrap, wilson
from embodied.metrics.video import PSNR_CAP, cap_psnr, clip_metrics, mse, psnr, ssim

__all__ = [
    "PSNR_CAP",
    "Rate",
    "cap_psnr",
    "clip_metrics",
    "degradation",
    "mse",
    "ood_tell",
    "psnr",
    "spearman_bootstrap",
    "ssim",
    "wilson",
]
