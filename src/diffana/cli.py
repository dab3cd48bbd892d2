"""The ``diffana`` command line (click)."""

from __future__ import annotations

import sys

import click

import diffana
from diffana.errors import DiffanaError

__all__ = ["main"]


class DiffanaCliError(click.ClickException):
    """A diffana error reported on the command line: one line, exit status 2 (bad
    input, as for click's usage errors)."""

    exit_code = 2

    @classmethod
    def from_error(cls, err: BaseException) -> DiffanaCliError:
        return cls(" ".join(str(err).split()) or type(err).__name__)


@click.group()
@click.version_option(diffana.__version__, prog_name="diffana")
@click.option(
    "--compile-cache/--no-compile-cache", default=True, show_default=True,
    help="Keep compiled programs on disk (JAX's persistent compilation cache, in "
    "$DIFFANA_CACHE_DIR or ~/.cache/diffana/jax), so that a second run does not compile "
    "them again.",
)  # fmt: skip
def main(compile_cache: bool) -> None:
    """diffana: differentiable analysis toolkit for high-energy physics."""
    if compile_cache:
        try:
            diffana.enable_compilation_cache()
        except OSError as err:  # an unwritable cache folder costs speed, not the run
            click.echo(f"diffana: compilation cache off ({err})", err=True)


@main.command("bench")
@click.argument("problems", nargs=-1)
@click.option(
    "--methods", "-m", default=None,
    help="Comma-separated methods (neos, discovery, inferno, bce, cuts_grad, cuts_scan); "
    "default: each problem's [bench].methods.",
)  # fmt: skip
@click.option("--seeds", type=int, default=None, help="Seeds per method (default: definition).")
@click.option("--steps", type=int, default=None, help="Training steps of every trained method.")
@click.option(
    "--out", "-o", default="bench-results", show_default=True,
    type=click.Path(file_okay=False), help="Output folder; finished runs in it are reused.",
)  # fmt: skip
@click.option("--quick", is_flag=True, help="Small samples and few steps (tests).")
@click.option("--full", is_flag=True, help="The full benchmark (all seeds).")
@click.option(
    "--tensorboard/--no-tensorboard", default=None,
    help="Log to TensorBoard (needs tensorboardX); default: if installed.",
)  # fmt: skip
@click.option("--no-referee", is_flag=True, help="Skip pyhf's numbers on the workspaces.")
@click.option(
    "--no-toys", is_flag=True,
    help="Skip the pseudo-experiments (coverage, interval width, FAIR Universe score, "
    "toy-based CLs).",
)  # fmt: skip
@click.option("--no-plots", is_flag=True, help="Do not write plots.")
@click.option(
    "--devices", type=click.IntRange(min=1), default=None,
    help="Split every training batch over N devices (GPUs; on a CPU-only host the CPU is "
    "split into N devices).",
)  # fmt: skip
@click.option(
    "--distributed", is_flag=True,
    help="Run as one of several processes on JAX's distributed runtime, found from the "
    "environment (a SLURM job step started with srun, Open MPI's mpirun, ...).",
)  # fmt: skip
@click.option(
    "--coordinator", metavar="HOST:PORT", default=None,
    help="Run as one of several processes: the address of process 0 (with "
    "--num-processes and --process-id).",
)  # fmt: skip
@click.option(
    "--num-processes", type=click.IntRange(min=1), default=None,
    help="The number of processes (with --coordinator).",
)  # fmt: skip
@click.option(
    "--process-id", type=click.IntRange(min=0), default=None,
    help="This process's index, 0 to N-1 (with --coordinator); process 0 writes the results.",
)  # fmt: skip
@click.option("--list", "list_only", is_flag=True, help="List the available problems and exit.")
def bench(
    problems, methods, seeds, steps, out, quick, full, tensorboard, no_referee, no_toys,
    no_plots, devices, distributed, coordinator, num_processes, process_id, list_only,
):  # fmt: skip
    """Train and evaluate methods on shared benchmark PROBLEMS (names or .toml files).

    Without PROBLEMS, runs the shared benchmarks gaussian_blobs, inferno3d and cut_scan
    with their default settings (under 5 minutes on 2 CPU cores); --list shows all.
    Writes OUT/results.json, OUT/results.md, OUT/plots/ and one folder per run
    (config.json, metrics.jsonl, workspaces, result.json); rerunning the same command
    resumes an interrupted benchmark. Runs made with other settings are not mixed in one
    OUT: change --out when you change --steps, --quick or a definition.

    Several processes (hosts, or one process per GPU) run one benchmark together when
    each is started with --distributed (under srun/mpirun) or with --coordinator,
    --num-processes and --process-id: every training batch is split over the devices of
    all processes, and only process 0 writes OUT (on a file system all of them see).
    """
    from diffana.problems import available_problems, load_definition

    if quick and full:
        raise click.UsageError("--quick and --full exclude each other: give one of them")
    mode = "quick" if quick else "full" if full else "default"
    explicit = {"--coordinator": coordinator, "--num-processes": num_processes,
                "--process-id": process_id}  # fmt: skip
    if any(v is not None for v in explicit.values()):
        missing = [k for k, v in explicit.items() if v is None]
        if missing:
            raise click.UsageError(
                "--coordinator, --num-processes and --process-id go together: "
                f"{', '.join(missing)} missing (or give --distributed alone to find them "
                "from the environment)"
            )
        if distributed:
            raise click.UsageError(
                "--distributed finds the processes from the environment; do not combine it "
                "with --coordinator/--num-processes/--process-id"
            )
        if process_id >= num_processes:
            raise click.UsageError(
                f"--process-id must be below --num-processes ({num_processes}), got {process_id}"
            )
        distributed = True
    if distributed and devices is not None:
        raise click.UsageError(
            "--devices splits one process's batches; with several processes every batch is "
            "split over the devices of all of them (drop --devices)"
        )
    try:
        if list_only:
            for name, path in sorted(available_problems().items()):
                d = load_definition(path)
                click.echo(
                    f"{name}\t{path}\t{d.description.splitlines()[0] if d.description else ''}"
                )
            return
        if distributed and not list_only:
            from diffana import parallel

            try:  # before JAX starts computing
                parallel.initialize_distributed(coordinator, num_processes, process_id)
            except (ValueError, RuntimeError) as err:
                raise DiffanaCliError.from_error(err) from None
        if devices is not None:
            from diffana import parallel

            try:
                parallel.use_cpu_devices(devices)  # before JAX starts; no effect on GPUs
            except RuntimeError as err:
                raise DiffanaCliError.from_error(err) from None
        from diffana.bench import run_bench

        method_list = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
        results = run_bench(
            problems,
            methods=method_list,
            seeds=seeds,
            steps=steps,
            out=out,
            mode=mode,
            tensorboard=tensorboard,
            referee=not no_referee,
            toys=not no_toys,
            plots=not no_plots,
            progress=True,
            devices=devices,
            command="diffana bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else None,
        )
    except DiffanaError as err:
        raise DiffanaCliError.from_error(err) from None
    except KeyboardInterrupt:
        click.echo(
            f"\nInterrupted. The finished runs are kept in {out}; rerun the same command "
            "to resume from there.",
            err=True,
        )
        raise SystemExit(130) from None
    if "runs_planned" not in results:  # not process 0: it reports
        return
    reused = results["meta"].get("runs_reused", 0)
    click.echo(
        f"{results['runs_done']} runs ({results['runs_done'] - reused} ran, {reused} reused "
        f"from {out}) in {results['wall_time_s']:.0f} s; results in {out}/results.md and "
        f"{out}/results.json"
    )


