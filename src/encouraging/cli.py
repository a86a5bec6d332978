"""The ``encouraging`` command: parses arguments and calls the library (which never imports this module).

    encouraging train CONFIG [--section.key=value ...]       one run
    encouraging compare CONFIG [--seeds N] [--losses ...]    every loss x seed of one recipe, then the table
        [--launcher submitit|ray ...]                        the same, one scheduler job per run
    encouraging report [DB|RECORDS] --out DIR                markdown + PNG report of a database or records
    encouraging export [DB] --out DIR                        one JSON record per finished run (to commit)
    encouraging docs [FILE ...] [--check]                    regenerate the docs' results tables from records
    encouraging analyze RUN... --out DIR                     margins, energies, gradients, probes of trained runs
    encouraging eval ood RUN... --ood DATASET[,...]          OOD detection (MSP, max logit, energy, ODIN, Mahalanobis)
    encouraging eval attack RUN... --attack pgd --eps ...    robust accuracy vs epsilon (torchattacks)
    encouraging translate RUN --input FILE [--beam 5]        decode new text with a trained translation run
    encouraging list {tasks,datasets,models,losses}          what the registries hold
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

DEFAULT_OUT = "runs"
#: each launcher of `compare --launcher` and the options it takes
LAUNCHER_OPTIONS = {
    "local": (),
    "submitit": ("gpus", "cpus", "partition", "nodes", "time", "array_parallelism", "slurm", "submitit_folder"),
    "ray": ("gpus", "cpus", "ray_address"),
}


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (``encouraging train: error: ...``), exit status 2, and no
    abbreviated flags (``--htm`` is a typo, not ``--html``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class UsageError(Exception):
    """A mistake in what the user asked for (flag, file, name, value): one line on stderr, exit status 2."""


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="encouraging", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    def run_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("config", help="YAML recipe (see configs/)")
        p.add_argument("--out", default=DEFAULT_OUT, help="folder for run directories (default: runs)")
        p.add_argument("--db", default=None, help="results database (default: <out>/results.db)")
        p.add_argument("--data-root", default=None, help="data root (default: $ENCOURAGING_DATA, then the cache)")
        p.add_argument("--offline", action="store_true", help="never download: a dataset missing from every data "
                       "root is an error (by default torchvision fetches it into the cache once)")
        p.add_argument("--quiet", action="store_true", help="no progress output")

    train = sub.add_parser("train", help="train one run", epilog="Any --section.key=value overrides the config.")
    run_options(train)
    train.add_argument("--seed", type=int, default=None, help="override train.seed")
    train.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")

    compare = sub.add_parser("compare", help="run every loss x seed of a recipe and print the table",
                             epilog="Any --section.key=value overrides the config.")
    run_options(compare)
    compare.add_argument("--seeds", type=int, default=3, help="number of seeds, 0..N-1 (default 3)")
    compare.add_argument("--losses", default="ce,el", help="comma-separated loss specs, e.g. "
                         "'ce,ce_ls,poly1,el,el(log_end=1.0)' (see `encouraging list losses`)")
    compare.add_argument("--report", default=None, help="also write the report to this folder")
    compare.add_argument("--analyze", action="store_true", help="also run `analyze` on every finished run "
                         "(into <report or out>/analysis; the report then has an analyses section)")
    compare.add_argument("--launcher", choices=LAUNCHER_OPTIONS, default="local", help="where the runs train: "
                         "one after another in this process (local, default), or one job each through submitit "
                         "(Slurm) or Ray, with --out on storage the jobs share (docs/experiments.md)")
    jobs = compare.add_argument_group("launcher options (submitit, ray)")
    jobs.add_argument("--gpus", type=int, default=None, help="GPUs per run (submitit: per node, one DDP process "
                      "each; ray: 0 or 1)")
    jobs.add_argument("--cpus", type=int, default=None, help="CPU cores per process (ray: default 1)")
    jobs.add_argument("--partition", default=None, help="Slurm partition (submitit)")
    jobs.add_argument("--nodes", type=int, default=None, help="nodes per run (submitit, default 1)")
    jobs.add_argument("--time", type=int, default=None, help="time limit of each job in minutes (submitit, default "
                      "60); a job that reaches it is requeued and resumes from its checkpoint")
    jobs.add_argument("--array-parallelism", type=int, default=None, help="most jobs running at once (submitit on "
                      "Slurm)")
    jobs.add_argument("--slurm", action="append", default=None, metavar="KEY=VALUE", help="another option of "
                      "submitit's Slurm executor, e.g. account=proj, qos=high, constraint=a100 (repeatable)")
    jobs.add_argument("--submitit-folder", default=None, help="job scripts and logs (default: <out>/submitit)")
    jobs.add_argument("--ray-address", default=None, help="the Ray cluster to join ('auto': the one this machine "
                      "belongs to; default: start Ray here)")

    analyze = sub.add_parser("analyze", help="margins, energies, gradients, probes and per-class accuracy of "
                             "trained runs")
    analyze.add_argument("runs", nargs="+", help="run directories or checkpoint.pt files, or a results database "
                         "(every finished run in it)")
    analyze.add_argument("--out", required=True, help="output folder (analysis.md and PNG figures)")
    analyze.add_argument("--db", default=None, help="store the rows here (default: the runs' own database)")
    analyze.add_argument("--recipe", default=None, help="with a database: only this recipe's runs")
    analyze.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    analyze.add_argument("--data-root", default=None, help="data root (default: the run's, $ENCOURAGING_DATA)")
    analyze.add_argument("--kinds", default="margins,energy,gradient,probe,per_class",
                         help="analyses to run (default: all; per_class alone is one pass over the test set)")
    analyze.add_argument("--max-examples", type=int, default=None, help="first N examples of each split")
    analyze.add_argument("--grad-examples", type=int, default=512,
                         help="training examples that get per-example parameter gradients (default 512)")
    analyze.add_argument("--html", action="store_true", help="also write analysis.html")
    analyze.add_argument("--quiet", action="store_true")

    evaluate = sub.add_parser("eval", help="evaluate trained runs: OOD detection or adversarial attacks")
    kinds = evaluate.add_subparsers(dest="kind", required=True)
    ood = kinds.add_parser("ood", help="OOD detection: the run's test set against OOD test sets")
    attack = kinds.add_parser("attack", help="robust accuracy vs epsilon under torchattacks attacks")
    for p in (ood, attack):
        p.add_argument("runs", nargs="+", help="run directories or checkpoint.pt files, or a results database "
                       "(every finished run in it)")
        p.add_argument("--recipe", default=None, help="with a database: only this recipe's runs")
        p.add_argument("--db", default=None, help="store the rows here (default: the runs' own database)")
        p.add_argument("--out", default=None, help="folder for the rows (JSON) and figures (default: eval-<kind>)")
        p.add_argument("--limit", type=int, default=0, help="first N test images (default 0: all)")
        p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
        p.add_argument("--data-root", default=None, help="data root (default: the run's, $ENCOURAGING_DATA)")
        p.add_argument("--quiet", action="store_true")
    ood.add_argument("--ood", required=True, help="OOD datasets: registry names or directories, comma-separated")
    ood.add_argument("--detectors", default="msp,max_logit,energy,odin,mahalanobis", help="comma-separated")
    ood.add_argument("--positive", choices=("in", "ood"), default="in",
                     help="positive class of FPR@95TPR: in (the paper's, default) or ood (pytorch-ood/OpenOOD)")
    attack.add_argument("--attack", default="pgd", help="fgsm, pgd, pgd_l2, cw, square, autoattack; comma-separated")
    attack.add_argument("--eps", default="0,0.1,0.2,0.3", help="budgets in [0, 1] pixel units (cw: c)")
    attack.add_argument("--norm", choices=("linf", "l2"), default="linf", help="threat model of square/autoattack")
    attack.add_argument("--steps", type=int, default=0, help="attack steps (0: the paper's: PGD 40, CW 50, "
                        "Square 5000 queries)")
    attack.add_argument("--alpha", type=float, default=0.0, help="step size (0: PGD-Linf 2/255, PGD-L2 0.2)")

    translate = sub.add_parser("translate", help="decode new text with a trained translation run")
    translate.add_argument("run", help="a translation run's directory")
    translate.add_argument("--input", required=True, help="source sentences, one per line (plain or .gz)")
    translate.add_argument("--output", default=None, help="write the translations here (default: stdout)")
    translate.add_argument("--beam", type=int, default=None, help="beam size (default: the run's data.beam)")
    translate.add_argument("--weights", choices=("last", "averaged"), default="last",
                           help="the last epoch's weights, or the mean of the last epochs' (train.average_last)")
    translate.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")

    report = sub.add_parser("report", help="write the markdown + PNG report of a results database or of records")
    report.add_argument("db", nargs="?", default=f"{DEFAULT_OUT}/results.db",
                        help="a results database, or a folder (or .json file) of exported records")
    report.add_argument("--out", required=True, help="output folder")
    report.add_argument("--html", action="store_true", help="also write report.html")

    export = sub.add_parser("export", help="write one JSON record per finished run of a results database")
    export.add_argument("db", nargs="?", default=f"{DEFAULT_OUT}/results.db")
    export.add_argument("--out", required=True, help="folder for the records (one <run_id>.json per run)")
    export.add_argument("--recipe", default=None, help="only the runs of this recipe (its config name)")

    docs = sub.add_parser("docs", help="regenerate the results tables of the docs from the committed records")
    docs.add_argument("files", nargs="*", help="markdown files (default: README.md and docs/*.md)")
    docs.add_argument("--check", action="store_true", help="write nothing; exit 1 when a table is out of date")

    listing = sub.add_parser("list", help="list tasks, datasets, models or losses")
    listing.add_argument("what", choices=("tasks", "datasets", "models", "losses", "bonuses"))
    return parser


def _load(args: argparse.Namespace, overrides: list[str]):
    from .engine.config import load_config

    bad = [o for o in overrides if not (o.startswith("--") and "=" in o)]
    if bad:
        raise UsageError(f"unrecognized arguments {bad}; overrides look like --section.key=value")
    extra = [f"--data.root={args.data_root}"] if args.data_root else []
    extra += ["--data.download=false"] if args.offline else []
    return load_config(args.config, overrides + extra)


def _print_table(db: Path, recipe: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    from .results import group_tables

    # a terminal's own width; a log file or pipe gets lines long enough that no cell wraps
    console = Console() if sys.stdout.isatty() else Console(width=200)
    for group in group_tables(db):
        if recipe is not None and group["recipe"] != recipe:
            continue
        table = Table(title=group["title"], caption=group.get("caption"))
        for column in group["columns"]:
            table.add_column(column, no_wrap=column != "loss")
        for row in group["rows"]:
            table.add_row(*(str(row.get(c, "")) for c in group["columns"]))
        console.print(table)
        for line in [*group["comparisons"], *group["notes"]]:
            console.print(f"  {line}", highlight=False)


def main(argv: list[str] | None = None) -> int:
    """Run the command; a user's mistake ends with one line on stderr and exit status 2 (``--debug``: traceback)."""
    parser = _parser()
    args, overrides = parser.parse_known_args(argv)
    if overrides and args.command not in ("train", "compare"):  # only those take --section.key=value overrides
        parser.error(f"unrecognized arguments: {' '.join(overrides)}")
    from .extras import MissingExtraError

    errors: tuple[type[BaseException], ...] = (MissingExtraError,)
    try:
        errors += _user_errors()  # imports the engine, which needs the 'experiments' extra
        return _main(args, overrides)
    except MissingExtraError as error:
        return _fail(args, error)
    except Exception as error:
        if not isinstance(error, errors):
            raise
        return _fail(args, error)


