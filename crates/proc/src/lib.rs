//! crust-proc
