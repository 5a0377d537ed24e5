//! Test programs for the end-to-end suite.
