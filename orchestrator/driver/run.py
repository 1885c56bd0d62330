"""The sweep's run: checks everything that can be checked, then grid phase, retunes, summary
(what it runs comes validated from orchestrator.driver.prepare).

Order matters and is the point of this module: the space, the options, the storage, the
tracking store, the GPUs and the data are all validated BEFORE the first trial starts (most of
them before Ray starts), so a mistake costs seconds, not a half-run sweep.
"""
from __future__ import annotations

import errno
import importlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.driver import local_ray, preflight
from orchestrator.driver.endings import STORAGE_FULL, TRACKING_PENDING, interrupted, pending_message
from orchestrator.driver.interrupts import Interrupted, SweepStop
from orchestrator.driver.names import state_dir
from orchestrator.driver.options import SweepOptions
from orchestrator.driver.prepare import Prepared, SweepError
from orchestrator.driver.sweep_lock import SweepLock, SweepLocked
from orchestrator.tracking.outbox import OUTBOX_DIR
from trainables.config import TrialConfig


def check_vit_cache_dirs(trials: list[TrialConfig]) -> None:
    """A ViT feature cache directory this machine cannot write fails now, not in every trial
    (each node writes its own subdirectory; this checks the driver's)."""
    for root in sorted({t.vit_cache_dir for t in trials if t.vit_cache}):
        try:
            Path(root).mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=root, prefix=".probe-"):
                pass
        except OSError as err:
            raise SweepError(f"ViT feature cache directory {root!r} is not writable "
                             f"({err.strerror or err}); pass another --vit-cache-dir, or --no-vit-cache") from None


def load_trainable(spec: str | None) -> Callable:
    """--trainable MODULE:FUNCTION, default orchestrator.driver.tuner.run_cell."""
    if spec is None:
        from orchestrator.driver.tuner import run_cell
        return run_cell
    module, _, func = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError, ValueError) as err:
        raise SweepError(f"--trainable {spec!r}: cannot import it ({err})") from None


def check_real_presets_have_gpus(trials: list[TrialConfig], gpus_per_trial: float, cpu: bool) -> None:
    """A real 4-7 B preset with no GPU per trial would train on CPU for days: refuse it unless
    the user asked for CPU (--cpu)."""
    from trainables.vocab import REAL_PRESETS
    real = sorted({t.llm for t in trials if t.llm in REAL_PRESETS})
    if real and gpus_per_trial == 0 and not cpu:
        raise SweepError(f"{', '.join(real)} would run on CPU with --gpus-per-trial 0 (hours per "
                         f"optimizer step); give each trial a GPU, e.g. --gpus-per-trial 1 (see "
                         f"--dry-run for what fits), or pass --cpu to run on CPU deliberately")


def check_gpus(gpus_per_trial: float, address: str | None) -> None:
    """A local sweep asking for GPUs on a machine without one fails now, not pends forever."""
    if gpus_per_trial > 0 and address is None:
        import torch
        if not torch.cuda.is_available():
            raise SweepError(f"--gpus-per-trial {gpus_per_trial} but this machine has no CUDA GPU "
                             f"(torch.cuda.is_available() is False); use --gpus-per-trial 0 or "
                             f"--address of a cluster with GPUs")


def prepare_data(trials: list[TrialConfig]) -> None:
    """Validate and prepare every benchmark of the space once, on the driver, before trials:
    all or nothing (trainables.data.prepare.prepare_all), so a data error leaves no trace."""
    from trainables.data.prepare import prepare_all
    requests = list(dict.fromkeys((t.benchmark, t.data_root, t.cache_dir) for t in trials))
    try:
        prepare_all(requests)
    except ValueError as err:  # DataError is a ValueError naming file, pid and field
        raise SweepError(f"benchmark data: {err}") from None


