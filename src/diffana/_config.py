"""Numerical precision and dispatch policy of diffana.

Statistics (likelihoods, fits, test statistics) need float64: a profile-likelihood
ratio is a small difference of large numbers, and float32 loses it. The policy is:

* ``import diffana`` switches on JAX's 64-bit mode (``jax_enable_x64``) unless the
  environment variable ``DIFFANA_DISABLE_X64`` is set to ``1`` before the import.
* Neural networks may still run in float32: create their parameters with
  ``dtype=jnp.float32``; histograms and everything downstream are cast to float64.
* Statistical entry points call :func:`check_float64`, which warns with
  :class:`diffana.PrecisionWarning` when they are handed float32 inputs, naming the
  argument, or when 64-bit mode is off (once per process). Warnings point at the
  caller's line, not at diffana's. JAX's own warnings about float64 requests truncated
  to float32 inside diffana are filtered out then (a filter on diffana's modules; a
  `simplefilter("always")` shows them again).
* Functions that cannot work in float32 - CLs (`hypotest`), upper limits and discovery
  significances, whose p-values are small differences of tail probabilities - call
  :func:`require_float64` and raise :class:`diffana.PrecisionError` with 64-bit mode off.

Dispatch: ``import diffana`` also switches JAX's CPU backend to synchronous dispatch
(``jax_cpu_enable_async_dispatch = False``, JAX's own opt-out of asynchronous CPU
dispatch) unless ``DIFFANA_CPU_ASYNC_DISPATCH=1`` or ``JAX_CPU_ENABLE_ASYNC_DISPATCH`` is
set. A jitted call then runs in the calling thread instead of being handed to a worker
thread: a fit or hypothesis test of a small model (tens of microseconds of work)
returns about 3.5x sooner (`benchmarks/bench_hypotest.py`), while large computations
(training steps, batches of fits) run as before. The switch only takes effect if the
CPU backend has not been initialised yet, i.e. when diffana is imported before the
first computation.

Compilation: :func:`compiler_options` gives the XLA options diffana passes to the
`jax.jit` of its own batched fits (and recommends for yours). The statistical entry
points (fits, hypothesis tests, limits, intervals; not the batches of toy fits) use
:func:`entry_compiler_options`, which halve their compilation on a CPU (see
:func:`entry_jit`); no global XLA setting is changed. :func:`enable_compilation_cache`
switches on JAX's persistent compilation cache, so that a second process does not
compile again what a first one compiled (the `diffana` command does this by default).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import sys
import warnings
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from diffana.errors import PrecisionError, PrecisionWarning

__all__ = [
    "ASYNC_ENV_VAR",
    "X64_ENV_VAR",
    "check_float64",
    "compiler_options",
    "default_cache_dir",
    "enable_compilation_cache",
    "enable_x64",
    "entry_compiler_options",
    "entry_jit",
    "require_float64",
    "x64_enabled",
]

X64_ENV_VAR = "DIFFANA_DISABLE_X64"
CACHE_ENV_VAR = "DIFFANA_CACHE_DIR"
ASYNC_ENV_VAR = "DIFFANA_CPU_ASYNC_DISPATCH"
_TRUE = ("1", "true", "yes")


def enable_x64() -> None:
    """Switch on JAX's 64-bit mode (what ``import diffana`` does by default)."""
    jax.config.update("jax_enable_x64", True)


def x64_enabled() -> bool:
    """Whether JAX's 64-bit mode is on."""
    return bool(jax.config.read("jax_enable_x64"))


# On a CPU, XLA hands dots, element-wise operations and reductions to YNNPACK. For the
# many tiny reductions of a vmapped batch of fits (a sum over 3 parameters, 1000 times)
# its reduction kernels are slower than XLA's own loops; dots stay with YNNPACK.
_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}


# XLA's CPU backend emits element-wise fusions either with its newer MLIR fusion
# emitters (the default) or with its classic elemental emitters. For the loops of a fit
# or a hypothesis test the newer ones compile about twice as slowly, for run times
# within about 20% either way (docs/performance.md, "Published workspaces").
_ENTRY_CPU_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


def _known_options(options: dict) -> dict:
    """`options` if this backend compiles with them (tried on a trivial function), else {}."""
    try:
        jax.jit(lambda x: x + 1, compiler_options=options).lower(1.0).compile()
    except Exception:  # an older jax (no `compiler_options`) or an unknown XLA option
        return {}
    return dict(options)


