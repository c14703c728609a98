"""The C/N convergence-rate study (MODEL.md section 4, Theorem 7): ``meanfield-gan rate``.

For every ``N`` of a geometric grid (``M = round(M_ratio N)``) and many independent seeds:

1. draw i.i.d. initial particles ``theta_i ~ mu_in``, ``omega_j ~ nu_in``;
2. run projected forward Euler with exact (quadrature) expectations from them: the WGAN-PDE
   started from the empirical initial measures (the theorem's ``(mu_inf, nu_inf)``);
3. run ``sgd_runs`` independent SGD trajectories (the WGAN algorithm, batch ``m``,
   ``dt = lr/N``, ``gamma_c = n_critic N/M``) from the *same* particles with the same ``dt``;
4. record the pair distance ``d_2^2 = W_2^2(mu) + W_2^2(nu)`` between SGD and Euler at
   ``n_times`` times up to ``t_end``: the natural-coupling bound
   ``(1/N) sum |theta_i - theta~_i|^2 + (1/M) sum |omega_j - omega~_j|^2`` always, the exact
   ``W_2`` (POT) at ``t_end`` where ``N <= exact_max_N``.

The value of one seed is its mean over the SGD runs (an estimate of ``E d_2^2`` given the
initial particles); seeds are the independent units that the bootstrap resamples. The fit is
``log E d_2^2 = slope log N + c``; Theorem 7 predicts ``slope = -1``.

Why ``C/N``: with the natural coupling, ``e_k = theta^k - theta~^k`` obeys
``e_{k+1} = (1 + O(dt)) e_k + dt M_k`` where ``M_k`` (the batch noise) has mean zero and
variance ``O(1)``, so ``E|e|^2 ~ dt^2 (T/dt) = dt T = lr T / N`` per particle.

Two cheap companions (``--euler-order``, ``--iid``; always run by
``benchmarks/convergence_rate.py``): the order of projected Euler in ``dt`` against a
projected-Heun reference (order 1 while no critic particle touches the box, 1/2 in general),
and Corollary 9: i.i.d. initial data against a much larger particle system, whose measured
exponent is printed beside the bound ``-2/(K(L+2))``.

Every task (one ``(N, seed)``: one Euler run and its SGD runs) is independent and goes through
:func:`meanfield_gan.parallel.map_tasks`: local processes by default, any
:class:`concurrent.futures.Executor` (``dask.distributed.Client(...).get_executor()``) or a
Dask scheduler address. Seeds are derived from ``(seed, N, seed index, run)`` alone, so the
numbers do not depend on the executor.

The study runs for the objective of its configuration: ``[problem]`` is the section of a run
configuration (``loss``, ``clip = inf``, the gradient penalty and instance noise included).

Modules: :mod:`.config` (the configuration), :mod:`.tasks` (one ``(N, seed)`` task and the
study), :mod:`.result` (:class:`RateResult` and the fits), :mod:`.companions` (Euler order,
i.i.d. initial data), :mod:`.output` (``rate.json``, ``rate.h5``, ``rate.png``), :mod:`.cli`.
"""
from .cli import cli_main, configure_parser
from .companions import run_euler_order, run_iid_study
from .config import (
    RateConfig,
    default_rate_config_path,
    load_rate_config,
    loads_rate_config,
)
from .output import plot_rate, read_rate, write_rate
from .result import RateResult
from .tasks import _INIT, _rng, rate_task, run_rate_study  # noqa: F401  (_INIT, _rng: tests)

__all__ = [
    "RateConfig",
    "RateResult",
    "load_rate_config",
    "loads_rate_config",
    "default_rate_config_path",
    "rate_task",
    "run_rate_study",
    "run_euler_order",
    "run_iid_study",
    "write_rate",
    "read_rate",
    "plot_rate",
    "configure_parser",
    "cli_main",
]
