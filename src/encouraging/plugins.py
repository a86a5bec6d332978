"""Where tasks, report sections and evaluations come from: one :func:`load_plugins` call registers them all.

Built-in plugins are the modules in :data:`BUILTIN`; each registers what it defines when imported (a task class
with ``@register_task``, a report section with ``register_section``). Other packages add theirs through the
``encouraging.plugins`` entry-point group, whose entries name a module to import::

    [project.entry-points."encouraging.plugins"]
    my_task = "my_package.my_task"
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

BUILTIN = (
    "encouraging.tasks.image",
    "encouraging.tasks.longtail",
    "encouraging.tasks.graph",
    "encouraging.tasks.translation",
    "encouraging.evaluation.ood",  # report section: OOD detection
    "encouraging.evaluation.attacks",  # report section: robust accuracy
    "encouraging.analysis.render",  # report section: margins, energies, gradients, probes
)
ENTRY_POINT_GROUP = "encouraging.plugins"

_loaded = False


def load_plugins() -> None:
    """Import every built-in plugin module and every ``encouraging.plugins`` entry point (once per process)."""
    global _loaded
    if _loaded:
        return
    for module in BUILTIN:
        importlib.import_module(module)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        importlib.import_module(entry.value.split(":")[0])
    _loaded = True
