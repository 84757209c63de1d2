//! The key-value interface the fold reads and writes through.
//!
//! The fold never touches RocksDB: the engine implements [`Store`] over a RocksDB
//! write batch (with its pending writes readable), the replay CLI over a shadow slot,
//! and [`MemStore`] keeps everything in a `BTreeMap` for independent verification
//! and tests. All three must behave identically; `MemStore` is the reference.

use crate::error::ProjectionError;
use std::collections::BTreeMap;
use std::ops::ControlFlow;

/// Every projection table. Each is one RocksDB column family per projection slot,
/// named after its key layout (see FORMAT.md).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Table {
    /// `chat_id` -> [`crate::records::ChatRecord`].
    ChatidChat,
    /// `chat_id | user_id` -> [`crate::records::MemberRecord`]: one user's view of one chat.
    ChatidUseridMember,
    /// `user_id | last_message_id | chat_id` -> empty: the chat list of chats with at most
    /// [`crate::limits::CHAT_LIST_FANOUT_MAX`] members, ordered by last message.
    UseridLastmsgidChatidChatlist,
    /// `user_id | chat_id` -> empty: the user's memberships in chats above the fan-out limit,
    /// whose order is read from the chat record at query time.
    UseridChatidLargechat,
    /// `chat_id | message_id` -> [`crate::records::MessageRecord`] (deleted ones stay as tombstones).
    ChatidMsgidMessage,
    /// `chat_id | seq` -> empty: sequence numbers of deleted messages, to derive unread counts.
    ChatidSeqDeleted,
    /// `user_id | user_id` (lower first) -> `chat_id`: the DM (or self chat) between two users.
    UseridUseridDm,
    /// `code` -> [`crate::records::InviteRecord`].
    CodeInvite,
    /// `chat_id | code` -> empty: a chat's active invites.
    ChatidCodeInvite,
    /// `user_id` -> [`crate::records::UserRecord`]: the user directory.
    UseridUser,
    /// Fixed keys: checkpoint and schema version of this projection slot.
    ProjectionMeta,
}

impl Table {
    /// All tables, in a fixed order.
    pub const ALL: [Table; 11] = [
        Table::ChatidChat,
        Table::ChatidUseridMember,
        Table::UseridLastmsgidChatidChatlist,
        Table::UseridChatidLargechat,
        Table::ChatidMsgidMessage,
        Table::ChatidSeqDeleted,
        Table::UseridUseridDm,
        Table::CodeInvite,
        Table::ChatidCodeInvite,
        Table::UseridUser,
        Table::ProjectionMeta,
    ];

    /// The table's name, which is its column family name without the slot suffix.
    pub const fn name(self) -> &'static str {
        match self {
            Table::ChatidChat => "chatid_chat",
            Table::ChatidUseridMember => "chatid_userid_member",
            Table::UseridLastmsgidChatidChatlist => "userid_lastmsgid_chatid_chatlist",
            Table::UseridChatidLargechat => "userid_chatid_largechat",
            Table::ChatidMsgidMessage => "chatid_msgid_message",
            Table::ChatidSeqDeleted => "chatid_seq_deleted",
            Table::UseridUseridDm => "userid_userid_dm",
            Table::CodeInvite => "code_invite",
            Table::ChatidCodeInvite => "chatid_code_invite",
            Table::UseridUser => "userid_user",
            Table::ProjectionMeta => "projection_meta",
        }
    }

    /// The table named `name` (as [`Table::name`] spells it).
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|table| table.name() == name)
    }

    /// Dense index of the table in [`Table::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

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
fn in_range<'m, V>(
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

/// Pending writes over a base store: what one batch (or one command inside a batch)
/// has written but not yet committed. Reads see the pending writes first.
#[derive(Debug)]
pub struct Overlay<'base, B: StoreRead + ?Sized> {
    base: &'base B,
    pending: PendingWrites,
}

/// Writes not yet applied to a base store: per table, key -> `Some(value)` or `None` (deleted).
#[derive(Clone, Default, Debug)]
pub struct PendingWrites {
    tables: BTreeMap<Table, BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
}

