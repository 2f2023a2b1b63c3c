//! interceptor's fuzz targets: see `fuzz/README.md`. The targets' bodies live in [`harness`], which the
//! regression tests of `node-worker` include as well.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod harness;
