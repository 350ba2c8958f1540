"""Tune stage: search schedules for a model's tasks with MetaSchedule (search), keep the
records in a database per target and CPU measured on, and apply them when compiling
(databases: database_schedule), after checking in the model that they made its functions
faster (model_check)."""

from edgec.tune import model_check, simulated_board
from edgec.tune.databases import (
    database_layers,
    database_schedule,
    logs_dir,
    logs_root,
    measured_on,
    read_metadata,
    user_logs_root,
    write_metadata,
)
from edgec.tune.search import Progress, TaskRow, TuneOptions, TuneReport, parse_budget, tune

__all__ = ["Progress", "TaskRow", "TuneOptions", "TuneReport", "database_layers",
           "database_schedule", "logs_dir", "logs_root", "measured_on", "model_check",
           "parse_budget", "read_metadata", "simulated_board", "tune", "user_logs_root",
           "write_metadata"]
