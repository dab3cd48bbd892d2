"""Data parallelism: the event axis sharded over devices, histograms summed across them.

An analysis step is a sum over events (soft histograms, weighted counts) followed by a
small statistical part (model, fits, CLs) on the summed histograms. Sharding the event
axis over the devices of a 1-D mesh therefore splits the expensive part evenly, and only
the histograms (a few numbers per sample) travel between devices.

Two ways to run a step on sharded events, both exact (the same loss and gradients as on
one device, up to the order of floating-point additions):

- **Automatic** (`jax.jit` + sharded inputs): place the events with `shard_events` and
  jit the step as usual; XLA partitions the per-event work and inserts an all-reduce for
  every sum over events. This is all a network + histogram step needs as long as each
  histogram is computed in one piece (up to ~2**21 events x edges per sample).
- **Explicit** (`sum_over_devices`): wraps a function that is additive over events so
  that each device evaluates it on its own events and the results are summed with
  `jax.lax.psum`. Use it for large samples: `diffana.relax.hist` then processes events in
  chunks (a `lax.scan`), which the automatic partitioner can only handle by gathering all
  events on every device, while `sum_over_devices` keeps each device on its own shard.

Several processes (hosts, or GPUs with one process each): after
`initialize_distributed()`, `event_mesh()` spans the devices of all processes, each
process reads its own share of the events (`process_share`, `take_process_share`) and
`shard_events` assembles the global arrays from them; results accumulated per process
(streamed histograms) are combined with `sum_over_processes`. See
``docs/howto/sharding.md``.

Example:

>>> import jax, jax.numpy as jnp
>>> from diffana import parallel, relax
>>> mesh = parallel.event_mesh()            # all devices (one on a plain CPU run)
>>> x = parallel.shard_events(jnp.linspace(0.0, 1.0, 8), mesh)
>>> counts = parallel.sum_over_devices(
...     lambda edges, x: relax.hard_hist(x, edges), mesh)(jnp.array([0.0, 0.5, 1.01]), x)
>>> counts.tolist()
[4.0, 4.0]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import PyTree

__all__ = [
    "EVENT_AXIS",
    "ProcessShare",
    "event_mesh",
    "event_sharding",
    "initialize_distributed",
    "pad_to_multiple",
    "process_local",
    "process_share",
    "replicate",
    "shard_events",
    "sum_over_devices",
    "sum_over_processes",
    "take_process_share",
    "use_cpu_devices",
]

#: Name of the mesh axis that the events are split along.
EVENT_AXIS = "events"

_T = TypeVar("_T")


def use_cpu_devices(n: int) -> None:
    """Split the host CPU into `n` XLA devices (for sharding on a machine without GPUs).

    Must be called before JAX runs its first operation (JAX fixes its devices then);
    equivalent to ``XLA_FLAGS=--xla_force_host_platform_device_count=n``. Each device
    runs on its own thread pool, so `n` up to the number of cores can speed up a step.
    Without effect on GPU/TPU devices.

    **Arguments:**

    - `n`: number of CPU devices, >= 1.

    **Raises:** `ValueError` for `n < 1`; `RuntimeError` when JAX has already started
    with a different number of CPU devices.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"use_cpu_devices: n must be an int >= 1, got {n!r}")
    try:
        jax.config.update("jax_num_cpu_devices", int(n))
    except RuntimeError:
        have = len(jax.devices("cpu"))
        if have != n:
            raise RuntimeError(
                f"use_cpu_devices({n}): JAX has already started with {have} CPU device(s); "
                "call it before any JAX computation, or set "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={n} before starting Python"
            ) from None


