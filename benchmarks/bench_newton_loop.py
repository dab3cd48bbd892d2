"""The solver's own cost per Newton iteration, without a likelihood.

`_solver.minimize_bounded` on a quadratic objective `x^T A x / 2 - b^T x` whose value,
gradient and Hessian cost one matrix-vector product: with `tol = 0` every fit runs its
200 iterations, as toy fits do (`corners`, no polishing step), 16 fits one after the
other in one compiled loop (`lax.map`), one thread. `A` has the sizes of the published
sbottom (67 parameters) and 1Lbb (126) workspaces and eigenvalues from 1 to 100. What is
left of an iteration of `bench_toy_fits.py` after this and the likelihood's derivatives
is the rest of the loop's bookkeeping.

Usage:

    python benchmarks/bench_newton_loop.py [--sizes 67,126]

For two versions, run it with each on `PYTHONPATH` (`PYTHONPATH=<tree>/src python ...`).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from diffana.infer import _solver


def us_per_iteration(n: int, repeats: int) -> tuple[int, float]:
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(n, n)))
    a = jnp.asarray(q @ np.diag(np.linspace(1.0, 100.0, n)) @ q.T)
    b = jnp.ones(n)

    def value_grad_hess(x, args):
        a_, b_ = args
        ax = a_ @ x
        return 0.5 * x @ ax - b_ @ x, ax - b_, a_

    def run(x0):
        box = jnp.full(n, 1e3)
        res = _solver.minimize_bounded(
            value_grad_hess, x0, -box, box, jnp.ones(n, bool), (a, b), tol=0.0,
            maxiter=200, corners=True, polish=False,
        )  # fmt: skip
        return res.n_iter

    starts = jnp.zeros((16, n))
    compiled = jax.jit(lambda xs: jax.lax.map(run, xs)).lower(starts).compile()
    n_iter = int(jnp.sum(compiled(starts)))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(starts))
        times.append(time.perf_counter() - start)
    return n_iter, 1e6 * min(times) / n_iter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="67,126", help="numbers of parameters")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for n in [int(s) for s in args.sizes.split(",")]:
        n_iter, us = us_per_iteration(n, args.repeats)
        print(f"{n} parameters: {n_iter} iterations, {us:.1f} us per iteration (best)")


if __name__ == "__main__":
    main()
