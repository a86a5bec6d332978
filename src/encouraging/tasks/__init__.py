"""Tasks: each turns a config into a model and batches for the engine. Importing this registers them all."""

from . import image  # noqa: F401  (registers the image task)
from .loading import LoadedRun, load_run, run_id_for
from .registry import Prepared, Task, get_task, list_tasks, register_task

__all__ = ["LoadedRun", "Prepared", "Task", "get_task", "list_tasks", "load_run", "register_task", "run_id_for"]
