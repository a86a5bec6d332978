"""The task-agnostic engine: the task interface (:mod:`.task`), the training loop (:mod:`.trainer`), configs
(:mod:`.config`), the loss registry (:mod:`.criteria`), batch sources, optimizers, checkpoints, DDP and runtime
helpers. It imports no task, no evaluation and no results code."""

from ..extras import require

require("experiments", "encouraging's experiment layer (the engine, tasks, evaluations and the encouraging command)")
