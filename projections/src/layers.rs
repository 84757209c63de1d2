//! What readers see of the state that is not flushed yet: layers of projection writes
//! over a base store (the flushed tables).
//!
//! A layer is a multi-version memtable: a concurrent skip list of `(table, key, batch)`
//! -> value, newest batch first for each key. The state machine inserts each batch's
//! writes under the batch's sequence number as soon as it decided the batch; readers read
//! at the sequence number of the last **durable** batch (published by the engine), so they
//! never see a batch before it is durable, and a reader keeps its sequence number for as
//! long as it reads (inserts do not disturb it). Nothing is copied to publish a batch
//! (an earlier version used persistent B-trees: copying their paths cost about 5 µs per
//! write). At a flush the active layer is frozen (no more inserts) and a new one started;
//! the frozen layer is dropped once its writes are in the base.
//!
//! Writes of append-only tables ([`Table::is_append_only`]: the catch-up index, several
//! keys per event) skip the skip list: each batch's are one chunk, sorted once by the
//! inserting thread, that readers binary-search. A key there is written once and never deleted, so
//! a key has one version, tagged with its batch. Like an LSM tree's runs, the newest chunk
//! is merged into the one before it while that one is at most twice its size (and the
//! merge at most [`CHUNK_ENTRIES_MAX`]), so a layer holds O(log n) chunks plus one per
//! `CHUNK_ENTRIES_MAX` entries, and a read costs that many binary searches, however many
//! small batches the layer took. (One skip-list insert per key cost about 2 µs on the
//! inserting thread and made its comparisons a third of that thread's time.)
//!
//! A reader sees `layers` (newest first) over `base` at sequence `visible`: exactly the
//! state after that batch, provided the base holds every flush older than its oldest
//! layer and nothing newer than its newest (the engine's read path checks this, see
//! `engine/src/view.rs`).

use crate::error::ProjectionError;
use crate::store::{Direction, ScanRange, StoreRead, Visit};
use crate::tables::Table;
use crossbeam_skiplist::{SkipMap, SkipSet};
use crate::read_caches::ReadCaches;
use osmium_proto::ids::{ChatId, MessageId, UserId};
use std::ops::{Bound, ControlFlow};
use std::sync::{Arc, RwLock};
use std::sync::atomic::{AtomicUsize, Ordering};

/// One write of a projection table: `Some(value)` puts, `None` deletes.
pub type KvWrite = (Table, Vec<u8>, Option<Vec<u8>>);

/// One put of an append-only table ([`Table::is_append_only`]): a new key and its value.
pub type AppendWrite = (Table, Vec<u8>, Vec<u8>);

/// A key's version as readers get it: the raw key and `Some(value)`, or `None` (deleted).
pub type Entry = (Arc<[u8]>, Option<Arc<[u8]>>);

/// A write as a layer keeps it: the raw key (the skip list's key is encoded) and the value.
#[derive(Debug)]
struct Version {
    key: Arc<[u8]>,
    value: Option<Arc<[u8]>>,
}

/// Encodes `(table, key)` so that byte order is `(table, key)` order and no encoded key is
/// a prefix of another: a zero byte becomes `00 ff`, and a complete key ends with `00 01`.
fn encode_key(buf: &mut Vec<u8>, table: Table, key: &[u8]) {
    buf.push(table.index() as u8);
    for &byte in key {
        if byte == 0 {
            buf.extend_from_slice(&[0, 0xff]);
        } else {
            buf.push(byte);
        }
    }
}

/// The skip-list key of `key`'s version written by batch `seq` (newer batches sort first).
fn versioned(table: Table, key: &[u8], seq: u64) -> Vec<u8> {
    let mut buf = Vec::with_capacity(key.len() + 11);
    encode_key(&mut buf, table, key);
    buf.extend_from_slice(&[0, 1]);
    buf.extend_from_slice(&(!seq).to_be_bytes());
    buf
}

/// The batch sequence number of a skip-list key.
fn seq_of(versioned: &[u8]) -> u64 {
    let tail = versioned.len().saturating_sub(8);
    let bytes: [u8; 8] = versioned.get(tail..).and_then(|bytes| bytes.try_into().ok()).unwrap_or([0xff; 8]);
    !u64::from_be_bytes(bytes)
}

