"""One-time upgrades of results databases written by earlier versions, run when the CLI opens one.

Before the loss registry, a run recorded every :class:`~encouraging.engine.config.LossConfig` field as its loss
parameters, used or not, and reports guessed which mattered. Now a run records :func:`~encouraging.engine.criteria.
loss_params` (the preset's shown fields and those switched on) and reports display exactly that, so older runs are
re-recorded once from the config they stored. Recipe hashes were not changed (see ``engine.config.HASH_V1_KEYS``),
so nothing else needs rewriting.
"""

from __future__ import annotations

import dataclasses

from ..engine.config import LossConfig
from ..engine.criteria import list_losses, loss_params
from ..results import ResultsStore

LOSS_PARAMS_KEY, LOSS_PARAMS_VERSION = "loss_params", "registry-1"


def upgrade(store: ResultsStore) -> int:
    """Re-record the loss parameters of runs stored before the loss registry; returns how many changed."""
    if store.meta(LOSS_PARAMS_KEY) == LOSS_PARAMS_VERSION:
        return 0
    names = {f.name for f in dataclasses.fields(LossConfig)}
    changed = 0
    for run in store.runs():
        loss = (run.get("config") or {}).get("loss")
        if not isinstance(loss, dict) or loss.get("name") not in list_losses():
            continue  # not a run of this package's engine: its parameters are what its writer recorded
        params = loss_params(LossConfig(**{k: v for k, v in loss.items() if k in names}))
        if params != run["loss_params"]:
            store.set_loss_params(run["run_id"], params)
            changed += 1
    store.set_meta(LOSS_PARAMS_KEY, LOSS_PARAMS_VERSION)
    return changed
