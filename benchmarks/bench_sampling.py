"""Compilation time of the toys' sampler: the pseudo-datasets of a chunk of toys.

The toy program of `hypotest(calctype="toybased")` draws the toys of both hypotheses
(`_toys._sample_streams`). Its Poisson counts come from `jax.random.poisson`, whose
rejection loops take seconds to compile on a CPU. This script compiles, each in the same
process and alternated over `--repeats` rounds:

- `nested`: the toys of each hypothesis under a `vmap` inside a `vmap` over the two
  hypotheses, with the main bins and the Poisson auxdata (shapesys) drawn by two calls
  of `jax.random.poisson` (diffana up to commit 20fc0e0);
- `two calls`: one `vmap` over all toys, two Poisson calls per toy;
- `diffana`: `_toys._sample_streams` as it is (one `vmap`, one Poisson call per toy).

It checks that `nested` and `two calls` draw the same toys, and that `diffana` draws the
same Gaussian auxdata, and the same toys where the model has no Poisson auxdata (a
rejection loop of `jax.random.poisson` runs until every count of its call is accepted,
so a toy's main bins depend on whether its Poisson auxdata share their call).

Usage:

    python benchmarks/bench_sampling.py [--only sbottom RJmimic] [--toys 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from diffana import hf
from diffana.infer import _toys

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_realws import REAL, WORKSPACES

# the published workspaces' files, as `bench_realws.py` names them
PUBLISHED = REAL


def two_calls_one(key, model, pars):
    """One toy with separate Poisson calls for the main bins and the Poisson auxdata
    (diffana's `_sample_one` up to commit 20fc0e0)."""
    st = model.structure
    k_main, k_gauss, k_pois = jax.random.split(key, 3)
    rates = jnp.maximum(model.expected_actualdata(pars), 0.0)
    main = jax.random.poisson(k_main, rates).astype(jnp.float64)
    centre = pars[np.asarray(st.gauss_par, dtype=np.int64)]
    gauss = centre + model.gauss_sigma * jax.random.normal(k_gauss, centre.shape, jnp.float64)
    rate = pars[np.asarray(st.pois_par, dtype=np.int64)] * model.pois_factor
    pois = jax.random.poisson(k_pois, jnp.maximum(rate, 0.0)).astype(jnp.float64)
    aux = jnp.concatenate([gauss, pois])[np.asarray(st.aux_perm, dtype=np.int64)]
    return jnp.concatenate([main, aux])


def nested(keys, model, gen, idx):
    def stream(key, pars):
        return jax.vmap(lambda i: two_calls_one(jax.random.fold_in(key, i), model, pars))(idx)

    return jax.vmap(stream)(keys, gen)


def two_calls(keys, model, gen, idx):
    stream = np.repeat(np.arange(gen.shape[0]), idx.shape[0])

    def one(h, i):
        return two_calls_one(jax.random.fold_in(keys[h], i), model, gen[h])

    flat = jax.vmap(one)(stream, jnp.tile(idx, gen.shape[0]))
    return flat.reshape(gen.shape[0], idx.shape[0], -1)


def compile_seconds(fn, *args) -> float:
    lowered = jax.jit(fn).lower(*args)
    start = time.perf_counter()
    lowered.compile()
    return time.perf_counter() - start


def main() -> None:
    jax.config.update("jax_enable_x64", True)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=["sbottom", "RJmimic"])
    parser.add_argument("--toys", type=int, default=32, help="toys per hypothesis")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if unknown := set(args.only) - set(PUBLISHED):
        parser.error(f"--only: unknown {sorted(unknown)}; known: {sorted(PUBLISHED)}")
    if args.toys < 1 or args.repeats < 1:
        parser.error("--toys and --repeats must be at least 1")
    variants = {"nested": nested, "two calls": two_calls, "diffana": _toys._sample_streams}
    for name in args.only:
        path = WORKSPACES / PUBLISHED[name]
        if not path.is_file():
            print(f"{name}: workspace not found at {path}, skipped")
            continue
        spec = json.loads(path.read_text())
        model = hf.Model.from_pyhf(spec)
        keys = jax.random.split(jax.random.key(0), 2)
        init = jnp.asarray(model.init)
        gen = jnp.stack([init, init])
        idx = jnp.arange(args.toys, dtype=jnp.uint32)
        times: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(args.repeats):
            for label, fn in variants.items():

                def call(k, g, fn=fn, model=model, idx=idx):
                    return fn(k, model, g, idx)

                times[label].append(compile_seconds(call, keys, gen))
        toys = {label: np.asarray(fn(keys, model, gen, idx)) for label, fn in variants.items()}
        st = model.structure
        gauss = np.zeros(toys["diffana"].shape[-1], bool)
        gauss[st.nbins :] = np.asarray(st.aux_perm) < np.asarray(st.gauss_par).size
        n_pois = int(np.asarray(st.pois_par).size)
        same_toys = np.array_equal(toys["nested"], toys["two calls"])
        same_gauss = np.array_equal(toys["nested"][..., gauss], toys["diffana"][..., gauss])
        same_all = np.array_equal(toys["nested"], toys["diffana"])
        print(
            f"{name}: {model.npars} parameters, {n_pois} Poisson auxdata, "
            f"{args.toys} toys x 2 hypotheses; same toys (nested, two calls): {same_toys}; "
            f"diffana: same Gaussian auxdata {same_gauss}, same toys {same_all}"
        )
        for label, t in times.items():
            print(f"  {label:10s} compile s: " + ", ".join(f"{x:.2f}" for x in t))


if __name__ == "__main__":
    main()