/// Projection writes of some consecutive batches, each version under its batch's sequence
/// number, with the chats whose chat-list entries they made stale (see
/// [`StoreRead::touched_chats`]).
#[derive(Debug, Default)]
pub struct Layer {
    versions: SkipMap<Box<[u8]>, Version>,
    /// The append-only tables' writes: one chunk per batch, in batch order.
    chunks: RwLock<Vec<Arc<Chunk>>>,
    touched: SkipSet<(UserId, ChatId)>,
    writes: AtomicUsize,
}

/// Entries up to which chunks are merged (a larger merge would hold readers up longer:
/// moving 64 Ki entries takes well under a millisecond).
pub const CHUNK_ENTRIES_MAX: usize = 64 * 1024;

/// One put of an append-only table in a chunk, with the batch that wrote it.
#[derive(Debug, Clone)]
struct ChunkPut {
    table: Table,
    key: Arc<[u8]>,
    value: Arc<[u8]>,
    seq: u64,
}

impl ChunkPut {
    fn order(&self) -> (usize, &[u8]) {
        (self.table.index(), &self.key[..])
    }
}

/// Writes of append-only tables from consecutive batches `first_seq..=last_seq`, sorted
/// by table and key.
#[derive(Debug)]
struct Chunk {
    first_seq: u64,
    last_seq: u64,
    puts: Vec<ChunkPut>,
}

impl Chunk {
    /// The puts of `table` in `range` visible at `visible`, in key order.
    fn range<'c>(&'c self, table: Table, range: ScanRange<'c>, visible: u64) -> impl Iterator<Item = &'c ChunkPut> + 'c {
        let lower = match (range.direction, range.start) {
            (Direction::Forward, Some(start)) => start.max(range.prefix),
            _ => range.prefix,
        };
        let first = self.puts.partition_point(|put| put.order() < (table.index(), lower));
        self.puts[first..]
            .iter()
            .take_while(move |put| put.table == table && put.key.starts_with(range.prefix))
            .filter(move |put| put.seq <= visible && range.contains(&put.key))
    }

    fn get(&self, table: Table, key: &[u8], visible: u64) -> Option<&ChunkPut> {
        let found = self.puts.binary_search_by(|put| put.order().cmp(&(table.index(), key))).ok()?;
        self.puts.get(found).filter(|put| put.seq <= visible)
    }

    /// `older` and `newer` (consecutive batches) as one chunk, their puts moved.
    fn merge(older: Chunk, newer: Chunk) -> Chunk {
        let mut puts = Vec::with_capacity(older.puts.len() + newer.puts.len());
        let (mut a, mut b) = (older.puts.into_iter().peekable(), newer.puts.into_iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.order() <= y.order() => a.next(),
                (Some(_), Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (None, None) => break,
            };
            puts.extend(next);
        }
        Chunk { first_seq: older.first_seq, last_seq: newer.last_seq, puts }
    }
}

