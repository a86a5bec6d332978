"""Results: the SQLite store of runs and metrics, their committed JSON records, statistics over seeds, the
paper's numbers, and reports.

>>> from encouraging.results import ResultsStore, RunRecord, write_report
>>> store = ResultsStore("runs/results.db")          # doctest: +SKIP
>>> write_report(store, "runs/report", html=True)     # doctest: +SKIP
"""

from .measures import Measure, Measures, register_measures
from .paper import PAPER_NUMBERS, PaperNumber, list_paper_numbers, model_family, paper_number
from .records import export_records, read_record, records_store
from .report import (
    Doc,
    Group,
    LossRow,
    ReportSection,
    collect,
    comparison_rows,
    group_rows,
    group_tables,
    register_section,
    table_rows,
    write_report,
)
from .stats import Comparison, Summary, compare, paired, summarize, welch
from .store import RUN_FILTERS, ResultsStore, RunRecord, loss_params_from_config

__all__ = [
    "PAPER_NUMBERS",
    "RUN_FILTERS",
    "Comparison",
    "Doc",
    "Group",
    "LossRow",
    "Measure",
    "Measures",
    "PaperNumber",
    "ResultsStore",
    "ReportSection",
    "RunRecord",
    "Summary",
    "collect",
    "compare",
    "export_records",
    "comparison_rows",
    "group_rows",
    "group_tables",
    "list_paper_numbers",
    "loss_params_from_config",
    "model_family",
    "paired",
    "paper_number",
    "read_record",
    "records_store",
    "register_measures",
    "register_section",
    "summarize",
    "table_rows",
    "welch",
    "write_report",
]
