"""The entropy-performance law R = −a·e^H + b and its fit (private; import from ``forklab.diagnostics.dynamics``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from forklab import _checks

__all__ = ["EntropyLawFit", "fit_entropy_law"]


@dataclass(frozen=True)
class EntropyLawFit:
    """Result of :func:`fit_entropy_law`: R = −a·e^H + b with standard errors; ceiling = R(H = 0)."""

    a: float
    b: float
    a_se: float
    b_se: float
    ceiling: float
    ceiling_se: float
    rmse: float
    n: int

    def predict(self, H) -> Tensor:
        """R̂(H) = −a·e^H + b, float64, same shape as ``H``."""
        H = _checks.floating("H", H).double()
        return -self.a * H.exp() + self.b


def fit_entropy_law(H, R) -> EntropyLawFit:
    """Least-squares fit of the entropy–performance law R = −a·e^H + b.

    .. math:: R_i = -a\\,e^{H_i} + b + \\epsilon_i, \\qquad X = [-e^{H}, 1],\\;
              (\\hat a, \\hat b) = (X^\\top X)^{-1} X^\\top R,\\;
              \\widehat{\\mathrm{Cov}} = s^2 (X^\\top X)^{-1},\\; s^2 = \\frac{\\mathrm{RSS}}{n - 2}

    ============  ==========================================================
    argument      shape
    ============  ==========================================================
    H             ``[n]`` mean token entropy of the policy at each checkpoint
    R             ``[n]`` validation performance at the same checkpoints
    returns       :class:`EntropyLawFit` (Python floats)
    ============  ==========================================================

    Linear in (a, b) once e^H is the regressor, so ordinary least squares gives the fit and the
    usual standard errors (homoscedastic noise). The predicted ceiling when the entropy is used up
    (H = 0) is −a + b, with variance Var(a) + Var(b) − 2·Cov(a, b). Cui et al., arXiv 2505.22617,
    §4.1 (HIGH): a and b are per model and "algorithm-agnostic"; fitting the first ~36 steps
    predicted the rest to ~1% RMSE. verl/TRL: none. Notebook 04_entropy_mechanism.

    Raises ``ValueError`` for mismatched lengths, fewer than 3 points, NaN/inf, or constant H.
    """
    H = _checks.floating("H", H).double().reshape(-1)
    R = _checks.floating("R", R).double().reshape(-1)
    if H.shape != R.shape:
        raise ValueError(f"`R` must have as many points as `H` ({H.numel()}), got {R.numel()}")
    if H.numel() < 3:
        raise ValueError(f"`H` needs at least 3 points to fit 2 parameters with an error estimate, got {H.numel()}")
    for name, x in (("H", H), ("R", R)):
        if not torch.isfinite(x).all():
            raise ValueError(f"`{name}` must be finite")
    if H.max() == H.min():
        raise ValueError("`H` is constant: a and b cannot be separated")
    n = H.numel()
    X = torch.stack([-H.exp(), torch.ones_like(H)], 1)
    xtx_inv = torch.linalg.inv(X.T @ X)
    beta = xtx_inv @ X.T @ R
    resid = R - X @ beta
    s2 = float(resid @ resid) / (n - 2)
    cov = s2 * xtx_inv
    a, b = float(beta[0]), float(beta[1])
    ceiling_var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    return EntropyLawFit(a=a, b=b, a_se=math.sqrt(float(cov[0, 0])), b_se=math.sqrt(float(cov[1, 1])),
                         ceiling=b - a, ceiling_se=math.sqrt(max(ceiling_var, 0.0)),
                         rmse=math.sqrt(float(resid @ resid) / n), n=n)
