"""The one place that touches TVM's moving internals: the ONNX and TFLite converter tables
(onnx_converters, tflite_converters), MetaSchedule's builders, runners and databases
(metaschedule), the Relax VM driven without the tvm package (vm_runtime), the static shapes
of Relax bindings (ir_shapes), a module with its main replaced (relax_modules), TIR
expression kinds the schedules inspect (tir_exprs), TVM's errors and log noise (errors,
log_filters) and LLVM's target check (llvm_target). A TVM upgrade should be this folder's
work.

Keep this file import-free: the board-side loader uploads it with log_filters."""
