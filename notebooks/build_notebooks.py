"""Write the notebooks of this folder from the cell sources below (run: python build_notebooks.py).

The notebooks are generated, not edited by hand, so that their JSON stays clean: no outputs,
no execution counts, one kernel specification. Edit the cells here and run this script again.
CI executes every notebook top to bottom (``tests/test_notebooks.py``), each at sizes that
finish well under two minutes on two cores.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

KERNEL = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
          "language_info": {"name": "python"}}


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str):
    return new_code_cell(text.strip("\n"))


# ------------------------------------------------------------------------------------------
QUICKSTART = [
    md(r"""
# Quickstart: a GAN as two interacting particle systems

`meanfield_gan` simulates the training of a one-hidden-layer WGAN in its mean-field form
(MODEL.md). The generator has `N` neurons `theta_i = (a, B, c)` and the critic `M` neurons
`omega_j = (alpha, beta, gamma)`:

    g(z) = (1/N) sum_i a_i s(B_i z + c_i),        f(x) = (1/M) sum_j alpha_j s(beta_j . x + gamma_j)

Training ascends `Psi = E f(g(Z)) - E f(X)` in the critic and descends it in the generator; the
critic's weights are clipped to the box `Q = [-clip, clip]^{K+2}`. As `N, M` grow, SGD on the
particles converges to the **WGAN-PDE**, a transport equation for the two particle measures.
"""),
    code(r"""
import numpy as np
import matplotlib.pyplot as plt
from scipy.special import expit

import meanfield_gan as mfg
"""),
    md(r"""
## A problem and its particles

Data dimension `K = 1`, latent dimension `L = 1`, target `P_* = (N(-1, 0.3^2) + N(1, 0.3^2)) / 2`.
`theta` has shape `(N, K, L+2)` and `omega` shape `(M, K+2)` (MODEL.md section 1).
"""),
    code(r"""
problem = mfg.Problem(K=1, L=1, target=mfg.GaussianMixture([[-1.0], [1.0]], 0.3))
N = M = 200
state = mfg.initial_state(problem, N=N, M=M, seed=0)
print("theta", state.theta.shape, " omega", state.omega.shape, " clip", problem.clip)

# The velocity fields and the energy, with exact (quadrature) expectations.
z, zw, x, xw = problem.quadrature()
v_theta, v_omega = mfg.velocity(state.theta, state.omega, z, zw, x, xw)
print("Psi at t = 0:", mfg.energy(state.theta, state.omega, z, zw, x, xw))
"""),
    md(r"""
## SGD (the WGAN algorithm) and the WGAN-PDE from the same particles

`SGD(lr, n_critic)` takes steps `dt = lr / N` in mean-field time with critic scale
`gamma_c = n_critic N / M`; `ProjectedEuler.matching` is the deterministic scheme (exact
expectations) with the same `dt` and `gamma_c`: a discretisation of the WGAN-PDE.
"""),
    code(r"""
sgd = mfg.SGD(lr=1.0, n_critic=1)
print("dt =", sgd.dt(N), " gamma_c =", sgd.gamma_c(N, M))
t_end = 4.0
traj_sgd = mfg.simulate(problem, state, sgd, t_end, record=16, seed=1)
euler = mfg.ProjectedEuler.matching(sgd, N, M)
traj_pde = mfg.simulate(problem, state, euler, t_end, record=16)
print(len(traj_sgd.times), "records; final step", traj_sgd.state.step)
"""),
    code(r"""
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
for traj, label in ((traj_sgd, "SGD"), (traj_pde, "projected Euler (WGAN-PDE)")):
    axes[0].plot(traj.times, traj.observables["psi"], label=label)
    axes[1].plot(traj.times, traj.observables["critic_boundary_fraction"], label=label)
axes[0].set(xlabel="t", ylabel="Psi", title="WGAN energy")
axes[1].set(xlabel="t", ylabel="fraction", title="critic particles on the boundary of Q")
axes[0].legend()
plt.show()
"""),
    md(r"""
