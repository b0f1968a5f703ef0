"""Agreement and speed of the NeuCo-Bench evaluator against the reference implementation.

Two steps, with the reference (github.com/embed2scale/NeuCo-Bench) run by hand
in between, from its own environment outside this repository:

1. ``generate`` writes a seeded synthetic benchmark: an embeddings CSV of
   12 000 ids × 1024 dimensions and eight regression tasks of 5000 labelled
   ids each, every task on its own random subset of the ids.
2. ``compare`` runs ``python -m fusedeo.neuco`` on the same files with the
   ``neuco`` and the ``ridge`` probe, timing each command from start to exit,
   and prints the per-task agreement with the reference run and the speed
   ratios against the reference command's wall time.

The exact commands, including the reference's, are in docs/benchmarks.md.
"""

import argparse
import json
import resource
from importlib import import_module
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SAMPLES = 12_000
DIM = 1024
TASKS = 8
LABELLED = 5000
LATENT = 48


def generate(folder: Path, seed: int) -> None:
    """Write ``embeddings.csv``, ``labels/`` and the reference's configuration to ``folder``.

    The embeddings are a linear mix of latent factors plus noise. Each task's
    label is a function of a few factors with its own noise level, mapped
    through the normal CDF to spread it over (0, 1) like a land-cover
    fraction. With the reference protocol the tasks range from Q ≈ 15 down
    to Q < 0, like the Embed2Scale submissions and baselines.
    """
    special = import_module("scipy.special")
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    factors = rng.standard_normal((SAMPLES, LATENT))
    mixing = rng.standard_normal((LATENT, DIM)) / np.sqrt(LATENT)
    values = (factors @ mixing + 0.3 * rng.standard_normal((SAMPLES, DIM))).astype(np.float32)
    ids = [f"ssl4eo_{index:05d}" for index in range(SAMPLES)]

    started = time.perf_counter()
    row_format = ",".join(["%.7g"] * DIM)
    with (folder / "embeddings.csv").open("w") as handle:
        handle.write("id," + ",".join(str(column) for column in range(DIM)) + "\n")
        for row_id, row in zip(ids, values, strict=True):
            handle.write(f"{row_id}.zarr.zip," + row_format % tuple(row) + "\n")
    print(f"embeddings.csv: {SAMPLES} × {DIM} written in {time.perf_counter() - started:.0f} s")

    labels_folder = folder / "labels"
    labels_folder.mkdir(exist_ok=True)
    noise_levels = np.linspace(0.2, 2.5, TASKS)
    for task in range(TASKS):
        rows = rng.choice(SAMPLES, LABELLED, replace=False)
        weights = rng.standard_normal(4)
        chosen = rng.choice(LATENT, 4, replace=False)
        signal = factors[rows][:, chosen] @ weights + 0.5 * factors[rows, chosen[0]] ** 2
        noisy = signal + noise_levels[task] * rng.standard_normal(LABELLED)
        label = special.ndtr(noisy / noisy.std())
        # A few rows with an empty label, which every reader skips.
        empty = rng.choice(SAMPLES, 25, replace=False)
        lines = [f"{ids[row]},{value:.6g}" for row, value in zip(rows, label, strict=True)]
        lines += [f"{ids[row]}," for row in empty if row not in set(rows)]
        order = rng.permutation(len(lines))
        text = "id,label\n" + "\n".join(lines[index] for index in order) + "\n"
        (labels_folder / f"task{task}__regression.csv").write_text(text)
    (folder / "reference_config.yaml").write_text(
        "k_folds: 40\nprobe_type: linear\nprobe_params:\n  batch_size: 64\n  epochs: 10\n"
        "  learning_rate: 0.001\n  device: cpu\nembedding_dim: null\nstandardize_embeddings: true\n"
        "normalize_labels: true\nenable_plots: false\nupdate_leaderboard: false\nstore_probes: false\n"
        "output_fold_results: true\n"
        "task_filter: null\n"
    )
    print(f"labels/: {TASKS} regression tasks × {LABELLED} ids; reference_config.yaml: the reference's settings")


