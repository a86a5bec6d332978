"""Analyses that test the paper's explanations on trained models (paper §4): margins, conditional energies, the
gradient contribution of well-classified examples, representation quality (linear probe, k-NN), loss shapes.

Each analysis is a function from a model's outputs to flat rows of numbers (stored in the results database with
``ResultsStore.add_rows``); the figures and tables are drawn from those rows. Importing this package adds the
analyses section to ``encouraging report``.

>>> from encouraging.analysis import analyze
>>> analyze(["runs/quick-mnist/CE/seed0-…", "runs/quick-mnist/EL_LE=1/seed0-…"], "reports/analysis")  # doctest: +SKIP
"""

from .energy import class_energy, energy_rows
from .gradients import analytic_target_grad, gradient_rows, per_example_grad_norms, target_logit_grad
from .margins import margin_rows, margin_summary, margins
from .outputs import Outputs, collect_outputs
from .probe import ProbeConfig, knn_accuracy, linear_probe
from .render import KINDS, METRICS, render_analyses, run_metrics
from .shapes import loss_shape_rows, plot_log_end_panels, plot_loss_shapes
from .suite import AnalysisConfig, analyze, analyze_run

__all__ = [
    "KINDS",
    "METRICS",
    "AnalysisConfig",
    "Outputs",
    "ProbeConfig",
    "analytic_target_grad",
    "analyze",
    "analyze_run",
    "class_energy",
    "collect_outputs",
    "energy_rows",
    "gradient_rows",
    "knn_accuracy",
    "linear_probe",
    "loss_shape_rows",
    "margin_rows",
    "margin_summary",
    "margins",
    "per_example_grad_norms",
    "plot_log_end_panels",
    "plot_loss_shapes",
    "render_analyses",
    "run_metrics",
    "target_logit_grad",
]
