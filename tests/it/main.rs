//! lf's integration tests, one test binary (one link instead of one per file): each module drives the
//! real `lf` binary from outside, except `shape`, which checks the layout of the workspace itself.

mod align;
mod cache;
mod common;
mod data;
mod diagnostics;
mod export_evaluate;
mod fuzz;
mod hub;
mod import;
mod quickstart;
mod sandbox;
mod schema;
mod shape;
mod train;
mod ui;
