"""Run a grid's (loss, seed) runs as jobs of a scheduler: submitit (Slurm, or local processes) or Ray.

The driver (:func:`launch_grid`, the process of ``encouraging compare --launcher ...``) is the only writer of the
results database, which stays on its local disk. Each job trains one (config, seed) into its run directory on
shared storage (:func:`train_job`), into a database of its own there (``job.db``, written by that job alone), and
returns the run's record, which it also writes atomically as ``record.json`` beside it. The driver imports each
record as its job finishes. A killed driver loses nothing: a rerun of the same command first imports every
``record.json`` written meanwhile, follows the Slurm jobs still queued or running, and submits only the runs that
are missing or failed; a job killed mid-run resumes from its checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine.config import Config, config_hash
from ..engine.criteria import loss_label
from ..extras import require
from ..results import ResultsStore, records
from ..results.records import import_record, read_record, write_record
from .provenance import run_dir_for, run_id_for, run_record
from .runner import grid_configs, run, upstream

RECORD, JOB_DB, STARTED = "record.json", "job.db", "job.json"


def train_job(cfg: Config, out_dir: str | Path) -> dict[str, Any] | None:
    """A launcher's job: train one checked, canonical (config, seed) into its run directory under ``out_dir`` and
    return its record (ranks other than 0 of a multi-process run return None).

    The run trains into ``job.db`` in its run directory and resumes from its checkpoint; the records of the runs it
    builds on (``record.json`` in theirs) are imported there first. A run that another job still holds (a live
    process on this machine) is refused; a ``running`` claim left by a job on another machine is taken over, as the
    driver never has two jobs of one run.
    """
    run_dir = run_dir_for(cfg, out_dir)
    main = int(os.environ.get("RANK", "0")) == 0
    if (run_dir / RECORD).is_file():  # finished by an earlier job: every rank returns at once
        return read_record(run_dir / RECORD) if main else None
    store = ResultsStore(run_dir / JOB_DB) if main else None
    if store is not None:
        started = {"host": socket.gethostname(), "pid": os.getpid(), "started_at": time.time()}
        (run_dir / STARTED).write_text(json.dumps(started))
        for up in upstream(cfg).values():
            import_record(store, read_record(run_dir_for(up, out_dir) / RECORD))
        held = store.runs(run_id=run_id_for(cfg), status="running")
        if held and held[0]["host"] != socket.gethostname():
            store.fail(run_id_for(cfg), f"its job on {held[0]['host']} ended without finishing; resubmitted")
    run(cfg, out_dir=out_dir, db=run_dir / JOB_DB)
    if store is None:
        return None
    if not store.is_finished(config_hash(cfg), cfg.train.seed):
        raise RuntimeError(f"another job is training {run_dir} (see {JOB_DB} there); this one stood down")
    record = _record(store, run_id_for(cfg), run_dir)
    write_record(record, run_dir / RECORD)
    return record


def _record(store: ResultsStore, run_id: str, run_dir: Path) -> dict[str, Any]:
    """The run's record (:func:`encouraging.results.records.run_record`) with its run directory."""
    record = records.run_record(store, run_id)
    record["run"]["run_dir"] = str(run_dir)
    return record


class Launcher:
    """Where a grid's jobs run: submits :func:`train_job` calls, says when each has ended and what it returned."""

    name = ""

    def describe(self) -> str:
        """One line for the driver's first output: the scheduler and where the job logs go."""
        return self.name

    def submit(self, configs: list[Config], out_dir: Path) -> list[Any]:
        """Submit one job per config (trained into its run directory under ``out_dir``); return their handles."""
        raise NotImplementedError

    def done(self, job: Any) -> bool:
        """Whether the job has ended (finished, failed or killed)."""
        raise NotImplementedError

    def result(self, job: Any) -> dict[str, Any]:
        """The record an ended job returned; raises the job's error when it failed or was killed."""
        raise NotImplementedError

    def job_id(self, job: Any) -> str:
        """The scheduler's id of the job."""
        raise NotImplementedError

    def log(self, job: Any) -> str:
        """Where the job's output is."""
        raise NotImplementedError

    def attach(self, run_id: str) -> Any | None:
        """A job that an earlier driver submitted for ``run_id`` and that is still queued or running, or None."""
        return None


