"""CPU engines side by side: one projected Euler step and one SGD step, steps per second.

Three objectives (``--objectives``; MODEL.md section 7): ``wasserstein`` (the WGAN step, critic
in the box ``[-1, 1]^{K+2}``), ``minimax`` (the original GAN, no box) and ``wgan_gp`` (the
Wasserstein loss with the gradient penalty, ``lambda = 10``, no box).

Engines, all in float64 on the same arrays:

* ``numpy``  - the package's NumPy reference runner (``simulate(..., backend="numpy")``),
* ``numba``  - the package's Numba runner (``backend="numba"``, the default),
* ``torch``  - a straightforward PyTorch version of the same step (the reference's formulas on
  tensors, forming the ``(N, B, K)`` arrays), eager,
* ``torch.compile`` - the same function through ``torch.compile``,
* ``jax``    - the same formulas in ``jax.numpy``, the step loop under ``jax.jit``
  (``lax.fori_loop``, so JAX, like our Numba runner, runs many steps per call).

For ``wasserstein`` and ``minimax`` the PyTorch and JAX steps are the reference's formulas
(the minimax one weights each node by ``phi'(f)``, from ``f`` at the nodes).  For ``wgan_gp``
they are written as practitioners write WGAN-GP: the objectives of the particle networks,
differentiated by autograd (``V_omega = M dPsi_c/domega``, ``V_theta = -N dPsi_g/dtheta``), the
penalty's ``grad_x f`` at the interpolates by ``torch.autograd.grad(..., create_graph=True)``
(PyTorch eager) or ``jax.grad`` (JAX).  ``torch.compile`` does not support that double
backward, so its step is the same one written with ``torch.func.grad`` and ``vmap``.
The penalty's interpolates pair node ``b``'s ``z_b`` and
``x_b`` with a fixed ``eps_b`` (the package's Euler runner is handed these as its penalty
triples, its SGD runner as the batch's ``eps``).

PyTorch and JAX are optional (not dependencies of the package): missing ones are skipped with a
note.  Before timing, every engine takes the same steps from the same state as the NumPy
reference and must agree to 1e-10.  Steps/s is the best of the repeats (Numba is timed
twice per case, before and after the others, and the better kept).  The machine's sigmoid
throughput is measured in the same run (NumPy/SciPy ``expit`` and our compiled sigmoid, on all
cores, over a large array and over cache-resident blocks; the best is the bound; it is
measured before and after the grid and the larger one used, so that other engines' threads
still spinning cannot lower it); the
``bound`` column is the fraction of it a step achieves, counting ``2 N K Bz + M (Bz + Bx)``
sigmoids per step (``Bz = Bx = B``), and ``overhead`` is the step time minus that work at the
bound.

Usage::

    python benchmarks/bench_engines.py            # full grid, every objective
    python benchmarks/bench_engines.py --quick    # a subset
    python benchmarks/bench_engines.py --quick --objectives minimax wgan_gp

Results: ``benchmarks/results/bench_engines{_quick}{_objectives}.{json,md}`` (the objectives'
suffix only when not all three run).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import numba  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from _cpu import cpu_description  # noqa: E402
from numba import njit, prange  # noqa: E402

import meanfield_gan as mfg  # noqa: E402
from meanfield_gan.engines import _numba as ne  # noqa: E402
from meanfield_gan.engines._numba import NumbaRunner as _NumbaRunner  # noqa: E402
from meanfield_gan.engines.reference import NumpyRunner as _NumpyRunner  # noqa: E402

ENGINES = ("numpy", "numba", "torch", "torch.compile", "jax")
OBJECTIVES = ("wasserstein", "minimax", "wgan_gp")
CLIP = 1.0
#: The gradient penalty's weight in the ``wgan_gp`` cases (the paper's).
LAMBDA = 10.0
#: Above this many elements of an (N, B, K) array the array engines are skipped (memory/time).
MAX_DENSE = 4e7


# --------------------------------------------------------------------------------------
# the problem and the package's runners
# --------------------------------------------------------------------------------------


class _Config:
    """One benchmark case: scheme ("euler" or "sgd"), K = L, N = M, nodes/batch B, objective."""

    def __init__(self, scheme: str, K: int, N: int, B: int, seed: int = 0,
                 objective: str = "wasserstein"):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        self.scheme, self.K, self.L, self.N, self.M, self.B = scheme, K, K, N, N, B
        self.objective = objective
        rng = np.random.default_rng(seed)
        self.theta = rng.normal(size=(N, K, K + 2))
        self.omega = rng.uniform(-0.5, 0.5, size=(N, K + 2))
        self.omega[: N // 10, 0] = CLIP  # some critic particles on the boundary
        self.z = rng.normal(size=(B, K))
        self.x = rng.normal(size=(B, K)) + 0.5
        self.w = np.full(B, 1.0 / B)
        self.eps = rng.uniform(size=B)  # the penalty's eps_b (drawn last: the rest unchanged)
        if scheme == "euler":
            self.dt, self.gdt = 1e-3, 2e-3
        else:  # SGD(lr=1, n_critic=1): dt = lr/N, gamma_c dt = n_critic lr/M
            self.dt, self.gdt = 1.0 / N, 1.0 / N

    @property
    def label(self) -> str:
        head = "" if self.objective == "wasserstein" else f"{self.objective} "
        return f"{head}{self.scheme} K=L={self.K} N=M={self.N:.0e} B={self.B}"

    @property
    def clip(self) -> float:
        """The box: the WGAN's for ``wasserstein``, none for the other objectives."""
        return CLIP if self.objective == "wasserstein" else math.inf

    @property
    def loss(self) -> str:
        return "minimax" if self.objective == "minimax" else "wasserstein"

    @property
    def lam(self) -> float:
        return LAMBDA if self.objective == "wgan_gp" else 0.0

    @property
    def sigmoids(self) -> int:
        """Sigmoids per step: ``2 N K B + 2 M B``; minimax adds ``f`` at the nodes (``2 M B``),
        the penalty ``g`` at its ``B`` latents, ``grad f`` and its own pass over the critic at
        the interpolates (``N K B + 2 M B``)."""
        base = 2 * self.N * self.K * self.B + self.M * 2 * self.B
        extra = {"wasserstein": 0, "minimax": 2 * self.M * self.B,
                 "wgan_gp": self.N * self.K * self.B + 2 * self.M * self.B}
        return base + extra[self.objective]

    @property
    def dense(self) -> int:
        return self.N * self.B * self.K

    def problem(self) -> mfg.Problem:
        target = mfg.GaussianMixture([[0.0] * self.K], 1.0)
        return mfg.Problem(self.K, self.L, target, clip=self.clip, loss=self.loss,
                           gradient_penalty=self.lam, penalty_size=self.B)

    def scheme_obj(self):
        if self.scheme == "euler":
            return mfg.ProjectedEuler(self.dt, self.gdt / self.dt)
        return mfg.SGD(lr=1.0, n_critic=1, batch_size=self.B)

    def batches(self, n: int):
        """``n`` steps of the same batch, in the runners' layout ``(n, 1, dim, B)``."""
        Z = np.broadcast_to(self.z.T[None, None], (n, 1, self.L, self.B)).copy()
        X = np.broadcast_to(self.x.T[None, None], (n, 1, self.K, self.B)).copy()
        return Z, X


