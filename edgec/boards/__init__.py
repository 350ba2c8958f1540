"""Boards: SSH (ssh, ssh_tunnel), what a board has and edgec's loader run there (probe),
the TVM RPC server started over SSH (rpc_over_ssh), RPC sessions for run/bench/tune
(sessions), copying a library to a board (deploy), the emulated aarch64 board (emulator,
emulator_root) and the instruction-level latency estimate (estimate)."""