class SubmititJob:
    """:func:`train_job` as a submitit job: with several tasks (one per GPU, on one or more nodes), the
    ``torchrun``-style environment that :func:`~encouraging.engine.distributed.init_world` reads is exported first.
    Checkpointable: a job that reaches its time limit or is preempted is requeued, and resumes from its checkpoint."""

    def __call__(self, cfg: Config, out_dir: str) -> dict[str, Any] | None:
        import submitit

        if submitit.JobEnvironment().num_tasks > 1:  # every GPU stays visible: LOCAL_RANK picks the device
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        return train_job(cfg, out_dir)

    def checkpoint(self, cfg: Config, out_dir: str) -> Any:
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, cfg, out_dir)


class SubmititLauncher(Launcher):
    """Jobs through submitit: Slurm where ``sbatch`` is found (or ``cluster="slurm"``), local processes otherwise.

    Each run is one job of ``nodes`` x ``tasks`` processes (``tasks`` defaults to ``gpus``, at least 1); with more
    than one, they form the run's DDP process group. Each batch of submissions is one Slurm array job, at most
    ``array_parallelism`` of its jobs running at once. ``time`` is the limit per job in minutes, ``slurm`` any other
    option of submitit's Slurm executor (``{"account": "proj", "qos": "high"}``). Job scripts and logs go to
    ``folder/<job id>/``, and ``folder/jobs.json`` keeps each run's job id, so that a rerun of the driver follows the
    Slurm jobs still queued or running instead of submitting them again.
    """

    name = "submitit"

    def __init__(self, folder: str | Path, *, cluster: str | None = None, partition: str | None = None,
                 gpus: int = 0, nodes: int = 1, tasks: int | None = None, cpus: int | None = None, time: int = 60,
                 array_parallelism: int | None = None, slurm: dict[str, Any] | None = None) -> None:
        require("cluster", "--launcher submitit")
        import submitit

        self.folder, self.tasks = Path(folder).resolve(), tasks or max(gpus, 1)
        self.executor = submitit.AutoExecutor(self.folder / "%j", cluster=cluster)
        try:
            self.executor.update_parameters(
                name="encouraging", nodes=nodes, tasks_per_node=self.tasks, gpus_per_node=gpus or None,
                cpus_per_task=cpus, timeout_min=time, slurm_partition=partition,
                slurm_array_parallelism=array_parallelism, **{f"slurm_{k}": v for k, v in (slurm or {}).items()})
        except NameError as error:  # submitit's message for an unknown option, then a list of the known ones
            raise ValueError(f"submitit: {str(error).splitlines()[0]}") from None

    def describe(self) -> str:
        return f"submitit ({self.executor.cluster}), job logs in {self.folder}"

    def submit(self, configs: list[Config], out_dir: Path) -> list[Any]:
        job = SubmititJob()
        with self.executor.batch():
            jobs = [self.executor.submit(job, cfg, str(out_dir)) for cfg in configs]
        index = self._index()
        index.update({run_id_for(cfg): j.job_id for cfg, j in zip(configs, jobs, strict=True)})
        tmp = self.folder / "jobs.json.tmp"
        tmp.write_text(json.dumps(index, indent=1, sort_keys=True))
        tmp.replace(self.folder / "jobs.json")
        return jobs

    def _index(self) -> dict[str, str]:
        path = self.folder / "jobs.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def done(self, job: Any) -> bool:
        return job.done()

    def result(self, job: Any) -> dict[str, Any]:
        return job.results()[0]  # rank 0's

    def job_id(self, job: Any) -> str:
        return job.job_id

    def log(self, job: Any) -> str:
        return str(job.paths.stdout)

    def attach(self, run_id: str) -> Any | None:
        job_id = self._index().get(run_id)
        if job_id is None or self.executor.cluster != "slurm":  # a local job cannot be followed by another process
            return None
        import submitit

        job = submitit.SlurmJob(self.folder / "%j", job_id, tasks=tuple(range(self.tasks)))
        return None if job.done(force_check=True) else job


def _ray_job(cfg: Config, out_dir: str) -> dict[str, Any] | None:
    """:func:`train_job` with its output appended to ``job.log`` in the run directory."""
    log = run_dir_for(cfg, out_dir) / "job.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        return train_job(cfg, out_dir)