def _package_runner(cls, cfg: _Config):
    """The package's runner, with the benchmark's nodes as quadrature (Euler)."""
    state = mfg.State(cfg.theta.copy(), cfg.omega.copy())
    runner = cls.__new__(cls)
    problem, scheme = cfg.problem(), cfg.scheme_obj()
    if cfg.scheme == "euler":
        # _Runner.__init__ asks the problem for its quadrature (and penalty triples); hand it
        # the benchmark's nodes.
        quad = (cfg.z, cfg.w, cfg.x, cfg.w)
        object.__setattr__(problem, "quadrature", lambda n_latent=None, n_target=None: quad)
        triples = (cfg.z, cfg.x, cfg.eps, cfg.w)
        object.__setattr__(problem, "penalty_triples", lambda: triples)
    cls.__init__(runner, problem, state, scheme)
    return runner


def package_engine(name: str, cfg: _Config):
    """``(advance(n), result())`` for the package's numpy or numba runner."""
    runner = _package_runner(_NumpyRunner if name == "numpy" else _NumbaRunner, cfg)
    batches = {}

    def advance(n: int):
        if cfg.scheme == "euler":
            done = runner.advance(n, None, None)
        else:
            if n not in batches:
                extra = None
                if cfg.lam > 0:  # the same eps_b at every step, as the dense engines use
                    extra = {"eps": np.broadcast_to(cfg.eps[None, None], (n, 1, cfg.B)).copy()}
                batches[n] = (*cfg.batches(n), extra)
            done = runner.advance(n, *batches[n])
        assert done == n, "non-finite values"

    def result():
        th, om = runner.particles()
        return th.copy(), om.copy()

    return advance, result


