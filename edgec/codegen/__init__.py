"""Code generation: which kernel each Relax op gets (legalize), edgec's TE kernels
(kernels, winograd), their default schedules (schedules) and the int8 dot-product tensor
intrinsics (intrinsics). It reads what a CPU can do only from `Target.cpu` (edgec.cpu)."""
