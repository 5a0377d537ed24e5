//! crust-compel
