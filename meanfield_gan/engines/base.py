"""What every engine's step runner shares: scales, nodes, particles and optimiser state.

A runner is built from ``(problem, state, scheme)`` by :func:`meanfield_gan.engines.make_runner`
and advanced by the driver in blocks of steps; it asks the scheme (``rule``, ``dt``,
``gamma_c``, ``critic_dt``, ``hyper``, ``opt_state``) and never tests the scheme's class, so a
new scheme needs no change here.
"""
from __future__ import annotations

import numpy as np

from ..model.problem import Problem, State

__all__ = ["Runner"]


class Runner:
    """Common set-up of the step runners.

    Attributes
    ----------
    rule : str
        The scheme's step rule (each engine maps it to its implementation).
    dt, gdt, crit_dt : float
        Generator step, simultaneous critic step ``gamma_c dt``, alternating critic step.
    zT, zw, xT, xw : ndarray
        Quadrature nodes (transposed, ``(L, Bz)`` and ``(K, Bx)``) and weights of a
        deterministic scheme; for a stochastic one the uniform batch weights (the nodes come
        with every block of steps).
    theta, omega : ndarray
        The particles (a copy of the state's), advanced in place.
    opt : dict of str -> ndarray
        The optimiser state (``theta_sq``, ...), advanced in place.
    """

    def __init__(self, problem: Problem, state: State, scheme):
        self.scheme = scheme
        self.rule = scheme.rule
        self.clip = problem.clip
        N, M = state.N, state.M
        self.dt = scheme.dt(N)
        self.gdt = scheme.gamma_c(N, M) * self.dt
        self.crit_dt = scheme.critic_dt(M)
        self.hyper = scheme.hyper
        if scheme.stochastic:
            m = scheme.batch_size
            self.zw = np.full(m, 1.0 / m)
            self.xw = np.full(m, 1.0 / m)
            self.zT = np.zeros((problem.L, 1))
            self.xT = np.zeros((problem.K, 1))
        else:
            z, zw, x, xw = problem.quadrature(scheme.n_latent, scheme.n_target)
            self.zT, self.zw = np.ascontiguousarray(z.T), zw
            self.xT, self.xw = np.ascontiguousarray(x.T), xw
        self.theta = state.theta.copy()
        self.omega = state.omega.copy()
        self.opt = scheme.opt_state(self.theta, self.omega, state.opt)

    def node_counts(self, scheme) -> tuple[int, int]:
        """Latent and data nodes per velocity evaluation (the batch size for SGD)."""
        if scheme.stochastic:
            return scheme.batch_size, scheme.batch_size
        return self.zT.shape[1], self.xT.shape[1]

    def opt_state(self) -> dict[str, np.ndarray]:
        """A copy of the optimiser state (for checkpoints and the final :class:`State`)."""
        return {k: v.copy() for k, v in self.opt.items()}

    def particles(self) -> tuple[np.ndarray, np.ndarray]:
        """The current ``(theta, omega)`` (host arrays; not copies)."""
        return self.theta, self.omega

    def advance(self, n: int, Zs: np.ndarray | None, Xs: np.ndarray | None) -> int:
        """Take ``n`` steps (batches ``Zs``, ``Xs`` for stochastic schemes); return how many
        finished before a NaN/Inf appeared (``n`` when all did)."""
        raise NotImplementedError