@functools.cache
def entry_compiler_options() -> dict[str, object]:
    """XLA compiler options of diffana's statistical entry points (:func:`entry_jit`).

    On a CPU the classic element-wise emitters (``xla_cpu_use_fusion_emitters=False``):
    the first call of a fit of a published workspace (67-625 parameters) then takes
    2.0-3.0 s instead of 2.4-3.6 s in `benchmarks/bench_realws.py`, and its warm calls
    run within about 20% of the default's. `{}` on other backends and where this
    version of XLA does not know the option (checked once).
    """
    if jax.default_backend() != "cpu":
        return {}
    return _known_options(_ENTRY_CPU_OPTIONS)


def _at_top_level() -> bool:
    """Whether JAX is evaluating eagerly here (not tracing under `jit`, `grad`, `vmap`).

    JAX accepts compiler options only on a top-level `jit`. Read from JAX's tracing
    context (internal; where it is missing, the answer is "no" and the default options
    apply)."""
    try:
        from jax._src import core

        return bool(core.trace_ctx.is_top_level())
    except Exception:  # a jax without this internal
        return False


# While an entry point (:func:`entry_jit`) runs: whether it was called under `jax.vmap`.
# JAX traces some parts of a program (the derivative rules of fits) apart from the
# transformations around them, where the tracing context alone would not tell.
_VECTORISED = contextvars.ContextVar("diffana_vectorised", default=False)


def _batch_trace_active() -> bool:
    """Whether JAX's current trace runs under a batching trace (internal; where it is
    missing, the answer is "no")."""
    try:
        from jax._src import core
        from jax._src.interpreters import batching

        trace = core.trace_ctx.trace
        while trace is not None:
            if isinstance(trace, batching.BatchTrace):
                return True
            trace = getattr(trace, "parent_trace", None)
    except Exception:  # a jax without these internals
        return False
    return False


def under_vmap() -> bool:
    """Whether the caller runs under `jax.vmap` (or `jacfwd`, `hessian`: a batching
    transformation), at any depth, inside `jit` too.

    Fits choose their algorithm by it (:func:`diffana.infer._mle.vectorised_fits`): a
    batch of small models is fastest with element-wise work, a single fit with fewer,
    larger operations, which also compile faster. Read from JAX's tracing context
    (internal; where it is missing, the answer is "no": a choice of speed, never of
    result)."""
    return _VECTORISED.get() or _batch_trace_active()


def entry_jit(fn: Callable) -> Callable:
    """`equinox.filter_jit(fn)`, compiled with :func:`entry_compiler_options` when called
    at the top level.

    For functions a user calls directly (a fit, a hypothesis test): their first call's
    compilation is what a user waits for. Called inside `jax.jit`, `jax.grad` or
    `jax.vmap` the function is one part of the outer program and compiles with it,
    under the outer options. The options are looked up at the first call, not at import,
    so importing diffana does not start a backend. Calls under `jax.vmap`
    (:func:`under_vmap`) have a cache of their own, as `fn` traces differently there.
    """
    variants: dict[tuple[bool, bool], Callable] = {}

    @functools.wraps(fn)
    def call(*args, **kwargs):
        vectorised = under_vmap()
        key = (_at_top_level(), vectorised)
        jitted = variants.get(key)
        if jitted is None:
            options = entry_compiler_options() if key[0] else {}

            # a function of its own (equinox shares the traces of one function's jits),
            # under `fn`'s name
            @functools.wraps(fn)
            def variant(*a, **k):
                return fn(*a, **k)

            jitted = eqx.filter_jit(variant, compiler_options=options)
            variants[key] = jitted
        token = _VECTORISED.set(vectorised)
        try:
            return jitted(*args, **kwargs)
        finally:
            _VECTORISED.reset(token)

    return call


@functools.cache
def compiler_options() -> dict[str, str]:
    """XLA compiler options for `jax.jit(..., compiler_options=...)` of batched fits.

    On a CPU: YNNPACK fusions for dots only, not for reductions. A vmapped batch of
    1000 hypothesis tests (value and gradient) then runs about 1.3x faster
    (`benchmarks/bench_hypotest.py` prints both), and the neos training step, whose
    matrix products keep YNNPACK, as fast as before (docs/performance.md). diffana
    passes these options to the `jax.jit` of its own batched fits (the cut scans of
    `diffana bench`); pass them to yours::

        jax.jit(jax.vmap(fn), compiler_options=diffana.compiler_options())

    **Returns:** the options, or `{}` on other backends and where this version of
    jax/XLA does not know them (checked once by compiling a trivial function).
    """
    if jax.default_backend() != "cpu":
        return {}
    return _known_options(_CPU_OPTIONS)


def default_cache_dir() -> str:
    """Where :func:`enable_compilation_cache` keeps compiled programs by default:
    ``$DIFFANA_CACHE_DIR``, else ``$XDG_CACHE_HOME/diffana/jax`` (``~/.cache/diffana/jax``)."""
    if os.environ.get(CACHE_ENV_VAR):
        return os.environ[CACHE_ENV_VAR]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "diffana", "jax")