# --------------------------------------------------------------------------------------
# straightforward PyTorch / JAX versions (the reference's formulas on dense arrays)
# --------------------------------------------------------------------------------------


def dense_step(xp, sigmoid, theta, omega, z, zw, x, xw, dt, gdt, clip, loss="wasserstein"):
    """One simultaneous step ``theta + dt V_theta``, ``clip(omega + gdt V_omega)``.

    ``loss`` ``"wasserstein"`` or ``"minimax"``: the minimax velocities are the Wasserstein
    sums with the node weights ``phi'(f)`` of MODEL.md section 7.
    """
    K = omega.shape[1] - 2
    L = theta.shape[2] - 2
    M = omega.shape[0]
    a, Bm, c = theta[..., 0], theta[..., 1:L + 1], theta[..., L + 1]
    s = sigmoid(xp.einsum("nkl,bl->nbk", Bm, z) + c[:, None, :])            # (N, B, K)
    g = xp.mean(a[:, None, :] * s, axis=0)                                   # (B, K)
    alpha, beta, gamma = omega[:, 0], omega[:, 1:K + 1], omega[:, K + 1]
    sg = sigmoid(g @ beta.T + gamma)                                          # (B, M)
    sx = sigmoid(x @ beta.T + gamma)
    wz, wx, wg = zw, xw, zw
    if loss == "minimax":  # phi_1' = s(-f), -phi_2' = s(f), phi_3' = s(-f), f at the nodes
        fg = sg @ alpha / M
        fx = sx @ alpha / M
        wz = wg = zw * sigmoid(-fg)
        wx = xw * sigmoid(fx)
    dg = sg * (1.0 - sg)
    dx = sx * (1.0 - sx)
    v_alpha = wz @ sg - wx @ sx
    v_beta = alpha[:, None] * ((wz[:, None] * dg).T @ g - (wx[:, None] * dx).T @ x)
    v_gamma = alpha * (wz @ dg - wx @ dx)
    v_omega = xp.concatenate([v_alpha[:, None], v_beta, v_gamma[:, None]], axis=1)
    wh = wg[:, None] * ((alpha * dg) @ beta) / M                              # w_b h(z_b)
    ds = s * (1.0 - s)
    v_a = -xp.einsum("bk,nbk->nk", wh, s)
    v_B = -a[..., None] * xp.einsum("bk,nbk,bl->nkl", wh, ds, z)
    v_c = -a * xp.einsum("bk,nbk->nk", wh, ds)
    v_theta = xp.concatenate([v_a[..., None], v_B, v_c[..., None]], axis=2)
    return theta + dt * v_theta, xp.clip(omega + gdt * v_omega, -clip, clip)


def _generator(einsum, sigmoid, theta, z):
    """``g(z_b) = (1/N) sum_i a_i s(B_i z_b + c_i)`` on dense arrays, shape ``(B, K)``."""
    L = theta.shape[2] - 2
    a, Bm, c = theta[..., 0], theta[..., 1:L + 1], theta[..., L + 1]
    u = einsum("nkl,bl->nbk", Bm, z) + c[:, None, :]                      # (N, B, K)
    return (a[:, None, :] * sigmoid(u)).mean(0)


def _critic(sigmoid, omega, x):
    """``f(x_b) = (1/M) sum_j alpha_j s(beta_j . x_b + gamma_j)``, shape ``(B,)``."""
    K = omega.shape[1] - 2
    u = x @ omega[:, 1:K + 1].T + omega[:, K + 1]
    return (omega[:, 0] * sigmoid(u)).mean(-1)


