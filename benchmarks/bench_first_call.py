"""First-call (compilation included) and warm times of diffana's main functions.

Each measurement runs in a fresh Python process, so that nothing is compiled before it:
the process imports diffana, builds the model (not timed), then times the first call of
one function (tracing, compilation and the run, to `block_until_ready`) and the median
of `--repeats` further calls. The functions:

* `fit`: `diffana.infer.fit(data, model)`;
* `hypotest`: `diffana.infer.hypotest(1.0, data, model, return_expected_set=True)`;
* `upper_limit`: `diffana.infer.upper_limit(data, model)` (observed and 5 expected);
* `train step`: one jitted optax step of a soft cut on 20000 events with
  `diffana.losses.cls_loss` (value, gradient through the fit, update), as in
  docs/howto/your-own-workspace.md; `train step, checks off`: the same step traced
  inside `diffana.infer.runtime_convergence_checks(False)`, i.e. without the host
  callback of the run-time convergence warning, which JAX's persistent cache does not
  keep.

The model is the small one of that how-to (2 bins, 3 parameters), or a pyhf workspace
given with `--workspace` (the training step keeps the small model). Every function is
measured three times: without the persistent compilation cache, then twice with
`diffana.enable_compilation_cache()` on an empty folder (the first process compiles and
fills it, the second loads the programs from it).

    python benchmarks/bench_first_call.py [--workspace PATH] [--repeats 20]

prints a Markdown table (times in seconds for first calls, milliseconds warm).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, statistics, sys, time
args = json.loads(sys.argv[1])
import diffana
if args["cache"]:
    diffana.enable_compilation_cache(args["cache"])
import jax, jax.numpy as jnp, numpy as np
import diffana.hf, diffana.infer, diffana.losses

SMALL = {
    "channels": [{"name": "SR", "samples": [
        {"name": "signal", "data": [6.0, 12.0],
         "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
        {"name": "background", "data": [55.0, 48.0], "modifiers": [
            {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.05, "lo": 0.95}},
            {"name": "bkg_shape", "type": "histosys",
             "data": {"hi_data": [58.0, 47.0], "lo_data": [52.0, 49.0]}}]}]}],
    "observations": [{"name": "SR", "data": [62.0, 57.0]}],
    "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
    "version": "1.0.0",
}
source = args["workspace"] or SMALL
model = diffana.hf.Model.from_pyhf(source)
data = diffana.hf.workspace_data(source, model)
what = args["what"]
if what == "fit":
    call = lambda: diffana.infer.fit(data, model)
elif what == "hypotest":
    call = lambda: diffana.infer.hypotest(1.0, data, model, return_expected_set=True)
elif what == "upper_limit":
    call = lambda: diffana.infer.upper_limit(data, model)
else:
    import optax
    rng = np.random.default_rng(1)
    x_sig = jnp.asarray(rng.normal(1.0, 0.7, 2000))
    x_bkg = jnp.asarray(rng.exponential(1.0, 20000) - 0.5)
    w_sig, w_bkg = 30.0 / 2000, 300.0 / 20000
    def cut_model(cut):
        pass_s = w_sig * jax.nn.sigmoid((x_sig - cut) / 0.2)
        pass_b = w_bkg * jax.nn.sigmoid((x_bkg - cut) / 0.2)
        s = jnp.stack([jnp.sum(pass_s), jnp.sum(w_sig - pass_s)])
        b = jnp.stack([jnp.sum(pass_b), jnp.sum(w_bkg - pass_b)])
        return diffana.hf.simple_model(s, b, background_uncertainty=0.1 * b)
    opt = optax.adam(0.05)
    @jax.jit
    def step(cut, state):
        loss, g = jax.value_and_grad(lambda c: diffana.losses.cls_loss(cut_model(c)))(cut)
        updates, state = opt.update(g, state)
        return optax.apply_updates(cut, updates), state, loss
    cut0 = jnp.asarray(-0.5)
    state0 = opt.init(cut0)
    compiled = []
    def call():
        if what == "train step":
            return step(cut0, state0)
        if not compiled:  # traced (in the first call) without the run-time check
            with diffana.infer.runtime_convergence_checks(False):
                compiled.append(step.trace(cut0, state0).lower().compile())
        return compiled[0](cut0, state0)
t0 = time.perf_counter()
jax.block_until_ready(call())
first = time.perf_counter() - t0
warm = []
for _ in range(args["repeats"]):
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    warm.append(time.perf_counter() - t0)
print(json.dumps({"first_s": first, "warm_s": statistics.median(warm)}))
"""

FUNCTIONS = ("fit", "hypotest", "upper_limit", "train step", "train step, checks off")


def measure(what: str, workspace: str | None, cache: str | None, repeats: int) -> dict:
    args = {"what": what, "workspace": workspace, "cache": cache, "repeats": repeats}
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFANA_CACHE")}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(args)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", default=None, help="a pyhf workspace (JSON path)")
    parser.add_argument("--repeats", type=int, default=20, help="warm calls per function")
    parser.add_argument("--only", nargs="*", default=FUNCTIONS, help="functions to time")
    opts = parser.parse_args(argv)
    rows = []
    for what in opts.only:
        plain = measure(what, opts.workspace, None, opts.repeats)
        with tempfile.TemporaryDirectory() as folder:
            filling = measure(what, opts.workspace, folder, opts.repeats)
            cached = measure(what, opts.workspace, folder, opts.repeats)
        rows.append((what, plain, filling, cached))
        print(f"# {what}: done", file=sys.stderr, flush=True)
    model = opts.workspace or "the 2-bin model of docs/howto/your-own-workspace.md"
    print(f"model: {model}\n")
    print("| function | first call | first call, cache filled | warm call |")
    print("|---|---|---|---|")
    for what, plain, filling, cached in rows:
        warm = [r["warm_s"] * 1e3 for r in (plain, filling, cached)]
        print(
            f"| `{what}` | {plain['first_s']:.2f} s (filling the cache: "
            f"{filling['first_s']:.2f} s) | {cached['first_s']:.2f} s | "
            f"{min(warm):.2f}-{max(warm):.2f} ms |"
        )


if __name__ == "__main__":
    main()