class RayLauncher(Launcher):
    """Jobs as Ray tasks with ``cpus`` and ``gpus`` per run, on the cluster at ``address`` (``"auto"``: the one this
    machine belongs to) or on a Ray instance started here (or the one this process already started).

    One process per run (a run on several GPUs needs :class:`SubmititLauncher`), with the driver's
    ``$ENCOURAGING_DATA``; its output goes to ``job.log`` in its run directory. Ray ends a driver's tasks with the
    driver: a rerun submits the unfinished runs again, and they resume from their checkpoints. Ray starts on the
    first submission, after the grid's configs were checked.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, cpus: float = 1, gpus: float = 0) -> None:
        require("cluster", "--launcher ray")
        self.address, self.cpus, self.gpus = address, cpus, gpus
        self._task: Any = None
        self._logs: dict[Any, str] = {}

    def describe(self) -> str:
        return f"ray ({self.address or 'a local instance'}), job logs in each run directory (job.log)"

    def submit(self, configs: list[Config], out_dir: Path) -> list[Any]:
        import ray

        if self._task is None:
            if not ray.is_initialized():
                ray.init(address=self.address, log_to_driver=False,
                         **({} if self.address else {"include_dashboard": False}))
            env = {k: os.environ[k] for k in ("ENCOURAGING_DATA",) if k in os.environ}
            self._task = ray.remote(_ray_job).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0,
                                                      runtime_env={"env_vars": env} if env else None)
        refs = [self._task.remote(cfg, str(out_dir)) for cfg in configs]
        for ref, cfg in zip(refs, configs, strict=True):
            self._logs[ref] = str(run_dir_for(cfg, out_dir) / "job.log")
        return refs

    def done(self, job: Any) -> bool:
        import ray

        return bool(ray.wait([job], timeout=0)[0])

    def result(self, job: Any) -> dict[str, Any]:
        import ray

        return ray.get(job)

    def job_id(self, job: Any) -> str:
        return job.task_id().hex()[:12]

    def log(self, job: Any) -> str:
        return self._logs[job]


ACTIVE = ("queued", "running")


@dataclass
class _Run:
    cfg: Config
    run_dir: Path
    needs: list[str]  # the run ids it builds on
    state: str = "waiting"  # waiting (to be submitted), queued, running, finished, failed
    job: Any = None
    note: str = ""  # the job, the host it runs on, or why it failed

    @property
    def label(self) -> str:
        return f"{self.cfg.name} / {loss_label(self.cfg.loss)} / seed {self.cfg.train.seed}"

    def epochs(self) -> int:
        try:
            return (self.run_dir / "metrics.jsonl").read_text().count("\n")
        except OSError:
            return 0


def launch_grid(cfg: Config, losses: list[str], seeds: list[int], launcher: Launcher, *,
                out_dir: str | Path = "runs", db: str | Path = "results.db", poll: float = 2.0,
                quiet: bool = False) -> dict[str, str]:
    """Run every (loss, seed) of a recipe (as :func:`~encouraging.experiment.runner.grid` would) as jobs of
    ``launcher``; return the runs that failed, by label, with their errors.

    ``out_dir`` must be reachable from every job (shared storage); ``db`` is written by this process alone. Runs
    finished in ``db`` are skipped, those a job finished since (``record.json``) are imported, jobs still queued or
    running are followed (:meth:`Launcher.attach`) and the rest are submitted, each once the runs it builds on have
    finished; every job's record is imported as it ends, and a failed job is stored as a failed run with its error.
    Progress is shown live (``quiet``: not at all).
    """
    out = Path(out_dir).resolve()
    runs = {run_id_for(c): _Run(c, run_dir_for(c, out), [run_id_for(up) for up in upstream(c).values()])
            for c in grid_configs(cfg, losses, seeds)}
    store = ResultsStore(db)
    for run_id, one in runs.items():
        if store.is_finished(config_hash(one.cfg), one.cfg.train.seed):
            one.state = "finished"
        elif (one.run_dir / RECORD).is_file():
            import_record(store, read_record(one.run_dir / RECORD))
            one.state, one.note = "finished", "recorded by a job since the last driver"
        elif (job := launcher.attach(run_id)) is not None:
            one.job, one.state, one.note = job, "queued", f"job {launcher.job_id(job)}, submitted earlier"
    with _Progress(runs, launcher, quiet) as progress:
        try:
            while True:
                _submit_ready(runs, launcher, store, out)
                for one in runs.values():
                    if one.state in ACTIVE:
                        _poll(one, launcher, store)
                progress.update()
                if not any(one.state in ("waiting", *ACTIVE) for one in runs.values()):
                    break
                time.sleep(poll)
        except KeyboardInterrupt:
            progress.say("driver stopped; run the same command again to import what its jobs finish and to submit "
                         "what is missing")
            raise
    return {one.label: one.note for one in runs.values() if one.state == "failed"}


def _submit_ready(runs: dict[str, _Run], launcher: Launcher, store: ResultsStore, out: Path) -> None:
    """Submit the waiting runs whose upstream runs have finished; fail those whose upstream failed."""
    ready = []
    for one in runs.values():
        if one.state != "waiting":
            continue
        failed = [runs[up].label for up in one.needs if runs[up].state == "failed"]
        if failed:
            one.state, one.note = "failed", f"it builds on {', '.join(failed)}, which failed"
        elif all(runs[up].state == "finished" for up in one.needs):
            ready.append(one)
    for one in ready:
        for up in one.needs:  # a job reads the record of a run it builds on from that run's directory
            where = runs[up].run_dir / RECORD
            if not where.is_file():  # finished by a local grid, which writes no record
                write_record(_record(store, up, runs[up].run_dir), where)
        (one.run_dir / STARTED).unlink(missing_ok=True)  # the job writes it again when it starts
    if ready:
        for one, job in zip(ready, launcher.submit([one.cfg for one in ready], out), strict=True):
            one.job, one.state, one.note = job, "queued", f"job {launcher.job_id(job)}"


def _poll(one: _Run, launcher: Launcher, store: ResultsStore) -> None:
    """Update an active run from its job: import its record when it has finished; store the error when it failed."""
    if not launcher.done(one.job):
        started = one.run_dir / STARTED
        if started.is_file():
            with contextlib.suppress(OSError, ValueError):
                host = json.loads(started.read_text())["host"]
                one.state, one.note = "running", f"job {launcher.job_id(one.job)} on {host}"
        return
    try:
        record = launcher.result(one.job)
    except Exception as error:  # the job's own error, or the scheduler's word that it was killed
        text = f"{type(error).__name__}: {error}"
        one.state, one.note = "failed", f"{_reason(text)} (job {launcher.job_id(one.job)}, log {launcher.log(one.job)})"
        if store.claim(run_record(one.cfg, {}, one.run_dir, "")):  # reports list it; a rerun submits it again
            store.fail(run_id_for(one.cfg), text)
        return
    import_record(store, record)
    one.state, one.note = "finished", f"job {launcher.job_id(one.job)}"


def _reason(text: str) -> str:
    """The line of an error text that names the exception (the last one), or its first line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"^[\w.]*(Error|Exception|Interrupt|Exit)\b", line)]
    return (named or lines or [text])[-1 if named else 0]