def run_fusedeo(data: Path, output: Path, probe: str, method_name: str) -> tuple[float, float, Path]:
    """Run the command line on the benchmark; return its wall time, CPU time (user + system) and run folder."""
    command = [
        sys.executable, "-m", "fusedeo.neuco",
        "--embeddings-csv", str(data / "embeddings.csv"),
        "--labels-folder", str(data / "labels"),
        "--output-folder", str(output),
        "--phase", "benchmark",
        "--probe", probe,
        "--method-name", method_name,
        "--quiet",
    ]
    cpu_before = _children_cpu_seconds()
    started = time.perf_counter()
    completed = subprocess.run(command, check=True, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    cpu = _children_cpu_seconds() - cpu_before
    run_line = next(line for line in completed.stdout.splitlines() if line.startswith("run:"))
    return elapsed, cpu, Path(run_line.split(":", 1)[1].strip())


def _children_cpu_seconds() -> float:
    """Return the user plus system CPU time of all finished child processes."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def read_run(run_folder: Path) -> dict[str, dict]:
    """Return ``{task: {"q", "mean", "std", "folds"}}`` from a run folder of either evaluator.

    ``folds`` holds the per-split scores where the run wrote them (the
    reference does with ``output_fold_results: true``), else None.
    """
    tasks = {}
    for result in sorted(run_folder.glob("*/*_result.json")):
        content = json.loads(result.read_text())
        tasks[result.parent.name] = {
            "q": content["q_stat"],
            "mean": content["mean_score"],
            "std": content["std_dev"],
            "folds": np.array(content["q_t"]) if "q_t" in content else None,
        }
    return tasks


def read_reference_timing(path: Path) -> tuple[float, float | None]:
    """Read wall and CPU seconds from ``/usr/bin/time -f "%e %U %S" -o FILE`` output.

    A file with only the wall time (``-f %e``) gives no CPU time.
    """
    fields = [float(value) for value in path.read_text().split()[-3:] if _is_number(value)]
    if len(fields) == 3:
        return fields[0], fields[1] + fields[2]
    return fields[-1], None


def _is_number(text: str) -> bool:
    """Return whether ``text`` parses as a float."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def compare(data: Path, output: Path, reference_run: Path | None, reference_timing: Path | None, repeat: int) -> None:
    """Time both probes, then print the agreement table and the speed ratios."""
    timings: dict[str, list[float]] = {"neuco": [], "ridge": []}
    cpu_timings: dict[str, list[float]] = {"neuco": [], "ridge": []}
    runs: dict[str, Path] = {}
    # The first run after installing or changing FusedEO compiles the numba kernels, which takes about a
    # second. numba caches them, so this untimed run keeps the compilation out of the timings.
    run_fusedeo(data, output / "warm-up", "neuco", "warm_up")
    for attempt in range(repeat):
        for probe in ("neuco", "ridge"):
            seconds, cpu_seconds, runs[probe] = run_fusedeo(data, output, probe, f"fusedeo_{probe}")
            timings[probe].append(seconds)
            cpu_timings[probe].append(cpu_seconds)
            stages = json.loads((runs[probe] / "results_summary.json").read_text())["timing"]
            print(
                f"fusedeo {probe}, run {attempt + 1}: {seconds:.2f} s wall ({cpu_seconds:.2f} s CPU) for the command; "
                f"{stages['read_inputs_s']:.2f} s reading inputs, {stages['probe_s']:.2f} s probing ({runs[probe]})"
            )

    ours = {probe: read_run(folder) for probe, folder in runs.items()}
    reference = read_run(reference_run) if reference_run else {}
    print()
    print(
        "| task | Q reference | Q neuco | ΔQ neuco | max split ΔR² neuco | Q ridge "
        "| mean R² reference | mean R² neuco | mean R² ridge |"
    )
    print("|" + "---|" * 9)
    for task in sorted(ours["neuco"]):
        ref = reference.get(task)
        neuco, ridge = ours["neuco"][task], ours["ridge"][task]
        ref_q = f"{ref['q']:.3f}" if ref else "–"
        delta = f"{neuco['q'] - ref['q']:+.1e}" if ref else "–"
        fold_delta = (
            f"{np.abs(neuco['folds'] - ref['folds']).max():.1e}" if ref and ref["folds"] is not None else "–"
        )
        ref_mean = f"{ref['mean']:.4f}" if ref else "–"
        print(
            f"| {task} | {ref_q} | {neuco['q']:.3f} | {delta} | {fold_delta} | {ridge['q']:.3f} | "
            f"{ref_mean} | {neuco['mean']:.4f} | {ridge['mean']:.4f} |"
        )
    if reference:
        deltas = [abs(ours["neuco"][task]["q"] - reference[task]["q"]) for task in reference]
        print(f"\nmax |ΔQ| neuco vs reference: {max(deltas):.1e} over {len(deltas)} tasks (target ≤ 0.1)")
        for name, tasks in (("reference", reference), ("neuco", ours["neuco"]), ("ridge", ours["ridge"])):
            print(f"mean Q {name}: {np.mean([value['q'] for value in tasks.values()]):.3f}")

    print()
    for probe, values in timings.items():
        print(
            f"fusedeo {probe}: wall min {min(values):.2f} s, median {statistics.median(values):.2f} s; "
            f"CPU median {statistics.median(cpu_timings[probe]):.2f} s; {len(values)} runs"
        )
    if reference_timing:
        reference_wall, reference_cpu = read_reference_timing(reference_timing)
        print(f"reference: {reference_wall:.2f} s wall" + (f", {reference_cpu:.2f} s CPU" if reference_cpu else ""))
        for probe, target in (("neuco", 20), ("ridge", 50)):
            ratio = reference_wall / statistics.median(timings[probe])
            line = f"speed-up {probe}: {ratio:.1f}× wall (median; target ≥ {target}×)"
            if reference_cpu:
                line += f", {reference_cpu / statistics.median(cpu_timings[probe]):.1f}× CPU"
            print(line)


def main() -> None:
    """Parse the command line and run one step."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = parser.add_subparsers(dest="step", required=True)
    generate_step = steps.add_parser("generate", help="write the synthetic benchmark")
    generate_step.add_argument("--data", type=Path, required=True, help="folder to write the benchmark into")
    generate_step.add_argument("--seed", type=int, default=0)
    compare_step = steps.add_parser("compare", help="time fusedeo and compare with a reference run")
    compare_step.add_argument("--data", type=Path, required=True, help="folder written by generate")
    compare_step.add_argument("--output", type=Path, required=True, help="output folder for fusedeo's runs")
    compare_step.add_argument("--reference-run", type=Path, help="run folder of the reference (with <task>/ folders)")
    compare_step.add_argument(
        "--reference-timing", type=Path, help='file written by /usr/bin/time -f "%%e %%U %%S" -o FILE'
    )
    compare_step.add_argument("--repeat", type=int, default=1, help="timed runs per probe (default: 1)")
    arguments = parser.parse_args()
    if arguments.step == "generate":
        generate(arguments.data, arguments.seed)
    else:
        compare(arguments.data, arguments.output, arguments.reference_run, arguments.reference_timing, arguments.repeat)


if __name__ == "__main__":
    main()