def _check_coordinator(address: Any) -> str:
    host, sep, port = str(address).rpartition(":") if isinstance(address, str) else ("", "", "")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"initialize_distributed: coordinator_address must be 'host:port' (the address of "
            f"process 0, e.g. '127.0.0.1:1234'), got {address!r}"
        )
    return address


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout_s: int = 300,
) -> None:
    """Connect this process to JAX's multi-controller runtime (`jax.distributed`).

    Call it at the start of every process, before any JAX computation. Afterwards
    `jax.devices()` lists the devices of all processes, `event_mesh()` spans them, and
    `shard_events` assembles global arrays from each process's own events. On CPU hosts
    the cross-process collectives use gloo (set here, before JAX starts its backend);
    GPUs use NCCL as usual.

    **Arguments:**

    - `coordinator_address`: ``"host:port"`` of process 0 (it listens there; the others
      connect to it).
    - `num_processes`: the number of processes, >= 1.
    - `process_id`: this process's index, ``0 <= process_id < num_processes``.
    - `timeout_s`: seconds to wait for all processes to connect.

    Give all three or none of them: with none, JAX detects them from the environment of
    a SLURM job step (``srun``), Open MPI (``mpirun``) and the other clusters JAX knows.

    Calling it again in a connected process is a no-op (with explicit arguments, they
    must agree with the connection).

    **Raises:** `ValueError` for invalid or incomplete arguments, or when no cluster
    environment is detected without them; `RuntimeError` when JAX has already started
    computing in this process (call this first), or when it is already connected with
    other arguments.
    """
    explicit = (coordinator_address, num_processes, process_id)
    if any(a is not None for a in explicit) and not all(a is not None for a in explicit):
        raise ValueError(
            "initialize_distributed: give coordinator_address, num_processes and process_id "
            "together, or none of them (detected from SLURM/Open MPI/...); got "
            f"coordinator_address={coordinator_address!r}, num_processes={num_processes!r}, "
            f"process_id={process_id!r}"
        )
    if coordinator_address is not None:
        _check_coordinator(coordinator_address)
        for name, value, low in (
            ("num_processes", num_processes, 1),
            ("process_id", process_id, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                raise ValueError(
                    f"initialize_distributed: {name} must be an int >= {low}, got {value!r}"
                )
        if process_id >= num_processes:
            raise ValueError(
                f"initialize_distributed: process_id must be < num_processes ({num_processes}), "
                f"got {process_id}"
            )
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | np.integer) or timeout_s < 1:
        raise ValueError(
            f"initialize_distributed: timeout_s must be an int >= 1, got {timeout_s!r}"
        )
    if jax.distributed.is_initialized():
        if num_processes is not None and (jax.process_count(), jax.process_index()) != (
            num_processes,
            process_id,
        ):
            raise RuntimeError(
                f"initialize_distributed: already connected as process {jax.process_index()} "
                f"of {jax.process_count()}, not {process_id} of {num_processes}"
            )
        return
    if jax.config.jax_cpu_collectives_implementation is None:
        # CPU collectives across processes need an implementation; gloo ships with jaxlib.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=None if num_processes is None else int(num_processes),
            process_id=None if process_id is None else int(process_id),
            initialization_timeout=int(timeout_s),
        )
    except RuntimeError as err:
        if "before" in str(err):
            raise RuntimeError(
                "initialize_distributed: JAX has already started computing in this process; "
                "call diffana.parallel.initialize_distributed() before any JAX operation"
            ) from None
        raise
    except ValueError as err:
        if coordinator_address is None:
            raise ValueError(
                "initialize_distributed: no cluster environment detected (SLURM, Open MPI, "
                "...); pass coordinator_address, num_processes and process_id "
                f"({' '.join(str(err).split())})"
            ) from None
        raise


class ProcessShare(NamedTuple):
    """This process's share of `n` events (see `process_share`).

    **Fields:**

    - `start`, `stop`: the real events ``[start, stop)`` of this process (of ``0..n-1``).
    - `size`: the padded number of events every process holds (``stop - start`` real
      events, then zero-weight padding); equal in all processes.
    """

    start: int
    stop: int
    size: int

    @property
    def slice(self) -> slice:
        """``slice(start, stop)``, to index this process's real events."""
        return slice(self.start, self.stop)


