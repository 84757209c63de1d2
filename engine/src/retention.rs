//! Retention of the catch-up index (issue #13): what keeps its disk bounded.
//!
//! The index (`userid_position_update`, `chatid_position_update`, `position_effect`)
//! grows with every event. [`trim`] raises the directory's **catch-up floor** to the first
//! position recorded less than `catch_up_retention_ms` ago; from then on:
//! - a catch-up from a token before `floor - 1` is answered `TooFarBehind` (the client
//!   refetches its chat list), checked on the same snapshot the catch-up reads;
//! - `position_effect` rows below the floor are deleted with one range deletion (their
//!   keys are positions) and that range compacted, so their space is returned at once;
//! - `userid_position_update` and `chatid_position_update` keys below the floor (keyed by
//!   user or chat first, so no one range holds them) are dropped by a compaction filter
//!   that reads the floor ([`drop_trimmed_catch_up_keys`]) as RocksDB compacts them.
//!
//! The floor lives in the directory's `meta` family (`META_CATCH_UP_FLOOR`), not in a
//! projection slot: a rebuilt slot obeys the same floor (its compactions drop the same
//! keys), and it is written (synced) before anything below it is deleted, so that after a
//! crash no catch-up is served from a trimmed range. It never goes down.
//!
//! Architecture invariant: a catch-up never answers `Updates` from a token whose missed
//! range reaches below the floor; entries at or above the floor are never deleted.