def run(prepared: Prepared, options: SweepOptions, stop: SweepStop | None = None) -> int:
    """The whole sweep; returns the process exit code (driver.endings lists them).

    Pre-flight order, so that a mistake costs seconds and leaves nothing behind: first the
    checks that write nothing (cluster address, every trial's placement on the node types,
    GPUs, --trainable, --report-dir), then every benchmark validated and prepared (a data error
    writes nothing, see prepare_data), and only then the storage probe, the per-name lock and
    the tracking preflight, which create the storage directory and the MLflow experiment.
    Checks added here go before prepare_data unless they must write.
    """
    from orchestrator.driver import cluster
    from orchestrator.driver import tuner as tn
    from orchestrator.placement.resources import for_sweep
    stop = stop or SweepStop()
    try:  # a cluster address that does not answer: an error in <= 5 s, not minutes in ray.init
        cluster.check_address(options.address)
    except cluster.ClusterError as err:
        raise SweepError(str(err)) from None
    try:  # a trial no GPU can hold is refused here, before anything is written
        resources, costs = for_sweep(prepared, options)
    except ValueError as err:  # PlacementError, NodeTypeError, ResourceError
        raise SweepError(str(err)) from None
    gpus = resources.smallest_gpu_request()
    check_real_presets_have_gpus(prepared.trials, gpus, options.cpu)
    check_gpus(gpus, cluster.resolve_address(options.address))  # Ray jobs set RAY_ADDRESS
    trainable = load_trainable(options.trainable)
    if options.report_dir is not None:
        try:
            preflight.check_output_path(options.report_dir, "--report-dir", directory=True)
        except preflight.PreflightError as err:
            raise SweepError(str(err)) from None
    prepare_data(prepared.trials)
    check_vit_cache_dirs(prepared.trials)
    try:
        storage = tn.check_storage(options.storage)
        preflight.check_free_space(storage)
        own_dir = state_dir(storage, prepared.name, options.cache_dir)  # proves <storage>/<name>
        check_exists(storage, prepared.name, options.resume)  # fast refusal, nothing written
        fresh = not own_dir.exists()
        lock = SweepLock(storage, prepared.name, options.cache_dir)
        lock.acquire()  # the atomic guard: two sweeps of one name never interleave
    except (ValueError, SweepLocked, OSError) as err:  # UnsafeName, PreflightError are ValueErrors
        raise SweepError(str(err)) from None
    try:
        code = _run_locked(prepared, options, storage, trainable, stop, own_dir, resources, costs)
    except BaseException:
        lock.release(discard=fresh)  # refused before Tune wrote anything: leave no trace
        raise
    lock.release()
    return code


def check_exists(storage: str, name: str, resume: bool) -> None:
    """--resume needs the sweep; a new sweep must not reuse its name."""
    from orchestrator.driver import tuner as tn
    exists = tn.can_restore(storage, name)
    if resume and not exists:
        raise SweepError(f"--resume: no sweep {name!r} under {storage} to continue")
    if exists and not resume:
        raise SweepError(f"sweep {name!r} already exists under {storage}; pass --resume "
                         f"to continue it, or --name / --storage for a new one")


def _run_locked(prepared: Prepared, options: SweepOptions, storage: str, trainable: Callable,
                stop: SweepStop, own_dir: Path, resources: Any, costs: Any) -> int:
    """The sweep once its name is locked: tracking, Ray, the phases. ``resources``/``costs``:
    each trial's GPU share and node type, and how to price it (orchestrator.placement)."""
    from orchestrator.driver import cluster
    from orchestrator.tracking.tracker import SweepTracker, TrackingError
    check_exists(storage, prepared.name, options.resume)  # again, now under the lock
    if options.resume:
        try:
            preflight.verify_resume_checkpoints(storage, prepared.name)
        except preflight.PreflightError as err:
            raise SweepError(str(err)) from None
    scheduler = grid_scheduler(prepared, options, storage)
    command = ["python", "-m", "orchestrator.sweep", *options.argv]
    tracker = SweepTracker(options.tracking_uri, prepared.name, prepared.space.name, command,
                           options.run_seed, options.resume, outbox_dir=own_dir / OUTBOX_DIR)
    try:
        tracker.preflight()
    except TrackingError as err:
        raise SweepError(str(err)) from None
    import ray
    # The classic reporter engine: ours prints one progress line (driver.progress).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    try:
        local_ray.start(options.address, verbose=options.verbose)
    except local_ray.LoopbackError as err:
        raise SweepError(str(err)) from None
    try:
        stop.install()  # again: ray.init replaced the SIGTERM handler
        stop.defer = True  # from here a signal stops Tune gracefully (driver.interrupts)
        try:  # every node must reach the storage; an autoscaling cluster starts with 0 GPUs
            cluster.check_storage_shared(storage)
            cluster.wait_for_gpus(resources.smallest_gpu_request())
            cluster.wait_for_fitting_node(options.cpus_per_trial, resources.largest_gpu_request())
        except cluster.ClusterError as err:
            raise SweepError(str(err)) from None
        return _run_phases(prepared, options, storage, trainable, tracker, scheduler, stop,
                           resources, costs)
    except Interrupted:
        return interrupted(tracker, stop, options)
    except OSError as err:  # a write of Tune's or of the outbox hit a full disk
        if err.errno != errno.ENOSPC:
            raise
        stop.request(f"no space left on the device of {err.filename or storage}", STORAGE_FULL)
        return interrupted(tracker, stop, options)
    finally:
        ray.shutdown()


def grid_scheduler(prepared: Prepared, options: SweepOptions, storage: str) -> Any:
    """The grid's scheduler; on --resume with ASHA, restored from the experiment directory
    (orchestrator.driver.scheduler_state) so that it decides as the uninterrupted sweep would."""
    from orchestrator.driver.scheduler_state import state_uri
    from orchestrator.driver.schedulers import make_scheduler
    from orchestrator.driver.tuner import experiment_path
    try:
        return make_scheduler(options.scheduler, prepared.asha, resume=options.resume,
                              state_uri=state_uri(experiment_path(storage, prepared.name)))
    except ValueError as err:
        raise SweepError(f"--resume: {err}") from None


