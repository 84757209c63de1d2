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
//! keys per event) skip the skip list. Their keys are a group (a user or a chat) and a
//! position ([`Table::append_group_bytes`]), put once each and in increasing order per
//! group, so a layer keeps one vector per group, sorted by appending: an insert moves the
//! key and value in (no allocation, no comparison but with the group's last key), a read
//! finds its group by hash and binary-searches it. Each put is tagged with its batch.
//! (A skip-list insert per key cost about 2 µs on the inserting thread; sorted chunks per
//! batch, merged like an LSM tree's runs, were a sixth of that thread's time at 256
//! submitters, most of it moving entries and faulting in fresh pages for the merges.)
//!
//! A reader sees `layers` (newest first) over `base` at sequence `visible`: exactly the
//! state after that batch, provided the base holds every flush older than its oldest
//! layer and nothing newer than its newest (the engine's read path checks this, see
//! `engine/src/view.rs`).

use crate::error::ProjectionError;
use crate::store::{Direction, ScanRange, StoreRead, Visit, prefix_successor};
use crate::tables::Table;
use crossbeam_skiplist::{SkipMap, SkipSet};
use crate::read_caches::ReadCaches;
use osmium_proto::ids::{ChatId, MessageId, UserId};
use std::ops::{Bound, ControlFlow};
use std::sync::{Arc, RwLock};
use std::sync::atomic::{AtomicUsize, Ordering};
use foldhash::HashMap;

/// One write of a projection table: `Some(value)` puts, `None` deletes.
pub type KvWrite = (Table, Vec<u8>, Option<Vec<u8>>);

/// One put of an append-only table ([`Table::is_append_only`]): a new key and its value.
pub type AppendWrite = (Table, Vec<u8>, Vec<u8>);

/// What [`Layer::visit_entries`] calls for each write: the table, the key, `Some(value)`
/// for a put or `None` for a delete.
pub type VisitWrite<'a> = dyn FnMut(Table, &[u8], Option<&[u8]>) + 'a;

/// A write as a layer keeps it and readers get it: the key and the value (`None`:
/// deleted), in one allocation (a version's one allocation besides its skip-list node:
/// allocating and freeing them was a good part of both the inserting and the flushing
/// thread's time).
#[derive(Clone, Debug)]
pub struct Entry {
    bytes: Arc<[u8]>,
    key_len: usize,
    deleted: bool,
}

impl Entry {
    fn new(key: &[u8], value: Option<&[u8]>) -> Self {
        // One allocation: a chain of two slices' copies has an exact length.
        let bytes: Arc<[u8]> = key.iter().chain(value.unwrap_or_default()).copied().collect();
        Entry { bytes, key_len: key.len(), deleted: value.is_none() }
    }

    fn key(&self) -> &[u8] {
        self.bytes.get(..self.key_len).unwrap_or_default()
    }

    fn value(&self) -> Option<&[u8]> {
        if self.deleted { None } else { self.bytes.get(self.key_len..) }
    }
}

/// The skip list's key of one version: ordered by table, then key bytes, then newest
/// batch first. The key's first 24 bytes are three big-endian words (zero-padded), so
/// most comparisons (every projection key but invite codes and usernames is at most 24
/// bytes) are three integer comparisons rather than a `memcmp` of an escaped copy.
#[derive(Debug, PartialEq, Eq)]
struct VersionKey {
    table: u8,
    head: [u64; 3],
    /// The key's bytes after the first 24 (empty, not allocated, for most keys).
    tail: Box<[u8]>,
    /// Orders a key before its extensions by zero bytes, whose heads are equal.
    len: usize,
    newer: std::cmp::Reverse<u64>,
}

/// Bytes of a key held in [`VersionKey::head`].
const HEAD_BYTES: usize = 24;

impl Ord for VersionKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.table, self.head)
            .cmp(&(other.table, other.head))
            .then_with(|| {
                if self.len <= HEAD_BYTES && other.len <= HEAD_BYTES {
                    self.len.cmp(&other.len) // no tails: skip the slice comparison (a memcmp call)
                } else {
                    self.tail.cmp(&other.tail).then(self.len.cmp(&other.len))
                }
            })
            .then_with(|| self.newer.cmp(&other.newer))
    }
}

