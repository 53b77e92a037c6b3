"""The Frechet distance between two feature sets modelled as Gaussians (FID and the demo judge's FD use it).

d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))  (Dowson & Landau 1982; Heusel et al. 2017, "GANs Trained by a
Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", for its use on Inception features).
"""

from __future__ import annotations

import numpy as np


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """Frechet distance between two Gaussians: |mu1-mu2|^2 + Tr(S1 + S2 - 2 sqrt(S1 S2))."""
    from scipy import linalg

    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    if not np.isfinite(covmean).all():  # near-singular covariances: regularise, as is standard for FID
        eps = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def feature_stats(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of features (at least two rows: one image has no covariance)."""
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"a Frechet distance needs at least 2 images per side, got {f.shape[0] if f.ndim else 0}")
    return f.mean(0), np.cov(f, rowvar=False)
