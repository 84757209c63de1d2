//! What readers see of the projections: the flushed tables in RocksDB (one snapshot per
//! read) under the published layers of not yet flushed writes.
//!
//! Publishing (writer thread after every durable batch, flusher after every flush) swaps
//! one `Arc`; readers never wait for a writer. A read takes the number of flushes that
//! have landed, then a RocksDB snapshot, then the published layers: when the layers were
//! published for at most that many landed flushes, the snapshot holds every flush the
//! layers left out, and any newer flush it holds is still among the layers (a layer is
//! frozen before its flush starts and dropped only after it landed). Otherwise a flush
//! landed in between: read again. So every read sees exactly the state after one batch.

use crate::schema::ProjectionSlot;
use arc_swap::ArcSwap;
use osmium_projections::store::{Direction, ScanRange, StoreRead, Visit, prefix_successor};
use osmium_projections::read_caches::ReadCaches;
use osmium_projections::{Layer, LayeredView, ProjectionError, Table};
use osmium_proto::ids::Position;
use rocksdb::{DB, ReadOptions, Snapshot};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Read access to one projection slot of a database.
pub(crate) struct RocksView<'db> {
    db: &'db DB,
    slot: ProjectionSlot,
    snapshot: Option<Snapshot<'db>>,
}

impl<'db> RocksView<'db> {
    /// Reads the latest state.
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

/// The flushed tables of the served slot, latest state: the state machine's source of
/// records it does not hold (nobody else writes the slot while an engine runs).
#[derive(Clone)]
pub(crate) struct RocksSource {
    pub(crate) db: Arc<DB>,
    pub(crate) slot: ProjectionSlot,
}

impl std::fmt::Debug for RocksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksSource").field("slot", &self.slot).finish_non_exhaustive()
    }
}

impl StoreRead for RocksSource {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        RocksView::latest(&self.db, self.slot).get(table, key)
    }

    fn scan(
        &self,
        table: Table,
        range: ScanRange<'_>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Visit,
    ) -> Result<(), ProjectionError> {
        RocksView::latest(&self.db, self.slot).scan(table, range, visit)
    }
}

/// One published version of what is not flushed yet.
#[derive(Debug)]
struct Published {
    /// Flushes whose layers this version no longer holds.
    epoch: u64,
    /// Newest first: the active layer, then frozen layers waiting for their flush.
    layers: Vec<Arc<Layer>>,
    /// The last durable batch: readers see the layers' versions up to it.
    visible: u64,
    /// The last position folded into this version.
    position: Position,
}

/// The published read state of one engine.
pub(crate) struct Views {
    db: Arc<DB>,
    slot: ProjectionSlot,
    current: ArcSwap<Published>,
    /// Flushes whose writes are in RocksDB.
    landed: AtomicU64,
    /// Serializes publishers (the writer thread and the flusher).
    publishing: Mutex<()>,
    /// The last batch whose writes the state machine inserted in its layer.
    inserted: AtomicU64,
    /// Large chats' last message ids, groups' participants and users' large chats,
    /// recorded by the state machine before each batch is published (see `osmium_projections::read_caches`).
    pub(crate) caches: ReadCaches,
}

impl std::fmt::Debug for Views {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = self.current.load();
        f.debug_struct("Views")
            .field("epoch", &current.epoch)
            .field("layers", &current.layers.len())
            .field("visible", &current.visible)
            .field("position", &current.position)
            .finish_non_exhaustive()
    }
}

impl Views {
    /// Views of `slot` with `active` (empty) as the only layer, `landed` flushes done, at `position`.
    pub(crate) fn new(db: Arc<DB>, slot: ProjectionSlot, landed: u64, position: Position, active: Arc<Layer>) -> Views {
        let published = Published { epoch: landed, layers: vec![active], visible: 0, position };
        Views {
            db,
            slot,
            current: ArcSwap::from_pointee(published),
            landed: AtomicU64::new(landed),
            publishing: Mutex::new(()),
            inserted: AtomicU64::new(0),
            caches: ReadCaches::new(),
        }
    }

