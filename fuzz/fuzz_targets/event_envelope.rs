//! A log record: whatever the bytes, decoding an `EventEnvelope` returns, and folding a
//! decoded envelope into empty projections returns `Ok` or a typed error, never panics
//! (a corrupted or foreign log must be reported, not crash the replay).
#![no_main]

use libfuzzer_sys::fuzz_target;
use osmium_projections::{MemStore, apply};
use osmium_proto::events::EventEnvelope;
use osmium_proto::prost::Message;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(envelope) = EventEnvelope::decode(bytes) {
        let mut store = MemStore::new();
        let _ = apply(&mut store, &envelope);
        let _ = apply(&mut store, &envelope);
    }
});