def torch_gp_step(theta, omega, z, zw, x, xw, eps, dt, gdt, lam):
    """A WGAN-GP step as practitioners write it: losses, autograd, ``create_graph=True``.

    The critic ascends ``Psi_c = E f(g(Z)) - E f(X) - lam E (|grad f(xh)| - 1)^2`` and the
    generator descends ``Psi_g = E f(g(Z))``, both at the same state (the simultaneous step);
    particle velocities are ``V_omega = M dPsi_c/domega`` and ``V_theta = -N dPsi_g/dtheta``.
    """
    import torch

    th = theta.detach().requires_grad_(True)
    om = omega.detach().requires_grad_(True)
    g = _generator(torch.einsum, torch.sigmoid, th, z)
    fake = g.detach()
    xh = (eps[:, None] * x + (1.0 - eps[:, None]) * fake).requires_grad_(True)
    grad_x, = torch.autograd.grad(_critic(torch.sigmoid, om, xh).sum(), xh, create_graph=True)
    penalty = xw @ (grad_x.norm(dim=1) - 1.0) ** 2
    critic_loss = -(zw @ _critic(torch.sigmoid, om, fake) - xw @ _critic(torch.sigmoid, om, x)
                    - lam * penalty)
    d_omega, = torch.autograd.grad(critic_loss, om)
    generator_loss = zw @ _critic(torch.sigmoid, om.detach(), g)
    d_theta, = torch.autograd.grad(generator_loss, th)
    N, M = theta.shape[0], omega.shape[0]
    return (theta - dt * N * d_theta).detach(), (omega - gdt * M * d_omega).detach()


def torch_func_gp_step(theta, omega, z, zw, x, xw, eps, dt, gdt, lam):
    """The same step with ``torch.func.grad`` (and ``vmap`` for the penalty's ``grad_x f``):
    the form ``torch.compile`` takes, as it does not support double backward through
    ``torch.autograd.grad(..., create_graph=True)``."""
    import torch
    from torch.func import grad, vmap

    sig = torch.sigmoid
    N, M = theta.shape[0], omega.shape[0]
    fake = _generator(torch.einsum, sig, theta, z).detach()
    xh = eps[:, None] * x + (1.0 - eps[:, None]) * fake

    def psi_c(om):
        grad_x = vmap(grad(lambda p: _critic(sig, om, p[None])[0]))(xh)
        penalty = xw @ (torch.sqrt((grad_x * grad_x).sum(1)) - 1.0) ** 2
        return zw @ _critic(sig, om, fake) - xw @ _critic(sig, om, x) - lam * penalty

    def psi_g(th):
        return zw @ _critic(sig, omega, _generator(torch.einsum, sig, th, z))

    return theta - dt * N * grad(psi_g)(theta), omega + gdt * M * grad(psi_c)(omega)


def torch_engine(cfg: _Config, compiled: bool):
    import torch

    torch.set_num_threads(numba.get_num_threads())
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731

    class _XP:  # the few NumPy names dense_step uses
        einsum = staticmethod(torch.einsum)
        mean = staticmethod(lambda a, axis: a.mean(dim=axis))
        concatenate = staticmethod(lambda a, axis: torch.cat(a, dim=axis))
        clip = staticmethod(torch.clamp)

    if cfg.objective == "wgan_gp":
        eps = t(cfg.eps)
        gp_step = torch_func_gp_step if compiled else torch_gp_step

        def step(theta, omega, z, zw, x, xw):  # no box: nothing to clip
            return gp_step(theta, omega, z, zw, x, xw, eps, cfg.dt, cfg.gdt, cfg.lam)
    else:
        def step(theta, omega, z, zw, x, xw):
            return dense_step(_XP, torch.sigmoid, theta, omega, z, zw, x, xw, cfg.dt, cfg.gdt,
                              cfg.clip, cfg.loss)

    if compiled:
        torch._dynamo.reset()  # one compilation per case (else the recompile limit is hit)
    fn = torch.compile(step, dynamic=False) if compiled else step
    args = [t(cfg.z), t(cfg.w), t(cfg.x), t(cfg.w)]
    state = [t(cfg.theta.copy()), t(cfg.omega.copy())]
    # autograd's penalty needs grad mode on; torch.func and the other steps do not
    grad_mode = torch.enable_grad if cfg.objective == "wgan_gp" and not compiled else torch.no_grad

    def advance(n: int):
        with grad_mode():
            th, om = state
            for _ in range(n):
                th, om = fn(th, om, *args)
            state[:] = [th, om]

    def result():
        return state[0].numpy().copy(), state[1].numpy().copy()

    return advance, result