@main.command("report")
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--page", "-p", default=None, type=click.Path(dir_okay=False),
    help="Markdown page to write, plots in a folder beside it  [default: OUT/report.md]",
)  # fmt: skip
@click.option("--title", default="Benchmark results", show_default=True)
@click.option("--force", is_flag=True, help="Replace the page if it exists.")
def report(out, page, title, force):
    """Write the results of the finished `diffana bench` run in OUT as a docs page.

    The page goes to OUT/report.md (plots in OUT/report/) unless --page says otherwise;
    an existing page is only replaced with --force.
    """
    from diffana.bench import write_docs_page

    try:
        path = write_docs_page(out, page, title, overwrite=force)
    except (DiffanaError, OSError) as err:
        raise DiffanaCliError.from_error(err) from None
    click.echo(f"wrote {path}")


def _convert(src: str, target: str | None, measurement: str | None) -> tuple[dict, str, str]:
    """The converted document, its format, and a note on what the format cannot keep."""
    from diffana.hf import Model, hs3_data, to_hs3
    from diffana.hf._hs3 import is_hs3, load_document

    doc, _ = load_document(src, "pyhf or HS3", "a pyhf or HS3 document")
    if is_hs3(doc):
        source = "hs3"
    elif "channels" in doc or "measurements" in doc:
        source = "pyhf"
    else:
        raise DiffanaError(
            "neither an HS3 document ('distributions', 'metadata.hs3_version') nor a pyhf "
            "workspace ('channels', 'measurements')"
        )
    target = target or ("pyhf" if source == "hs3" else "hs3")
    if source == "pyhf":
        model = Model.from_pyhf(doc, measurement)
    else:
        model = Model.from_hs3(doc, measurement)
    if target == "hs3":
        return to_hs3(model), target, ""
    data = hs3_data(doc, model, measurement, include_auxdata=False) if source == "hs3" else None
    codes = (model.structure.normsys_code, model.structure.histosys_code)
    note = ""
    if codes != ("code4", "code4p"):
        note = (
            f" (pyhf JSON keeps no interpolation codes: build it with modifier_settings "
            f"normsys {codes[0]}, histosys {codes[1]})"
        )
    return model.to_pyhf(data), target, note


@main.command("convert")
@click.argument("src", metavar="IN", type=click.Path(dir_okay=False))
@click.argument("dst", metavar="OUT", type=click.Path(dir_okay=False))
@click.option(
    "--to", "target", type=click.Choice(["hs3", "pyhf"]), default=None,
    help="Output format; default: the other one (HS3 for a pyhf workspace, pyhf for HS3).",
)  # fmt: skip
@click.option(
    "--measurement", "-m", default=None,
    help="The pyhf measurement or the HS3 analysis to convert (default: the first).",
)  # fmt: skip
def convert(src, dst, target, measurement):
    """Convert a HistFactory likelihood between pyhf JSON and HS3 (standard 0.2.0).

    The format of IN is read from its content: HS3 has 'distributions' and
    'metadata.hs3_version', a pyhf workspace 'channels' and 'measurements'. OUT is
    written whole or not at all (a temporary file renamed into place).
    """
    import json

    from diffana._files import atomic_path

    def one_line(path: str, err: BaseException) -> DiffanaCliError:
        message = " ".join(str(err).split()) or type(err).__name__
        return DiffanaCliError(message if message.startswith(path) else f"{path}: {message}")

    try:
        out, target, note = _convert(src, target, measurement)
    except DiffanaError as err:
        raise one_line(src, err) from None
    try:
        with atomic_path(dst) as tmp:
            tmp.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    except OSError as err:
        raise one_line(dst, err) from None
    click.echo(f"wrote {dst} ({target}){note}")


if __name__ == "__main__":  # pragma: no cover
    main()
