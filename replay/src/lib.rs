//! # osmium-replay
//!
//! The operator's tool: drives a demo workload through the engine and, as the replay
//! issue lands, rebuilds, verifies and inspects projections from the event log.
//!
//! **What it owns:** command-line parsing, progress output and the demo workload.
//!
//! **What it must never do:** fold events by any other code than
//! `osmium_projections::apply`, or write to a data directory that a running engine holds.

pub mod demo;
