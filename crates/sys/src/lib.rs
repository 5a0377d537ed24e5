//! crust-sys