impl Layer {
    /// An empty layer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts one batch's writes as batch `seq` (greater than every batch inserted
    /// before), with the chat-list entries it made stale. Readers at an earlier sequence
    /// number do not see them.
    pub fn insert(
        &self,
        seq: u64,
        writes: impl IntoIterator<Item = KvWrite>,
        appended: Vec<AppendWrite>,
        touched: &[(UserId, ChatId)],
    ) {
        if !appended.is_empty() {
            self.append_chunk(seq, appended);
        }
        for (table, key, value) in writes {
            debug_assert!(!table.is_append_only(), "{table:?} writes go in chunks");
            let versioned = versioned(table, &key, seq).into_boxed_slice();
            self.versions.insert(versioned, Version { key: Arc::from(key), value: value.map(Arc::from) });
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        for &entry in touched {
            self.touched.insert(entry);
        }
    }

    /// Adds batch `seq`'s append-only writes as a chunk, then merges it into the chunks
    /// before it while they are at most twice its size (see the module docs). Runs on the
    /// one thread that inserts.
    fn append_chunk(&self, seq: u64, mut appended: Vec<AppendWrite>) {
        appended.sort_unstable_by(|(a, a_key, _), (b, b_key, _)| (a.index(), a_key).cmp(&(b.index(), b_key)));
        debug_assert!(appended.iter().all(|(table, _, _)| table.is_append_only()));
        debug_assert!(appended.windows(2).all(|pair| (pair[0].0, &pair[0].1) != (pair[1].0, &pair[1].1)), "a key appended twice");
        self.writes.fetch_add(appended.len(), Ordering::Relaxed);
        let puts = appended
            .into_iter()
            .map(|(table, key, value)| ChunkPut { table, key: Arc::from(key), value: Arc::from(value), seq })
            .collect();
        let mut chunk = Chunk { first_seq: seq, last_seq: seq, puts };
        // Merged under the write lock, moving the puts (a merge of small chunks takes
        // microseconds, the largest about a millisecond; readers wait that long at most). A
        // poisoned lock means a reader panicked while copying Arcs: the list is intact.
        let mut chunks = self.chunks.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        debug_assert!(chunks.last().is_none_or(|last| last.last_seq < seq));
        while let Some(older) = chunks.last() {
            if older.puts.len() > 2 * chunk.puts.len() || older.puts.len() + chunk.puts.len() > CHUNK_ENTRIES_MAX {
                break;
            }
            let Some(older) = chunks.pop() else { break };
            // A reader may still hold it (it copied the list before this lock): then copy.
            let older = Arc::try_unwrap(older)
                .unwrap_or_else(|shared| Chunk { first_seq: shared.first_seq, last_seq: shared.last_seq, puts: shared.puts.clone() });
            chunk = Chunk::merge(older, chunk);
        }
        chunks.push(Arc::new(chunk));
    }

    /// Writes inserted so far (a key written twice counts twice): what the layer costs to flush.
    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::Relaxed)
    }

    /// Whether nothing was inserted.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty() && self.touched.is_empty() && self.chunks() == 0
    }

    /// The chunks holding batches up to `visible`, in batch order.
    fn visible_chunks(&self, visible: u64) -> Vec<Arc<Chunk>> {
        let chunks = self.chunks.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        chunks.iter().take_while(|chunk| chunk.first_seq <= visible).cloned().collect()
    }

    /// Chunks the append-only writes are kept in (O(log n), see the module docs).
    pub fn chunks(&self) -> usize {
        self.chunks.read().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Whether a reader of `table` must look at this layer at all.
    fn holds(&self, table: Table) -> bool {
        if table.is_append_only() {
            self.chunks() > 0
        } else {
            !self.versions.is_empty()
        }
    }

    /// Every key's newest write (what a flush writes): the skip list's in table and key
    /// order, then the chunks'.
    pub fn entries(&self) -> impl Iterator<Item = (Table, Entry)> + '_ {
        let appended = self.visible_chunks(u64::MAX).into_iter().flat_map(|chunk| {
            let puts: Vec<(Table, Entry)> = chunk.puts.iter().map(|put| (put.table, (put.key.clone(), Some(put.value.clone())))).collect();
            puts
        });
        let mut previous: Option<(u8, Arc<[u8]>)> = None;
        let versions = self.versions.iter().filter_map(move |entry| {
            let table_byte = entry.key().first().copied()?;
            let version = entry.value();
            if previous.as_ref().is_some_and(|(table, key)| *table == table_byte && *key == version.key) {
                return None; // an older version of the key just emitted
            }
            previous = Some((table_byte, version.key.clone()));
            let table = Table::ALL.get(usize::from(table_byte)).copied()?;
            Some((table, (version.key.clone(), version.value.clone())))
        });
        versions.chain(appended)
    }

    /// The newest version of `key` at `visible`: `Some(None)` when deleted there.
    fn lookup_owned(&self, table: Table, key: &[u8], visible: u64) -> Option<Option<Arc<[u8]>>> {
        if table.is_append_only() {
            return self.visible_chunks(visible).iter().find_map(|chunk| chunk.get(table, key, visible).map(|put| Some(put.value.clone())));
        }
        let bound = versioned(table, key, visible);
        let entry = self.versions.lower_bound(Bound::Included(&bound[..]))?;
        let version = entry.value();
        if entry.key().first() != Some(&(table.index() as u8)) || *version.key != *key {
            return None;
        }
        Some(version.value.clone())
    }

    /// The visible versions in `range`, newest per key, in scan order.
    fn range(&self, table: Table, range: ScanRange<'_>, visible: u64) -> Vec<Entry> {
        if table.is_append_only() {
            let mut found: Vec<Entry> = Vec::new();
            for chunk in self.visible_chunks(visible) {
                found.extend(chunk.range(table, range, visible).map(|put| (put.key.clone(), Some(put.value.clone()))));
            }
            found.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
            if range.direction == Direction::Reverse {
                found.reverse();
            }
            return found;
        }
        let mut prefix = Vec::with_capacity(range.prefix.len() + 2);
        encode_key(&mut prefix, table, range.prefix);
        let mut found = Vec::new();
        let within = |encoded: &[u8]| encoded.starts_with(&prefix);
        match range.direction {
            Direction::Forward => {
                let mut lower = Vec::new();
                encode_key(&mut lower, table, range.start.map_or(range.prefix, |start| start.max(range.prefix)));
                let mut current: Option<Arc<[u8]>> = None;
                let mut taken = false;
                for entry in self.versions.range::<[u8], _>((Bound::Included(&lower[..]), Bound::Unbounded)) {
                    if !within(entry.key()) {
                        break;
                    }
                    let version = entry.value();
                    if current.as_ref() != Some(&version.key) {
                        current = Some(version.key.clone());
                        taken = false;
                    }
                    if !taken && seq_of(entry.key()) <= visible {
                        found.push((version.key.clone(), version.value.clone()));
                        taken = true;
                    }
                }
            }
            Direction::Reverse => {
                let upper: Vec<u8> = match range.start {
                    Some(start) => {
                        let mut upper = Vec::new();
                        encode_key(&mut upper, table, start);
                        upper.extend_from_slice(&[0, 1]);
                        upper.extend_from_slice(&[0xff; 8]);
                        upper
                    }
                    None => {
                        let mut upper = prefix.clone();
                        upper.extend_from_slice(&[0xff; 9]); // above every key under the prefix
                        upper
                    }
                };
                // Going backwards a key's versions come oldest first: keep the newest visible one.
                let mut pending: Option<Entry> = None;
                let mut current: Option<Arc<[u8]>> = None;
                for entry in self.versions.range::<[u8], _>((Bound::Included(&prefix[..]), Bound::Included(&upper[..]))).rev() {
                    if !within(entry.key()) {
                        break;
                    }
                    let version = entry.value();
                    if current.as_ref() != Some(&version.key) {
                        found.extend(pending.take());
                        current = Some(version.key.clone());
                    }
                    if seq_of(entry.key()) <= visible {
                        pending = Some((version.key.clone(), version.value.clone()));
                    }
                }
                found.extend(pending);
            }
        }
        found
    }
}