def process_share(
    n: int,
    *,
    multiple: int | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
) -> ProcessShare:
    """This process's equal share of `n` events, for each process to read only its own.

    The events are cut into `process_count` consecutive blocks of ``ceil(n / count)``
    events (rounded up to `multiple`); the last blocks are shorter, or empty, and padded
    with zero-weight events up to the common `size` (as `shard_events(..., pad=True)`
    does), so that every process passes the same number of events to `shard_events`.

    **Arguments:**

    - `n`: the total number of events (>= 0), e.g. a ROOT tree's ``num_entries``.
    - `multiple`: the per-process size is a multiple of this (default: the number of
      this process's devices, so that its events divide over them).
    - `process_index`, `process_count`: default `jax.process_index()` and
      `jax.process_count()`.

    **Returns:** a `ProcessShare` ``(start, stop, size)``; read entries ``start..stop``
    (e.g. ``diffana.io.read_events(..., entry_start=start, entry_stop=stop)``) and pad
    them to `size` (`take_process_share` does both for arrays in memory).

    Example:

    >>> [tuple(process_share(10, multiple=1, process_index=i, process_count=3))
    ...  for i in range(3)]
    [(0, 4, 4), (4, 8, 4), (8, 10, 4)]
    """
    for name, value, low in (
        ("n", n, 0),
        ("multiple", multiple, 1),
        ("process_count", process_count, 1),
    ):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low
        ):
            raise ValueError(f"process_share: {name} must be an int >= {low}, got {value!r}")
    count = jax.process_count() if process_count is None else int(process_count)
    index = jax.process_index() if process_index is None else process_index
    if isinstance(index, bool) or not isinstance(index, int | np.integer) or not 0 <= index < count:
        raise ValueError(f"process_share: process_index must be in [0, {count}), got {index!r}")
    if multiple is None:
        multiple = jax.local_device_count() if process_count is None else 1
    per = -(-int(n) // count)
    size = max(-(-per // multiple) * multiple, multiple)
    start = min(int(index) * size, int(n))
    return ProcessShare(start, min(start + size, int(n)), size)


def take_process_share(tree: _T, *, axis: int = 0, multiple: int | None = None) -> _T:
    """This process's share (`process_share`) of per-event arrays held in full.

    For data that every process can produce but should not all process (a generated
    sample, a small file): slices this process's events along `axis` and pads them with
    zero-valued, zero-weight events to the common size. Pass the result to `shard_events`.

    **Arguments:**

    - `tree`: per-event arrays sharing the length of `axis` (all events).
    - `axis`: the event axis of every leaf.
    - `multiple`: as in `process_share`.

    **Returns:** the tree of this process's events, padded to ``process_share(n).size``.
    """
    n = _check_event_axis(tree, axis, "take_process_share")
    share = process_share(n, multiple=multiple)

    def _take(leaf):
        if not eqx.is_array(leaf):
            return leaf
        mod = np if isinstance(leaf, np.ndarray) else jnp
        part = mod.take(leaf, mod.arange(share.start, share.stop), axis=axis)
        widths = [(0, 0)] * np.ndim(leaf)
        widths[axis] = (0, share.size - (share.stop - share.start))
        return mod.pad(part, widths)

    return jax.tree.map(_take, tree)


def sum_over_processes(tree: _T) -> _T:
    """Sum a PyTree of this process's arrays over all processes (histograms, gradients).

    Every process must call it, with arrays of the same shapes; all of them get the same
    sum (added in the order of the process indices). With one process it returns the
    tree unchanged. Use it to combine results that each process accumulated over its own
    events, e.g. histograms streamed from its own files.

    **Arguments:**

    - `tree`: a PyTree of host-local arrays (numpy, or JAX arrays of this process);
      non-array leaves (an equinox module's functions) pass through.

    **Returns:** the same structure, holding the sums as JAX arrays of this process.
    """
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    arrays, static = eqx.partition(tree, eqx.is_array)
    gathered = multihost_utils.process_allgather(arrays, tiled=False)
    summed = jax.tree.map(lambda g: jnp.asarray(np.sum(np.asarray(g), axis=0)), gathered)
    return eqx.combine(summed, static)


def process_local(tree: _T) -> _T:
    """Copy replicated global arrays (e.g. trained parameters) into this process.

    After a multi-process step the parameters are global arrays whose devices span all
    processes; code that mixes them with this process's arrays (a hard evaluation on
    local events, plotting) needs local copies. Arrays that are already local, and
    non-array leaves, pass through.

    **Raises:** `ValueError` for a global array that is not fully replicated (e.g.
    sharded events: use `sum_over_processes` on what was computed from them).
    """

    def _local(leaf):
        if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
            return leaf
        if not leaf.is_fully_replicated:
            raise ValueError(
                f"process_local: a global array of shape {leaf.shape} is split over the "
                "processes, not replicated; only replicated arrays can be copied locally"
            )
        return jnp.asarray(np.asarray(leaf.addressable_data(0)))

    return jax.tree.map(_local, tree)


def event_mesh(
    devices: int | Sequence[jax.Device] | None = None, *, axis_name: str = EVENT_AXIS
) -> Mesh:
    """A 1-D device mesh whose single axis carries the events.

    **Arguments:**

    - `devices`: `None` for all devices (of all processes after
      `jax.distributed.initialize`), an int `n` for the first `n` of them, or an explicit
      sequence of `jax.Device`.
    - `axis_name`: the mesh axis name (default ``"events"``).

    **Returns:** a `jax.sharding.Mesh` of shape `(n_devices,)`.

    **Raises:** `ValueError` when more devices are asked for than exist (the message says
    how to get more CPU devices).
    """
    available = jax.devices()
    if devices is None:
        chosen = list(available)
    elif isinstance(devices, int | np.integer) and not isinstance(devices, bool):
        n = int(devices)
        if n < 1:
            raise ValueError(f"event_mesh: devices must be >= 1, got {n}")
        if n > len(available):
            raise ValueError(
                f"event_mesh: {n} devices requested but only {len(available)} "
                f"{available[0].platform.upper()} device(s) exist; on a CPU host call "
                f"diffana.parallel.use_cpu_devices({n}) before any JAX computation (or set "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={n})"
            )
        chosen = list(available[:n])
    else:
        chosen = list(devices)
        if not chosen or not all(isinstance(d, jax.Device) for d in chosen):
            raise ValueError("event_mesh: devices must be None, an int or jax.Device objects")
    return Mesh(np.array(chosen, dtype=object), (axis_name,))


def _axis_name(mesh: Mesh) -> str:
    if not isinstance(mesh, Mesh) or len(mesh.axis_names) != 1:
        raise ValueError(f"expected a 1-D jax.sharding.Mesh (see event_mesh), got {mesh!r}")
    return mesh.axis_names[0]


def _event_spec(mesh: Mesh, axis: int) -> P:
    return P(*([None] * axis), _axis_name(mesh))


def event_sharding(mesh: Mesh, *, axis: int = 0) -> NamedSharding:
    """The sharding that splits array axis `axis` (the events) over the mesh's devices."""
    if isinstance(axis, bool) or not isinstance(axis, int) or axis < 0:
        raise ValueError(f"event_sharding: axis must be an int >= 0, got {axis!r}")
    return NamedSharding(mesh, _event_spec(mesh, axis))


def _leaves_with_paths(tree: Any) -> list[tuple[str, Any]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(path) or "<root>", leaf) for path, leaf in flat]


def _check_event_axis(tree: Any, axis: int, where: str) -> int:
    """The common length of axis `axis` of every array leaf (raises naming the culprit)."""
    n = None
    for name, leaf in _leaves_with_paths(tree):
        if not eqx.is_array_like(leaf) or isinstance(leaf, bool | int | float | complex):
            continue
        shape = np.shape(leaf)
        if len(shape) <= axis:
            raise ValueError(
                f"{where}: leaf {name} has shape {shape}, which has no event axis {axis}; "
                "pass only per-event arrays (keep parameters and constants out of the tree)"
            )
        if n is None:
            n = shape[axis]
        elif shape[axis] != n:
            raise ValueError(
                f"{where}: leaf {name} has {shape[axis]} events along axis {axis}, the others {n}"
            )
    if n is None:
        raise ValueError(f"{where}: the tree holds no arrays")
    return n


def pad_to_multiple(tree: _T, multiple: int, *, axis: int = 0) -> _T:
    """Pad every array leaf with zeros along the event axis to a multiple of `multiple`.

    Zero-padded events must not change the result: pipelines weight each event's
    contribution by its weight, and the padded weights are 0 (as in
    `diffana.io.pad_events`). The padded features are 0, so they must be valid inputs of
    the pipeline (no log of a padded feature without a `jnp.where` guard).

    **Arguments:**

    - `tree`: a PyTree of per-event arrays (numpy or JAX) sharing the length of `axis`.
    - `multiple`: e.g. the number of devices.
    - `axis`: the event axis of every leaf.

    **Returns:** the padded tree (the same tree when nothing needs padding).
    """
    if isinstance(multiple, bool) or not isinstance(multiple, int | np.integer) or multiple < 1:
        raise ValueError(f"pad_to_multiple: multiple must be an int >= 1, got {multiple!r}")
    n = _check_event_axis(tree, axis, "pad_to_multiple")
    pad = -n % int(multiple)
    if pad == 0:
        return tree

    def _pad(leaf):
        if not eqx.is_array(leaf):
            return leaf
        widths = [(0, 0)] * np.ndim(leaf)
        widths[axis] = (0, pad)
        return (np if isinstance(leaf, np.ndarray) else jnp).pad(leaf, widths)

    return jax.tree.map(_pad, tree)


def shard_events(tree: _T, mesh: Mesh, *, axis: int = 0, pad: bool = False) -> _T:
    """Place a PyTree of per-event arrays on the mesh, split along the event axis.

    In a single process the arrays are split with `jax.device_put`. With several
    processes (`initialize_distributed`) each process passes its *own* events, the same
    number in every process (see `process_share`), and the global array is assembled with
    `jax.make_array_from_process_local_data`; the global event count is the sum over
    processes.

    **Arguments:**

    - `tree`: per-event arrays (e.g. `{"x": (events, features), "w": (events,)}`, a
      `diffana.problems.Sample`, a `diffana.io.Events`), all with the same length of `axis`.
      Non-array leaves (static metadata) pass through.
    - `mesh`: a 1-D mesh from `event_mesh`.
    - `axis`: the event axis of every leaf (e.g. 1 for `(samples, events, features)`).
    - `pad`: zero-pad the events to a multiple of the device count (see
      `pad_to_multiple`); otherwise the count must divide evenly.

    **Returns:** the same tree with sharded `jax.Array` leaves.

    **Raises:** `ValueError` for leaves without the event axis, unequal event counts, or
    an event count that does not divide over the devices (with `pad=False`).
    """
    # With several processes, each passes its own events: they split over its devices.
    n_dev = mesh.size if jax.process_count() == 1 else len(mesh.local_devices)
    n = _check_event_axis(tree, axis, "shard_events")
    if pad:
        tree = pad_to_multiple(tree, n_dev, axis=axis)
    elif n % n_dev:
        raise ValueError(
            f"shard_events: {n} events along axis {axis} do not divide over {n_dev} devices; "
            f"pass pad=True (zero-weight padding) or pad_to_multiple(tree, {n_dev})"
        )
    sharding = event_sharding(mesh, axis=axis)
    if jax.process_count() == 1:
        return jax.tree.map(
            lambda leaf: jax.device_put(leaf, sharding) if eqx.is_array(leaf) else leaf, tree
        )
    return jax.tree.map(
        lambda leaf: (
            jax.make_array_from_process_local_data(sharding, np.asarray(leaf))
            if eqx.is_array(leaf)
            else leaf
        ),
        tree,
    )


def _replicated_global(leaf: Any, sharding: NamedSharding) -> Any:
    """A global replicated array from this process's copy (several processes)."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        return jax.device_put(leaf, sharding)  # global already: reshard
    if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        data = _replicated_global(jax.random.key_data(leaf), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
    return jax.make_array_from_process_local_data(sharding, np.asarray(leaf))


def replicate(tree: _T, mesh: Mesh) -> _T:
    """Place every array leaf of `tree` (parameters, optimiser state) on all devices.

    With several processes every process passes its own copy of the same values (e.g.
    the same initial parameters, or the same PRNG key), including arrays already placed
    on one of its devices.
    """
    sharding = NamedSharding(mesh, P())
    if jax.process_count() > 1:
        return jax.tree.map(
            lambda leaf: _replicated_global(leaf, sharding) if eqx.is_array(leaf) else leaf, tree
        )
    return jax.tree.map(
        lambda leaf: jax.device_put(leaf, sharding) if eqx.is_array(leaf) else leaf, tree
    )


def sum_over_devices(
    fn: Callable[[Any, Any], PyTree],
    mesh: Mesh,
    *,
    axis: int = 0,
    check_vma: bool = False,
) -> Callable[[Any, Any], PyTree]:
    """Evaluate an event-additive function shard by shard and sum over the devices.

    `fn(params, events)` must be a sum over events: its value on all events equals the
    sum of its values on any split of them (soft or hard histograms, weighted counts,
    per-sample histogram stacks; not a mean, not a loss of the histograms). The returned
    function computes ``fn(params, all events)`` as ``psum`` over devices of
    ``fn(params, local events)``; it is differentiable in `params` (the cotangents of the
    replicated parameters are summed over devices by JAX) and jits as part of a step.

    **Arguments:**

    - `fn`: `(params, events) -> PyTree of arrays`. `params` may hold non-array leaves
      (e.g. an equinox module's activation functions); they are passed through.
    - `mesh`: a 1-D mesh from `event_mesh`.
    - `axis`: the event axis of every array leaf of `events`.
    - `check_vma`: JAX's replication checking inside `shard_map`. Off by default because
      `diffana.relax.hist` accumulates large samples in a `lax.scan` whose carry starts
      replicated; the numbers are the same either way (checked in the test suite).

    **Returns:** `summed(params, events)` with `fn`'s output structure, replicated.
    Call it on events placed with `shard_events(..., axis=axis)`; other placements are
    resharded by JAX first.
    """
    spec = _event_spec(mesh, axis)
    axis_name = _axis_name(mesh)

    def summed(params, events):
        p_dyn, p_static = eqx.partition(params, eqx.is_array)
        e_dyn, e_static = eqx.partition(events, eqx.is_array)
        n = _check_event_axis(e_dyn, axis, "sum_over_devices")
        if n % mesh.size:
            raise ValueError(
                f"sum_over_devices: {n} events along axis {axis} do not divide over "
                f"{mesh.size} devices; pad them (shard_events(..., pad=True))"
            )

        def local(p, e):
            out = fn(eqx.combine(p, p_static), eqx.combine(e, e_static))
            return jax.tree.map(lambda v: jax.lax.psum(v, axis_name), out)

        mapped = jax.shard_map(
            local, mesh=mesh, in_specs=(P(), spec), out_specs=P(), check_vma=check_vma
        )
        return mapped(p_dyn, e_dyn)

    return summed