def jax_engine(cfg: _Config):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    z, w, x, eps = (jnp.asarray(a) for a in (cfg.z, cfg.w, cfg.x, cfg.eps))
    sig = jax.nn.sigmoid

    def gp_body(_, carry):
        # WGAN-GP with jax.grad: the penalty's grad_x f by jax.grad of f at each interpolate,
        # the velocities by jax.grad of the objectives (V = M dPsi_c/domega, -N dPsi_g/dtheta)
        theta, omega = carry
        N, M = theta.shape[0], omega.shape[0]
        fake = jax.lax.stop_gradient(_generator(jnp.einsum, sig, theta, z))
        xh = eps[:, None] * x + (1.0 - eps[:, None]) * fake

        def psi_c(om):
            grad_x = jax.vmap(jax.grad(lambda p: _critic(sig, om, p[None])[0]))(xh)
            penalty = w @ (jnp.sqrt(jnp.sum(grad_x * grad_x, axis=1)) - 1.0) ** 2
            return w @ _critic(sig, om, fake) - w @ _critic(sig, om, x) - cfg.lam * penalty

        def psi_g(th):
            return w @ _critic(sig, omega, _generator(jnp.einsum, sig, th, z))

        return (theta - cfg.dt * N * jax.grad(psi_g)(theta),
                omega + cfg.gdt * M * jax.grad(psi_c)(omega))

    def body(_, carry):
        if cfg.objective == "wgan_gp":
            return gp_body(_, carry)
        return dense_step(jnp, sig, carry[0], carry[1], z, w, x, w, cfg.dt, cfg.gdt, cfg.clip,
                          cfg.loss)

    run = jax.jit(lambda th, om, n: jax.lax.fori_loop(0, n, body, (th, om)))
    state = [jnp.asarray(cfg.theta), jnp.asarray(cfg.omega)]

    def advance(n: int):
        state[:] = run(state[0], state[1], n)
        state[0].block_until_ready()

    def result():
        return np.asarray(state[0]).copy(), np.asarray(state[1]).copy()

    return advance, result


def make_engine(name: str, cfg: _Config):
    if name in ("numpy", "numba"):
        return package_engine(name, cfg)
    if name in ("torch", "torch.compile"):
        return torch_engine(cfg, compiled=name == "torch.compile")
    return jax_engine(cfg)


def available(name: str) -> str | None:
    """None if the engine can run here, else why not."""
    mod = {"torch": "torch", "torch.compile": "torch", "jax": "jax"}.get(name)
    if mod is None:
        return None
    try:
        __import__(mod)
    except ImportError:
        return f"{mod} not installed"
    return None


# --------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------


def steps_per_second(advance, min_time: float, repeats: int, max_steps: int = 1 << 16
                     ) -> tuple[float, int]:
    """Best steps/s over ``repeats`` timings of ``n`` steps, ``n`` grown to ~``min_time``.

    The best, not the median: other jobs on a shared machine only ever slow a timing down, and
    on the VMs here a few-second disturbance was seen to halve one case's median.
    """
    advance(1)  # warm-up (compilation, caches)
    n = 1
    while True:
        t = time.perf_counter()
        advance(n)
        dt = time.perf_counter() - t
        if dt >= min_time or n >= max_steps:
            break
        n = min(max_steps, max(2 * n, int(n * min_time / max(dt, 1e-9))))
    rates = [n / dt]
    if dt > 2 * min_time * 5:  # seconds per step: three timings are enough
        repeats = min(repeats, 3)
    for _ in range(repeats - 1):
        t = time.perf_counter()
        advance(n)
        rates.append(n / (time.perf_counter() - t))
    return float(max(rates)), n


# --------------------------------------------------------------------------------------
# the machine's sigmoid throughput
# --------------------------------------------------------------------------------------

_sigmoid = ne.sigmoid


@njit(parallel=True, cache=True, error_model="numpy", fastmath={"reassoc", "nsz", "contract"})
def _sigmoid_array(x, out):
    for i in prange(x.size):
        out[i] = _sigmoid(x[i])