/// Layers (newest first) over a base store, read at batch `visible`, as one store.
#[derive(Debug)]
pub struct LayeredView<'a, B: StoreRead + ?Sized> {
    base: &'a B,
    layers: &'a [Arc<Layer>],
    visible: u64,
    caches: Option<&'a ReadCaches>,
}

impl<'a, B: StoreRead + ?Sized> LayeredView<'a, B> {
    /// `layers`, newest first, over `base`, as of batch `visible` (`u64::MAX`: every batch).
    pub fn new(base: &'a B, layers: &'a [Arc<Layer>], visible: u64) -> Self {
        LayeredView { base, layers, visible, caches: None }
    }

    /// The same view, answering from `caches` where they know the answer (they must be
    /// recorded by whoever inserts these layers' batches, see [`crate::read_caches`]).
    pub fn with_caches(self, caches: &'a ReadCaches) -> Self {
        LayeredView { caches: Some(caches), ..self }
    }

    /// The newest visible write of `key` in any layer: `Some(None)` when deleted there.
    fn layered(&self, table: Table, key: &[u8]) -> Option<Option<Arc<[u8]>>> {
        self.layers.iter().find_map(|layer| layer.lookup_owned(table, key, self.visible))
    }
}

/// The layers' visible entries in `range`, merged in scan order, the newest layer winning
/// on equal keys (deletions included, as `None`).
fn merged_layers(layers: &[Arc<Layer>], table: Table, range: ScanRange<'_>, visible: u64) -> Vec<Entry> {
    let mut lists: Vec<std::iter::Peekable<std::vec::IntoIter<Entry>>> =
        layers.iter().map(|layer| layer.range(table, range, visible).into_iter().peekable()).collect();
    let before = |a: &[u8], b: &[u8]| match range.direction {
        Direction::Forward => a < b,
        Direction::Reverse => a > b,
    };
    let mut merged = Vec::new();
    loop {
        // The first key in scan order among the layers; the newest layer (lowest index) wins ties.
        let mut best: Option<(usize, Arc<[u8]>)> = None;
        for (index, list) in lists.iter_mut().enumerate() {
            if let Some((key, _)) = list.peek()
                && best.as_ref().is_none_or(|(_, best_key)| before(key, best_key))
            {
                best = Some((index, key.clone()));
            }
        }
        let Some((winner, key)) = best else { return merged };
        for (index, list) in lists.iter_mut().enumerate() {
            if list.peek().is_some_and(|(other, _)| *other == key) {
                let entry = list.next();
                if index == winner {
                    merged.extend(entry);
                }
            }
        }
    }
}

