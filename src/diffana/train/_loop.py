"""The optax training loop with minibatches, annealing and run tracking."""

from __future__ import annotations

import functools
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jaxtyping import Array, PRNGKeyArray

from diffana import parallel
from diffana.errors import ConvergenceWarning
from diffana.train._data import Sample, subsample
from diffana.train._schedules import Annealing, as_annealing
from diffana.train._tracking import RunTracker

__all__ = ["LossFn", "TrainResult", "TrainedAnalysis", "make_optimizer", "run_training"]

#: ``loss_fn(pipeline, batch, relax) -> (loss, figure_of_merit)``, both scalars.
LossFn = Callable[[Any, Mapping[str, Sample], Array], tuple[Array, Array]]


class TrainResult(NamedTuple):
    """What `run_training` returns.

    **Fields:**

    - `pipeline`: the trained pipeline (same structure as the input).
    - `history`: ``{"loss", "fom", "learning_rate", "relax"}`` -> numpy arrays per step.
    - `train_time`: seconds spent in the loop, compilation included.
    - `compile_time`: seconds of the first step (tracing and compilation).
    - `steps_per_second`: steps after the first divided by their wall time.
    - `skipped_steps`: updates skipped because the loss or gradient was not finite.
    - `warnings`: ``{message: count}`` of the `diffana.ConvergenceWarning`s raised by fits
      inside the loss (recorded instead of printed at every step).
    """

    pipeline: Any
    history: dict[str, np.ndarray]
    train_time: float
    compile_time: float
    steps_per_second: float
    skipped_steps: int
    warnings: dict[str, int]


class TrainedAnalysis(NamedTuple):
    """A trained (or scanned) analysis, ready for the hard evaluation.

    What every method of ``diffana bench`` returns, the generic ones and those a problem
    brings (`diffana.problems.ProblemMethod`).

    **Fields:**

    - `pipeline`: the pipeline; its ``hard_histogram(sample)`` is what gets evaluated.
    - `training`: JSON-able facts of the training (steps, times, rates, final loss, ...).
    - `history`: per-step ``loss``, ``fom``, ``learning_rate``, ``relax`` (numpy arrays),
      or per-chunk best figure of merit for scans.
    """

    pipeline: Any
    training: dict[str, Any]
    history: dict[str, np.ndarray]


@functools.lru_cache(maxsize=64)
def make_optimizer(
    name: str, learning_rate: float, steps: int, schedule: str = "constant"
) -> tuple[optax.GradientTransformation, Callable[[int], float]]:
    """An optax optimiser and its learning-rate schedule.

    **Arguments:**

    - `name`: ``"adam"``, ``"adamw"`` or ``"sgd"``.
    - `learning_rate`: the (initial) learning rate.
    - `steps`: the length of the run (for decaying schedules).
    - `schedule`: ``"constant"`` or ``"cosine"`` (decays to 1% over `steps`).

    **Returns:** ``(optimizer, schedule)``; non-finite updates are skipped
    (``optax.apply_if_finite``), so one bad batch cannot poison the parameters. Equal
    arguments return the same objects, so that repeated runs reuse the compiled step.
    """
    if schedule == "constant":
        sched = optax.constant_schedule(learning_rate)
    elif schedule == "cosine":
        sched = optax.cosine_decay_schedule(learning_rate, max(steps, 1), alpha=0.01)
    else:
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    makers = {"adam": optax.adam, "adamw": optax.adamw, "sgd": optax.sgd}
    if name not in makers:
        raise ValueError(f"optimizer must be one of {sorted(makers)}, got {name!r}")
    opt = optax.apply_if_finite(makers[name](sched), max_consecutive_errors=10**9)
    return opt, lambda step: float(sched(step))


@eqx.filter_jit
def _train_step(
    params, opt_state, data, key, relax_value, static, loss_fn, opt, batch_size, sharding
):
    # Module level, with the loss, optimiser and batch size as static arguments: runs with
    # the same loss function, optimiser and pipeline structure share one compilation.
    batch = subsample(key, data, batch_size)
    if sharding is not None:  # split the batch's events over the mesh's devices
        batch = jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, sharding), batch)

    def objective(p):
        return loss_fn(eqx.combine(p, static), batch, relax_value)

    (loss, fom), grads = eqx.filter_value_and_grad(objective, has_aux=True)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    params = eqx.apply_updates(params, updates)
    return params, opt_state, loss, fom


