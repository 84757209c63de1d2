//! The key-value interface readers see the projections through.
//!
//! Readers (the engine's queries, the replay CLI, verification) read the projection tables
//! as ordered key-value tables: the engine serves them from RocksDB with the not yet
//! flushed state layered on top ([`crate::layers`]), the replay CLI from a slot of a
//! data directory, and [`MemStore`] keeps everything in a `BTreeMap` (the reference,
//! used for verification and tests). The fold itself works on typed records in memory
//! ([`crate::state`]), not through this interface.

use crate::error::ProjectionError;
pub use crate::tables::Table;
use std::collections::BTreeMap;
use std::ops::ControlFlow;

/// Scan direction.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Direction {
    /// Ascending key order.
    Forward,
    /// Descending key order.
    Reverse,
}

/// Which keys a scan visits: those starting with `prefix`, from `start` (inclusive) on,
/// in `direction`. Without `start` a forward scan begins at the first key of the prefix
/// and a reverse scan at its last.
#[derive(Clone, Copy, Debug)]
pub struct ScanRange<'a> {
    /// Every visited key starts with these bytes.
    pub prefix: &'a [u8],
    /// First key to consider (inclusive), in scan direction.
    pub start: Option<&'a [u8]>,
    /// Ascending or descending.
    pub direction: Direction,
}

impl<'a> ScanRange<'a> {
    /// All keys under `prefix`, ascending.
    pub fn prefix(prefix: &'a [u8]) -> Self {
        ScanRange { prefix, start: None, direction: Direction::Forward }
    }

    /// All keys under `prefix`, descending.
    pub fn prefix_reverse(prefix: &'a [u8]) -> Self {
        ScanRange { prefix, start: None, direction: Direction::Reverse }
    }

    /// Same range, starting at `start` (inclusive).
    pub fn starting_at(self, start: &'a [u8]) -> Self {
        ScanRange { start: Some(start), ..self }
    }

    /// Whether `key` lies in the range (prefix and start bound; not the direction's end).
    pub fn contains(&self, key: &[u8]) -> bool {
        if !key.starts_with(self.prefix) {
            return false;
        }
        match (self.start, self.direction) {
            (None, _) => true,
            (Some(start), Direction::Forward) => key >= start,
            (Some(start), Direction::Reverse) => key <= start,
        }
    }
}

/// The smallest byte string greater than every string starting with `prefix`, if any.
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut successor = prefix.to_vec();
    while let Some(last) = successor.pop() {
        if last < u8::MAX {
            successor.push(last + 1);
            return Some(successor);
        }
    }
    None
}

/// The entries of an ordered map that lie in `range`, in scan order, found by seeking
/// (not by filtering the whole map).
pub(crate) fn in_range<'m, V>(
    map: &'m BTreeMap<Vec<u8>, V>,
    range: ScanRange<'m>,
) -> Box<dyn Iterator<Item = (&'m Vec<u8>, &'m V)> + 'm> {
    use std::ops::Bound::{Excluded, Included, Unbounded};
    let prefix = range.prefix;
    match range.direction {
        Direction::Forward => {
            let lower = range.start.map_or(prefix, |start| start.max(prefix)).to_vec();
            Box::new(map.range((Included(lower), Unbounded)).take_while(move |(key, _)| key.starts_with(prefix)))
        }
        Direction::Reverse => {
            let upper = match (range.start, prefix_successor(prefix)) {
                (Some(start), _) => Included(start.to_vec()),
                (None, Some(successor)) => Excluded(successor),
                (None, None) => Unbounded,
            };
            Box::new(map.range((Unbounded, upper)).rev().take_while(move |(key, _)| key.starts_with(prefix)))
        }
    }
}

/// A visitor's answer: go on, or stop the scan.
pub type Visit = ControlFlow<()>;

/// Read access to projection tables.
pub trait StoreRead {
    /// The value under `key`, if any.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError>;

    /// Calls `visit` for every entry in `range`, in order, until it returns `Break`.
    fn scan(
        &self,
        table: Table,
        range: ScanRange<'_>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Visit,
    ) -> Result<(), ProjectionError>;

    /// Chats whose entry in `user`'s chat-list index may be stale in this store: their
    /// last message or `user`'s membership changed after the index was last written (the
    /// index is written when the state is flushed, see [`crate::chat_list`]). A chat-list
    /// query skips their index entries and places them by their current records instead.
    /// Stores that hold a complete index (every store but the engine's live view) have none.
    fn touched_chats(&self, user: osmium_proto::ids::UserId) -> Vec<osmium_proto::ids::ChatId> {
        let _ = user;
        Vec::new()
    }