use crate::directory::column_family;
use crate::error::EngineError;
use crate::log::LogReader;
use crate::schema::{self, CF_META, ProjectionSlot};
use osmium_projections::{MemStore, Store, Table};
use osmium_proto::ids::Position;
use rocksdb::{DB, Options, WriteOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What one [`crate::ChatEngine::trim_catch_up`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CatchUpTrim {
    /// The catch-up floor now: a catch-up from a token before `floor - 1` is too far
    /// behind.
    pub floor: Position,
    /// The floor before this call.
    pub previous_floor: Position,
}

/// The catch-up index's column families in both slots (where the compaction filter goes).
pub(crate) fn catch_up_column_families() -> Vec<&'static str> {
    let tables = Table::ALL.into_iter().filter(|table| table.is_append_only());
    tables.flat_map(|table| ProjectionSlot::ALL.map(|slot| slot.column_family(table))).collect()
}

/// Makes compactions of a catch-up family drop keys whose position (their last 8 bytes,
/// in every layout of the index) is below `floor`. Keys too short to hold one are kept.
pub(crate) fn drop_trimmed_catch_up_keys(options: &mut Options, floor: Arc<AtomicU64>) {
    options.set_compaction_filter("osmium-trimmed-catch-up-keys", move |_level: u32, key: &[u8], _value: &[u8]| {
        match key_position(key) {
            Some(position) if position < floor.load(Ordering::Acquire) => rocksdb::compaction_filter::Decision::Remove,
            _ => rocksdb::compaction_filter::Decision::Keep,
        }
    });
}

/// The position a catch-up index key ends with.
fn key_position(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// Leaves out of `store` the catch-up index entries below `floor`: trimmed from the
/// projections (or about to be, by a compaction), so verification compares the rest.
pub fn without_trimmed(store: &mut MemStore, floor: u64) {
    for table in Table::ALL.into_iter().filter(|table| table.is_append_only()) {
        let trimmed: Vec<Vec<u8>> = store
            .entries(table)
            .filter(|(key, _)| key_position(key).is_some_and(|position| position < floor))
            .map(|(key, _)| key.to_vec())
            .collect();
        for key in trimmed {
            store.delete(table, key);
        }
    }
}

/// Whether a catch-up from `token` needs entries below `floor` (it reads from
/// `token + 1`).
pub(crate) fn below_floor(token: Position, floor: u64) -> bool {
    token.get().saturating_add(1) < floor
}

/// What a trim works on, owned (it runs on a blocking thread; holding only the database,
/// not the engine, it never keeps a closed engine's directory locked: closing waits for it,
/// bounded by `CLOSE_WAIT_MAX_MS`).
pub(crate) struct Trimmer {
    pub(crate) db: Arc<DB>,
    pub(crate) slot: ProjectionSlot,
    pub(crate) reader: LogReader,
    pub(crate) floor: Arc<AtomicU64>,
}

impl Trimmer {
    /// Raises the floor to the first position in `(floor, read_position]` recorded at or
    /// after `cutoff_ms` (just past `read_position` when every event there is older),
    /// persists it, then deletes what lies below. Idempotent; the floor never goes down,
    /// and a trim with nothing below the new floor writes nothing.
    pub(crate) fn trim(&self, read_position: Position, cutoff_ms: u64) -> Result<CatchUpTrim, EngineError> {
        let (db, floor) = (&*self.db, &*self.floor);
        let previous = floor.load(Ordering::Acquire);
        let new_floor = first_recorded_since(&self.reader, previous.max(1), read_position.get(), cutoff_ms)?;
        if new_floor <= previous.max(1) {
            return Ok(CatchUpTrim { floor: Position(previous), previous_floor: Position(previous) });
        }
        // Readers refuse first, the floor is durable next, and only then is anything deleted.
        floor.fetch_max(new_floor, Ordering::AcqRel);
        let mut synced = WriteOptions::default();
        synced.set_sync(true);
        db.put_cf_opt(column_family(db, CF_META)?, schema::META_CATCH_UP_FLOOR, new_floor.to_be_bytes(), &synced)
            .map_err(EngineError::storage("writing the catch-up floor"))?;
        for slot in [self.slot, self.slot.other()] {
            let effects = column_family(db, slot.column_family(Table::PositionEffect))?;
            let (from, to) = (0u64.to_be_bytes(), new_floor.to_be_bytes());
            db.delete_range_cf(effects, from, to).map_err(EngineError::storage("trimming the catch-up index"))?;
            db.compact_range_cf(effects, Some(from), Some(to));
        }
        Ok(CatchUpTrim { floor: Position(new_floor), previous_floor: Position(previous) })
    }
}

/// The first position in `[low, high]` whose event was recorded at or after `cutoff_ms`,
/// or `high + 1` when there is none: a binary search over the log (about 40 point reads), which
/// takes recording times as non-decreasing (a clock that went back only moves the floor
/// by the events it reordered).
fn first_recorded_since(reader: &LogReader, low: u64, high: u64, cutoff_ms: u64) -> Result<u64, EngineError> {
    let (mut low, mut high) = (low, high.saturating_add(1)); // the answer lies in [low, high]
    while low < high {
        let middle = low + (high - low) / 2;
        let recorded_at_ms = reader.read_one(Position(middle))?.recorded_at_ms;
        if recorded_at_ms >= cutoff_ms {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    Ok(low)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn compactions_drop_per_user_and_per_chat_keys_below_the_floor_and_keep_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let data = crate::directory::DataDir::open(dir.path()).unwrap();
        let key = |owner: u64, position: u64| [owner.to_be_bytes(), position.to_be_bytes()].concat();
        for table in [Table::UseridPositionUpdate, Table::ChatidPositionUpdate] {
            let family = column_family(&data.db, data.slot.column_family(table)).unwrap();
            for position in [5, 9, 10, 15] {
                data.db.put_cf(family, key(7, position), b"").unwrap();
            }
        }
        data.catch_up_floor.store(10, Ordering::Release);
        for table in [Table::UseridPositionUpdate, Table::ChatidPositionUpdate] {
            let family = column_family(&data.db, data.slot.column_family(table)).unwrap();
            data.db.flush_cf(family).unwrap();
            data.db.compact_range_cf(family, None::<&[u8]>, None::<&[u8]>);
            let kept: Vec<u64> = [5, 9, 10, 15]
                .into_iter()
                .filter(|&position| data.db.get_cf(family, key(7, position)).unwrap().is_some())
                .collect();
            assert_eq!(kept, [10, 15], "{table:?}");
        }
    }

    #[test]
    fn a_key_position_is_its_last_eight_bytes() {
        let mut key = 7u64.to_be_bytes().to_vec();
        key.extend_from_slice(&42u64.to_be_bytes());
        assert_eq!(key_position(&key), Some(42));
        assert_eq!(key_position(&42u64.to_be_bytes()), Some(42));
        assert_eq!(key_position(&[1, 2, 3]), None);
    }

    #[test]
    fn a_catch_up_reading_from_the_floor_is_not_below_it() {
        assert!(!below_floor(Position(9), 10), "token 9 reads from 10");
        assert!(below_floor(Position(8), 10), "token 8 would need 9");
        assert!(!below_floor(Position(0), 0));
        assert!(!below_floor(Position(0), 1), "nothing trimmed below 1");
    }
}