impl<B: StoreRead + ?Sized> StoreRead for LayeredView<'_, B> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        match self.layered(table, key) {
            Some(value) => Ok(value.map(|value| value.to_vec())),
            None => self.base.get(table, key),
        }
    }

    fn scan(
        &self,
        table: Table,
        range: ScanRange<'_>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Visit,
    ) -> Result<(), ProjectionError> {
        if !self.layers.iter().any(|layer| layer.holds(table)) {
            return self.base.scan(table, range, visit);
        }
        let layered = merged_layers(self.layers, table, range, self.visible);
        let shadowed: std::collections::HashSet<&[u8]> = layered.iter().map(|(key, _)| &key[..]).collect();
        let mut pending = layered.iter().map(|(key, value)| (&key[..], value.as_deref())).peekable();
        let before = |a: &[u8], b: &[u8]| match range.direction {
            Direction::Forward => a < b,
            Direction::Reverse => a > b,
        };
        let mut stopped = false;
        // Emits the layered entries that come before `bound` (all of them when `bound` is None).
        let mut drain = |bound: Option<&[u8]>, visit: &mut dyn FnMut(&[u8], &[u8]) -> Visit, stopped: &mut bool| {
            while let Some(&(key, value)) = pending.peek() {
                if *stopped || bound.is_some_and(|bound| !before(key, bound)) {
                    break;
                }
                pending.next();
                if let Some(value) = value
                    && visit(key, value).is_break()
                {
                    *stopped = true;
                }
            }
        };
        self.base.scan(table, range, &mut |key, value| {
            drain(Some(key), visit, &mut stopped);
            if stopped {
                return ControlFlow::Break(());
            }
            if shadowed.contains(key) {
                return ControlFlow::Continue(()); // emitted (or deleted) by a layer
            }
            if visit(key, value).is_break() {
                stopped = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })?;
        drain(None, visit, &mut stopped);
        Ok(())
    }

    fn touched_chats(&self, user: UserId) -> Vec<ChatId> {
        let mut chats: Vec<ChatId> = self
            .layers
            .iter()
            .flat_map(|layer| {
                layer
                    .touched
                    .range((user, ChatId(0))..=(user, ChatId(u64::MAX)))
                    .map(|entry| entry.value().1)
                    .collect::<Vec<_>>()
            })
            .collect();
        chats.extend(self.base.touched_chats(user));
        chats.sort_unstable();
        chats.dedup();
        chats
    }

    fn cached_last_message_ids(&self, chats: &[ChatId]) -> Vec<Option<MessageId>> {
        match self.caches {
            Some(caches) => caches.last_messages.lookup(self.visible, chats),
            None => vec![None; chats.len()],
        }
    }

    fn remember_last_message_ids(&self, read: &[(ChatId, MessageId)]) {
        if let Some(caches) = self.caches {
            caches.last_messages.remember(self.visible, read.iter().copied());
        }
    }

    fn cached_participants(&self, chat: ChatId) -> Option<Arc<[UserId]>> {
        self.caches?.participants.get(self.visible, &chat)
    }

    fn remember_participants(&self, chat: ChatId, participants: Arc<[UserId]>) {
        if let Some(caches) = self.caches {
            caches.participants.remember(self.visible, std::iter::once((chat, participants)));
        }
    }

    fn cached_large_chats(&self, user: UserId) -> Option<Arc<[ChatId]>> {
        self.caches?.large_chats.get(self.visible, &user)
    }

    fn remember_large_chats(&self, user: UserId, chats: Arc<[ChatId]>) {
        if let Some(caches) = self.caches {
            caches.large_chats.remember(self.visible, std::iter::once((user, chats)));
        }
    }

    fn touched_entries(&self) -> Vec<(UserId, ChatId)> {
        let mut entries: Vec<(UserId, ChatId)> =
            self.layers.iter().flat_map(|layer| layer.touched.iter().map(|entry| *entry.value()).collect::<Vec<_>>()).collect();
        entries.extend(self.base.touched_entries());
        entries.sort_unstable();
        entries.dedup();
        entries
    }
}