class _Progress:
    """The grid's progress: a live table in a terminal, one line per change of a run's state otherwise."""

    def __init__(self, runs: dict[str, _Run], launcher: Launcher, quiet: bool) -> None:
        from rich.console import Console

        self.runs, self.quiet = runs, quiet
        self.console = Console(highlight=False)
        self.shown = {run_id: one.state for run_id, one in runs.items() if not one.note}  # finished earlier
        self.live: Any = None
        self.say(f"{len(runs)} runs with {launcher.describe()}: {self.counts()}")

    def say(self, line: str) -> None:
        if self.live is not None:
            self.live.console.print(line)
        elif not self.quiet:
            print(line, flush=True)

    def __enter__(self) -> _Progress:
        if self.console.is_terminal and not self.quiet:
            from rich.live import Live

            self.live = Live(self._table(), console=self.console, auto_refresh=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.update(self._table(), refresh=True)
            self.live.__exit__(*exc)

    def counts(self) -> str:
        states = [one.state for one in self.runs.values()]
        return ", ".join(f"{states.count(s)} {s}" for s in ("waiting", *ACTIVE, "finished", "failed") if s in states)

    def _table(self) -> Any:
        from rich.table import Table

        table = Table(title=self.counts(), title_justify="left")
        for column in ("run", "state", "epochs", "job"):
            table.add_column(column, no_wrap=column != "job")
        for one in self.runs.values():
            epochs = f"{one.epochs()}/{one.cfg.train.epochs}" if one.state == "running" else ""
            table.add_row(one.label, one.state, epochs, one.note)
        return table

    def update(self) -> None:
        if self.live is not None:
            self.live.update(self._table(), refresh=True)
            return
        for run_id, one in self.runs.items():
            if self.shown.get(run_id) != one.state:
                self.shown[run_id] = one.state
                self.say(f"{one.state:<8} {one.label}{f'  ({one.note})' if one.note else ''}  [{self.counts()}]")