impl PendingWrites {
    /// No writes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.tables.values().all(BTreeMap::is_empty)
    }

    /// Number of pending puts and deletes.
    pub fn len(&self) -> usize {
        self.tables.values().map(BTreeMap::len).sum()
    }

    /// Moves every write of `later` on top of these.
    pub fn absorb(&mut self, later: PendingWrites) {
        for (table, entries) in later.tables {
            self.tables.entry(table).or_default().extend(entries);
        }
    }

    /// Every pending write, table by table in key order: `(table, key, Some(value) | None)`.
    pub fn iter(&self) -> impl Iterator<Item = (Table, &[u8], Option<&[u8]>)> {
        self.tables.iter().flat_map(|(table, entries)| {
            entries.iter().map(move |(key, value)| (*table, key.as_slice(), value.as_deref()))
        })
    }

    fn lookup(&self, table: Table, key: &[u8]) -> Option<Option<&Vec<u8>>> {
        self.tables.get(&table)?.get(key).map(Option::as_ref)
    }
}

impl<'base, B: StoreRead + ?Sized> Overlay<'base, B> {
    /// Nothing pending yet over `base`.
    pub fn new(base: &'base B) -> Self {
        Overlay { base, pending: PendingWrites::new() }
    }

    /// Pending writes of `pending` over `base`.
    pub fn with_pending(base: &'base B, pending: PendingWrites) -> Self {
        Overlay { base, pending }
    }

    /// The writes made through this overlay.
    pub fn into_pending(self) -> PendingWrites {
        self.pending
    }

    /// Puts `later` on top of the pending writes (a nested overlay's result).
    pub fn absorb(&mut self, later: PendingWrites) {
        self.pending.absorb(later);
    }

    /// The writes made through this overlay, still in place.
    pub fn pending(&self) -> &PendingWrites {
        &self.pending
    }
}

impl<B: StoreRead + ?Sized> StoreRead for Overlay<'_, B> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        match self.pending.lookup(table, key) {
            Some(value) => Ok(value.cloned()),
            None => self.base.get(table, key),
        }
    }

    fn scan(
        &self,
        table: Table,
        range: ScanRange<'_>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Visit,
    ) -> Result<(), ProjectionError> {
        let Some(pending) = self.pending.tables.get(&table).filter(|p| !p.is_empty()) else {
            return self.base.scan(table, range, visit);
        };
        // Merge the base's entries with the pending ones, pending first on equal keys.
        let mut pending_in_range = in_range(pending, range).map(|(k, v)| (k.as_slice(), v.as_deref())).peekable();
        let before = |a: &[u8], b: &[u8]| match range.direction {
            Direction::Forward => a < b,
            Direction::Reverse => a > b,
        };
        let mut stopped = false;
        // Emits pending entries that come before `bound` (all of them when `bound` is None).
        let mut drain_pending = |bound: Option<&[u8]>, visit: &mut dyn FnMut(&[u8], &[u8]) -> Visit, stopped: &mut bool| {
            while let Some(&(key, value)) = pending_in_range.peek() {
                if *stopped || bound.is_some_and(|b| !before(key, b)) {
                    break;
                }
                pending_in_range.next();
                if let Some(value) = value
                    && visit(key, value).is_break()
                {
                    *stopped = true;
                }
            }
        };
        self.base.scan(table, range, &mut |key, value| {
            drain_pending(Some(key), visit, &mut stopped);
            if stopped {
                return ControlFlow::Break(());
            }
            if pending.contains_key(key) {
                return ControlFlow::Continue(()); // shadowed: emitted (or deleted) by the pending side
            }
            if visit(key, value).is_break() {
                stopped = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })?;
        drain_pending(None, visit, &mut stopped);
        Ok(())
    }
}

impl<B: StoreRead + ?Sized> Store for Overlay<'_, B> {
    fn put(&mut self, table: Table, key: Vec<u8>, value: Vec<u8>) {
        self.pending.tables.entry(table).or_default().insert(key, Some(value));
    }

    fn delete(&mut self, table: Table, key: Vec<u8>) {
        self.pending.tables.entry(table).or_default().insert(key, None);
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
