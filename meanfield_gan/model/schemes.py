"""Time-stepping schemes (MODEL.md sections 3 and 7) as small frozen dataclasses.

A scheme says how one step is taken; :func:`meanfield_gan.simulate` runs it.  Every scheme
exposes ``dt(N)`` (the mean-field time of one generator step), ``gamma_c(N, M)`` and
``critic_dt(M)``, the name of its step ``rule`` (each engine has one function per rule), its
optimiser state (``opt_keys``) and its numeric ``hyper`` parameters.  Schemes register
themselves by their configuration ``kind``: adding a scheme is a class here and one step rule
per engine (:mod:`meanfield_gan.engines`), nothing else.

* :class:`SGD` - the WGAN algorithm with plain SGD: ``dt = lr/N``, ``gamma_c = n_critic N/M``;
  simultaneous form (one batch per step) or alternating (``n_critic`` critic steps of size
  ``lr/M`` with fresh batches, then one generator step of size ``lr/N``).
* :class:`RMSProp` - simultaneous SGD whose per-coordinate steps are divided by
  ``sqrt(running mean of the squared velocity) + eps``.
* :class:`Adam` - SGD with Adam's bias-corrected moments (MODEL.md section 7), simultaneous or
  alternating, in the same mean-field units as RMSProp.
* :class:`ProjectedEuler` and :class:`ProjectedHeun` - deterministic schemes for the particle
  ODE with exact expectations by quadrature; Heun is second order away from the boundary and
  serves as the reference solution.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

from .._validation import positive, positive_int, unit_interval

__all__ = ["SGD", "RMSProp", "Adam", "ProjectedEuler", "ProjectedHeun", "Scheme", "SCHEMES",
           "scheme_class", "wgan_scales"]

#: Registered scheme classes by configuration ``kind`` (``"sgd"``, ``"rmsprop"``, ...).
SCHEMES: dict[str, type] = {}


def scheme_class(kind: str) -> type:
    """The scheme class registered under ``kind``; ValueError naming the known kinds."""
    try:
        return SCHEMES[kind]
    except (KeyError, TypeError):
        raise ValueError(f"unknown scheme kind {kind!r}; known: {', '.join(SCHEMES)}") from None


def wgan_scales(lr: float, n_critic: int, N: int, M: int) -> tuple[float, float]:
    """``(dt, gamma_c) = (lr/N, n_critic N/M)``: the WGAN algorithm's time step and critic scale."""
    return lr / N, n_critic * N / M


class Scheme:
    """Base of every scheme: registration and the defaults of the scheme protocol.

    Subclasses set ``kind`` (the configuration name; ``None`` for an abstract base) and
    ``stochastic``; override :attr:`rule` when one class has several step rules.
    """

    kind: ClassVar[str | None] = None
    stochastic: ClassVar[bool] = False
    #: Names of the optimiser-state arrays in :attr:`State.opt`: ``<particle>_<name>``.
    opt_keys: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.__dict__.get("kind"):
            SCHEMES[cls.kind] = cls

    @property
    def rule(self) -> str:
        """Name of the step rule the engines run for this scheme."""
        return self.kind

    @property
    def hyper(self) -> dict[str, float]:
        """Numeric optimiser parameters the step rules read (``rho``, ``eps``, betas)."""
        return {}

    def opt_state(self, theta, omega, given: dict | None = None) -> dict:
        """The optimiser state for particles ``theta``, ``omega``: copies of ``given`` entries,
        zeros for the missing ones (a new run starts with zero running means)."""
        import numpy as np

        given = given or {}
        out = {}
        for part, arr in (("theta", theta), ("omega", omega)):
            for name in self.opt_keys:
                key = f"{part}_{name}"
                out[key] = (np.array(given[key], dtype=np.float64) if key in given
                            else np.zeros_like(arr))
        return out

    def to_dict(self) -> dict[str, Any]:
        """The scheme as configuration keys (``kind`` first; ``None`` fields left out)."""
        d: dict[str, Any] = {"kind": self.kind}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None:
                d[f.name] = v
        return d