def _fail(args: argparse.Namespace, error: BaseException) -> int:
    """A user's mistake: one line on stderr and exit status 2 (``--debug``: the traceback)."""
    if args.debug:
        raise error
    command = " ".join(filter(None, ["encouraging", args.command, getattr(args, "kind", None)]))
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"{command}: error: {message}", file=sys.stderr)
    return 2


def _user_errors() -> tuple[type[BaseException], ...]:
    import sqlite3

    from .engine.checkpoint import CheckpointError

    # configs and values (ValueError, TypeError for a field of the wrong type), missing files, a corrupt or foreign
    # database, a checkpoint that is not the run's; anything else is a bug and keeps its traceback
    return (UsageError, ValueError, TypeError, FileNotFoundError, NotADirectoryError, PermissionError,
            sqlite3.DatabaseError, CheckpointError)


def _main(args: argparse.Namespace, overrides: list[str]) -> int:
    from . import load_plugins

    load_plugins()
    if args.command == "list":
        return _list(args.what)
    if args.command == "analyze":
        return _analyze(args)
    if args.command == "eval":
        return _eval(args)
    if args.command == "translate":
        from .experiment.translate import translate_file

        if args.beam is not None and args.beam < 1:
            raise ValueError(f"--beam must be >= 1, got {args.beam}")
        translate_file(args.run, args.input, args.output, beam=args.beam, weights=args.weights, device=args.device)
        return 0
    if args.command == "export":
        from .results import export_records

        _upgrade(args.db)
        paths = export_records(args.db, args.out, recipe=args.recipe)
        print(f"exported {len(paths)} finished run(s) to {args.out}")
        return 0
    if args.command == "docs":
        from .results.docs import update_docs

        files = args.files or ["README.md", *sorted(str(p) for p in Path("docs").glob("*.md"))]
        stale = update_docs(files, check=args.check)
        for line in stale:
            print(("stale: " if args.check else "updated: ") + line)
        return 1 if stale and args.check else 0
    if args.command == "report":
        from .results import write_report

        _upgrade(args.db)
        path = write_report(args.db, args.out, html=args.html)
        print(f"report: {path}")
        return 0

    from .experiment import grid, run

    cfg = _load(args, overrides)
    db = Path(args.db) if args.db else Path(args.out) / "results.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    if args.command == "train":
        if args.seed is not None:
            cfg.train.seed = args.seed
        final = run(cfg, out_dir=args.out, db=db, resume=args.resume, quiet=args.quiet)
        if final is not None:
            print({k: round(v, 6) if isinstance(v, float) else v for k, v in final.items()})
        return 0

    from .engine.criteria import split_loss_specs

    losses, seeds, failed = split_loss_specs(args.losses), list(range(args.seeds)), {}
    launcher = _launcher(args)
    if launcher is None:
        grid(cfg, losses, seeds, out_dir=args.out, db=db, resume=True, quiet=args.quiet)
    else:
        from .experiment.launch import launch_grid

        failed = launch_grid(cfg, losses, seeds, launcher, out_dir=args.out, db=db, quiet=args.quiet)
    _upgrade(db)
    _print_table(db, cfg.name)
    for label, error in failed.items():
        print(f"failed: {label}: {error}", file=sys.stderr)
    if args.analyze:
        from .analysis import analyze
        from .results import ResultsStore

        runs = [r["run_dir"] for r in ResultsStore(db).runs(recipe=cfg.name, status="finished")]
        path = analyze(runs, Path(args.report or args.out) / "analysis", db=db, quiet=args.quiet)
        print(f"analyses: {path}")
    if args.report:
        from .results import write_report

        print(f"report: {write_report(db, args.report)}")
    if failed:
        print(f"{len(failed)} run(s) failed; the same command submits them again (they resume from their "
              "checkpoints)", file=sys.stderr)
    return 1 if failed else 0


