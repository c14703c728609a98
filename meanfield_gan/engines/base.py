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
        #: The critic trains alone (the generator's velocity is never evaluated).
        self.frozen = bool(getattr(scheme, "freeze_generator", False))
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
        self.problem = problem
        self.loss = problem.loss
        #: Steps taken so far in the run (Adam's bias correction, annealed noise).
        self.step = int(state.step)
        self._penalty_nodes = None
        if problem.gradient_penalty > 0 and not scheme.stochastic:
            self._penalty_nodes = problem.penalty_triples()
        #: Deterministic schemes with instance noise: the quadrature is the tensor product
        #: with the noise nodes (``zT``, ``xT`` hold the repeated clean nodes) and ``ezT``,
        #: ``exT`` the unit offsets of its generated and data columns; None otherwise.
        self.ezT = self.exT = None
        if problem.instance_noise > 0 and not scheme.stochastic:
            zq, self.zw, ez, xq, self.xw, ex = problem.noise_tensor(
                self.zT.T, self.zw, self.xT.T, self.xw)
            self.zT, self.xT = np.ascontiguousarray(zq.T), np.ascontiguousarray(xq.T)
            self.ezT, self.exT = np.ascontiguousarray(ez.T), np.ascontiguousarray(ex.T)

    def batches(self, Zs, Xs, extra=None) -> Nodes:
        """The nodes of every step of a block (see :class:`Nodes`)."""
        return Nodes(self, Zs, Xs, extra)

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

    def advance(self, n: int, Zs: np.ndarray | None, Xs: np.ndarray | None,
                extra: dict | None = None) -> int:
        """Take ``n`` steps (batches ``Zs``, ``Xs`` and the noise/penalty draws ``extra`` for
        stochastic schemes); return how many finished before a NaN/Inf appeared (``n`` when
        all did)."""
        raise NotImplementedError


class Nodes:
    """The nodes of the velocity evaluations of a block of steps, for the host engines.

    ``nodes(s, zslot, xslot)`` gives ``(z (B, L), zw, x (B, K), xw, z_noise, penalty)`` for
    step ``s`` of the block: the quadrature of a deterministic scheme (tensor Gauss-Hermite
    nodes for the instance noise, fixed penalty triples), or the SGD batches of the slots
    (noise draws scaled by ``sigma_n`` at the step's time; the penalty on the batch's own
    pairs with their ``eps``).  ``z_noise`` and ``penalty`` are None when not used.
    """

    def __init__(self, runner: Runner, Zs, Xs, extra):
        self.r, self.Zs, self.Xs, self.extra = runner, Zs, Xs, extra or {}
        p = runner.problem
        self.lam = p.gradient_penalty

    def nodes(self, s: int, zslot: int, xslot: int):
        r, p = self.r, self.r.problem
        sigma = p.noise_at((r.step + s) * r.dt) if p.instance_noise > 0 else 0.0
        if self.Zs is None:
            z, zw = np.ascontiguousarray(r.zT.T), r.zw
            x, xw = np.ascontiguousarray(r.xT.T), r.xw
            z_noise = None
            if r.ezT is not None:  # the tensor product (node, noise node) at this sigma
                z_noise = sigma * r.ezT.T
                x = x + sigma * r.exT.T
            penalty = None if r._penalty_nodes is None else (self.lam, r._penalty_nodes)
            return z, zw, x, xw, z_noise, penalty
        z = np.ascontiguousarray(self.Zs[s, zslot].T)
        x_clean = np.ascontiguousarray(self.Xs[s, xslot].T)
        x, z_noise = x_clean, None
        if "gen_noise" in self.extra:
            z_noise = sigma * self.extra["gen_noise"][s, zslot].T
            x = x_clean + sigma * self.extra["data_noise"][s, xslot].T
        penalty = None
        if "eps" in self.extra:
            # the batch's own pairs (X^r, Z^r), each with a fresh eps (Gulrajani et al.)
            m = len(r.zw)
            penalty = (self.lam, (z, x_clean, self.extra["eps"][s, xslot], np.full(m, 1.0 / m)))
        return z, r.zw, x, r.xw, z_noise, penalty