## How far is SGD from the PDE?

The pair distance `d_2^2 = W_2^2(mu_SGD, mu_PDE) + W_2^2(nu_SGD, nu_PDE)` (exact optimal
transport with POT) and its upper bound by the natural coupling of the i-th particles.
Theorem 7 says `E d_2^2 <= C/N` (notebook 02 measures the rate).
"""),
    code(r"""
exact = [mfg.metrics.pair_distance(traj_sgd.theta[k], traj_sgd.omega[k],
                                   traj_pde.theta[k], traj_pde.omega[k], "exact")
         for k in range(len(traj_sgd.times))]
coupling = [mfg.metrics.pair_distance(traj_sgd.theta[k], traj_sgd.omega[k],
                                      traj_pde.theta[k], traj_pde.omega[k], "coupling")
            for k in range(len(traj_sgd.times))]
plt.figure(figsize=(5, 3.4))
plt.plot(traj_sgd.times, exact, "o-", label="exact $d_2^2$")
plt.plot(traj_sgd.times, coupling, "x--", label="natural-coupling bound")
plt.xlabel("t"); plt.ylabel("$d_2^2$"); plt.legend(); plt.show()
print("d_2^2 at t_end: exact %.3g, coupling bound %.3g" % (exact[-1], coupling[-1]))
"""),
    md(r"""
## The generated distribution

`g(Z)` for latent samples `Z`, written out from the array layout
(`theta[:, 0] = (a, b, c)` for `K = L = 1`).
"""),
    code(r"""
def generate(theta, z):
    a, b, c = theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2]
    return (a * expit(np.outer(z, b) + c)).mean(axis=1)

Z = np.random.default_rng(2).standard_normal(5000)
X = problem.target.sample(np.random.default_rng(3), 5000)[:, 0]
plt.figure(figsize=(6, 3.4))
bins = np.linspace(-2.2, 2.2, 90)
plt.hist(X, bins=bins, density=True, alpha=0.3, color="k", label="target")
plt.hist(generate(traj_sgd.theta[0], Z), bins=bins, density=True, alpha=0.6, label="g(Z), t = 0")
plt.hist(generate(traj_sgd.theta[-1], Z), bins=bins, density=True, alpha=0.6,
         label=f"g(Z), t = {t_end:g} (SGD)")
plt.legend(); plt.xlabel("x"); plt.show()
for k in (0, -1):
    print("t = %4.1f: W1(generated, target) = %.3f"
          % (traj_sgd.times[k], mfg.metrics.w1_1d(generate(traj_sgd.theta[k], Z), X)))
"""),
    md(r"""
## Where next

* `meanfield-gan run CONFIG.toml -o run.h5` runs a TOML configuration into an H5MD file that
  `mfg.load`, h5py and xarray read (`meanfield_gan/data/default.toml` documents every key).
* Notebook 02: the `C/N` rate of SGD to the WGAN-PDE. 03: the critic coagulates on the boundary
  of the box. 04: the explicit periodic example. 05: mode hopping on a bimodal target.
  06: vanishing generator gradients against a perfect discriminator.
"""),
]

# ------------------------------------------------------------------------------------------
RATE = [
    md(r"""
# The C/N law: SGD converges to the WGAN-PDE at rate 1/N

Theorem 7 of *GAN: Dynamics* (MODEL.md section 4.1): started from the same particles, the SGD
trajectory `(mu_N, nu_N)(t)` and the WGAN-PDE solution stay within
`E d_2^2 <= C / N` on `[0, T]`, with `M` proportional to `N`. The study runs, for each `N`
and many seeds, projected Euler (the PDE from the empirical initial measures) and independent
SGD runs from the same particles, and fits the slope of `log E d_2^2` against `log N`.