def _launcher(args: argparse.Namespace):
    """The launcher that ``compare --launcher`` names, its options checked; None for the local grid."""
    stray = sorted({"--" + name.replace("_", "-") for names in LAUNCHER_OPTIONS.values() for name in names
                    if getattr(args, name) is not None and name not in LAUNCHER_OPTIONS[args.launcher]})
    if stray:
        raise UsageError(f"{', '.join(stray)} do{'es' if len(stray) == 1 else ''} not apply to --launcher "
                         f"{args.launcher}" + (" (choose submitit or ray)" if args.launcher == "local" else ""))
    # the options given, by the launcher's parameter names
    given = {name: getattr(args, name) for name in LAUNCHER_OPTIONS[args.launcher] if getattr(args, name) is not None}
    for name, least in (("gpus", 0), ("cpus", 1), ("nodes", 1), ("time", 1), ("array_parallelism", 1)):
        if given.get(name, least) < least:
            raise UsageError(f"--{name.replace('_', '-')} must be >= {least}, got {given[name]}")
    if args.launcher == "ray":
        if given.get("gpus", 0) > 1:
            raise UsageError(f"--launcher ray runs one process per run, so --gpus must be 0 or 1, got {args.gpus} "
                             "(a run on several GPUs needs --launcher submitit)")
        from .experiment.launch import RayLauncher

        return RayLauncher(given.pop("ray_address", None), **given)
    if args.launcher == "submitit":
        bad = [item for item in given.get("slurm", []) if not re.fullmatch(r"\w+=.+", item)]
        if bad:
            raise UsageError(f"--slurm takes KEY=VALUE (e.g. account=proj), got {bad[0]!r}")
        from .experiment.launch import SubmititLauncher

        given["slurm"] = dict(item.split("=", 1) for item in given.get("slurm", []))
        return SubmititLauncher(given.pop("submitit_folder", Path(args.out) / "submitit"), **given)
    return None


