"""Print the long-tailed results of a results database as markdown: each method beside the same method with the
bonus, as the paper's Table 3 pairs them, for overall / many / medium / few-shot accuracy at the last epoch.

    python examples/longtail_table.py runs/lt-fmnist/results.db --recipe quick-fashion-mnist-lt \
        "CE :: EL (LE=0.5)" "CE :: EL (LE=0.75)" ...

Each pair is ``BASE :: WITH_BONUS`` (two loss labels of the database); a row gets mean ± std over seeds and the
paired difference with its 95% t-interval (``encouraging.results.stats.compare``). Diverged runs are left out
and counted.
"""

from __future__ import annotations

import argparse

from encouraging.results import ResultsStore
from encouraging.results.stats import compare, mean_std_text

COLUMNS = ("acc", "many_acc", "medium_acc", "few_acc")


def per_seed(store: ResultsStore, recipe: str, label: str) -> dict[str, dict[int, float]]:
    """column -> seed -> last-epoch test value, over the finished runs of one recipe and loss label."""
    runs = store.runs(recipe=recipe, loss_label=label, status="finished")
    if not runs:
        raise SystemExit(f"no finished runs of recipe {recipe!r} labelled {label!r} in {store.path}")
    finals = store.final_many([r["run_id"] for r in runs])
    trained = [r for r in runs if "diverged_epoch" not in finals[r["run_id"]]]
    values = {c: {r["seed"]: finals[r["run_id"]][f"final_test_{c}"] for r in trained} for c in COLUMNS}
    values["diverged"] = {r["seed"]: 1.0 for r in runs if r not in trained}
    return values


def main(db: str, recipe: str, pairs: list[str]) -> None:
    store = ResultsStore(db)
    print("| method | seeds | overall | many | medium | few |")
    print("|---|---|---|---|---|---|")
    for pair in pairs:
        base, bonus = (p.strip() for p in pair.split("::", 1))
        a, b = per_seed(store, recipe, base), per_seed(store, recipe, bonus)
        for label, v in ((base, a), (bonus, b)):
            n = f"{len(v['acc'])}" + (f" (+{len(v['diverged'])} diverged)" if v["diverged"] else "")
            print(f"| {label} | {n} | " + " | ".join(mean_std_text(v[c].values(), 100) for c in COLUMNS) + " |")
        print("| difference | | " + " | ".join(compare(a[c], b[c]).format(100) for c in COLUMNS) + " |")
    notes = store.runs(recipe=recipe)[0]["config"]["notes"]  # the same subset and groups for every run of a recipe
    print(f"\n{notes.get('long_tail', '')}; {notes.get('groups', '')}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("db", help="a results database")
    parser.add_argument("--recipe", required=True, help="the recipe (config name) whose runs are compared")
    parser.add_argument("pairs", nargs="+", help="'BASE :: WITH_BONUS' loss labels")
    args = parser.parse_args()
    main(args.db, args.recipe, args.pairs)