The full study is `meanfield-gan rate -o OUTDIR` (and `--quick`, the README's main job); here
a tiny grid runs in seconds through the same Python API.
"""),
    code(r"""
import numpy as np
import matplotlib.pyplot as plt

from meanfield_gan.studies.rate import load_rate_config, run_rate_study
"""),
    md(r"""
The packaged quick configuration (`meanfield_gan/data/rate_quick.toml`), shrunk: four `N`, 8
seeds with 4 SGD runs each. `replace` validates the changed values again.
"""),
    code(r"""
cfg = load_rate_config(quick=True).replace(N=(16, 32, 64, 128), seeds=8, sgd_runs=4,
                                           exact_max_N=128, n_boot=500)
print(cfg.to_toml().split("[euler_order]")[0])
"""),
    md(r"""
Tasks (one `(N, seed)` each) go through any `concurrent.futures.Executor`: `"serial"` here,
local processes by default, or a Dask cluster with `Client(...).get_executor()`.
"""),
    code(r"""
result = run_rate_study(cfg, executor="serial", progress=False)
s = result.summary()
print(f"fitted slope {s['slope']:.3f}, "
      f"95% interval [{s['slope_ci'][0]:.3f}, {s['slope_ci'][1]:.3f}]"
      f" (Theorem 7: -1), distance: {s['distance']}")
for N, d2, se in zip(s["N"], s["mean_d2"], s["stderr_d2"]):
    print(f"N = {N:4d}: E d_2^2 = {d2:.3e} +- {se:.1e},  N E d_2^2 = {N * d2:.3f}")
"""),
    code(r"""
N = np.array(s["N"], float)
mean, err = np.array(s["mean_d2"]), 1.96 * np.array(s["stderr_d2"])
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
ax = axes[0]
ax.errorbar(N, mean, yerr=err, fmt="o", capsize=3, label=r"$E\,d_2^2$ at $t_{end}$")
xs = np.geomspace(N[0] / 1.2, N[-1] * 1.2, 30)
ax.plot(xs, np.exp(s["intercept"]) * xs ** s["slope"], label=f"fit, slope {s['slope']:.2f}")
ax.plot(xs, mean[0] * N[0] / xs, "k--", lw=0.8, label="1/N")
ax.set(xscale="log", yscale="log", xlabel="N (= M)", ylabel=r"$E\,d_2^2$")
ax.legend()
ax = axes[1]
for i, n in enumerate(result.N):
    ax.plot(result.times, n * result.coupling[i].mean(axis=0), "o-", label=f"N = {n}")
ax.set(xlabel="t", ylabel="N x coupling bound", title="N E d_2^2 collapses onto one curve")
ax.legend(fontsize=8)
plt.show()
"""),
    md(r"""
With 8 seeds the interval is wide; the quick study (`meanfield-gan rate --quick`, 32 seeds x 8
SGD runs, `N` up to 1024) and the full one (`benchmarks/convergence_rate.py`) pin the slope
down. `write_rate(result, outdir)` writes `rate.json`, `rate.h5` and `rate.png`, as the CLI does.
"""),
]

# ------------------------------------------------------------------------------------------
COAGULATION = [
    md(r"""
# Coagulation of the critic at the boundary of the box

MODEL.md section 4.3: once the critic measure `nu` reaches the boundary of `Q` it flattens
there, and it can collapse onto a single point, a corner of `Q`, in finite time `t0`. Projected
Euler clips coordinates to exactly `+-clip`, so particles reaching a corner coincide **exactly**,
and coincident particles stay bitwise equal: the number of distinct critic positions never
increases.

`meanfield-gan coagulation [CONFIG.toml] -o OUTDIR` runs the packaged configuration
(`meanfield_gan/data/coagulation.toml`: target `delta_{-3}` far from the generator, critic
started in `[0, 0.5]^3`, `gamma_c = 10`). Here the same configuration with fewer particles.
"""),
    code(r"""
import tempfile
from pathlib import Path

import numpy as np
import matplotlib.pyplot as plt
from IPython.display import Image, display

import meanfield_gan as mfg
from meanfield_gan.studies.coagulation import (
    load_coagulation_config, run_coagulation, write_coagulation)

out = Path(tempfile.mkdtemp(prefix="coagulation-"))
"""),
    code(r"""
cfg = load_coagulation_config(overrides={"init": {"N": 128, "M": 128}})
result = run_coagulation(cfg)
print("t0 =", result.t0, " (first record where all", result.omega.shape[1],
      "critic particles coincide)")
print("final critic position(s):", result.final_positions().tolist())
paths = write_coagulation(result, out)
display(Image(filename=str(paths["png"])))
"""),
    md(r"""
The diagnostics of `mfg.metrics.coagulation` at every record: the support first flattens on
the faces (boundary fraction -> 1), then slides into the corner (corner fraction -> 1), and the
number of distinct positions drops to 1 at `t0`. The effective dimension (rank of the
covariance) falls from 3 to 0.
"""),
    code(r"""
s = result.series
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
axes[0].semilogy(result.times, s["n_distinct"], label="distinct positions")
axes[0].semilogy(result.times, s["n_clusters"], "--", label=f"clusters (tol {result.tol:g})")
axes[0].axvline(result.t0, color="k", ls=":")
axes[0].set(xlabel="t", title="number of distinct critic positions"); axes[0].legend()
axes[1].plot(result.times, s["boundary_fraction"], label="on a face")
axes[1].plot(result.times, s["corner_fraction"], label="at a corner")
axes[1].plot(result.times, s["effective_dimension"] / 3, label="effective dimension / 3")
axes[1].set(xlabel="t"); axes[1].legend()
plt.show()
print("distinct positions never increase:", bool(np.all(np.diff(s["n_distinct"]) <= 0)))
"""),
    md(r"""
## Why the critic must start in one basin

Since `s(-u) = 1 - s(u)`, a critic neuron and its mirror image differ by a constant:
`sigma(x; -omega) = sigma(x; omega) - alpha`. The constant cancels in the first variation
`F(omega) = E sigma(g(Z); omega) - E sigma(X; omega)`, so `F` is even and the critic velocity
field is **odd**: every maximiser over `Q` comes with its mirror image. A critic cloud symmetric
about 0 therefore ends as a *pair* of antipodal Diracs, and `t0` is never reached (the generator
cannot tell the two apart: `grad_x sigma(x; -omega) = grad_x sigma(x; omega)`).
"""),
    code(r"""
sym = run_coagulation(load_coagulation_config(overrides={
    "init": {"N": 128, "M": 128, "critic": {"kind": "uniform", "low": -0.5, "high": 0.5}}}))
final = sym.final_positions()
print("t0 =", sym.t0, "; final distinct positions:", final.tolist())
# Identify each particle with its mirror image: one point up to sign.
canon = np.where(sym.omega[-1][:, :1] < 0, -sym.omega[-1], sym.omega[-1])
print("distinct up to sign:", len(np.unique(canon, axis=0)))
"""),
    md(r"""
## The WGAN algorithm itself

With SGD (`dt = lr/N`, `gamma_c = n_critic N/M = 10`) the critic coagulates in the same way:
the batch is shared by all particles, so merged particles receive identical updates.
"""),
    code(r"""
sgd = run_coagulation(load_coagulation_config(overrides={
    "init": {"N": 128, "M": 128},
    "scheme": {"kind": "sgd", "lr": 1.0, "n_critic": 10, "batch_size": 1}}))
print("SGD: t0 =", sgd.t0, "; final:", sgd.final_positions().tolist())
"""),
]

# ------------------------------------------------------------------------------------------
TOY = [
    md(r"""
# The explicit example: periodic orbits captured by the clipping constraint

MODEL.md section 5: `K = L = 1`, target `(delta_{-1} + delta_{+1}) / 2`, a step generator with
one parameter `g` and a ReLU critic `D(x; omega) = max(omega x, 0)`, `|omega| <= 1`, logistic
latent `Phi`:

    g' = Phi'(g) omega,        omega' = gamma_c (1/2 - Phi(g))    (projected onto |omega| <= 1)

Without the constraint `E = 2 cosh(g) + omega^2 / gamma_c` is conserved: closed orbits, no
convergence. With it, orbits with `E > E* = 2 + 1/gamma_c` hit `|omega| = 1`, slide to
`(+-1, 0)` and then follow the level set `E = E*` forever, so
`max |g| -> arccosh(1 + 1/(2 gamma_c))`: 0.96 for `gamma_c = 1`, 0.31 for `gamma_c = 10`.
`meanfield-gan toy -o OUTDIR` is the command-line form of this notebook.
"""),
    code(r"""
import tempfile
from pathlib import Path

import numpy as np
import matplotlib.pyplot as plt
from IPython.display import Image, display

from meanfield_gan.models.explicit import integrate, orbit_period, predicted_limit, toy_energy
from meanfield_gan.studies.toy import run_toy, write_toy

out = Path(tempfile.mkdtemp(prefix="toy-"))
"""),
    code(r"""
study = run_toy(gamma_cs=(1.0, 10.0), t_end=120.0, dt=0.05, scheme="rk4")
for run in study.runs:
    print(f"gamma_c = {run['gamma_c']:>4g}: limit energy {run['limit_energy']:.6f} "
          f"(predicted {run['predicted_limit_energy']:.6f}), max|g| {run['max_abs_g']:.6f} "
          f"(predicted {run['predicted_max_abs_g']:.6f})")
paths = write_toy(study, out)
display(Image(filename=str(paths["png"])))
"""),
    md(r"""
## Integrators without the constraint

The energy is an exact test of an integrator: explicit Euler spirals outwards (the energy
grows by `O(dt)` per period), a high-order scheme keeps it.
"""),
    code(r"""
gc, start = 1.0, (0.5, 0.0)
period = orbit_period(*start, gc)
fig, ax = plt.subplots(figsize=(6, 3.4))
for scheme, dt in (("euler", 0.1), ("euler", 0.05), ("heun", 0.1), ("rk4", 0.1)):
    t, g, w = integrate(*start, gc, 10 * period, dt, scheme=scheme, constrained=False)
    e = toy_energy(g, w, gc)
    ax.plot(t / period, e - e[0], label=f"{scheme}, dt = {dt}")
    print(f"{scheme:5s} dt = {dt:4}: energy drift over ten periods {e[-1] - e[0]:+.2e}")
ax.set(xlabel="periods", ylabel="E(t) - E(0)", title="unconstrained, gamma_c = 1")
ax.legend(); plt.show()
"""),
    md(r"""
## The limit orbit

From starts outside the limit orbit, `max |g|` over the last periods approaches the predicted
value for each `gamma_c`.
"""),
    code(r"""
fig, ax = plt.subplots(figsize=(6, 3.4))
for i, run in enumerate(study.runs):
    tr = study.trajectories[i][0]
    ax.plot(tr.t, np.abs(tr.g), lw=0.8, color=f"C{i}",
            label=f"|g(t)|, gamma_c = {run['gamma_c']:g}")
    ax.axhline(predicted_limit(run["gamma_c"])["max_abs_g"], color=f"C{i}", ls="--")
ax.set(xlabel="t", ylabel="|g|", title="dashed: arccosh(1 + 1/(2 gamma_c))")
ax.legend(); plt.show()
"""),
]

# ------------------------------------------------------------------------------------------
MODE_COLLAPSE = [
    md(r"""
# Mode collapse on a bimodal target: the generator hops between the modes

Target `(N(-1, 0.2^2) + N(1, 0.2^2)) / 2` in one dimension, standard normal latent, `N = M = 64`
neurons, critic clipped to `[-1, 1]^3`, the WGAN-PDE (projected Euler, `gamma_c = 1`). We follow
the generated law `g # N(0, 1)` through a fixed set of latent samples: its density, the mass
near each mode (within 0.5 of it), and its `W_1` distance to the target.
"""),
    code(r"""
import tempfile
from pathlib import Path

import numpy as np
import matplotlib.pyplot as plt
from IPython.display import Image, display

import meanfield_gan as mfg
from meanfield_gan.studies.modecollapse import (
    animate_mode_collapse, plot_mode_collapse, simulate_mode_collapse)

out = Path(tempfile.mkdtemp(prefix="mode-collapse-"))
"""),
    code(r"""
result = simulate_mode_collapse(t_end=200.0, record=100, seed=0)
s = result.summary
print(f"collapsed onto one mode in {s['collapsed_fraction']:.0%} of the records, "
      f"{s['mode_switches']} switches between modes, both modes covered in "
      f"{s['covered_fraction']:.0%} of the records")
print(f"W1 to the target: min {s['w1_min']:.3f}, final {s['w1_final']:.3f} "
      f"(a Dirac at a mode: {s['w1_dirac_at_mode'][0]:.3f}); "
      f"largest generated std {s['max_generated_std']:.3f} (one mode: 0.2)")
display(Image(filename=str(plot_mode_collapse(result, out / "mode_collapse.png"))))
"""),
    md(r"""
The generated law is a single narrow bump at all times. The critic pushes it onto the inner
flank of one mode; once it is there the critic turns around and pushes it to the other one.
The bump never splits: both modes are never covered at once, and `W_1` stays near the value of
a generator collapsed on one mode.
"""),
    code(r"""
t = result.times
fig, ax = plt.subplots(figsize=(8, 3.2))
ax.plot(t, result.samples.mean(axis=1), label="mean of g(Z)")
ax.fill_between(t, np.quantile(result.samples, 0.05, axis=1),
                np.quantile(result.samples, 0.95, axis=1), alpha=0.3, label="5%-95% of g(Z)")
for m in result.modes:
    ax.axhline(m, color="k", ls="--", lw=0.8)
ax.set(xlabel="t", ylabel="x"); ax.legend(); plt.show()
"""),
    md(r"""
## The animation

Generator neurons (slope, bias), critic neurons in the box, and the generated density with the
critic function. Every fourth record, to keep this notebook quick.
"""),
    code(r"""
gif = animate_mode_collapse(result, out / "mode_collapse.gif", fps=6, dpi=60, every=4)
display(Image(filename=str(gif)))
"""),
    md(r"""
## The WGAN algorithm, and a larger box

SGD (batch 8) follows the same hops; with `clip = 3` the critic is stronger and the bump swings
further, past the modes (and widens), but never covers both modes at once.
"""),
    code(r"""
for label, kw in (("SGD, batch 8", {"scheme": mfg.SGD(lr=1.0, batch_size=8)}),
                  ("clip = 3", {"clip": 3.0})):
    r = simulate_mode_collapse(t_end=200.0, record=100, seed=0, **kw)
    m = r.samples.mean(axis=1)
    print(f"{label:13s}: switches {r.summary['mode_switches']}, covered "
          f"{r.summary['covered_fraction']:.0%}, mean of g(Z) in [{m.min():.2f}, {m.max():.2f}], "
          f"max std {r.summary['max_generated_std']:.2f}, min W1 {r.summary['w1_min']:.3f}")
"""),
]

# ------------------------------------------------------------------------------------------
VANISHING = [
    md(r"""
# Vanishing generator gradients (Arjovsky and Bottou, in the mean field)

When the generated law and the data lie on lower-dimensional, disjoint sets, a perfect
discriminator exists (Arjovsky and Bottou, *Towards principled methods for training GANs*,
Theorems 2.1-2.2). Their experiment: freeze the generator, train a fresh discriminator from
scratch, and watch the norm of the generator's gradient as the discriminator improves.

Here the generator and the critic are the particle measures of MODEL.md: `K = 2`, `L = 1`, so
`g # N(0, 1)` lives on a curve in the plane, and the target is 8 Diracs on the unit circle. A
fresh critic is trained alone with Adam; at log-spaced critic steps we record the generator's
speed `|V_theta|_mu = sqrt((1/N) sum_i |V_theta(theta_i)|^2)` (MODEL.md 8) under five objectives:
`minimax`, `non_saturating` (no box), `wasserstein_clip` (box `[-1, 1]^4`), `wasserstein_gp`
(penalty 10, no box), `minimax_noise` (instance noise `sigma_n = 0.3`).
"""),
    code(r"""
import tempfile
from pathlib import Path

import numpy as np
import matplotlib.pyplot as plt
from IPython.display import Image, display

import meanfield_gan as mfg
from meanfield_gan.studies.vanishing import load_vanishing_config, plot_vanishing, run_vanishing

out = Path(tempfile.mkdtemp(prefix="vanishing-"))
"""),
    md(r"""
## The configuration

`meanfield_gan/data/vanishing.toml`, the default of `meanfield-gan vanishing`: `N = M = 256`
neurons, Adam with per-coordinate critic steps `lr / M = 0.01` and batches of 64, 4000 critic
steps recorded on a log-spaced grid (about half a minute). The second frozen generator is the
initial one after 1000 steps of non-saturating GAN training. `load_vanishing_config(overrides=...)`
changes any of it, e.g. `{"vanishing": {"critic_steps": 8000}}`.
"""),
    code(r"""
config, settings = load_vanishing_config()
print(config.scheme.build(), "\n", settings)
result = run_vanishing(config, settings)
"""),
    md(r"""
## The two frozen generators and the target

The initial generator (mean-zero neurons) is a short curve near the origin; after some
training it is a long curve that passes near the Diracs. Either way the supports are disjoint
and lower-dimensional.
"""),
    code(r"""
problem, _, _ = config.build()
z, zw, x, xw = problem.quadrature()
fig, ax = plt.subplots(figsize=(4.6, 4.6))
ax.scatter(x[:, 0], x[:, 1], marker="*", s=120, color="k", label="target (8 Diracs)")
for name, theta in result.generators.items():
    g = mfg.generator_output(theta, z)
    ax.plot(g[:, 0], g[:, 1], lw=2, label=f"{name} generator: g(z), z in R")
ax.set_aspect("equal"); ax.legend(fontsize=8); plt.show()
"""),
    md(r"""
## Generator speed and discriminator error

The paper's two panels (solid: the initial generator, dashed: the trained one). Every case
starts from the same critic draw and sees the same batches; `minimax` and `non_saturating`
train the very same critic (same `phi_1`, `phi_2`), so their curves differ only by the
generator's weight `phi_3'(f)`.
"""),
    code(r"""
display(Image(filename=str(plot_vanishing(result, out / "vanishing.png"))))
for gen, runs in result.runs.items():
    print(gen)
    for case, r in runs.items():
        s = r.summary()
        err = s["final_discriminator_error"]
        print(f"  {case:17s} peak {s['peak_speed']:.3g} at step {s['peak_step']:4d}, final "
              f"{s['final_speed']:.3g} ({s['final_over_peak']:.2g} of its peak)"
              + ("" if err is None else f", error {err:.2g}"))
"""),
    md(r"""
## Why the speed falls: the weight or the critic?

`V_theta = -E phi_3'(f(g(Z))) grad_theta (grad f(g(Z)) . sigma(Z; theta))`: a speed falls
because the loss's weight `phi_3'` vanishes (`s(-f) -> 0` for `minimax` as the critic gets
confident) or because the critic goes flat at the samples (`|grad f| -> 0`). The study records
both, and the speed under every objective for the same critic (the `wasserstein` one has
weight 1).
"""),
    code(r"""
fig, axes = plt.subplots(1, 3, figsize=(14, 3.6), layout="constrained")
for gen, ls in (("initial", "-"), ("trained", "--")):
    r = result.runs[gen]["minimax"]
    s = r.critic_steps > 0
    axes[0].plot(r.critic_steps[s], r.series["generator_weight"][s], ls, color="C3",
                 label=f"minimax weight s(-f), {gen}")
    axes[0].plot(r.critic_steps[s],
                 result.runs[gen]["non_saturating"].series["generator_weight"][s],
                 ls, color="C0", label=f"non-saturating weight s(f), {gen}")
    axes[1].plot(r.critic_steps[s], r.series["grad_f_generated"][s], ls, color="k",
                 label=f"E |grad f(g(Z))|, {gen}")
    for loss, c in (("minimax", "C3"), ("non_saturating", "C0"), ("wasserstein", "C2")):
        axes[2].plot(r.critic_steps[s], r.speed_by_objective[loss][s], ls, color=c,
                     label=f"{loss}, {gen}" if gen == "initial" else None)
axes[0].set(xscale="log", yscale="log", xlabel="critic steps", title="generator's weight phi_3'")
axes[1].set(xscale="log", yscale="log", xlabel="critic steps", title="critic slope at the samples")
axes[2].set(xscale="log", yscale="log", xlabel="critic steps",
            title="speeds for the minimax critic (dashed: trained)")
for ax in axes:
    ax.legend(fontsize=7)
plt.show()
"""),
    md(r"""
Against the short initial curve the critic's sigmoid units saturate around the generated
points, so `|grad f|` falls there too: even the non-saturating speed drops from its peak,
though it stays orders of magnitude above the minimax one, whose weight `s(-f)` vanishes on
top. Against the trained generator, whose curve passes close to the Diracs, the critic must
stay steep between them: `|grad f|` keeps growing and the non-saturating speed grows with it
(Theorem 2.6: unstable, not vanishing), while the minimax weight still kills the gradient.

## Instance noise

With `sigma_n > 0` the noisy laws overlap and no perfect discriminator exists: the error of the
noisy game stays above the Bayes error of the noisy laws, and the minimax speed stays far above
the noiseless one.
"""),
    code(r"""
for gen in result.runs:
    mm, nz = result.runs[gen]["minimax"], result.runs[gen]["minimax_noise"]
    print(f"{gen}: at critic step {mm.critic_steps[-1]}, "
          f"error {mm.series['discriminator_error'][-1]:.2g} "
          f"(noiseless) vs {nz.series['discriminator_error'][-1]:.2g} (noisy game); "
          f"minimax speed {mm.series['generator_speed'][-1]:.2g} "
          f"vs {nz.series['generator_speed'][-1]:.2g} with noise")
"""),
]

NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_rate_study.ipynb": RATE,
    "03_coagulation.ipynb": COAGULATION,
    "04_explicit_example.ipynb": TOY,
    "05_mode_collapse.ipynb": MODE_COLLAPSE,
    "06_vanishing_gradients.ipynb": VANISHING,
}


def build(folder: Path = HERE) -> list[Path]:
    """Write every notebook (outputs empty) into ``folder``; return the paths."""
    paths = []
    for name, cells in NOTEBOOKS.items():
        # Stable cell ids (nbformat draws random ones): rebuilding changes nothing.
        for i, cell in enumerate(cells):
            cell["id"] = f"{name[:2]}-{i:02d}"
        nb = new_notebook(cells=cells, metadata=KERNEL)
        nbformat.validate(nb)
        path = folder / name
        nbformat.write(nb, path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in build():
        print("wrote", p)