@dataclass(frozen=True)
class SGD(Scheme):
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
    freeze_generator : bool
        Train the critic alone: the generator never moves (its velocity is not even
        evaluated); time still advances by ``dt = lr/N`` per step (MODEL.md section 8).
    """

    lr: float = 1.0
    n_critic: int = 1
    batch_size: int = 1
    alternating: bool = False
    freeze_generator: bool = False

    kind: ClassVar[str] = "sgd"
    stochastic: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", positive(self.lr, "lr"))
        object.__setattr__(self, "n_critic", positive_int(self.n_critic, "n_critic"))
        object.__setattr__(self, "batch_size", positive_int(self.batch_size, "batch_size"))
        for name in ("alternating", "freeze_generator"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")

    @property
    def rule(self) -> str:
        return "sgd_alt" if self.alternating else "sgd"

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

    kind: ClassVar[str] = "rmsprop"
    opt_keys: ClassVar[tuple[str, ...]] = ("sq",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alternating:
            raise ValueError("RMSProp is implemented in simultaneous form only (alternating=False)")
        object.__setattr__(self, "rho", unit_interval(self.rho, "rho"))
        object.__setattr__(self, "eps", positive(self.eps, "eps"))

    @property
    def rule(self) -> str:
        return "rmsprop"

    @property
    def hyper(self) -> dict[str, float]:
        return {"rho": self.rho, "eps": self.eps}

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.pop("alternating", None)
        return d


@dataclass(frozen=True)
class Adam(SGD):
    """SGD with Adam scaling (MODEL.md section 7), simultaneous or alternating.

    Per coordinate with velocity ``v`` at its ``k``-th update (``k = 1, 2, ...``):
    ``m <- b1 m + (1 - b1) v``, ``s <- b2 s + (1 - b2) v^2``,
    ``y <- y + h (m / (1 - b1^k)) / (sqrt(s / (1 - b2^k)) + eps)`` with ``h = dt`` (generator)
    or the critic step (``gamma_c dt``, or ``lr/M`` per alternating critic update; then
    clipped to Q when there is a box).  A PyTorch Adam with learning rate ``eta`` corresponds
    to ``lr = eta N``.  The moments start at 0 and are part of the run's state; ``k`` follows
    from the run's step (generator: ``step + 1``; critic: ``step + 1``, or
    ``step n_critic + c + 1`` for the ``c``-th alternating update), so a resumed run continues
    exactly.
    """

    beta1: float = 0.5
    beta2: float = 0.9
    eps: float = 1e-8

    kind: ClassVar[str] = "adam"
    opt_keys: ClassVar[tuple[str, ...]] = ("m", "v")

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "beta1", unit_interval(self.beta1, "beta1"))
        object.__setattr__(self, "beta2", unit_interval(self.beta2, "beta2"))
        object.__setattr__(self, "eps", positive(self.eps, "eps"))

    @property
    def rule(self) -> str:
        return "adam_alt" if self.alternating else "adam"

    @property
    def hyper(self) -> dict[str, float]:
        return {"beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}


@dataclass(frozen=True)
class ProjectedEuler(Scheme):
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

    kind: ClassVar[str] = "euler"
    stochastic: ClassVar[bool] = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "time_step", positive(self.time_step, "time_step"))
        object.__setattr__(self, "critic_scale", positive(self.critic_scale, "critic_scale"))
        for name in ("n_latent", "n_target"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, positive_int(getattr(self, name), name))

    @classmethod
    def matching(cls, sgd: SGD, N: int, M: int, refine: int = 1, **kw) -> ProjectedEuler:
        """The deterministic scheme with the same ``dt`` (divided by ``refine``) and ``gamma_c``."""
        return cls(sgd.dt(N) / refine, sgd.gamma_c(N, M), **kw)

    def dt(self, N: int | None = None) -> float:
        return self.time_step

    def gamma_c(self, N: int | None = None, M: int | None = None) -> float:
        return self.critic_scale

    def critic_dt(self, M: int | None = None) -> float:
        """The critic's step ``gamma_c dt``."""
        return self.critic_scale * self.time_step


@dataclass(frozen=True)
class ProjectedHeun(ProjectedEuler):
    """Projected Heun (explicit trapezoid with projected velocities, then clipping)."""

    kind: ClassVar[str] = "heun"
