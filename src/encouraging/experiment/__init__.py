"""Running experiments: one run or a grid of losses x seeds into a results database (:mod:`.runner`), the same grid
as scheduler jobs (:mod:`.launch`: submitit or Ray), opening a stored run again (:mod:`.loading`), what a run
records about where it came from (:mod:`.provenance`), and the drivers of after-training evaluations over stored
runs (:mod:`.evaluate`)."""

from ..plugins import load_plugins
from .loading import LoadedRun, load_run
from .provenance import run_dir_for, run_id_for, run_record
from .runner import grid, run

__all__ = ["LoadedRun", "grid", "load_run", "run", "run_dir_for", "run_id_for", "run_record"]

load_plugins()  # the experiment layer serves every registered task: built-in and entry-point plugins