impl PartialOrd for VersionKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl VersionKey {
    /// The key of `key`'s version written by batch `seq` (`u64::MAX`: before every
    /// version of the key; 0: after every one).
    fn new(table: Table, key: &[u8], seq: u64) -> Self {
        let mut head = [0u64; 3];
        for (word, bytes) in head.iter_mut().zip(key.chunks(8)) {
            let mut padded = [0u8; 8];
            padded[..bytes.len()].copy_from_slice(bytes);
            *word = u64::from_be_bytes(padded);
        }
        let tail = key.get(HEAD_BYTES..).map_or_else(Box::default, Box::from);
        VersionKey { table: table.index() as u8, head, tail, len: key.len(), newer: std::cmp::Reverse(seq) }
    }

    /// Before every key of the tables after `table`.
    fn end_of(table: Table) -> Self {
        VersionKey { table: table.index() as u8 + 1, head: [0; 3], tail: Box::default(), len: 0, newer: std::cmp::Reverse(u64::MAX) }
    }

    fn seq(&self) -> u64 {
        self.newer.0
    }

    /// Whether `other` is a version of the same key.
    fn same_key(&self, other: &VersionKey) -> bool {
        self.table == other.table && self.head == other.head && self.len == other.len && self.tail == other.tail
    }
}

/// Projection writes of some consecutive batches, each version under its batch's sequence
/// number, with the chats whose chat-list entries they made stale (see
/// [`StoreRead::touched_chats`]).
#[derive(Debug, Default)]
pub struct Layer {
    versions: SkipMap<VersionKey, Entry>,
    /// The append-only tables' puts, grouped (see the module docs).
    appended: RwLock<Appended>,
    touched: SkipSet<(UserId, ChatId)>,
    writes: AtomicUsize,
}

/// The puts of append-only tables, one vector per group, each sorted by key.
#[derive(Debug, Default)]
struct Appended {
    groups: HashMap<GroupId, Vec<AppendPut>>,
    puts: usize,
}

/// A group of an append-only table: the table and its key's group bytes (zero-padded).
type GroupId = (u8, [u8; 8]);

/// The group of `key` in append-only `table`.
fn group_of(table: Table, key: &[u8]) -> GroupId {
    let len = table.append_group_bytes().unwrap_or(0).min(key.len()).min(8);
    let mut group = [0u8; 8];
    group[..len].copy_from_slice(&key[..len]);
    (table.index() as u8, group)
}

/// One put of an append-only table, with the batch that wrote it.
#[derive(Debug)]
struct AppendPut {
    key: Vec<u8>,
    value: Vec<u8>,
    seq: u64,
}

impl Appended {
    /// Puts `key` in its group: appended when it is the group's greatest (the fold's
    /// order), inserted in place otherwise.
    fn put(&mut self, table: Table, key: Vec<u8>, value: Vec<u8>, seq: u64) {
        let puts = self.groups.entry(group_of(table, &key)).or_default();
        self.puts += 1;
        if puts.last().is_none_or(|last| last.key < key) {
            puts.push(AppendPut { key, value, seq });
            return;
        }
        match puts.binary_search_by(|put| put.key.as_slice().cmp(&key)) {
            Ok(found) => {
                debug_assert!(false, "{table:?} key put twice");
                puts[found] = AppendPut { key, value, seq };
                self.puts -= 1;
            }
            Err(at) => puts.insert(at, AppendPut { key, value, seq }),
        }
    }

