"""The one place that touches TVM's moving internals: the ONNX converter table
(onnx_converters), MetaSchedule's builders, runners and databases (metaschedule), and TVM's
log noise (log_filters). A TVM upgrade should be this folder's work.

Keep this file import-free: the board-side loader uploads it with log_filters."""