    /// Every `(user, chat)` whose chat-list entry may be stale (see [`Self::touched_chats`]).
    fn touched_entries(&self) -> Vec<(osmium_proto::ids::UserId, osmium_proto::ids::ChatId)> {
        Vec::new()
    }

    /// The last message id of each of `chats` (large chats) as of this store, where a cache
    /// of it knows them ([`crate::read_caches`]); `None`: read the chat record. Stores
    /// without a cache know none.
    fn cached_last_message_ids(&self, chats: &[osmium_proto::ids::ChatId]) -> Vec<Option<osmium_proto::ids::MessageId>> {
        vec![None; chats.len()]
    }

    /// Tells this store's cache, if any, the last message ids read from these chats' records.
    fn remember_last_message_ids(&self, read: &[(osmium_proto::ids::ChatId, osmium_proto::ids::MessageId)]) {
        let _ = read;
    }

    /// The participants of group `chat` in join order as of this store, where a cache of
    /// them knows them ([`crate::read_caches`]); `None`: read the member records.
    fn cached_participants(&self, chat: osmium_proto::ids::ChatId) -> Option<std::sync::Arc<[osmium_proto::ids::UserId]>> {
        let _ = chat;
        None
    }

    /// Tells this store's cache, if any, the participants read from `chat`'s member records.
    fn remember_participants(&self, chat: osmium_proto::ids::ChatId, participants: std::sync::Arc<[osmium_proto::ids::UserId]>) {
        let _ = (chat, participants);
    }

    /// The large chats of `user` in chat id order as of this store, where a cache of them
    /// knows them ([`crate::read_caches`]); `None`: scan `userid_chatid_largechat`.
    fn cached_large_chats(&self, user: osmium_proto::ids::UserId) -> Option<std::sync::Arc<[osmium_proto::ids::ChatId]>> {
        let _ = user;
        None
    }

    /// Tells this store's cache, if any, the large chats of `user` read from the index.
    fn remember_large_chats(&self, user: osmium_proto::ids::UserId, chats: std::sync::Arc<[osmium_proto::ids::ChatId]>) {
        let _ = (user, chats);
    }
}

/// `parse(key, value)` of every entry whose key starts with `prefix`, in key order;
/// stops at the first entry that does not parse.
pub fn collect_prefix<T>(
    store: &(impl StoreRead + ?Sized),
    table: Table,
    prefix: &[u8],
    mut parse: impl FnMut(&[u8], &[u8]) -> Result<T, ProjectionError>,
) -> Result<Vec<T>, ProjectionError> {
    let mut parsed = Vec::new();
    let mut failure = None;
    store.scan(table, ScanRange::prefix(prefix), &mut |key, value| match parse(key, value) {
        Ok(item) => {
            parsed.push(item);
            ControlFlow::Continue(())
        }
        Err(err) => {
            failure = Some(err);
            ControlFlow::Break(())
        }
    })?;
    failure.map_or(Ok(parsed), Err)
}

/// Read and write access: what the fold needs. Writes are visible to later reads
/// through the same store at once.
pub trait Store: StoreRead {
    /// Sets `key` to `value`.
    fn put(&mut self, table: Table, key: Vec<u8>, value: Vec<u8>);
    /// Removes `key` (no error when absent).
    fn delete(&mut self, table: Table, key: Vec<u8>);
}

/// Projection tables held in memory: the reference implementation of [`Store`],
/// used by `verify` and by tests.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct MemStore {
    tables: BTreeMap<Table, BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every entry of `table`, in key order.
    pub fn entries(&self, table: Table) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.tables
            .get(&table)
            .into_iter()
            .flat_map(|entries| entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
    }
}

impl StoreRead for MemStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        Ok(self.tables.get(&table).and_then(|entries| entries.get(key).cloned()))
    }

    fn scan(
        &self,
        table: Table,
        range: ScanRange<'_>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Visit,
    ) -> Result<(), ProjectionError> {
        let Some(entries) = self.tables.get(&table) else { return Ok(()) };
        let _stopped = in_range(entries, range).try_for_each(|(key, value)| visit(key, value));
        Ok(())
    }
}

impl Store for MemStore {
    fn put(&mut self, table: Table, key: Vec<u8>, value: Vec<u8>) {
        self.tables.entry(table).or_default().insert(key, value);
    }

    fn delete(&mut self, table: Table, key: Vec<u8>) {
        if let Some(entries) = self.tables.get_mut(&table) {
            entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_successor;

    #[test]
    fn prefix_successor_increments_the_last_byte_below_255() {
        assert_eq!(prefix_successor(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_successor(&[1, 255]), Some(vec![2]));
        assert_eq!(prefix_successor(&[255, 255]), None);
    }
}
