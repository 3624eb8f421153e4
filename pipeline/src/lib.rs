//! ideaflow's pipeline: configuration, the command line, and the dataflows
//! that wire sources, operators and sinks together. The `ideaflow` binary is
//! a thin `main` over this library; benchmarks and tests use it too.

pub mod api;
pub mod blas;
pub mod calibration;
pub mod checkpoint;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod core_setup;
pub mod dataflow;
pub mod logging;
pub mod materialize;
pub mod metrics;
pub mod model_files;
pub mod progress;
pub mod source_status;
