"""Tune stage: search schedules for a model's tasks with MetaSchedule (search), keep the
records in a per-target database, and apply them when compiling (database_schedule)."""

from edgec.tune.search import (
    Progress,
    TaskRow,
    TuneOptions,
    TuneReport,
    database_schedule,
    logs_dir,
    logs_root,
    parse_budget,
    read_metadata,
    tune,
    write_metadata,
)

__all__ = ["Progress", "TaskRow", "TuneOptions", "TuneReport", "database_schedule", "logs_dir",
           "logs_root", "parse_budget", "read_metadata", "tune", "write_metadata"]
