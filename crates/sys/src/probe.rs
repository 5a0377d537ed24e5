//! Kernel feature probes used by `crust check`.
