"""The GAN objectives of MODEL.md section 7: the functions ``phi_1, phi_2, phi_3`` and their
derivatives, in forms that stay finite and accurate when the critic saturates.

The critic maximises ``Psi_c = E_Z phi_1(f(g(Z))) + E_X phi_2(f(X)) - lambda P`` and the
generator minimises ``Psi_g = E_Z phi_3(f(g(Z)))``; the discriminator is ``D = s(-f)`` (the
critic is high on generated samples).

=================  ============  =============  ==============
objective          phi_1(f)      phi_2(f)       phi_3(f)
=================  ============  =============  ==============
``wasserstein``    f             -f             f
``minimax``        log s(f)      log s(-f)      log s(f)
``non_saturating`` log s(f)      log s(-f)      -log s(-f)
=================  ============  =============  ==============

``log s(f) = -log(1 + exp(-f))`` is evaluated as ``-logaddexp(0, -f)`` (no overflow for any
finite ``f``, exact to rounding for ``|f|`` up to the largest double), ``s`` as SciPy's
``expit`` (which never overflows).
"""
from __future__ import annotations

import numpy as np
from scipy.special import expit

__all__ = ["LOSSES", "check_loss", "log_sigmoid", "phi", "dphi", "discriminator_error"]

#: The objectives, in the order of MODEL.md's table (``wasserstein`` is the default).
LOSSES = ("wasserstein", "minimax", "non_saturating")


def check_loss(loss: str, name: str = "loss") -> str:
    """Validate an objective name."""
    if loss not in LOSSES:
        raise ValueError(f"{name} must be one of {', '.join(LOSSES)}; got {loss!r}")
    return loss


def log_sigmoid(f: np.ndarray) -> np.ndarray:
    """``log s(f)``, finite for every finite ``f`` (``~ f`` for ``f -> -inf``)."""
    return -np.logaddexp(0.0, -np.asarray(f, dtype=np.float64))


def phi(loss: str, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(phi_1(f), phi_2(f), phi_3(f))`` of MODEL.md section 7."""
    f = np.asarray(f, dtype=np.float64)
    if loss == "wasserstein":
        return f, -f, f
    p1 = log_sigmoid(f)
    p2 = log_sigmoid(-f)
    return p1, p2, (p1 if loss == "minimax" else -p2)


def dphi(loss: str, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(phi_1'(f), phi_2'(f), phi_3'(f))``: the weights of the velocity fields."""
    f = np.asarray(f, dtype=np.float64)
    if loss == "wasserstein":
        one = np.ones_like(f)
        return one, -one, one
    sm = expit(-f)  # s(-f) = 1 - s(f), computed without cancellation
    sp = expit(f)
    return sm, -sp, (sm if loss == "minimax" else sp)


def discriminator_error(f_generated: np.ndarray, zw: np.ndarray, f_data: np.ndarray,
                        xw: np.ndarray) -> float:
    """``err = (E_X [1 - D(X)] + E_Z [D(g(Z))]) / 2`` with ``D = s(-f)`` (MODEL.md section 8).

    ``1 - D(X) = s(f(X))`` and ``D(g(Z)) = s(-f(g(Z)))``: 0 for a perfect discriminator, 1/2
    for one that cannot tell.
    """
    return 0.5 * (float(np.dot(xw, expit(f_data))) + float(np.dot(zw, expit(-f_generated))))
