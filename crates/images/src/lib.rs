//! crust-images