@njit(parallel=True, cache=True, error_model="numpy", fastmath={"reassoc", "nsz", "contract"})
def _sigmoid_blocks(x, out, n_blocks, reps):
    # Each block (64 KiB) stays in its core's L2 and the sigmoids are summed, not stored:
    # the arithmetic bound. The shift d differs per repetition so no work can be hoisted.
    size = x.size // n_blocks
    for blk in prange(n_blocks):
        xi = x[blk * size:(blk + 1) * size]
        acc = 0.0
        for r in range(reps):
            d = r * 1e-9
            for i in range(size):
                acc += _sigmoid(xi[i] + d)
        out[blk] = acc


def sigmoid_bound(n_large: int = 1 << 24, repeats: int = 5) -> dict:
    """Sigmoids per second on all cores: expit and our sigmoid, large array and in cache."""
    from scipy.special import expit

    threads = numba.get_num_threads()
    rng = np.random.default_rng(0)
    x = rng.normal(size=n_large) * 4.0
    out = np.empty_like(x)
    parts = np.array_split(np.arange(n_large), threads)
    bounds = [(p[0], p[-1] + 1) for p in parts]

    def expit_all():
        with cf.ThreadPoolExecutor(threads) as ex:  # NumPy ufuncs release the GIL
            list(ex.map(lambda b: expit(x[b[0]:b[1]], out=out[b[0]:b[1]]), bounds))

    def best(f, n):
        f()
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
        return n / min(ts)

    res = {"expit_large": best(expit_all, n_large),
           "ours_large": best(lambda: _sigmoid_array(x, out), n_large)}
    nb, size, reps = 4 * threads, 8192, 200
    xb = x[: nb * size].copy()
    ob = np.zeros_like(xb)
    res["ours_cache"] = best(lambda: _sigmoid_blocks(xb, ob, nb, reps), nb * size * reps)
    res["bound"] = max(res.values())
    res["threads"] = threads
    return res


def _print_bound(title: str, bound: dict) -> None:
    print(title + ", ".join(f"{k} {v / 1e9:.2f}" for k, v in bound.items()
                            if k not in ("threads", "before_and_after")), flush=True)


# --------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------


def grid(quick: bool, objectives: tuple[str, ...] = ("wasserstein",)) -> list[_Config]:
    """The cases of each objective; minimax and wgan_gp: the Wasserstein cases up to
    ``N = 1e4`` (``--quick``: the target case ``N = M = B = 1000`` and SGD with batch 64, at
    ``K = L = 1``), so each has its Wasserstein twin (the ``cost vs wasserstein`` column)."""
    cfgs = []
    for obj in objectives:
        if quick:
            for K in ((1, 2) if obj == "wasserstein" else (1,)):
                for N in ((100, 1000) if obj == "wasserstein" else (1000,)):
                    cfgs.append(_Config("euler", K, N, N, objective=obj))
                for B in ((1, 64) if obj == "wasserstein" else (64,)):
                    cfgs.append(_Config("sgd", K, 1000, B, objective=obj))
            continue
        for K in (1, 2):
            for N in (100, 1000, 10_000, 100_000) if obj == "wasserstein" else (100, 1000, 10_000):
                for B in (100, 1000):
                    cfgs.append(_Config("euler", K, N, B, objective=obj))
                for B in (1, 64):
                    cfgs.append(_Config("sgd", K, N, B, objective=obj))
    return cfgs


