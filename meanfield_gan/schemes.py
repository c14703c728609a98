"""Time-stepping schemes (MODEL.md section 3) as small frozen dataclasses.

A scheme says how one step is taken; :func:`meanfield_gan.simulate` runs it.  Every scheme
exposes ``dt(N)`` (the mean-field time of one generator step) and ``gamma_c(N, M)``.

* :class:`SGD` - the WGAN algorithm with plain SGD: ``dt = lr/N``, ``gamma_c = n_critic N/M``;
  simultaneous form (one batch per step) or alternating (``n_critic`` critic steps of size
  ``lr/M`` with fresh batches, then one generator step of size ``lr/N``).
* :class:`RMSProp` - simultaneous SGD whose per-coordinate steps are divided by
  ``sqrt(running mean of the squared velocity) + eps``.
* :class:`ProjectedEuler` and :class:`ProjectedHeun` - deterministic schemes for the particle
  ODE with exact expectations by quadrature; Heun is second order away from the boundary and
  serves as the reference solution.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["SGD", "RMSProp", "ProjectedEuler", "ProjectedHeun", "Scheme", "wgan_scales"]


def _pos(name: str, v: float) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {v!r}") from None
    if not math.isfinite(f) or f <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {v!r}")
    return f


def _posint(name: str, v: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int,)) and not (isinstance(v, float) and v.is_integer()):
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if int(v) < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def wgan_scales(lr: float, n_critic: int, N: int, M: int) -> tuple[float, float]:
    """``(dt, gamma_c) = (lr/N, n_critic N/M)``: the WGAN algorithm's time step and critic scale."""
    return lr / N, n_critic * N / M


@dataclass(frozen=True)
class SGD:
    """Stochastic gradient descent-ascent, the WGAN algorithm (MODEL.md section 3).

    Parameters
    ----------
    lr : float
        Learning rate; the generator step is ``dt = lr/N`` in mean-field time.
    n_critic : int
        Critic steps per generator step (``gamma_c = n_critic N / M``).
    batch_size : int
        Batch size ``m`` of latent and data samples (1 in the theorem).
    alternating : bool
        ``False``: simultaneous form (one batch, critic step ``gamma_c dt``).  ``True``:
        Algorithm 1 of Arjovsky et al. (``n_critic`` critic steps of ``lr/M`` with fresh batches,
        then a generator step with a fresh latent batch).
    """

    lr: float = 1.0
    n_critic: int = 1
    batch_size: int = 1
    alternating: bool = False

    stochastic = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", _pos("lr", self.lr))
        object.__setattr__(self, "n_critic", _posint("n_critic", self.n_critic))
        object.__setattr__(self, "batch_size", _posint("batch_size", self.batch_size))

    def dt(self, N: int) -> float:
        return self.lr / N

    def gamma_c(self, N: int, M: int) -> float:
        return self.n_critic * N / M

    def critic_dt(self, M: int) -> float:
        """Step of one alternating critic update, ``lr/M``."""
        return self.lr / M

    @property
    def latent_slots(self) -> int:
        """Latent batches drawn per step."""
        return self.n_critic + 1 if self.alternating else 1

    @property
    def data_slots(self) -> int:
        """Data batches drawn per step."""
        return self.n_critic if self.alternating else 1


@dataclass(frozen=True)
class RMSProp(SGD):
    """Simultaneous SGD with RMSProp scaling (``rho`` decay, ``eps`` regulariser).

    The update of a coordinate with velocity ``v`` is ``s <- rho s + (1-rho) v^2``,
    ``y <- y + h v / (sqrt(s) + eps)`` with ``h = dt`` (generator) or ``gamma_c dt`` (critic,
    then clipped to Q).  The running means start at 0 and are part of the run's state.
    """

    rho: float = 0.9
    eps: float = 1e-8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alternating:
            raise ValueError("RMSProp is implemented in simultaneous form only (alternating=False)")
        if not (0.0 <= float(self.rho) < 1.0):
            raise ValueError(f"rho must be in [0, 1), got {self.rho!r}")
        object.__setattr__(self, "eps", _pos("eps", self.eps))


@dataclass(frozen=True)
class ProjectedEuler:
    """Projected forward Euler of the particle ODE with exact (quadrature) expectations.

    Parameters
    ----------
    time_step : float
        The time step ``dt``.
    critic_scale : float
        The critic time scale ``gamma_c``.
    n_latent, n_target : int, optional
        Quadrature sizes (default: the problem's ``quadrature_size``).
    """

    time_step: float
    critic_scale: float = 1.0
    n_latent: int | None = None
    n_target: int | None = None

    stochastic = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "time_step", _pos("time_step", self.time_step))
        object.__setattr__(self, "critic_scale", _pos("critic_scale", self.critic_scale))
        for name in ("n_latent", "n_target"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _posint(name, getattr(self, name)))

    @classmethod
    def matching(cls, sgd: SGD, N: int, M: int, refine: int = 1, **kw) -> "ProjectedEuler":
        """The deterministic scheme with the same ``dt`` (divided by ``refine``) and ``gamma_c``."""
        return cls(sgd.dt(N) / refine, sgd.gamma_c(N, M), **kw)

    def dt(self, N: int | None = None) -> float:
        return self.time_step

    def gamma_c(self, N: int | None = None, M: int | None = None) -> float:
        return self.critic_scale


@dataclass(frozen=True)
class ProjectedHeun(ProjectedEuler):
    """Projected Heun (explicit trapezoid with projected velocities, then clipping)."""


Scheme = SGD | ProjectedEuler