    /// Runs `read` on one consistent state (see the module docs).
    pub(crate) fn read<T>(&self, read: impl FnOnce(&dyn StoreRead) -> T) -> T {
        loop {
            let landed = self.landed.load(Ordering::Acquire);
            let base = RocksView::snapshot(&self.db, self.slot);
            let published = self.current.load_full();
            if published.epoch <= landed {
                return read(&LayeredView::new(&base, &published.layers, published.visible).with_caches(&self.caches));
            }
        }
    }

    /// Runs `read` on one consistent state like [`Self::read`], with the position that
    /// state is folded up to.
    pub(crate) fn read_at<T>(&self, read: impl FnOnce(&dyn StoreRead, Position) -> T) -> T {
        loop {
            let landed = self.landed.load(Ordering::Acquire);
            let base = RocksView::snapshot(&self.db, self.slot);
            let published = self.current.load_full();
            if published.epoch <= landed {
                let view = LayeredView::new(&base, &published.layers, published.visible).with_caches(&self.caches);
                return read(&view, published.position);
            }
        }
    }

    /// The last position folded into what readers see.
    pub(crate) fn position(&self) -> Position {
        self.current.load().position
    }

    /// Layers published and not yet flushed (the active one included).
    pub(crate) fn layers(&self) -> usize {
        self.current.load().layers.len()
    }

    fn publish(&self, change: impl FnOnce(&Published) -> Published) {
        let _serialized = self.publishing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.current.load_full();
        self.current.store(Arc::new(change(&current)));
    }

    /// The state machine inserted batch `seq`'s writes (and every batch's before).
    pub(crate) fn inserted(&self, seq: u64) {
        self.inserted.fetch_max(seq, Ordering::Release);
    }

    /// Waits until batch `seq`'s writes are inserted (the state machine inserts them while
    /// the writer syncs the batch: a wait lasts one batch's inserts at most). Returns
    /// false, without waiting longer, if the engine failed first (`failure` is set).
    pub(crate) fn wait_inserted(&self, seq: u64, failure: &Mutex<Option<String>>) -> bool {
        loop {
            if self.inserted.load(Ordering::Acquire) >= seq {
                return true;
            }
            if failure.lock().map_or(true, |failure| failure.is_some()) {
                return self.inserted.load(Ordering::Acquire) >= seq;
            }
            std::thread::yield_now();
        }
    }

    /// Batch `visible` is durable: readers see the layers' versions up to it, folded up to
    /// `position`.
    pub(crate) fn publish_batch(&self, visible: u64, position: Position) {
        self.publish(|current| Published {
            epoch: current.epoch,
            layers: current.layers.clone(),
            visible: visible.max(current.visible),
            position: position.max(current.position),
        });
    }

    /// Freezes the active layer for a flush (readers keep it until the flush landed) and
    /// puts `next` (where the state machine writes from now on) in front. Returns the
    /// frozen layer.
    pub(crate) fn freeze(&self, next: Arc<Layer>) -> Arc<Layer> {
        let mut frozen = Arc::new(Layer::new());
        self.publish(|current| {
            let mut layers = Vec::with_capacity(current.layers.len() + 1);
            layers.push(next);
            layers.extend(current.layers.iter().cloned());
            frozen = layers[1].clone();
            Published { epoch: current.epoch, layers, visible: current.visible, position: current.position }
        });
        frozen
    }

    /// Flush number `flush` landed: its writes are in RocksDB, its layer (the oldest) goes.
    pub(crate) fn landed(&self, flush: u64) {
        self.landed.store(flush, Ordering::Release);
        self.publish(|current| {
            let mut layers = current.layers.clone();
            if layers.len() > 1 {
                layers.pop();
            }
            Published { epoch: flush, layers, visible: current.visible, position: current.position }
        });
    }
}
