//! crust-engine