    /// The puts of `table` in `range` visible at `visible`, in key order (forward).
    fn range(&self, table: Table, range: ScanRange<'_>, visible: u64) -> Vec<Entry> {
        let group_bytes = table.append_group_bytes().unwrap_or(0);
        let lower = match (range.direction, range.start) {
            (Direction::Forward, Some(start)) => start.max(range.prefix),
            _ => range.prefix,
        };
        let mut found: Vec<Entry> = Vec::new();
        let upper = match (range.direction, range.start) {
            (Direction::Reverse, Some(start)) => Some(start),
            _ => None,
        };
        let mut take = |puts: &[AppendPut]| {
            let first = puts.partition_point(|put| put.key.as_slice() < lower);
            let end = upper.map_or(puts.len(), |upper| puts.partition_point(|put| put.key.as_slice() <= upper)).max(first);
            found.extend(
                puts[first..end]
                    .iter()
                    .take_while(|put| put.key.starts_with(range.prefix))
                    .filter(|put| put.seq <= visible && range.contains(&put.key))
                    .map(|put| Entry::new(&put.key, Some(&put.value))),
            );
        };
        if range.prefix.len() >= group_bytes {
            // Every key under the prefix is in the prefix's group.
            if let Some(puts) = self.groups.get(&group_of(table, range.prefix)) {
                take(puts);
            }
        } else {
            for ((index, _), puts) in &self.groups {
                if usize::from(*index) == table.index() {
                    take(puts);
                }
            }
            found.sort_unstable_by(|a, b| a.key().cmp(b.key()));
        }
        found
    }

