"""Launchers: a grid's runs as scheduler jobs whose records the driver imports; a killed job or driver loses nothing.

The fast tests drive the launch loop with an in-process launcher (and check the command's launcher options); the
slow ones run real schedulers on this machine (submitit's local executor: subprocesses, Slurm's code path but for
sbatch; a local Ray instance), kill a job after its first epoch and rerun the command, and compare the database with
a local grid of the same runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

import encouraging.engine.trainer as trainer_module
from encouraging.cli import main
from encouraging.engine.config import load_config
from encouraging.engine.criteria import loss_label
from encouraging.experiment import grid
from encouraging.experiment.launch import RECORD, STARTED, Launcher, launch_grid, train_job
from encouraging.experiment.provenance import run_dir_for, run_id_for
from encouraging.results import ResultsStore
from encouraging.results.store import _pid_alive

RECIPE = """name: launched
data: {{dataset: mnist, root: {root}, train_subset: {n}, test_subset: 200, batch_size: {batch}}}
model: {{name: mlp, kwargs: {{hidden: [32]}}}}
optim: {{name: adam, lr: 3.0e-3, schedule: constant}}
train: {{epochs: {epochs}, threads: 1}}
"""
LOSSES = ["el", "ce"]
TIMES = ("train_time", "epoch_time")  # the only values that differ between two runs of one (config, seed)
_SAVE = trainer_module.save_checkpoint
IDENTITY = ("run_id", "recipe", "task", "dataset", "model", "loss", "loss_label", "seed", "config_hash", "config",
            "loss_params", "test_note", "status")


def _recipe(tmp_path: Path, root: Path, n: int = 300, batch: int = 64, epochs: int = 2):
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(root=root, n=n, batch=batch, epochs=epochs))
    return path, load_config(path)


def _content(db: Path) -> dict[str, Any]:
    """What a database says about its runs, without the timings and where and when they ran (the config's notes
    name run directories)."""
    store = ResultsStore(db)
    return {run["run_id"]: ({**{k: run[k] for k in IDENTITY}, "config": {**run["config"], "notes": None}},
                            [{k: v for k, v in e.items() if k not in TIMES} for e in store.epochs(run["run_id"])],
                            {k: v for k, v in store.final(run["run_id"]).items() if k not in TIMES})
            for run in store.runs()}


def _assert_same_as_local_grid(cfg, tmp_path: Path, db: Path, runs: int = len(LOSSES)) -> None:
    grid(cfg, LOSSES, [0], out_dir=tmp_path / "local", db=tmp_path / "local.db", quiet=True)
    local, launched = _content(tmp_path / "local.db"), _content(db)
    assert launched == local and len(local) == runs


def _save_then_stop(state, path):
    """The trainer's checkpoint writer, stopping the run with an error once its first epoch is checkpointed."""
    _SAVE(state, path)
    raise RuntimeError("job killed after its first epoch")


def _name(cfg) -> str:
    return f"{cfg.name} / {loss_label(cfg.loss)}"


class InProcess(Launcher):
    """Runs each job in this process when the driver first polls it; ``submitted`` lists each batch's runs.
    ``stop``: runs whose job stops after its first epoch; ``die_after``: a run after whose job the driver dies
    (before importing its record)."""

    name = "in-process"

    def __init__(self, stop: tuple[str, ...] = (), die_after: str | None = None) -> None:
        self.stop, self.die_after, self.submitted = stop, die_after, []

    def submit(self, configs, out_dir):
        self.submitted.append([_name(c) for c in configs])
        return [{"cfg": c, "out": out_dir, "id": f"{len(self.submitted)}-{i}"} for i, c in enumerate(configs)]

    def done(self, job):
        if "ended" not in job:
            with pytest.MonkeyPatch.context() as mp:
                if _name(job["cfg"]) in self.stop:
                    mp.setattr(trainer_module, "save_checkpoint", _save_then_stop)
                try:
                    job["record"] = train_job(job["cfg"], job["out"])
                except RuntimeError as error:
                    job["error"] = error
            job["ended"] = True
        return True

    def result(self, job):
        if "error" in job:
            raise job["error"]
        if _name(job["cfg"]) == self.die_after:
            raise KeyboardInterrupt
        return job["record"]

    def job_id(self, job):
        return job["id"]

    def log(self, job):
        return "stdout"