def check_agreement(cfg: _Config, engines: list[str], n_steps: int = 3) -> dict[str, float]:
    """Max abs difference to the NumPy reference after ``n_steps`` steps, per engine."""
    ref_adv, ref_res = make_engine("numpy", cfg)
    ref_adv(n_steps)
    ref = ref_res()
    out = {}
    for name in engines:
        adv, res = make_engine(name, cfg)
        adv(n_steps)
        th, om = res()
        out[name] = float(max(np.abs(th - ref[0]).max(), np.abs(om - ref[1]).max()))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a subset of the grid")
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    ap.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES,
                    help="objectives to time (default: all)")
    ap.add_argument("--min-time", type=float, default=0.2, help="seconds per timing")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("-o", "--output", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    notes = []
    engines = []
    for name in args.engines:
        why = available(name)
        if why:
            notes.append(f"{name} skipped: {why}")
        else:
            engines.append(name)
    print(f"numba threads {numba.get_num_threads()}; load average {os.getloadavg()[0]:.2f}",
          flush=True)

    # Agreement first, on small cases of both schemes and both dimensions, per objective.
    objectives = tuple(o for o in OBJECTIVES if o in args.objectives)
    agreement = {}
    for cfg in (_Config(*case, objective=obj) for obj in objectives
                for case in (("euler", 1, 50, 40), ("euler", 2, 60, 30), ("sgd", 1, 70, 1),
                             ("sgd", 2, 40, 64))):
        d = check_agreement(cfg, [e for e in engines if e != "numpy"])
        agreement[cfg.label] = d
        bad = {k: v for k, v in d.items() if not v <= 1e-10}
        print(f"agreement {cfg.label}: " + ", ".join(f"{k} {v:.1e}" for k, v in d.items()),
              flush=True)
        if bad:
            print(f"engines disagree with the NumPy reference: {bad}", file=sys.stderr)
            return 1

    # The bound is measured before and after the grid and the larger taken: other engines'
    # worker threads (PyTorch's OpenMP pool, JAX's) may still spin for a moment after the
    # agreement checks, and a bound measured against them would flatter every ratio.
    time.sleep(1.0)
    bound = sigmoid_bound()
    print(f"numba threading layer: {numba.threading_layer()}")
    _print_bound("sigmoid throughput, before (1e9/s): ", bound)

    rows = []
    cases = grid(args.quick, objectives)
    for cfg in cases:
        row = {"case": cfg.label, "objective": cfg.objective, "scheme": cfg.scheme, "K": cfg.K,
               "L": cfg.L, "N": cfg.N, "M": cfg.M, "B": cfg.B,
               "sigmoids_per_step": cfg.sigmoids, "steps_per_s": {}}
        for name in engines:
            if name != "numba" and cfg.dense > MAX_DENSE:
                row["steps_per_s"][name] = None  # (N, B, K) arrays too large for this machine
                continue
            adv, _ = make_engine(name, cfg)
            rate, n = steps_per_second(adv, args.min_time, args.repeats)
            row["steps_per_s"][name] = rate
        # Numba again, after the others: its absolute rate is compared with the bound, so it
        # gets two windows some seconds apart, and a passing disturbance must hit both.
        adv, _ = make_engine("numba", cfg)
        rate, n = steps_per_second(adv, args.min_time, args.repeats)
        row["steps_per_s"]["numba"] = max(rate, row["steps_per_s"]["numba"])
        r = row["steps_per_s"]
        others = [v for k, v in r.items() if k != "numba" and v]
        best_alt = [v for k, v in r.items() if k in ("torch", "torch.compile", "jax") and v]
        row["numba_vs_numpy"] = r["numba"] / r["numpy"] if r.get("numpy") else None
        row["numba_vs_best_other"] = r["numba"] / max(others) if others else None
        row["numba_vs_best_torch_jax"] = r["numba"] / max(best_alt) if best_alt else None
        row["bound_fraction"] = r["numba"] * cfg.sigmoids / bound["bound"]
        rows.append(row)
        print(_row_text(row, engines), flush=True)

    time.sleep(1.0)
    before, after = bound, sigmoid_bound()
    _print_bound("sigmoid throughput, after (1e9/s): ", after)
    bound = dict(max(before, after, key=lambda b: b["bound"]))
    bound["before_and_after"] = [before["bound"], after["bound"]]
    for row, cfg in zip(rows, cases):
        rate = row["steps_per_s"]["numba"]
        row["bound_fraction"] = rate * cfg.sigmoids / bound["bound"]
        row["overhead_us"] = 1e6 * (1.0 / rate - cfg.sigmoids / bound["bound"])
    _cost_vs_wasserstein(rows)

    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "numba_threads": numba.get_num_threads(),
            "numba_threading_layer": numba.threading_layer(),
            "load_average": os.getloadavg(),
            "numpy": np.__version__, "numba": numba.__version__, "notes": notes,
            "sigmoid_throughput": bound, "agreement_max_abs_diff": agreement,
            "min_time": args.min_time, "repeats": args.repeats,
            "engine_versions": _versions(engines)}
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    stem = "bench_engines_quick" if args.quick else "bench_engines"
    if objectives != OBJECTIVES:
        stem += "_" + "_".join(objectives)
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    table = markdown_table(rows, engines, bound, notes)
    (out / f"{stem}.md").write_text(table)
    print(table)
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.md')}")
    return 0