def _upgrade(db: str | Path) -> None:
    """Bring a database written by an earlier version up to date, once, saying so."""
    if not Path(db).is_file() or Path(db).suffix == ".json":
        return  # report says that it is missing, compare creates it; records are always current
    from .experiment.upgrade import upgrade
    from .results import ResultsStore

    changed = upgrade(ResultsStore(db))
    if changed:
        print(f"{db}: re-recorded the loss parameters of {changed} run(s) stored before the loss registry "
              "(a one-time upgrade)", file=sys.stderr)


def _analyze(args: argparse.Namespace) -> int:
    from .analysis import AnalysisConfig, analyze
    from .experiment.evaluate import resolve_runs

    runs, db = resolve_runs(args.runs, args.recipe)
    config = AnalysisConfig(kinds=tuple(k.strip() for k in args.kinds.split(",") if k.strip()),
                            max_examples=args.max_examples, grad_examples=args.grad_examples)
    path = analyze(runs, args.out, db=args.db or db, device=args.device, data_root=args.data_root, config=config,
                   html=args.html, quiet=args.quiet)
    print(f"analyses: {path}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .experiment.evaluate import eval_attacks, eval_ood

    common = dict(limit=args.limit, recipe=args.recipe, db=args.db, out=args.out or f"eval-{args.kind}",
                  device=args.device, data_root=args.data_root, quiet=args.quiet)
    split = [s.strip() for s in (args.ood if args.kind == "ood" else args.attack).split(",") if s.strip()]
    if args.kind == "ood":
        rows = eval_ood(args.runs, split, detectors=[d.strip() for d in args.detectors.split(",") if d.strip()],
                        positive=args.positive, **common)
    else:
        rows = eval_attacks(args.runs, split, _floats(args.eps, "--eps"), norm=args.norm, steps=args.steps,
                            alpha=args.alpha, **common)
    if args.kind == "ood":
        columns = ("loss_label", "seed", "ood_dataset", "detector", "auroc", "fpr95", "aupr_in", "aupr_out", "ece")
        print(f"positive class: {args.positive} ({'in-distribution' if args.positive == 'in' else 'OOD'}); "
              "values in %")
    else:
        columns = ("loss_label", "seed", "attack", "norm", "eps", "robust_acc", "max_linf", "max_l2")
        print("robust accuracy in %")
    for row in rows:
        print("  ".join(f"{row[c] * 100:6.2f}" if c in ("auroc", "fpr95", "aupr_in", "aupr_out", "ece",
                                                         "robust_acc") else str(row[c]) for c in columns))
    if args.kind == "attack":
        for run_id in dict.fromkeys(r["run_id"] for r in rows):
            first = next(r for r in rows if r["run_id"] == run_id)
            print(f"gradient-masking signs, {first['loss_label']} seed {first['seed']}: {first['masking']}")
    print(f"rows and figures: {args.out or f'eval-{args.kind}'}")
    return 0


def _floats(text: str, flag: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated numbers, e.g. 0,0.1,0.3; got {text!r}") from None


def _list(what: str) -> int:
    if what == "losses":
        from .engine.criteria import get_loss, list_losses

        rows = [(n, get_loss(n).description) for n in list_losses()]
    elif what == "bonuses":
        from .losses import get_bonus, list_bonuses

        rows = [(n, get_bonus(n).description) for n in list_bonuses()]
    elif what == "tasks":
        from .engine.task import get_task, list_tasks

        rows = [(n, get_task(n).description) for n in list_tasks()]
    elif what == "datasets":
        from .data import get_dataset_info, list_datasets

        rows = [(n, get_dataset_info(n).description) for n in list_datasets()]
    else:
        from .models import get_model_info, list_models

        rows = [(n, get_model_info(n).description) for n in list_models()]
    width = max(len(n) for n, _ in rows)
    for name, description in rows:
        print(f"{name:<{width}}  {description}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