def test_a_rerun_imports_what_finished_and_resumes_what_failed(tmp_path, data_root, capsys):
    _, cfg = _recipe(tmp_path, data_root)
    out, db = tmp_path / "runs", tmp_path / "driver" / "results.db"
    el, ce = (run_dir_for(c, out) for c in (_with_loss(cfg, "el"), _with_loss(cfg, "ce")))
    # the first driver: EL's job stops after its first epoch; CE's finishes, and the driver dies before importing it
    first = InProcess(stop=("launched / EL (LE=0.75)",), die_after="launched / CE")
    with pytest.raises(KeyboardInterrupt):
        launch_grid(cfg, LOSSES, [0], first, out_dir=out, db=db, poll=0, quiet=True)
    assert first.submitted == [["launched / EL (LE=0.75)", "launched / CE"]]
    store = ResultsStore(db)
    [failed] = store.runs()
    assert failed["status"] == "failed" and "killed after its first epoch" in failed["error"]
    assert (ce / RECORD).is_file() and not (el / RECORD).is_file() and (el / "checkpoint.pt").is_file()

    # the rerun imports CE's record without a job and resubmits EL, which resumes from its checkpoint
    second = InProcess()
    assert launch_grid(cfg, LOSSES, [0], second, out_dir=out, db=db, poll=0, quiet=True) == {}
    assert second.submitted == [["launched / EL (LE=0.75)"]]
    assert f"resumed {el} at epoch 1" in capsys.readouterr().out
    runs = {r["loss_label"]: r for r in store.runs()}
    assert {r["status"] for r in runs.values()} == {"finished"}
    assert runs["EL (LE=0.75)"]["attempts"] == 2 and runs["CE"]["attempts"] == 1
    assert runs["CE"]["run_dir"] == str(ce) and json.loads((el / RECORD).read_text())["run"]["run_dir"] == str(el)

    third = InProcess()  # nothing left to do
    assert launch_grid(cfg, LOSSES, [0], third, out_dir=out, db=db, poll=0, quiet=True) == {} and not third.submitted
    _assert_same_as_local_grid(cfg, tmp_path, db)


def _with_loss(cfg, spec: str):
    from encouraging.experiment.runner import grid_configs

    return grid_configs(cfg, [spec], [0])[0]


def test_a_run_is_submitted_once_the_runs_it_builds_on_have_finished(tmp_path, longtail_features):
    from encouraging.engine.config import Config, apply_overrides, save_config

    save_config(apply_overrides(Config(task="longtail"), longtail_features), tmp_path / "stage1.yaml")
    cfg = apply_overrides(Config(task="longtail"), [*longtail_features, "--name=crt2", "--train.epochs=1",
                                                     f"--model.stage1={tmp_path / 'stage1.yaml'}",
                                                     "--data.sampling=class_balanced"])
    out, db = tmp_path / "runs", tmp_path / "results.db"
    first = InProcess(stop=("crt / EL (LE=0.75)",))  # EL's stage 1 fails, so its stage 2 cannot start
    failed = launch_grid(cfg, LOSSES, [0], first, out_dir=out, db=db, poll=0, quiet=True)
    assert first.submitted == [["crt / EL (LE=0.75)", "crt / CE"], ["crt2 / CE"]]
    assert failed["crt2 / EL (LE=0.75) / seed 0"] == "it builds on crt / EL (LE=0.75) / seed 0, which failed"
    again = InProcess()
    assert launch_grid(cfg, LOSSES, [0], again, out_dir=out, db=db, poll=0, quiet=True) == {}
    assert again.submitted == [["crt / EL (LE=0.75)"], ["crt2 / EL (LE=0.75)"]]
    stage2 = {r["loss_label"]: r for r in ResultsStore(db).runs(recipe="crt2")}
    assert stage2["CE"]["config"]["notes"]["upstream"]["stage1"]["run_dir"] == str(run_dir_for(
        _with_loss(apply_overrides(Config(task="longtail"), longtail_features), "ce"), out))
    _assert_same_as_local_grid(cfg, tmp_path, db, runs=4)