def run_training(
    loss_fn: LossFn,
    pipeline: Any,
    train: Mapping[str, Sample],
    *,
    steps: int,
    batch_size: int,
    key: PRNGKeyArray,
    optimizer: str = "adam",
    learning_rate: float = 1e-3,
    lr_schedule: str = "constant",
    relax: Annealing | float | Mapping | None = None,
    tracker: RunTracker | None = None,
    callback: Callable[[int, float], None] | None = None,
    mesh: Mesh | None = None,
) -> TrainResult:
    """Minimise `loss_fn` over the inexact arrays of `pipeline` with optax.

    Each step draws `batch_size` events per sample from `train` (with replacement,
    reweighted to the full yields, see `subsample`), evaluates the loss at
    the current relaxation parameter and applies one optimiser update. Steps are jitted
    once; the relaxation parameter and the data are traced, so annealing costs no
    recompilation, and later calls with the same `loss_fn` object, optimiser settings,
    batch size and pipeline structure reuse the compiled step.

    **Arguments:**

    - `loss_fn`: ``(pipeline, batch, relax) -> (loss, figure_of_merit)``.
    - `pipeline`: an equinox Module (network, thresholds, bin edges, ...).
    - `train`: ``{sample: Sample}`` training events.
    - `steps`, `batch_size`: the number of updates and the events per sample per step.
    - `key`: PRNG key of the batch draws.
    - `optimizer`, `learning_rate`, `lr_schedule`: see `make_optimizer`.
    - `relax`: the relaxation parameter: a number, ``{start, end, kind}`` or an `Annealing`
      (None: 1.0, for losses that ignore it).
    - `tracker`: a `RunTracker` receiving ``loss``, ``fom``, ``learning_rate`` and the
      relaxation parameter (under the pipeline's ``relax_name``) at every step.
    - `callback`: ``callback(step, loss)`` after every step (progress bars).
    - `mesh`: a 1-D device mesh (`diffana.parallel.event_mesh`) to split every batch's
      events over: the training data and parameters are replicated on its devices, each
      device runs the per-event part (network, soft cuts, histograms) on its share of the
      batch and XLA sums the histograms across devices; the statistical part runs
      replicated. The same result as on one device, up to the order of floating-point
      additions. `batch_size` must be a multiple of the number of devices.

    **Returns:** a `TrainResult`.

    Example:

    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from diffana.train import Sample
    >>> data = {"a": Sample(np.linspace(-1, 1, 50)[:, None], np.ones(50))}
    >>> loss = lambda p, batch, r: (jnp.sum((p - 2.0) ** 2),) * 2
    >>> res = run_training(loss, jnp.zeros(2), data, steps=300, batch_size=8,
    ...           key=jax.random.key(0), learning_rate=0.05)
    >>> np.round(np.asarray(res.pipeline), 2)
    array([2., 2.])
    """
    if steps < 0 or batch_size < 1:
        raise ValueError(f"steps must be >= 0 and batch_size >= 1, got {steps}, {batch_size}")
    sharding = None
    if mesh is not None:
        sharding = parallel.event_sharding(mesh, axis=0)
        if batch_size % mesh.size:
            raise ValueError(
                f"batch_size ({batch_size}) must be a multiple of the mesh's {mesh.size} "
                "devices, so that every device gets the same number of events"
            )
    anneal = as_annealing(1.0 if relax is None else relax, "relax")
    relax_name = getattr(pipeline, "relax_name", "relax")
    opt, sched = make_optimizer(optimizer, learning_rate, steps, lr_schedule)
    params, static = eqx.partition(pipeline, eqx.is_inexact_array)
    opt_state = opt.init(params)
    train = {k: jax.tree.map(jnp.asarray, s) for k, s in train.items()}
    if mesh is not None:
        train, params, opt_state = parallel.replicate((train, params, opt_state), mesh)

    def step(params, opt_state, data, key, relax_value):
        return _train_step(
            params, opt_state, data, key, relax_value, static, loss_fn, opt, batch_size, sharding
        )

    hist = {k: np.empty(steps) for k in ("loss", "fom", "learning_rate", "relax")}
    keys = jax.random.split(key, max(steps, 1))
    skipped = 0
    t0 = time.perf_counter()
    t_first = t0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        for i in range(steps):
            r = anneal(i, steps)
            lr = sched(i)
            params, opt_state, loss, fom = step(params, opt_state, train, keys[i], jnp.asarray(r))
            loss_f, fom_f = float(loss), float(fom)
            if i == 0:
                t_first = time.perf_counter()
            if not np.isfinite(loss_f):
                skipped += 1
            hist["loss"][i], hist["fom"][i] = loss_f, fom_f
            hist["learning_rate"][i], hist["relax"][i] = lr, r
            if tracker is not None:
                tracker.log(i, loss=loss_f, fom=fom_f, learning_rate=lr, **{relax_name: r})
            if callback is not None:
                callback(i, loss_f)
    t_end = time.perf_counter()
    if tracker is not None:
        tracker.flush()
    compile_time = t_first - t0 if steps else 0.0
    rest = t_end - t_first
    sps = (steps - 1) / rest if steps > 1 and rest > 0 else float("nan")
    return TrainResult(
        pipeline=eqx.combine(params, static),
        history=hist,
        train_time=t_end - t0,
        compile_time=compile_time,
        steps_per_second=sps,
        skipped_steps=skipped,
        warnings=dict(Counter(f"{w.category.__name__}: {w.message}" for w in caught)),
    )
