//! # osmium-proto
//!
//! The Osmium Chat Protocol's wire types for the chat subset (written from
//! `shared/spec/wire.md`: every name, field number and type kept, so bytes from any
//! Osmium client decode here), the engine's own event log records (`events.proto`), and
//! the typed ids used everywhere ([`ids`]).
//!
//! **What it owns:** the `.proto` files under `proto/` and the code prost generates from
//! them at build time (with protox: no `protoc` binary needed).
//!
//! **What it must never do:** hold logic or I/O; renumber or retype a field that has been
//! published (clients and stored logs depend on every number); depend on another
//! workspace crate.
//!
//! Module layout follows the protobuf packages (`osmium.client.refs` is [`refs`], and so
//! on; `osmium.events` is [`events`]).

#![allow(missing_debug_implementations)]

pub mod ids;

/// Generated code, nested as the protobuf packages so that prost's relative paths resolve.
pub mod osmium {
    /// `osmium.client.*`: the client protocol.
    pub mod client {
        #![allow(missing_docs, clippy::all)]
        pub mod refs {
            include!(concat!(env!("OUT_DIR"), "/osmium.client.refs.rs"));
        }
        pub mod types {
            include!(concat!(env!("OUT_DIR"), "/osmium.client.types.rs"));
        }
        pub mod media {
            include!(concat!(env!("OUT_DIR"), "/osmium.client.media.rs"));
        }
        pub mod chats {
            include!(concat!(env!("OUT_DIR"), "/osmium.client.chats.rs"));
        }
        pub mod messages {
            include!(concat!(env!("OUT_DIR"), "/osmium.client.messages.rs"));
        }
        pub mod auth {
            include!(concat!(env!("OUT_DIR"), "/osmium.client.auth.rs"));
        }
        pub mod updates {
            include!(concat!(env!("OUT_DIR"), "/osmium.client.updates.rs"));
        }
        pub mod core {
            include!(concat!(env!("OUT_DIR"), "/osmium.client.core.rs"));
        }
    }
    /// `osmium.events`: the engine's event log records.
    pub mod events {
        #![allow(missing_docs, clippy::all)]
        include!(concat!(env!("OUT_DIR"), "/osmium.events.rs"));
    }
}

pub use osmium::client::{auth, chats, core, media, messages, refs, types, updates};
pub use osmium::events;
pub use prost;
