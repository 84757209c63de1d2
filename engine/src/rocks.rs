//! The projections' [`StoreRead`] over RocksDB: one projection slot of an open database,
//! optionally pinned to a snapshot so that a multi-key query sees one consistent state.

use crate::schema::ProjectionSlot;
use osmium_projections::store::{Direction, ScanRange, StoreRead, Table, Visit, prefix_successor};
use osmium_projections::ProjectionError;
use rocksdb::{DB, ReadOptions, Snapshot};

/// Read access to one projection slot.
pub(crate) struct RocksView<'db> {
    db: &'db DB,
    slot: ProjectionSlot,
    snapshot: Option<Snapshot<'db>>,
}

impl<'db> RocksView<'db> {
    /// Reads the latest committed state (the writer's view: nobody else writes).
    pub(crate) fn latest(db: &'db DB, slot: ProjectionSlot) -> Self {
        RocksView { db, slot, snapshot: None }
    }

    /// Reads one consistent snapshot, taken now.
    pub(crate) fn snapshot(db: &'db DB, slot: ProjectionSlot) -> Self {
        RocksView { db, slot, snapshot: Some(db.snapshot()) }
    }

    fn read_options(&self) -> ReadOptions {
        let mut options = ReadOptions::default();
        if let Some(snapshot) = &self.snapshot {
            options.set_snapshot(snapshot);
        }
        options
    }

    fn cf(&self, table: Table) -> Result<&'db rocksdb::ColumnFamily, ProjectionError> {
        let name = self.slot.column_family(table);
        self.db.cf_handle(name).ok_or_else(|| ProjectionError::Store(format!("column family {name} is not open")))
    }
}

impl std::fmt::Debug for RocksView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksView").field("slot", &self.slot).field("snapshot", &self.snapshot.is_some()).finish()
    }
}


impl StoreRead for RocksView<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        self.db
            .get_cf_opt(self.cf(table)?, key, &self.read_options())
            .map_err(|err| ProjectionError::Store(err.to_string()))
    }

    fn scan(
        &self,
        table: Table,
        range: ScanRange<'_>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Visit,
    ) -> Result<(), ProjectionError> {
        let mut options = self.read_options();
        options.set_iterate_lower_bound(range.prefix.to_vec());
        if let Some(upper) = prefix_successor(range.prefix) {
            options.set_iterate_upper_bound(upper);
        }
        let mut iter = self.db.raw_iterator_cf_opt(self.cf(table)?, options);
        match (range.direction, range.start) {
            (Direction::Forward, Some(start)) => iter.seek(start.max(range.prefix)),
            (Direction::Forward, None) => iter.seek_to_first(),
            (Direction::Reverse, Some(start)) => iter.seek_for_prev(start),
            (Direction::Reverse, None) => iter.seek_to_last(),
        }
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            if !range.contains(key) {
                break;
            }
            if visit(key, value).is_break() {
                return Ok(());
            }
            match range.direction {
                Direction::Forward => iter.next(),
                Direction::Reverse => iter.prev(),
            }
        }
        iter.status().map_err(|err| ProjectionError::Store(err.to_string()))
    }
}