@pytest.mark.parametrize(("flags", "message"), [
    (["--partition", "gpu"], "--partition does not apply to --launcher local (choose submitit or ray)"),
    (["--launcher", "ray", "--time", "30", "--nodes", "2"], "--nodes, --time do not apply to --launcher ray"),
    (["--launcher", "ray", "--gpus", "2"], "--launcher ray runs one process per run, so --gpus must be 0 or 1"),
    (["--launcher", "submitit", "--cpus", "0"], "--cpus must be >= 1, got 0"),
    (["--launcher", "submitit", "--slurm", "account"], "--slurm takes KEY=VALUE"),
    (["--launcher", "submitit", "--slurm", "acount=x"], "Unknown argument 'acount' for executor 'slurm'"),
    (["--launcher", "ray", "--losses", "ce,hinge"], "loss must be one of"),
])
def test_launcher_mistakes_fail_in_one_line_before_anything_runs(tmp_path, capsys, flags, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\n")
    assert main(["compare", str(recipe), "--out", str(tmp_path / "runs"), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs" / "results.db").exists()


class KillAfterFirstEpoch(Launcher):
    """Another launcher's jobs, with the job of the run in ``victim`` (a run directory) cancelled once its first
    epoch is logged."""

    def __init__(self, inner: Launcher, victim: Path, cancel) -> None:
        self.inner, self.victim, self.cancel, self.job, self.epochs_when_killed = inner, victim, cancel, None, None
        self.name = inner.name

    def submit(self, configs, out_dir):
        jobs = self.inner.submit(configs, out_dir)
        self.job = next((j for c, j in zip(configs, jobs, strict=True) if run_dir_for(c, out_dir) == self.victim),
                        self.job)
        return jobs

    def done(self, job):
        metrics = self.victim / "metrics.jsonl"
        if job is self.job and self.epochs_when_killed is None and metrics.is_file() and metrics.read_text():
            pid = json.loads((self.victim / STARTED).read_text())["pid"]
            self.cancel(job)
            self.epochs_when_killed = metrics.read_text().count("\n")
            deadline = time.monotonic() + 30  # until the process is gone: the rerun's job would stand down for it
            while time.monotonic() < deadline and _pid_alive(pid):
                time.sleep(0.05)
        return self.inner.done(job)

    def result(self, job):
        return self.inner.result(job)

    def job_id(self, job):
        return self.inner.job_id(job)

    def log(self, job):
        return self.inner.log(job)


def _kill_one_then_rerun(tmp_path: Path, root: Path, launcher: Launcher, cancel, flags: list[str]):
    """A grid whose EL job is killed after its first epoch, then the rerun: ``compare`` with the launcher ``flags``.
    Returns EL's run directory and run id."""
    recipe, cfg = _recipe(tmp_path, root, n=2000, batch=8, epochs=3)  # about 0.7 s per epoch
    out, db = tmp_path / "runs", tmp_path / "driver" / "results.db"
    victim = run_dir_for(_with_loss(cfg, "el"), out)
    killer = KillAfterFirstEpoch(launcher, victim, cancel)
    failed = launch_grid(cfg, LOSSES, [0], killer, out_dir=out, db=db, poll=0.1, quiet=True)
    assert list(failed) == ["launched / EL (LE=0.75) / seed 0"] and 1 <= killer.epochs_when_killed < 3
    assert [r["loss_label"] for r in ResultsStore(db).runs(status="finished")] == ["CE"]
    assert main(["compare", str(recipe), "--out", str(out), "--db", str(db), "--seeds", "1", "--losses",
                 ",".join(LOSSES), "--quiet", *flags]) == 0
    _assert_same_as_local_grid(cfg, tmp_path, db)
    assert ResultsStore(db).run(run_id_for(_with_loss(cfg, "el")))["attempts"] == 2
    return victim, run_id_for(_with_loss(cfg, "el"))


@pytest.mark.slow  # about 30 s: three subprocess jobs, and the local grid to compare with
@pytest.mark.timeout(240)
def test_submitit_local_jobs_killed_and_resumed_match_a_local_grid(tmp_path, data_root):
    pytest.importorskip("submitit")
    from encouraging.experiment.launch import SubmititLauncher

    folder = tmp_path / "submitit"

    def cancel(job):
        job._results_timeout_s = 0  # submitit waits 15 s for the result file (slow network file systems)
        job.cancel()

    victim, run_id = _kill_one_then_rerun(  # this machine has no sbatch: the rerun's submitit runs local jobs too
        tmp_path, data_root, SubmititLauncher(folder, cluster="local", time=5), cancel,
        ["--launcher", "submitit", "--submitit-folder", str(folder), "--time", "5"])
    resumed = json.loads((folder / "jobs.json").read_text())[run_id]  # the rerun's job
    assert f"resumed {victim} at epoch" in (folder / resumed / f"{resumed}_0_log.out").read_text()


@pytest.mark.slow  # about 30 s: Ray's start, three tasks, and the local grid to compare with
@pytest.mark.timeout(300)
def test_ray_tasks_killed_and_resumed_match_a_local_grid(tmp_path, data_root):
    ray = pytest.importorskip("ray")
    from encouraging.experiment.launch import RayLauncher

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # the rerun's compare joins this instance
    try:
        victim, _ = _kill_one_then_rerun(tmp_path, data_root, RayLauncher(), lambda ref: ray.cancel(ref, force=True),
                                         ["--launcher", "ray"])
    finally:
        ray.shutdown()
    assert f"resumed {victim} at epoch" in (victim / "job.log").read_text()


@pytest.mark.slow  # about 15 s: one run as a job of two processes (gloo on CPU)
@pytest.mark.timeout(240)
def test_a_submitit_job_of_several_tasks_trains_one_ddp_run(tmp_path, data_root, monkeypatch):
    pytest.importorskip("submitit")
    from encouraging.experiment.launch import SubmititLauncher

    _, cfg = _recipe(tmp_path, data_root, n=512, batch=32)
    launcher = SubmititLauncher(tmp_path / "submitit", cluster="local", tasks=2, time=5)
    monkeypatch.chdir(tmp_path)  # a relative --out: the jobs get it resolved
    assert launch_grid(cfg, ["ce"], [0], launcher, out_dir="runs", db="results.db", poll=0.2, quiet=True) == {}
    [run] = ResultsStore(tmp_path / "results.db").runs(status="finished")
    assert run["hardware"].endswith("world 2")
    assert run["run_dir"] == str(run_dir_for(_with_loss(cfg, "ce"), tmp_path.resolve() / "runs"))