def enable_compilation_cache(path: str | os.PathLike | None = None) -> str:
    """Switch on JAX's persistent compilation cache in `path` (default
    :func:`default_cache_dir`).

    The first call of a jitted function compiles it, which for a fit or hypothesis test
    of a published model (hundreds of parameters) takes seconds; with the cache on, a
    later process loads the compiled program from disk instead (docs/performance.md
    has the measured times). Every program is cached, however quickly it compiled.
    Call it once, before the first computation::

        import diffana
        diffana.enable_compilation_cache()

    The cache is keyed by the program, the jax/XLA version and the machine, so a stale
    entry is never used; delete the folder to reclaim its space.

    **Returns:** the cache folder.
    """
    folder = os.fspath(default_cache_dir() if path is None else path)
    os.makedirs(folder, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


def _apply_policy_on_import() -> None:
    if os.environ.get(X64_ENV_VAR, "0").strip().lower() not in _TRUE:
        enable_x64()
    else:
        # JAX warns at every float64 request it truncates; diffana's own requests are
        # covered by its one PrecisionWarning (user code still gets JAX's warnings)
        warnings.filterwarnings(
            "ignore",
            message="Explicitly requested dtype float64",
            category=UserWarning,
            module=r"diffana(\.|$)",
        )
    keep_async = os.environ.get(ASYNC_ENV_VAR, "0").strip().lower() in _TRUE
    if not keep_async and "JAX_CPU_ENABLE_ASYNC_DISPATCH" not in os.environ:
        with contextlib.suppress(AttributeError, KeyError, ValueError):  # jax without it
            jax.config.update("jax_cpu_enable_async_dispatch", False)


_X64_OFF_WARNED = [False]


def _library_dirs() -> tuple[str, ...]:
    import equinox

    dirs = [os.path.dirname(__file__), os.path.dirname(jax.__file__)]
    dirs.append(os.path.dirname(equinox.__file__))
    return tuple(os.path.join(d, "") for d in dirs)


def user_stacklevel() -> int:
    """The `stacklevel` for a `warnings.warn` made by the caller of this function that
    points at the first frame outside diffana, jax and equinox: the user's line."""
    skip = _library_dirs()
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(skip):
        frame, level = frame.f_back, level + 1
    return level


def require_float64(where: str) -> None:
    """Raise :class:`diffana.PrecisionError` when JAX's 64-bit mode is off.

    For the statistical functions that cannot work in float32: CLs and its limits,
    discovery p-values, whose tail probabilities differ in digits float32 does not have.

    **Arguments:**

    - `where`: the function that needs float64, named in the error.
    """
    if not x64_enabled():
        raise PrecisionError(
            f"{where} needs float64, but JAX's 64-bit mode is off ({X64_ENV_VAR}=1 was "
            "set before `import diffana`, or jax_enable_x64 was switched off): in float32 "
            "the profile-likelihood ratios behind CLs lose the digits that matter and "
            f"limits come out NaN. Unset {X64_ENV_VAR}, or call diffana.enable_x64() "
            "before building any array."
        )


def check_float64(x, name: str, where: str) -> None:
    """Warn when ``x`` (an array, or anything with a ``dtype``) is not float64.

    Runs at trace time only (it reads the static dtype), so it costs nothing in a
    jitted function. With 64-bit mode off it warns once per process; the warning points
    at the first line outside diffana (and jax) that led here.

    **Arguments:**

    - `x`: the array handed to a statistical function.
    - `name`: the argument's name, used in the warning.
    - `where`: the function or model that received it.
    """
    if not x64_enabled():
        if _X64_OFF_WARNED[0]:
            return
        _X64_OFF_WARNED[0] = True
        warnings.warn(
            f"{where}: JAX's 64-bit mode is off ({X64_ENV_VAR} is set?), so '{name}' "
            "and every statistic diffana computes are in float32; fits lose precision, "
            "and CLs, limits and significances are refused (diffana.PrecisionError). "
            f"Unset {X64_ENV_VAR} or call diffana.enable_x64() before building arrays. "
            "(This warning is shown once.)",
            PrecisionWarning,
            stacklevel=user_stacklevel(),
        )
        return
    dtype = getattr(x, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jnp.floating) and dtype != jnp.float64:
        warnings.warn(
            f"{where}: '{name}' has dtype {dtype}; statistics are computed in float64, "
            "so it is cast up, but the precision already lost upstream is not recovered.",
            PrecisionWarning,
            stacklevel=user_stacklevel(),
        )