    fn get(&self, table: Table, key: &[u8], visible: u64) -> Option<Vec<u8>> {
        let puts = self.groups.get(&group_of(table, key))?;
        let found = puts.binary_search_by(|put| put.key.as_slice().cmp(key)).ok()?;
        puts.get(found).filter(|put| put.seq <= visible).map(|put| put.value.clone())
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
            self.append(seq, appended);
        }
        // Inserted in key order: each search then walks the nodes the one before it
        // brought into the cache.
        let mut versions: Vec<(VersionKey, Entry)> = writes
            .into_iter()
            .map(|(table, key, value)| {
                debug_assert!(!table.is_append_only(), "{table:?} writes go in their groups");
                (VersionKey::new(table, &key, seq), Entry::new(&key, value.as_deref()))
            })
            .collect();
        versions.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
        self.writes.fetch_add(versions.len(), Ordering::Relaxed);
        for (key, version) in versions {
            self.versions.insert(key, version);
        }
        for &entry in touched {
            self.touched.insert(entry);
        }
    }

    /// Puts batch `seq`'s append-only writes in their groups, under the write lock (a
    /// move each: readers wait that long at most; the inserting thread waits for readers
    /// copying out of one group). Runs on the one thread that inserts.
    fn append(&self, seq: u64, appended: Vec<AppendWrite>) {
        debug_assert!(appended.iter().all(|(table, _, _)| table.is_append_only()));
        self.writes.fetch_add(appended.len(), Ordering::Relaxed);
        // A poisoned lock means a reader panicked while copying out: the groups are intact.
        let mut index = self.appended.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (table, key, value) in appended {
            index.put(table, key, value, seq);
        }
    }

    fn appended(&self) -> std::sync::RwLockReadGuard<'_, Appended> {
        self.appended.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes inserted so far (a key written twice counts twice): what the layer costs to flush.
    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::Relaxed)
    }

    /// Whether nothing was inserted.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty() && self.touched.is_empty() && self.appended().puts == 0
    }

    /// Whether a reader of `table` must look at this layer at all.
    fn holds(&self, table: Table) -> bool {
        if table.is_append_only() {
            self.appended().puts > 0
        } else {
            !self.versions.is_empty()
        }
    }

    /// Visits every key's newest write (what a flush writes): the skip list's in table and
    /// key order, then the append-only tables' by group.
    pub fn visit_entries(&self, visit: &mut VisitWrite<'_>) {
        let mut previous: Option<(u8, Entry)> = None;
        for entry in self.versions.iter() {
            let (table_byte, version) = (entry.key().table, entry.value());
            if previous.as_ref().is_some_and(|(table, key)| *table == table_byte && key.key() == version.key()) {
                continue; // an older version of the key just visited
            }
            previous = Some((table_byte, version.clone()));
            let Some(table) = Table::ALL.get(usize::from(table_byte)).copied() else { continue };
            visit(table, version.key(), version.value());
        }
        let appended = self.appended();
        for ((table_byte, _), puts) in &appended.groups {
            let Some(table) = Table::ALL.get(usize::from(*table_byte)).copied() else { continue };
            for put in puts {
                visit(table, &put.key, Some(&put.value));
            }
        }
    }

    /// Every key's newest write, copied (see [`Layer::visit_entries`]).
    pub fn entries(&self) -> Vec<KvWrite> {
        let mut entries = Vec::new();
        self.visit_entries(&mut |table, key, value| entries.push((table, key.to_vec(), value.map(<[u8]>::to_vec))));
        entries
    }

    /// The newest version of `key` at `visible`: `Some(None)` when deleted there.
    fn lookup_owned(&self, table: Table, key: &[u8], visible: u64) -> Option<Option<Vec<u8>>> {
        if table.is_append_only() {
            return self.appended().get(table, key, visible).map(Some);
        }
        let bound = VersionKey::new(table, key, visible);
        let entry = self.versions.lower_bound(Bound::Included(&bound))?;
        if !entry.key().same_key(&bound) {
            return None;
        }
        Some(entry.value().value().map(<[u8]>::to_vec))
    }

    /// The visible versions in `range`, newest per key, in scan order.
    fn range(&self, table: Table, range: ScanRange<'_>, visible: u64) -> Vec<Entry> {
        if table.is_append_only() {
            let mut found = self.appended().range(table, range, visible);
            if range.direction == Direction::Reverse {
                found.reverse();
            }
            return found;
        }
        let mut found = Vec::new();
        let within = |version: &Entry| version.key().starts_with(range.prefix);
        match range.direction {
            Direction::Forward => {
                let lower = VersionKey::new(table, range.start.map_or(range.prefix, |start| start.max(range.prefix)), u64::MAX);
                let mut current: Option<Entry> = None;
                let mut taken = false;
                for entry in self.versions.range((Bound::Included(lower), Bound::Excluded(VersionKey::end_of(table)))) {
                    let version = entry.value();
                    if !within(version) {
                        break;
                    }
                    if current.as_ref().is_none_or(|current| current.key() != version.key()) {
                        current = Some(version.clone());
                        taken = false;
                    }
                    if !taken && entry.key().seq() <= visible {
                        found.push(version.clone());
                        taken = true;
                    }
                }
            }
            Direction::Reverse => {
                let upper = match range.start {
                    Some(start) => Bound::Included(VersionKey::new(table, start, 0)),
                    None => match prefix_successor(range.prefix) {
                        Some(successor) => Bound::Excluded(VersionKey::new(table, &successor, u64::MAX)),
                        None => Bound::Excluded(VersionKey::end_of(table)),
                    },
                };
                let lower = VersionKey::new(table, range.prefix, u64::MAX);
                // Going backwards a key's versions come oldest first: keep the newest visible one.
                let mut pending: Option<Entry> = None;
                let mut current: Option<Entry> = None;
                for entry in self.versions.range((Bound::Included(lower), upper)).rev() {
                    let version = entry.value();
                    if !within(version) {
                        break;
                    }
                    if current.as_ref().is_none_or(|current| current.key() != version.key()) {
                        found.extend(pending.take());
                        current = Some(version.clone());
                    }
                    if entry.key().seq() <= visible {
                        pending = Some(version.clone());
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
    fn layered(&self, table: Table, key: &[u8]) -> Option<Option<Vec<u8>>> {
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
        let mut best: Option<(usize, Entry)> = None;
        for (index, list) in lists.iter_mut().enumerate() {
            if let Some(entry) = list.peek()
                && best.as_ref().is_none_or(|(_, best)| before(entry.key(), best.key()))
            {
                best = Some((index, entry.clone()));
            }
        }
        let Some((winner, best)) = best else { return merged };
        for (index, list) in lists.iter_mut().enumerate() {
            if list.peek().is_some_and(|other| other.key() == best.key()) {
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
            Some(value) => Ok(value),
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
        let shadowed: std::collections::HashSet<&[u8]> = layered.iter().map(Entry::key).collect();
        let mut pending = layered.iter().map(|entry| (entry.key(), entry.value())).peekable();
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
