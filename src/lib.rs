//! osmium-state