def _run_phases(prepared: Prepared, options: SweepOptions, storage: str,
                trainable: Callable, tracker: Any, scheduler: Any, stop: SweepStop,
                resources: Any, costs: Any) -> int:
    import ray

    from orchestrator.driver import retune, stopped_scores, unreported
    from orchestrator.driver import tuner as tn
    from orchestrator.driver.tune_callbacks import StopTune, StorageGuard
    from orchestrator.results import summary
    from orchestrator.results.model import outcomes
    tracker.start()
    settings = tn.TunerSettings(
        storage=storage, cpus_per_trial=options.cpus_per_trial, resources=resources,
        max_concurrent=options.max_concurrent or max(1, int(ray.cluster_resources().get("CPU", 1)
                                                        // options.cpus_per_trial)),
        max_failures=options.max_failures, full_table=options.verbose,
        callbacks=[tracker.callback(costs), StopTune(stop),
                   StorageGuard(stop, storage, STORAGE_FULL)])
    logger = settings.callbacks[0]
    started = time.monotonic()
    space = tn.grid_param_space(prepared.trials)
    if options.resume:
        grid = tn.restore_tuner(trainable, prepared.name, settings, scheduler, space)
    else:
        grid = tn.build_tuner(trainable, space, prepared.name, settings, scheduler,
                              trials=prepared.trials)
    results = grid.fit()
    if stop.stopping or results.num_terminated + results.num_errors < len(results):
        return interrupted(tracker, stop, options)  # (or a SIGUSR1 from outside)
    scorer = stopped_scores.scorer_for(trainable)
    scores = stopped_scores.score_stopped_trials(results, settings, logger, scorer)
    grid_trials = stopped_scores.with_scores(
        unreported.grid_results(results, prepared.trials, logger), scores)
    retuned: list = []
    if not options.no_retune:
        retuned = retune.retune_divergent(grid_trials, trainable, prepared.name, settings,
                                          seed=options.run_seed,
                                          num_samples=options.retune_samples,
                                          resume=options.resume, logger=logger, scorer=scorer)
        if stop.stopping:  # during the retunes: their Tune runs stopped at once
            return interrupted(tracker, stop, options)
        record_retunes(tracker, retuned)
    trials = grid_trials + [t for r in retuned for t in r.trials]
    wall = time.monotonic() - started
    pending = tracker.close()  # Table 1 and its intervals come from MLflow: all of it first
    correctness = None
    if pending == 0:
        from orchestrator.results.predictions import correctness_from_mlflow
        correctness = correctness_from_mlflow(logger.client, lambda t: logger.run_id_of(t.run_id))
    print(summary.format_summary(trials, retuned, prepared.targets, tracker.describe(), wall,
                                 correctness))
    print_costs(tracker, options)
    failed = [o for o in outcomes(trials) if o.chosen.failed]
    if pending == 0:
        write_report_files(prepared.name, tracker, options.report_dir)
    if failed:
        print(unreported.failed_message(failed, options.argv))
    tracker.finish("FAILED" if failed else "FINISHED")
    if tracker.close():
        print(pending_message(tracker, prepared.name, options))
        return TRACKING_PENDING
    return 1 if failed else 0


def record_retunes(tracker: Any, retunes: list) -> None:
    """Tag each retuned cell's grid run with the retune that replaced it, now that the retunes
    have results: one that lost (orchestrator.driver.retune.Retune.replaces) leaves it untagged."""
    for r in retunes:
        best = r.chosen.run_id if r.replaces else None  # run_id: the Tune trial id here
        tracker.mark_replaced(r.original.cell.id, r.original.run_id, best)


def write_report_files(name: str, tracker: Any, out_dir: str | None) -> None:
    """Table 1, Figure 2 and learning curves from MLflow (orchestrator.results.report); a report that
    cannot be drawn is a warning, not a failed sweep: the runs are all in MLflow."""
    from orchestrator.results.report import write_report
    try:
        files = write_report(name, tracker.tracking_uri, parent_run_id=tracker.parent_run_id,
                             out_dir=Path(out_dir) if out_dir else None)
    except Exception as err:  # report is a by-product; never lose a finished sweep over it
        print(f"warning: could not write the report ({type(err).__name__}: {err}); rebuild it "
              f"with python -m orchestrator.results.report --experiment {name}")
        return
    print(f"report (Table 1, Figure 2, learning curves): {files.out_dir}/")


def print_costs(tracker: Any, options: SweepOptions) -> None:
    """The sweep's bill (orchestrator.costs.totals) on stdout and on the parent run."""
    from orchestrator.costs.totals import format_sweep_cost
    from search_spaces.lr_retune import NUM_SAMPLES
    samples = None if options.no_retune else (options.retune_samples or NUM_SAMPLES)
    cost = tracker.sweep_cost(samples)
    if cost is None:  # the store is unreachable: the trials' costs wait in the outbox
        print("\ncost: not totalled (the tracking store did not answer); the trials' costs are "
              "in their MLflow runs once the outbox is written")
        return
    print("\n" + format_sweep_cost(cost))