def _cost_vs_wasserstein(rows) -> None:
    """``row["numba_cost_vs_wasserstein"]``: a Numba step's time over that of the Wasserstein
    step of the same case (scheme, K, N, B), when both ran (None otherwise)."""
    key = lambda r: (r["scheme"], r["K"], r["N"], r["B"])  # noqa: E731
    wass = {key(r): r["steps_per_s"]["numba"] for r in rows if r["objective"] == "wasserstein"}
    for r in rows:
        w = wass.get(key(r))
        r["numba_cost_vs_wasserstein"] = (w / r["steps_per_s"]["numba"]
                                          if w and r["objective"] != "wasserstein" else None)


def _versions(engines) -> dict:
    v = {}
    if "torch" in engines or "torch.compile" in engines:
        import torch

        v["torch"] = torch.__version__
    if "jax" in engines:
        import jax

        v["jax"] = jax.__version__
    return v


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def _row_text(row, engines) -> str:
    r = row["steps_per_s"]
    ratio = row["numba_vs_best_torch_jax"]
    return (f"{row['case']:<34} " + " ".join(f"{e} {_fmt(r.get(e))}" for e in engines)
            + (f" | numba/best torch,jax {ratio:.1f}x" if ratio else "")
            + f" | bound {100 * row['bound_fraction']:.0f}% (of the first bound)")


def markdown_table(rows, engines, bound, notes) -> str:
    head = ["case"] + [f"{e} (steps/s)" for e in engines] + [
        "numba / numpy", "numba / best torch,jax", "% of sigmoid bound", "overhead (us)",
        "numba cost vs wasserstein"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        r = row["steps_per_s"]
        cells = [row["case"]] + [_fmt(r.get(e)) for e in engines]
        cells += [f"{row['numba_vs_numpy']:.1f}x" if row["numba_vs_numpy"] else "-",
                  (f"{row['numba_vs_best_torch_jax']:.1f}x"
                   if row["numba_vs_best_torch_jax"] else "-"),
                  f"{100 * row['bound_fraction']:.0f}%", f"{row['overhead_us']:.1f}",
                  f"{row['numba_cost_vs_wasserstein']:.2f}x"
                  if row.get("numba_cost_vs_wasserstein") else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Machine: {cpu_description()}.")
    lines.append("")
    lines.append("Sigmoid throughput on all cores (1e9/s), the better of the runs before and "
                 "after the grid: " + ", ".join(
                     f"{k} {v / 1e9:.2f}" for k, v in bound.items()
                     if k not in ("threads", "before_and_after"))
                 + " (bound before / after: " + " / ".join(
                     f"{v / 1e9:.2f}" for v in bound.get("before_and_after", []))
                 + f"); {bound['threads']} threads.  `-`: not run (dense arrays over "
                 f"{MAX_DENSE:.0e} elements) or not installed.")
    if any(r.get("objective", "wasserstein") != "wasserstein" for r in rows):
        lines.append(f"Rows without a prefix: the Wasserstein step, critic in [-{CLIP:g}, "
                     f"{CLIP:g}]^(K+2).  `minimax`: the original GAN's step, no box.  "
                     f"`wgan_gp`: the Wasserstein step with the gradient penalty (lambda = "
                     f"{LAMBDA:g}), no box; its PyTorch and JAX steps use autograd "
                     "(eager PyTorch: `torch.autograd.grad(..., create_graph=True)`; "
                     "`torch.compile`, which has no double backward: `torch.func.grad`; JAX: "
                     "`jax.grad`).  The bound counts the sigmoids of "
                     "`_Config.sigmoids` (more per step for these objectives).  `numba cost "
                     "vs wasserstein`: a Numba step's time over the Wasserstein step's, same "
                     "scheme, K, N and B.")
    for n in notes:
        lines.append(f"Note: {n}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
