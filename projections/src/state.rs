//! The projections in memory: the typed records the fold reads and changes.
//!
//! Records are loaded on demand from a [`StoreRead`] (the flushed projection tables; for a
//! fold from scratch, an empty store), kept decoded in hash maps, changed in place by the
//! fold, and reported as key-value writes once per batch ([`ProjectionState::take_writes`]):
//! a record changed by many events of one batch is encoded once. The chat-list index is
//! derived, not folded: its entries are computed when the state is cut for a flush
//! ([`crate::chat_list`]), so that a member's entry is written once per flush however many
//! messages moved it.
//!
//! Memory: every cached record counts its approximate footprint; past `bytes_max` the
//! least recently used **clean** records are evicted (a record is clean once the flush
//! that persists its last change has landed, see [`ProjectionState::mark_persisted`]).
//! Dirty records are never evicted: until their flush lands the source does not have them.
//!
//! Architecture invariant: no I/O of its own (the source is the only way out), no clock,
//! no ids; the same events folded into a fresh state give the same records.

use crate::catch_up::{EFFECTS_PER_EVENT_MAX, EffectsRecord, Told, elide_content, user_entries};
use crate::chat_list::ListChange;
use crate::effects::Effect;
use crate::error::ProjectionError;
use crate::keys;
use crate::layers::{AppendWrite, KvWrite};
use crate::sharded::{ShardedMap, shrink_sparse};
use crate::records::{self, ChatRecord, InviteRecord, MemberRecord, MessageRecord, NotifPrefs, UserRecord, decode};
use crate::store::{MemStore, ScanRange, Store, StoreRead, collect_prefix};
use crate::tables::Table;
use osmium_proto::ids::{ChatId, MessageId, Position, UserId};
use foldhash::{HashMap, HashMapExt as _, HashSet, HashSetExt as _};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::sync::Arc;

/// Bytes one entry of a `HashMap<K, V>` takes in the map's table: the pair and its control
/// byte, twice over, because a table that has just grown is half empty (it doubles its
/// capacity once 7/8 of it is used). Records are counted at this size plus what they hold
/// on the heap: the budget bounds what the process allocates, not an estimate of it
/// (issue #11: a guess of 64 bytes per entry undercounted the message table by 2 to 4x).
const fn table_entry_bytes<K, V>() -> usize {
    2 * (size_of::<K>() + size_of::<V>() + 1)
}

/// Buckets of [`ProjectionState::evict`]'s histogram of last uses.
const EVICTION_BUCKETS: usize = 1_024;

/// A `retain` predicate that drops the slots `evicted(persist_cut, last_used)` chooses,
/// adding their bytes to `freed`.
fn unless_evicted<'a, K, V>(evicted: impl Fn(u64, u64) -> bool + 'a, freed: &'a mut usize) -> impl FnMut(&K, &mut Slot<V>) -> bool + 'a {
    move |_, slot| {
        let keep = !evicted(slot.persist_cut, slot.last_used);
        if !keep {
            *freed += slot.bytes;
        }
        keep
    }
}

/// Entries below which eviction leaves an unsharded table's room as it is
/// ([`shrink_sparse`]).
const SHRINK_ENTRIES_MIN: usize = 1_024;

/// Bytes of one id in a B-tree set or map entry: the key and value, with the nodes' room
/// (at least half full) and their headers.
const BTREE_ENTRY_OVERHEAD_BYTES: usize = 16;

/// Bytes of one cached mention (`seq -> message` in a member's B-tree map).
pub const MENTION_BYTES: usize = size_of::<(u64, MessageId)>() * 2 + BTREE_ENTRY_OVERHEAD_BYTES;

/// Bytes of a chat entry without its record's heap, members, messages or mentions.
const CHAT_ENTRY_BYTES: usize = table_entry_bytes::<ChatId, ChatEntry>();

/// A cached value: `None` records that the source has no such record (or it was deleted).
#[derive(Clone, Debug)]
struct Slot<T> {
    value: Option<T>,
    /// The cut that persists this slot's last change; 0 when never changed here.
    persist_cut: u64,
    last_used: u64,
    bytes: usize,
}

/// One member as live updates need it: who, and who notifies them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Recipient {
    /// The member.
    pub user: UserId,
    /// Who notifies them of new messages (unread counting is unaffected).
    pub notif_prefs: NotifPrefs,
}

#[derive(Debug, Default)]
struct ChatEntry {
    record: Option<ChatRecord>,
    members: HashMap<UserId, Option<MemberRecord>>,
    /// Whether `members` holds every member (absent users are then not members).
    members_complete: bool,
    /// Sequence numbers of deleted messages; loaded on first need.
    deleted: Option<BTreeSet<u64>>,
    /// Codes of the chat's invites; loaded on first need.
    invite_codes: Option<BTreeSet<String>>,
    /// Per member: every `chatid_userid_seq_mention` entry (`seq -> message`); a member's
    /// map is loaded whole on first need, so a present map is complete.
    mentions: HashMap<UserId, BTreeMap<u64, MessageId>>,
    /// Ids of this chat's messages held in `ProjectionState::messages`.
    cached_messages: BTreeSet<MessageId>,
    /// Members for live updates, in user id order; rebuilt after a membership or
    /// notification preference change.
    recipients: Option<Arc<[Recipient]>>,
    /// The cut that persists the last change of this entry or of one of its messages.
    persist_cut: u64,
    last_used: u64,
    bytes: usize,
}

/// A key changed in the current batch, to be encoded once at its end.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
enum Changed {
    Chat(ChatId),
    Member(ChatId, UserId),
    Message(ChatId, MessageId),
    Deleted(ChatId, u64),
    Mention(ChatId, UserId, u64),
    DirectChat(UserId, UserId),
    Username(Vec<u8>),
    Invite(String),
    ChatInvite(ChatId, String),
    User(UserId),
    LargeChat(UserId, ChatId),
    ChatSequence(UserId, ChatId),
    ParkedOverrides(ChatId, UserId),
    Checkpoint,
}

/// What one batch changed: its projection writes and the chat-list entries they made stale.
#[derive(Clone, Debug, Default)]
pub struct BatchWrites {
    /// Puts and deletes, each key once.
    pub writes: Vec<KvWrite>,
    /// Puts of new keys in append-only tables ([`Table::is_append_only`]): the catch-up
    /// index.
    pub appended: Vec<AppendWrite>,
    /// The last message id of every large chat whose record the batch changed (for
    /// [`crate::read_caches::ReadCaches::record`]).
    pub large_last_messages: Vec<(ChatId, MessageId)>,
    /// Every chat whose members joined or left in the batch, each once (for
    /// [`crate::read_caches::ReadCaches::record`]).
    pub participants_changed: Vec<ChatId>,
    /// Every user whose large chats (`userid_chatid_largechat`) the batch changed, each
    /// once (for [`crate::read_caches::ReadCaches::record`]).
    pub large_chats_changed: Vec<UserId>,
    /// `(user, chat)`: the chat's entry in the user's chat-list index is stale until the
    /// next cut is flushed.
    pub touched: Vec<(UserId, ChatId)>,
}

impl BatchWrites {
    /// Every write of the batch, for a store that takes them all alike (a flush).
    pub fn into_all(self) -> Vec<KvWrite> {
        let mut writes = self.writes;
        writes.extend(self.appended.into_iter().map(|(table, key, value)| (table, key, Some(value))));
        writes
    }
}

/// The projections in memory over a source of flushed records.
#[derive(Debug)]
pub struct ProjectionState<S> {
    source: S,
    chats: HashMap<ChatId, ChatEntry>,
    /// Boxed: a record is about 200 bytes, and the table moves every entry when it grows
    /// (a rebuild's batch holds hundreds of thousands of new messages).
    messages: ShardedMap<(ChatId, MessageId), Slot<Box<MessageRecord>>>,
    /// Sharded like `messages`: a million users are a table of 150 MB.
    users: ShardedMap<UserId, Slot<UserRecord>>,
    direct_chats: HashMap<(UserId, UserId), Slot<ChatId>>,
    invites: HashMap<String, Slot<InviteRecord>>,
    /// The username index, keyed by [`keys::username`] bytes.
    usernames: HashMap<Vec<u8>, Slot<UserId>>,
    /// Permission overrides `(pos, neg)` of users who are not members.
    parked_overrides: HashMap<(ChatId, UserId), Slot<(u64, u64)>>,
    /// Catch-up index writes of the current batch (append only: never read by the fold).
    catch_up: Vec<AppendWrite>,
    /// Every catch-up index entry ever written, for [`Self::to_memstore`]: kept by states
    /// that keep everything ([`ProjectionState::in_memory`]) only, whose
    /// [`Self::take_writes`] then leaves them out.
    catch_up_kept: Option<MemStore>,
    checkpoint: Position,
    changed: Vec<Changed>,
    changed_set: HashSet<Changed>,
    list_changes: HashMap<ChatId, ListChange>,
    touched: Vec<(UserId, ChatId)>,
    /// Chats whose members joined or left in the current batch (may repeat).
    participants_changed: Vec<ChatId>,
    bytes: usize,
    bytes_max: usize,
    tick: u64,
    cuts: u64,
    persisted_cuts: u64,
}

fn direct_key(a: UserId, b: UserId) -> (UserId, UserId) {
    if a <= b { (a, b) } else { (b, a) }
}

fn chat_footprint(record: &ChatRecord) -> usize {
    let group = record.group().map_or(0, |group| group.name.len() + group.photo.as_ref().map_or(0, |(_, p)| p.len()));
    CHAT_ENTRY_BYTES + group
}

fn member_footprint(record: Option<&MemberRecord>) -> usize {
    table_entry_bytes::<UserId, Option<MemberRecord>>() + record.and_then(|member| member.draft.as_ref()).map_or(0, String::len)
}

fn message_footprint(record: Option<&MessageRecord>) -> usize {
    // The message's slot, its id in the chat's `cached_messages`, and its heap.
    table_entry_bytes::<(ChatId, MessageId), Slot<Box<MessageRecord>>>()
        + size_of::<MessageId>()
        + BTREE_ENTRY_OVERHEAD_BYTES
        + record.map_or(0, |message| {
            size_of::<MessageRecord>() // its box
                + message.text.len()
                + message.entities.iter().map(|entity| size_of::<Vec<u8>>() + entity.len()).sum::<usize>()
                + message.media.iter().map(|media| size_of::<Vec<u8>>() + media.len()).sum::<usize>()
                + message.reply.as_ref().map_or(0, Vec::len)
                + message.mentions.len() * size_of::<UserId>()
        })
}

fn user_footprint(record: Option<&UserRecord>) -> usize {
    table_entry_bytes::<UserId, Slot<UserRecord>>()
        + record.map_or(0, |user| {
            user.name.len()
                + user.username.as_ref().map_or(0, String::len)
                + user.photo.as_ref().map_or(0, |(_, preview)| preview.len())
        })
}

fn invite_footprint(code: &str) -> usize {
    // The invite's slot and code, and the code again in its chat's `invite_codes`.
    table_entry_bytes::<String, Slot<InviteRecord>>() + size_of::<String>() + BTREE_ENTRY_OVERHEAD_BYTES + 2 * code.len()
}

/// Bytes of a direct-chat index entry.
const DIRECT_CHAT_BYTES: usize = table_entry_bytes::<(UserId, UserId), Slot<ChatId>>();
/// Bytes of a parked permission-overrides entry.
const PARKED_OVERRIDES_BYTES: usize = table_entry_bytes::<(ChatId, UserId), Slot<(u64, u64)>>();
/// Bytes of a username index entry, without the name.
const USERNAME_ENTRY_BYTES: usize = table_entry_bytes::<Vec<u8>, Slot<UserId>>();
/// Bytes of a member's mention map, without its mentions.
const MENTION_MAP_BYTES: usize = table_entry_bytes::<UserId, BTreeMap<u64, MessageId>>();

impl ProjectionState<MemStore> {
    /// A state with nothing flushed yet and no memory budget: for folds from scratch
    /// (verification, tests), which keep everything.
    pub fn in_memory() -> Self {
        let mut state = ProjectionState::new(MemStore::new(), usize::MAX);
        state.catch_up_kept = Some(MemStore::new());
        state
    }
}

impl<S: StoreRead> ProjectionState<S> {
    /// The state over `source`, at the source's checkpoint, within `bytes_max` of clean records.
    pub fn new(source: S, bytes_max: usize) -> Self {
        ProjectionState {
            source,
            chats: HashMap::new(),
            messages: ShardedMap::new(),
            users: ShardedMap::new(),
            direct_chats: HashMap::new(),
            invites: HashMap::new(),
            usernames: HashMap::new(),
            parked_overrides: HashMap::new(),
            catch_up: Vec::new(),
            catch_up_kept: None,
            checkpoint: Position::ZERO,
            changed: Vec::new(),
            changed_set: HashSet::new(),
            list_changes: HashMap::new(),
            touched: Vec::new(),
            participants_changed: Vec::new(),
            bytes: 0,
            bytes_max,
            tick: 0,
            cuts: 0,
            persisted_cuts: 0,
        }
    }

    /// Reads the checkpoint from the source (the position the flushed tables are folded to).
    pub fn load_checkpoint(&mut self) -> Result<Position, ProjectionError> {
        self.checkpoint = records::load_checkpoint(&self.source)?;
        Ok(self.checkpoint)
    }

    /// The source of flushed records.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// The last folded position.
    pub fn checkpoint(&self) -> Position {
        self.checkpoint
    }

    /// Records that everything up to `position` is folded.
    pub fn set_checkpoint(&mut self, position: Position) {
        self.checkpoint = position;
        self.change(Changed::Checkpoint);
    }

    /// Approximate bytes of the cached records.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The memory budget of clean records, in bytes.
    pub fn bytes_max(&self) -> usize {
        self.bytes_max
    }

    /// Cuts taken so far (each is flushed once, in order).
    pub fn cuts(&self) -> u64 {
        self.cuts
    }

    /// Cached records (for metrics and tests).
    pub fn cached_records(&self) -> usize {
        self.chats.values().map(|chat| 1 + chat.members.len()).sum::<usize>()
            + self.messages.len()
            + self.users.len()
            + self.direct_chats.len()
            + self.invites.len()
            + self.usernames.len()
    }

    fn change(&mut self, key: Changed) {
        if self.changed_set.insert(key.clone()) {
            self.changed.push(key);
        }
    }

    fn next_cut(&self) -> u64 {
        self.cuts + 1
    }

    // ---- the catch-up index -----------------------------------------------------

    /// Writes the catch-up index entries of the event at `position`, which told `effects`
    /// (see [`crate::catch_up`]), and says which sequence each effect's updates belong to.
    pub fn record_effects(&mut self, position: Position, effects: Vec<Effect>) -> Result<Vec<Told>, ProjectionError> {
        let Some(first) = effects.first() else { return Ok(Vec::new()) };
        let chat = first.chat();
        if effects.len() > EFFECTS_PER_EVENT_MAX || effects.iter().any(|effect| effect.chat() != chat) {
            return Err(ProjectionError::Inconsistent {
                position: position.get(),
                reason: format!("{} effects, not all about chat {chat}", effects.len()),
            });
        }
        let sequenced = self.chat(chat)?.is_some_and(|record| record.chat_sequence);
        let stored: Vec<(Effect, bool)> = effects
            .into_iter()
            .map(|effect| {
                let via_chat = sequenced && effect.audience().is_some();
                (effect, via_chat)
            })
            .collect();
        let mut previous_in_chat = Position::ZERO;
        if stored.iter().any(|(_, via_chat)| *via_chat)
            && let Some(record) = self.chat_mut(chat)?
        {
            previous_in_chat = record.last_update_position;
            record.last_update_position = position;
            self.catch_up.push((Table::ChatidPositionUpdate, keys::chat_update(chat, position), Vec::new()));
        }
        for (user, entry) in user_entries(&stored) {
            self.catch_up.push((Table::UseridPositionUpdate, keys::user_update(user, position), records::encode(&entry)));
        }
        let kept: Vec<(Effect, bool)> = stored.iter().map(|(effect, via_chat)| (elide_content(effect), *via_chat)).collect();
        let kept = EffectsRecord { chat, effects: kept, previous_in_chat };
        self.catch_up.push((Table::PositionEffect, keys::position_effect(position), records::encode(&kept)));
        if let Some(kept) = self.catch_up_kept.as_mut() {
            // A state that keeps everything holds them for `to_memstore` only: its folds
            // (verification) never take their writes, which would pile up.
            for (table, key, value) in self.catch_up.drain(..) {
                kept.put(table, key, value);
            }
        }
        Ok(stored
            .into_iter()
            .map(|(effect, via_chat)| Told { effect, chat_sequence: via_chat.then_some(previous_in_chat) })
            .collect())
    }

    // ---- chats and members ------------------------------------------------------

    fn chat_entry(&mut self, chat: ChatId) -> Result<&mut ChatEntry, ProjectionError> {
        let tick = self.tick;
        if !self.chats.contains_key(&chat) {
            let record = records::load_chat(&self.source, chat)?;
            let bytes = record.as_ref().map_or(CHAT_ENTRY_BYTES, chat_footprint);
            self.bytes += bytes;
            self.chats.insert(chat, ChatEntry { record, bytes, ..ChatEntry::default() });
        }
        let entry = self.chats.get_mut(&chat).ok_or_else(|| unreachable_entry("chat"))?;
        entry.last_used = tick;
        Ok(entry)
    }

    /// A chat's record.
    pub fn chat(&mut self, chat: ChatId) -> Result<Option<&ChatRecord>, ProjectionError> {
        Ok(self.chat_entry(chat)?.record.as_ref())
    }

    /// A chat's record, to change (marked changed).
    pub fn chat_mut(&mut self, chat: ChatId) -> Result<Option<&mut ChatRecord>, ProjectionError> {
        let cut = self.next_cut();
        self.change(Changed::Chat(chat));
        let entry = self.chat_entry(chat)?;
        entry.persist_cut = cut;
        Ok(entry.record.as_mut())
    }

    /// Creates a chat (with no members yet).
    pub fn insert_chat(&mut self, chat: ChatId, record: ChatRecord) -> Result<(), ProjectionError> {
        self.note_list_change(chat)?;
        let cut = self.next_cut();
        let bytes = chat_footprint(&record);
        self.change(Changed::Chat(chat));
        let entry = self.chat_entry(chat)?;
        let added = bytes.saturating_sub(entry.bytes.min(bytes));
        entry.record = Some(record);
        entry.members_complete = true; // a new chat has no members but those added from now on
        entry.deleted.get_or_insert_with(BTreeSet::new);
        entry.invite_codes.get_or_insert_with(BTreeSet::new);
        entry.persist_cut = cut;
        entry.bytes += added;
        self.bytes += added;
        Ok(())
    }

    /// `user`'s member record in `chat`, if a member.
    pub fn member(&mut self, chat: ChatId, user: UserId) -> Result<Option<&MemberRecord>, ProjectionError> {
        self.load_member(chat, user)?;
        Ok(self.chats.get(&chat).and_then(|entry| entry.members.get(&user)).and_then(Option::as_ref))
    }

    /// `user`'s member record in `chat`, to change (marked changed).
    pub fn member_mut(&mut self, chat: ChatId, user: UserId) -> Result<Option<&mut MemberRecord>, ProjectionError> {
        self.load_member(chat, user)?;
        let cut = self.next_cut();
        self.change(Changed::Member(chat, user));
        let entry = self.chats.get_mut(&chat).ok_or_else(|| unreachable_entry("chat"))?;
        entry.persist_cut = cut;
        Ok(entry.members.get_mut(&user).and_then(Option::as_mut))
    }

    fn load_member(&mut self, chat: ChatId, user: UserId) -> Result<(), ProjectionError> {
        let entry = self.chat_entry(chat)?;
        if entry.members.contains_key(&user) || entry.members_complete {
            return Ok(());
        }
        let record = records::load_member(&self.source, chat, user)?;
        let bytes = member_footprint(record.as_ref());
        let entry = self.chats.get_mut(&chat).ok_or_else(|| unreachable_entry("chat"))?;
        entry.members.insert(user, record);
        entry.bytes += bytes;
        self.bytes += bytes;
        Ok(())
    }

    fn load_all_members(&mut self, chat: ChatId) -> Result<(), ProjectionError> {
        let entry = self.chat_entry(chat)?;
        if entry.members_complete {
            return Ok(());
        }
        let stored = records::load_members(&self.source, chat)?;
        let entry = self.chats.get_mut(&chat).ok_or_else(|| unreachable_entry("chat"))?;
        let mut added = 0;
        for (user, record) in stored {
            if let std::collections::hash_map::Entry::Vacant(vacant) = entry.members.entry(user) {
                added += member_footprint(Some(&record));
                vacant.insert(Some(record));
            }
        }
        entry.members_complete = true;
        entry.bytes += added;
        self.bytes += added;
        Ok(())
    }

    /// The members of `chat` with their records, in user id order.
    pub fn members(&mut self, chat: ChatId) -> Result<Vec<(UserId, &MemberRecord)>, ProjectionError> {
        self.load_all_members(chat)?;
        let entry = self.chats.get(&chat).ok_or_else(|| unreachable_entry("chat"))?;
        let mut members: Vec<_> =
            entry.members.iter().filter_map(|(user, record)| record.as_ref().map(|record| (*user, record))).collect();
        members.sort_unstable_by_key(|(user, _)| *user);
        Ok(members)
    }

    /// The members of `chat`, in user id order.
    pub fn member_ids(&mut self, chat: ChatId) -> Result<Vec<UserId>, ProjectionError> {
        Ok(self.members(chat)?.into_iter().map(|(user, _)| user).collect())
    }

    /// The members of `chat` as live updates need them (shared until membership or mute changes).
    pub fn recipients(&mut self, chat: ChatId) -> Result<Arc<[Recipient]>, ProjectionError> {
        if let Some(recipients) = self.chats.get(&chat).and_then(|entry| entry.recipients.clone()) {
            return Ok(recipients);
        }
        let recipients: Arc<[Recipient]> = self
            .members(chat)?
            .into_iter()
            .map(|(user, member)| Recipient { user, notif_prefs: member.notif_prefs })
            .collect();
        if let Some(entry) = self.chats.get_mut(&chat) {
            entry.recipients = Some(recipients.clone());
        }
        Ok(recipients)
    }

    /// Forgets `chat`'s recipients (after a member's notification preferences changed:
    /// they carry them).
    pub fn recipients_changed(&mut self, chat: ChatId) {
        if let Some(entry) = self.chats.get_mut(&chat) {
            entry.recipients = None;
        }
    }

    /// Adds `user` to `chat` (keeps the chat-list and large-chat indexes in step).
    pub fn insert_member(&mut self, chat: ChatId, user: UserId, record: MemberRecord) -> Result<(), ProjectionError> {
        self.load_member(chat, user)?;
        self.note_list_change(chat)?;
        if let Some(change) = self.list_changes.get_mut(&chat) {
            change.member_added(user);
            self.touched.push((user, chat));
        }
        let cut = self.next_cut();
        self.change(Changed::Member(chat, user));
        self.mark_membership_indexes(chat, user)?;
        let bytes = member_footprint(Some(&record));
        self.participants_changed.push(chat);
        let entry = self.chats.get_mut(&chat).ok_or_else(|| unreachable_entry("chat"))?;
        entry.members.insert(user, Some(record));
        entry.recipients = None;
        entry.persist_cut = cut;
        entry.bytes += bytes;
        self.bytes += bytes;
        Ok(())
    }

    /// Marks `user`'s entries in the per-user indexes of flagged chats
    /// (`userid_chatid_largechat`, `userid_chatid_chatsequence`) for rewriting after their
    /// membership changed. Only where the chat has the flag: the flags are never cleared,
    /// so without it there is no entry to delete, and the join that sets one marks every
    /// member ([`Self::reindex_large_chat`], [`Self::start_chat_sequence`]).
    fn mark_membership_indexes(&mut self, chat: ChatId, user: UserId) -> Result<(), ProjectionError> {
        let (large, sequenced) = self.chat(chat)?.map_or((false, false), |record| (record.large, record.chat_sequence));
        if large {
            self.change(Changed::LargeChat(user, chat));
        }
        if sequenced {
            self.change(Changed::ChatSequence(user, chat));
        }
        Ok(())
    }

    /// Removes `user` from `chat`.
    pub fn remove_member(&mut self, chat: ChatId, user: UserId) -> Result<(), ProjectionError> {
        self.load_member(chat, user)?;
        self.note_list_change(chat)?;
        if let Some(change) = self.list_changes.get_mut(&chat) {
            change.member_removed(user);
            self.touched.push((user, chat));
        }
        let cut = self.next_cut();
        self.change(Changed::Member(chat, user));
        self.mark_membership_indexes(chat, user)?;
        self.participants_changed.push(chat);
        let entry = self.chats.get_mut(&chat).ok_or_else(|| unreachable_entry("chat"))?;
        entry.members.insert(user, None);
        entry.recipients = None;
        entry.persist_cut = cut;
        Ok(())
    }

    /// Gives `chat` its own catch-up sequence from `position` on (after the join there that
    /// took it above [`crate::limits::USER_SEQUENCE_MEMBERS_MAX`] members): every member
    /// is told that sequence from `position`, and lists the chat in
    /// `userid_chatid_chatsequence`.
    pub fn start_chat_sequence(&mut self, chat: ChatId, position: Position) -> Result<(), ProjectionError> {
        if let Some(record) = self.chat_mut(chat)? {
            record.chat_sequence = true;
        }
        for user in self.member_ids(chat)? {
            if let Some(member) = self.member_mut(chat, user)? {
                member.chat_sequence_from = position;
            }
            self.change(Changed::ChatSequence(user, chat));
        }
        Ok(())
    }

    /// Marks every member's large-chat index entry for rewriting (after the chat became large).
    pub fn reindex_large_chat(&mut self, chat: ChatId) -> Result<(), ProjectionError> {
        self.note_list_change(chat)?;
        for user in self.member_ids(chat)? {
            self.change(Changed::LargeChat(user, chat));
        }
        Ok(())
    }

    /// Records, before it happens, that `chat`'s chat-list entries will change (new last
    /// message, membership, or the switch to a large chat). The first change since the
    /// last cut remembers the chat as the flushed index has it and marks the entries of
    /// all current members stale for readers: O(members) once per chat per flush.
    pub fn note_list_change(&mut self, chat: ChatId) -> Result<(), ProjectionError> {
        if self.list_changes.contains_key(&chat) {
            return Ok(());
        }
        let at_cut = self.chat(chat)?.map(|record| (record.last_message_id, record.large));
        if let Some((_, true)) = at_cut {
            return Ok(()); // a large chat has no chat-list entries, and stays large
        }
        let members = if at_cut.is_some() { self.member_ids(chat)? } else { Vec::new() };
        self.touched.extend(members.iter().map(|&user| (user, chat)));
        self.list_changes.insert(chat, ListChange::new(at_cut.map(|(last, _)| last)));
        Ok(())
    }

    // ---- messages ---------------------------------------------------------------

    fn load_message(&mut self, chat: ChatId, message: MessageId) -> Result<(), ProjectionError> {
        let tick = self.tick;
        if let Some(slot) = self.messages.get_mut(&(chat, message)) {
            slot.last_used = tick;
            return Ok(());
        }
        let value = records::load_message(&self.source, chat, message)?.map(Box::new);
        let bytes = message_footprint(value.as_deref());
        let present = value.is_some();
        self.bytes += bytes;
        self.messages.insert((chat, message), Slot { value, persist_cut: 0, last_used: tick, bytes });
        let entry = self.chat_entry(chat)?;
        if present {
            entry.cached_messages.insert(message); // only messages that exist take part in ordered lookups
        }
        Ok(())
    }

    /// A message or tombstone.
    pub fn message(&mut self, chat: ChatId, message: MessageId) -> Result<Option<&MessageRecord>, ProjectionError> {
        self.load_message(chat, message)?;
        Ok(self.messages.get(&(chat, message)).and_then(|slot| slot.value.as_deref()))
    }

    /// A message, to change (marked changed).
    pub fn message_mut(&mut self, chat: ChatId, message: MessageId) -> Result<Option<&mut MessageRecord>, ProjectionError> {
        self.load_message(chat, message)?;
        self.mark_message_changed(chat, message)?;
        Ok(self.messages.get_mut(&(chat, message)).and_then(|slot| slot.value.as_deref_mut()))
    }

    fn mark_message_changed(&mut self, chat: ChatId, message: MessageId) -> Result<(), ProjectionError> {
        let cut = self.next_cut();
        self.change(Changed::Message(chat, message));
        if let Some(slot) = self.messages.get_mut(&(chat, message)) {
            slot.persist_cut = cut;
        }
        self.chat_entry(chat)?.persist_cut = cut;
        Ok(())
    }

    /// Stores a new message.
    pub fn insert_message(&mut self, chat: ChatId, message: MessageId, record: MessageRecord) -> Result<(), ProjectionError> {
        let bytes = message_footprint(Some(&record));
        let slot = Slot { value: Some(Box::new(record)), persist_cut: self.next_cut(), last_used: self.tick, bytes };
        if let Some(old) = self.messages.insert((chat, message), slot) {
            self.bytes -= old.bytes;
        }
        self.bytes += bytes;
        self.chat_entry(chat)?.cached_messages.insert(message);
        self.mark_message_changed(chat, message)
    }

    /// Re-measures a changed message's footprint.
    pub fn remeasure_message(&mut self, chat: ChatId, message: MessageId) {
        if let Some(slot) = self.messages.get_mut(&(chat, message)) {
            let bytes = message_footprint(slot.value.as_deref());
            self.bytes = self.bytes - slot.bytes + bytes;
            slot.bytes = bytes;
        }
    }

    /// The sequence number of the newest message (deleted or not) with an id at most
    /// `message`; 0 when there is none.
    pub fn seq_at_or_before(&mut self, chat: ChatId, message: MessageId) -> Result<u64, ProjectionError> {
        // A message's sequence number never changes: the newest candidate of the cache
        // and of the source decides, whichever holds it.
        let cached = self
            .chat_entry(chat)?
            .cached_messages
            .range(..=message)
            .next_back()
            .copied();
        let prefix = keys::chat(chat);
        let start = keys::message(chat, message);
        let mut stored: Result<Option<(MessageId, u64)>, ProjectionError> = Ok(None);
        self.source.scan(
            Table::ChatidMsgidMessage,
            ScanRange::prefix_reverse(&prefix).starting_at(&start),
            &mut |key, value| {
                stored = keys::message_id(key).and_then(|id| {
                    Ok(Some((id, decode::<MessageRecord>(Table::ChatidMsgidMessage, key, value)?.seq)))
                });
                ControlFlow::Break(())
            },
        )?;
        let stored = stored?;
        match (cached, stored) {
            (Some(id), Some((stored_id, seq))) if stored_id > id => Ok(seq),
            (Some(id), _) => Ok(self.message(chat, id)?.map_or(0, |record| record.seq)),
            (None, Some((_, seq))) => Ok(seq),
            (None, None) => Ok(0),
        }
    }

    /// The newest non-deleted message with an id at most `from`, if any.
    pub fn newest_live_message_at_or_before(
        &mut self,
        chat: ChatId,
        from: MessageId,
    ) -> Result<Option<MessageId>, ProjectionError> {
        // Cached messages are newer than (or equal to) their stored versions: walk both in
        // descending id order, the cache deciding for the ids it holds.
        let mut cached = self.chat_entry(chat)?.cached_messages.range(..=from).rev().copied().collect::<Vec<_>>().into_iter().peekable();
        let messages = &self.messages;
        let live = |id: MessageId| messages.get(&(chat, id)).is_some_and(|slot| slot.value.as_ref().is_some_and(|m| !m.deleted));
        let prefix = keys::chat(chat);
        let start = keys::message(chat, from);
        let mut found: Result<Option<MessageId>, ProjectionError> = Ok(None);
        self.source.scan(Table::ChatidMsgidMessage, ScanRange::prefix_reverse(&prefix).starting_at(&start), &mut |key, value| {
            let id = match keys::message_id(key) {
                Ok(id) => id,
                Err(err) => {
                    found = Err(err);
                    return ControlFlow::Break(());
                }
            };
            while let Some(candidate) = cached.next_if(|&candidate| candidate > id) {
                if live(candidate) {
                    found = Ok(Some(candidate));
                    return ControlFlow::Break(());
                }
            }
            if cached.next_if_eq(&id).is_some() {
                if live(id) {
                    found = Ok(Some(id));
                    return ControlFlow::Break(());
                }
                return ControlFlow::Continue(());
            }
            match decode::<MessageRecord>(Table::ChatidMsgidMessage, key, value) {
                Ok(record) if record.deleted => ControlFlow::Continue(()),
                Ok(_) => {
                    found = Ok(Some(id));
                    ControlFlow::Break(())
                }
                Err(err) => {
                    found = Err(err);
                    ControlFlow::Break(())
                }
            }
        })?;
        if let Some(id) = found? {
            return Ok(Some(id));
        }
        Ok(cached.find(|&id| live(id)))
    }

    fn deleted_set(&mut self, chat: ChatId) -> Result<&mut BTreeSet<u64>, ProjectionError> {
        if self.chat_entry(chat)?.deleted.is_none() {
            let stored = collect_prefix(&self.source, Table::ChatidSeqDeleted, &keys::chat(chat), |key, _| {
                keys::deleted_seq_value(key)
            })?;
            let bytes = stored.len() * 16;
            self.bytes += bytes;
            let entry = self.chat_entry(chat)?;
            entry.bytes += bytes;
            entry.deleted = Some(stored.into_iter().collect());
        }
        self.chat_entry(chat)?.deleted.as_mut().ok_or_else(|| unreachable_entry("deleted set"))
    }

    /// Records that the message with sequence number `seq` was deleted.
    pub fn add_deleted_seq(&mut self, chat: ChatId, seq: u64) -> Result<(), ProjectionError> {
        let cut = self.next_cut();
        if self.deleted_set(chat)?.insert(seq) {
            self.change(Changed::Deleted(chat, seq));
            self.bytes += 16;
            let entry = self.chat_entry(chat)?;
            entry.bytes += 16;
            entry.persist_cut = cut;
        }
        Ok(())
    }

    /// Deleted messages with a sequence number in `(after, up_to]`.
    pub fn deleted_between(&mut self, chat: ChatId, after: u64, up_to: u64) -> Result<u64, ProjectionError> {
        if after >= up_to {
            return Ok(0);
        }
        Ok(self.deleted_set(chat)?.range(after + 1..=up_to).count() as u64)
    }

    // ---- mentions ---------------------------------------------------------------

    fn mention_map(&mut self, chat: ChatId, user: UserId) -> Result<&mut BTreeMap<u64, MessageId>, ProjectionError> {
        if !self.chat_entry(chat)?.mentions.contains_key(&user) {
            let stored = collect_prefix(&self.source, Table::ChatidUseridSeqMention, &keys::mentions_of(chat, user), |key, value| {
                Ok((keys::mention_seq(key)?, MessageId(records::mention_message(key, value)?)))
            })?;
            let bytes = MENTION_MAP_BYTES + stored.len() * MENTION_BYTES;
            self.bytes += bytes;
            let entry = self.chat_entry(chat)?;
            entry.bytes += bytes;
            entry.mentions.insert(user, stored.into_iter().collect());
        }
        self.chat_entry(chat)?.mentions.get_mut(&user).ok_or_else(|| unreachable_entry("mentions"))
    }

    /// Records that the message `message` (sequence number `seq`) mentions `user`.
    pub fn add_mention(&mut self, chat: ChatId, user: UserId, seq: u64, message: MessageId) -> Result<(), ProjectionError> {
        let cut = self.next_cut();
        if self.mention_map(chat, user)?.insert(seq, message).is_none() {
            self.bytes += MENTION_BYTES;
            self.chat_entry(chat)?.bytes += MENTION_BYTES;
        }
        self.change(Changed::Mention(chat, user, seq));
        self.chat_entry(chat)?.persist_cut = cut;
        Ok(())
    }

    /// Removes the mention of `user` by the message with sequence number `seq`.
    pub fn remove_mention(&mut self, chat: ChatId, user: UserId, seq: u64) -> Result<(), ProjectionError> {
        let cut = self.next_cut();
        if self.mention_map(chat, user)?.remove(&seq).is_some() {
            self.bytes -= MENTION_BYTES;
            let entry = self.chat_entry(chat)?;
            entry.bytes -= MENTION_BYTES;
            entry.persist_cut = cut;
            self.change(Changed::Mention(chat, user, seq));
        }
        Ok(())
    }

    /// Mentions of `user` in `chat` by messages with a sequence number above `after`.
    pub fn mentions_after(&mut self, chat: ChatId, user: UserId, after: u64) -> Result<u32, ProjectionError> {
        let Some(first) = after.checked_add(1) else { return Ok(0) };
        let count = self.mention_map(chat, user)?.range(first..).count();
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    // ---- direct chats, invites, users -------------------------------------------

    /// The DM (or self chat) between two users.
    pub fn direct_chat(&mut self, a: UserId, b: UserId) -> Result<Option<ChatId>, ProjectionError> {
        let key = direct_key(a, b);
        let tick = self.tick;
        if let Some(slot) = self.direct_chats.get_mut(&key) {
            slot.last_used = tick;
            return Ok(slot.value);
        }
        let value = records::load_direct_chat(&self.source, a, b)?;
        self.bytes += DIRECT_CHAT_BYTES;
        self.direct_chats.insert(key, Slot { value, persist_cut: 0, last_used: tick, bytes: DIRECT_CHAT_BYTES });
        Ok(value)
    }

    /// Records the DM between two users.
    pub fn set_direct_chat(&mut self, a: UserId, b: UserId, chat: ChatId) {
        let key = direct_key(a, b);
        let slot = Slot { value: Some(chat), persist_cut: self.next_cut(), last_used: self.tick, bytes: DIRECT_CHAT_BYTES };
        if self.direct_chats.insert(key, slot).is_none() {
            self.bytes += DIRECT_CHAT_BYTES;
        }
        self.change(Changed::DirectChat(key.0, key.1));
    }

    /// The permission overrides kept for `user`, who is not a member of `chat`.
    pub fn parked_overrides(&mut self, chat: ChatId, user: UserId) -> Result<Option<(u64, u64)>, ProjectionError> {
        let tick = self.tick;
        if let Some(slot) = self.parked_overrides.get_mut(&(chat, user)) {
            slot.last_used = tick;
            return Ok(slot.value);
        }
        let value = records::load_parked_overrides(&self.source, chat, user)?;
        self.bytes += PARKED_OVERRIDES_BYTES;
        self.parked_overrides.insert((chat, user), Slot { value, persist_cut: 0, last_used: tick, bytes: PARKED_OVERRIDES_BYTES });
        Ok(value)
    }

    /// Keeps (`Some`) or forgets (`None`) the permission overrides of a non-member.
    pub fn set_parked_overrides(&mut self, chat: ChatId, user: UserId, overrides: Option<(u64, u64)>) {
        let slot = Slot { value: overrides, persist_cut: self.next_cut(), last_used: self.tick, bytes: PARKED_OVERRIDES_BYTES };
        if self.parked_overrides.insert((chat, user), slot).is_none() {
            self.bytes += PARKED_OVERRIDES_BYTES;
        }
        self.change(Changed::ParkedOverrides(chat, user));
    }

    /// An invite by code.
    pub fn invite(&mut self, code: &str) -> Result<Option<&InviteRecord>, ProjectionError> {
        self.load_invite(code)?;
        Ok(self.invites.get(code).and_then(|slot| slot.value.as_ref()))
    }

    fn load_invite(&mut self, code: &str) -> Result<(), ProjectionError> {
        let tick = self.tick;
        if let Some(slot) = self.invites.get_mut(code) {
            slot.last_used = tick;
            return Ok(());
        }
        let value = records::load_invite(&self.source, code)?;
        let bytes = invite_footprint(code);
        self.bytes += bytes;
        self.invites.insert(code.to_owned(), Slot { value, persist_cut: 0, last_used: tick, bytes });
        Ok(())
    }

    /// An invite, to change (marked changed).
    pub fn invite_mut(&mut self, code: &str) -> Result<Option<&mut InviteRecord>, ProjectionError> {
        self.load_invite(code)?;
        let cut = self.next_cut();
        self.change(Changed::Invite(code.to_owned()));
        let slot = self.invites.get_mut(code).ok_or_else(|| unreachable_entry("invite"))?;
        slot.persist_cut = cut;
        Ok(slot.value.as_mut())
    }

    fn invite_code_set(&mut self, chat: ChatId) -> Result<&mut BTreeSet<String>, ProjectionError> {
        if self.chat_entry(chat)?.invite_codes.is_none() {
            let stored =
                collect_prefix(&self.source, Table::ChatidCodeInvite, &keys::chat(chat), |key, _| keys::chat_invite_code(key))?;
            let bytes: usize = stored.iter().map(|code| 32 + code.len()).sum();
            self.bytes += bytes;
            let entry = self.chat_entry(chat)?;
            entry.bytes += bytes;
            entry.invite_codes = Some(stored.into_iter().collect());
        }
        self.chat_entry(chat)?.invite_codes.as_mut().ok_or_else(|| unreachable_entry("invite codes"))
    }

    /// The codes of a chat's invites, in code order.
    pub fn invite_codes(&mut self, chat: ChatId) -> Result<Vec<String>, ProjectionError> {
        Ok(self.invite_code_set(chat)?.iter().cloned().collect())
    }

    /// Creates an invite of `chat`.
    pub fn insert_invite(&mut self, chat: ChatId, code: &str, record: InviteRecord) -> Result<(), ProjectionError> {
        self.load_invite(code)?;
        let cut = self.next_cut();
        if let Some(slot) = self.invites.get_mut(code) {
            slot.value = Some(record);
            slot.persist_cut = cut;
        }
        self.change(Changed::Invite(code.to_owned()));
        self.set_chat_invite(chat, code, true)
    }

    /// Deletes an invite of `chat`.
    pub fn remove_invite(&mut self, chat: ChatId, code: &str) -> Result<(), ProjectionError> {
        self.load_invite(code)?;
        let cut = self.next_cut();
        if let Some(slot) = self.invites.get_mut(code) {
            slot.value = None;
            slot.persist_cut = cut;
        }
        self.change(Changed::Invite(code.to_owned()));
        self.set_chat_invite(chat, code, false)
    }

    fn set_chat_invite(&mut self, chat: ChatId, code: &str, present: bool) -> Result<(), ProjectionError> {
        let cut = self.next_cut();
        let set = self.invite_code_set(chat)?;
        let changed = if present { set.insert(code.to_owned()) } else { set.remove(code) };
        if changed {
            self.change(Changed::ChatInvite(chat, code.to_owned()));
            self.chat_entry(chat)?.persist_cut = cut;
        }
        Ok(())
    }

    /// A user directory entry.
    pub fn user(&mut self, user: UserId) -> Result<Option<&UserRecord>, ProjectionError> {
        let tick = self.tick;
        if !self.users.contains_key(&user) {
            let value = records::load_user(&self.source, user)?;
            let bytes = user_footprint(value.as_ref());
            self.bytes += bytes;
            self.users.insert(user, Slot { value, persist_cut: 0, last_used: tick, bytes });
        }
        let slot = self.users.get_mut(&user).ok_or_else(|| unreachable_entry("user"))?;
        slot.last_used = tick;
        Ok(slot.value.as_ref())
    }

    /// Adds or replaces a user directory entry.
    pub fn set_user(&mut self, user: UserId, record: UserRecord) {
        let bytes = user_footprint(Some(&record));
        let slot = Slot { value: Some(record), persist_cut: self.next_cut(), last_used: self.tick, bytes };
        if let Some(old) = self.users.insert(user, slot) {
            self.bytes -= old.bytes;
        }
        self.bytes += bytes;
        self.change(Changed::User(user));
    }

    /// The user holding `username` in the username index (ASCII case-insensitive).
    pub fn user_by_username(&mut self, username: &str) -> Result<Option<UserId>, ProjectionError> {
        let key = keys::username(username);
        let tick = self.tick;
        if let Some(slot) = self.usernames.get_mut(&key) {
            slot.last_used = tick;
            return Ok(slot.value);
        }
        let value = records::load_username(&self.source, username)?;
        let bytes = USERNAME_ENTRY_BYTES + key.len();
        self.bytes += bytes;
        self.usernames.insert(key, Slot { value, persist_cut: 0, last_used: tick, bytes });
        Ok(value)
    }

    /// Points `username` at `user` (`None`: removes it from the index).
    pub fn set_username(&mut self, username: &str, user: Option<UserId>) {
        let key = keys::username(username);
        let bytes = USERNAME_ENTRY_BYTES + key.len();
        let slot = Slot { value: user, persist_cut: self.next_cut(), last_used: self.tick, bytes };
        match self.usernames.insert(key.clone(), slot) {
            Some(old) => self.bytes = self.bytes - old.bytes + bytes,
            None => self.bytes += bytes,
        }
        self.change(Changed::Username(key));
    }

    // ---- batches, cuts and eviction ---------------------------------------------

    /// The writes of everything changed since the last call, each key once with its
    /// current value, and the chat-list entries made stale. With `cut`, also the
    /// chat-list index writes of every change since the previous cut: the writes up to
    /// here are then one flush, persisted as cut number [`Self::cuts`].
    pub fn take_writes(&mut self, cut: bool) -> Result<BatchWrites, ProjectionError> {
        let mut changed = std::mem::take(&mut self.changed);
        self.changed_set.clear();
        let mut writes = Vec::with_capacity(changed.len());
        let mut large_last_messages = Vec::new();
        let mut large_chats_changed = Vec::new();
        for key in changed.drain(..) {
            if let Changed::LargeChat(user, _) = key {
                large_chats_changed.push(user);
            }
            if let Changed::Chat(chat) = key
                && let Some(record) = self.chats.get(&chat).and_then(|entry| entry.record.as_ref())
                && record.large
            {
                large_last_messages.push((chat, record.last_message_id));
            }
            writes.push(self.encode(key)?);
        }
        self.changed = changed; // empty, its capacity kept for the next batch
        if cut {
            let changes = std::mem::take(&mut self.list_changes);
            for (chat, change) in changes {
                let now = self.chats.get(&chat).and_then(|entry| entry.record.as_ref()).map(|record| {
                    (record.last_message_id, record.large)
                });
                let members = if now.is_some() { self.member_ids(chat)? } else { Vec::new() };
                writes.extend(change.index_writes(chat, now, &members));
            }
            self.cuts += 1;
        }
        self.tick += 1;
        let mut participants_changed = std::mem::take(&mut self.participants_changed);
        participants_changed.sort_unstable();
        participants_changed.dedup();
        large_chats_changed.sort_unstable();
        large_chats_changed.dedup();
        Ok(BatchWrites {
            writes,
            appended: {
                let capacity = self.catch_up.len();
                std::mem::replace(&mut self.catch_up, Vec::with_capacity(capacity))
            },
            large_last_messages,
            participants_changed,
            large_chats_changed,
            touched: std::mem::take(&mut self.touched),
        })
    }

    fn encode(&mut self, key: Changed) -> Result<KvWrite, ProjectionError> {
        let put = |table: Table, key: Vec<u8>, value: Vec<u8>| (table, key, Some(value));
        Ok(match key {
            Changed::Chat(chat) => {
                let record = self.chats.get(&chat).and_then(|entry| entry.record.as_ref());
                (Table::ChatidChat, keys::chat(chat), record.map(records::encode))
            }
            Changed::Member(chat, user) => {
                let record = self.chats.get(&chat).and_then(|entry| entry.members.get(&user)).and_then(Option::as_ref);
                (Table::ChatidUseridMember, keys::member(chat, user), record.map(records::encode))
            }
            Changed::Message(chat, message) => {
                let record = self.messages.get(&(chat, message)).and_then(|slot| slot.value.as_deref());
                (Table::ChatidMsgidMessage, keys::message(chat, message), record.map(records::encode))
            }
            Changed::Deleted(chat, seq) => put(Table::ChatidSeqDeleted, keys::deleted_seq(chat, seq), Vec::new()),
            Changed::Mention(chat, user, seq) => {
                let message = self
                    .chats
                    .get(&chat)
                    .and_then(|entry| entry.mentions.get(&user))
                    .and_then(|mentions| mentions.get(&seq));
                let key = keys::mention(chat, user, seq);
                (Table::ChatidUseridSeqMention, key, message.map(|message| message.to_be_bytes().to_vec()))
            }
            Changed::Username(key) => {
                let user = self.usernames.get(&key).and_then(|slot| slot.value);
                (Table::UsernameUserid, key, user.map(|user| user.to_be_bytes().to_vec()))
            }
            Changed::DirectChat(a, b) => {
                let chat = self.direct_chats.get(&(a, b)).and_then(|slot| slot.value);
                (Table::UseridUseridDm, keys::direct_chat(a, b), chat.map(|chat| chat.to_be_bytes().to_vec()))
            }
            Changed::Invite(code) => {
                let record = self.invites.get(&code).and_then(|slot| slot.value.as_ref());
                (Table::CodeInvite, keys::invite(&code), record.map(records::encode))
            }
            Changed::ChatInvite(chat, code) => {
                let present = self
                    .chats
                    .get(&chat)
                    .and_then(|entry| entry.invite_codes.as_ref())
                    .is_some_and(|codes| codes.contains(&code));
                (Table::ChatidCodeInvite, keys::chat_invite(chat, &code), present.then(Vec::new))
            }
            Changed::User(user) => {
                let record = self.users.get(&user).and_then(|slot| slot.value.as_ref());
                (Table::UseridUser, keys::user(user), record.map(records::encode))
            }
            Changed::LargeChat(user, chat) => {
                let large = self.chats.get(&chat).and_then(|entry| entry.record.as_ref()).is_some_and(|record| record.large);
                let member = large && self.member(chat, user)?.is_some();
                (Table::UseridChatidLargechat, keys::large_chat(user, chat), member.then(Vec::new))
            }
            Changed::ChatSequence(user, chat) => {
                let sequenced =
                    self.chats.get(&chat).and_then(|entry| entry.record.as_ref()).is_some_and(|record| record.chat_sequence);
                let from = if sequenced { self.member(chat, user)?.map(|member| member.chat_sequence_from) } else { None };
                (Table::UseridChatidChatsequence, keys::chat_sequence(user, chat), from.map(|from| from.to_be_bytes().to_vec()))
            }
            Changed::ParkedOverrides(chat, user) => {
                let overrides = self.parked_overrides.get(&(chat, user)).and_then(|slot| slot.value);
                (Table::ChatidUseridOverride, keys::parked_overrides(chat, user), overrides.map(records::encode_overrides))
            }
            Changed::Checkpoint => {
                put(Table::ProjectionMeta, keys::META_CHECKPOINT.to_vec(), self.checkpoint.to_be_bytes().to_vec())
            }
        })
    }

    /// Records that every cut up to `cut` is in the source now: what it changed is clean.
    pub fn mark_persisted(&mut self, cut: u64) {
        self.persisted_cuts = self.persisted_cuts.max(cut);
    }

    /// Whether the clean records could not be evicted below the budget: only a flush
    /// makes more of them clean.
    pub fn over_budget(&self) -> bool {
        self.bytes > self.bytes_max
    }

    /// Evicts least recently used clean records until at most three quarters of the
    /// budget is used (or nothing clean is left). Returns the bytes freed.
    ///
    /// Allocates nothing in proportion to the records (issue #11: a list of every
    /// candidate was 42 MB of the 1M-event opening's peak): a histogram of the clean
    /// records' last uses, [`EVICTION_BUCKETS`] buckets wide, gives the last use up to
    /// which to evict, and each table drops those records in place. It frees at most one
    /// bucket's worth more than needed.
    pub fn evict(&mut self) -> usize {
        if self.bytes <= self.bytes_max {
            return 0;
        }
        let Some(cutoff) = self.eviction_cutoff(self.bytes - self.bytes_max / 4 * 3) else { return 0 };
        let persisted = self.persisted_cuts;
        let evicted = |persist_cut: u64, last_used: u64| persist_cut <= persisted && last_used <= cutoff;
        let mut freed = 0;
        // A chat goes with its cached messages (its `persist_cut` covers theirs).
        let (list_changes, messages) = (&self.list_changes, &mut self.messages);
        self.chats.retain(|chat, entry| {
            if !evicted(entry.persist_cut, entry.last_used) || list_changes.contains_key(chat) {
                return true;
            }
            freed += entry.bytes;
            freed += entry.cached_messages.iter().filter_map(|&message| messages.remove(&(*chat, message))).map(|slot| slot.bytes).sum::<usize>();
            false
        });
        let chats = &mut self.chats;
        self.messages.retain(|&(chat, message), slot| {
            if !evicted(slot.persist_cut, slot.last_used) {
                return true;
            }
            if let Some(entry) = chats.get_mut(&chat) {
                entry.cached_messages.remove(&message);
            }
            freed += slot.bytes;
            false
        });
        self.users.retain(unless_evicted(evicted, &mut freed));
        self.direct_chats.retain(unless_evicted(evicted, &mut freed));
        self.invites.retain(unless_evicted(evicted, &mut freed));
        self.usernames.retain(unless_evicted(evicted, &mut freed));
        self.parked_overrides.retain(unless_evicted(evicted, &mut freed));
        self.bytes -= freed;
        shrink_sparse(&mut self.chats, SHRINK_ENTRIES_MIN);
        self.messages.shrink_sparse();
        self.users.shrink_sparse();
        shrink_sparse(&mut self.direct_chats, SHRINK_ENTRIES_MIN);
        shrink_sparse(&mut self.invites, SHRINK_ENTRIES_MIN);
        shrink_sparse(&mut self.usernames, SHRINK_ENTRIES_MIN);
        shrink_sparse(&mut self.parked_overrides, SHRINK_ENTRIES_MIN);
        freed
    }

    /// The last use up to which evicting the clean records frees at least `bytes` (or all
    /// of them); `None` when nothing is clean.
    fn eviction_cutoff(&self, bytes: usize) -> Option<u64> {
        let (mut first, mut last) = (u64::MAX, 0);
        self.for_each_clean(|last_used, _| {
            first = first.min(last_used);
            last = last.max(last_used);
        });
        if first > last {
            return None;
        }
        let width = (last - first) / EVICTION_BUCKETS as u64 + 1;
        let mut histogram = [0usize; EVICTION_BUCKETS];
        self.for_each_clean(|last_used, bytes| {
            // Below EVICTION_BUCKETS: (last - first) / width < EVICTION_BUCKETS.
            histogram[((last_used - first) / width) as usize] += bytes;
        });
        let mut sum = 0;
        for (bucket, bucket_bytes) in histogram.iter().enumerate() {
            sum += bucket_bytes;
            if sum >= bytes {
                return Some(first + (bucket as u64 + 1) * width - 1);
            }
        }
        Some(last)
    }

    /// Calls `visit(last_used, bytes)` for every record [`Self::evict`] may drop.
    fn for_each_clean(&self, mut visit: impl FnMut(u64, usize)) {
        let persisted = self.persisted_cuts;
        for (chat, entry) in &self.chats {
            if entry.persist_cut <= persisted && !self.list_changes.contains_key(chat) {
                visit(entry.last_used, entry.bytes);
            }
        }
        let mut slot = |slot_persist_cut: u64, last_used: u64, bytes: usize| {
            if slot_persist_cut <= persisted {
                visit(last_used, bytes);
            }
        };
        self.messages.values().for_each(|s| slot(s.persist_cut, s.last_used, s.bytes));
        self.users.values().for_each(|s| slot(s.persist_cut, s.last_used, s.bytes));
        self.direct_chats.values().for_each(|s| slot(s.persist_cut, s.last_used, s.bytes));
        self.invites.values().for_each(|s| slot(s.persist_cut, s.last_used, s.bytes));
        self.usernames.values().for_each(|s| slot(s.persist_cut, s.last_used, s.bytes));
        self.parked_overrides.values().for_each(|s| slot(s.persist_cut, s.last_used, s.bytes));
    }

    // ---- the whole state as key-value tables ------------------------------------

    /// Every record of the state as key-value tables, with the chat-list index derived
    /// from it: what the flushed tables hold after folding the same events. For states
    /// that hold everything (a fold from scratch, [`ProjectionState::in_memory`]).
    pub fn to_memstore(&mut self) -> Result<MemStore, ProjectionError> {
        let mut store = MemStore::new();
        let chats: Vec<ChatId> = self.chats.keys().copied().collect();
        for chat in chats {
            let Some(record) = self.chats.get(&chat).and_then(|entry| entry.record.clone()) else { continue };
            store.put(Table::ChatidChat, keys::chat(chat), records::encode(&record));
            let members: Vec<(UserId, MemberRecord)> =
                self.members(chat)?.into_iter().map(|(user, member)| (user, member.clone())).collect();
            for (user, member) in &members {
                store.put(Table::ChatidUseridMember, keys::member(chat, *user), records::encode(member));
                if record.chat_sequence {
                    let from = member.chat_sequence_from.to_be_bytes().to_vec();
                    store.put(Table::UseridChatidChatsequence, keys::chat_sequence(*user, chat), from);
                }
                if record.large {
                    store.put(Table::UseridChatidLargechat, keys::large_chat(*user, chat), Vec::new());
                } else {
                    store.put(Table::UseridLastmsgidChatidChatlist, keys::chat_list_entry(*user, record.last_message_id, chat), Vec::new());
                }
            }
            let deleted: Vec<u64> = self.deleted_set(chat)?.iter().copied().collect();
            for seq in deleted {
                store.put(Table::ChatidSeqDeleted, keys::deleted_seq(chat, seq), Vec::new());
            }
            for code in self.invite_codes(chat)? {
                store.put(Table::ChatidCodeInvite, keys::chat_invite(chat, &code), Vec::new());
            }
            if let Some(entry) = self.chats.get(&chat) {
                for (&user, mentions) in &entry.mentions {
                    for (&seq, message) in mentions {
                        store.put(Table::ChatidUseridSeqMention, keys::mention(chat, user, seq), message.to_be_bytes().to_vec());
                    }
                }
            }
        }
        for (&(chat, message), slot) in self.messages.iter() {
            if let Some(record) = &slot.value {
                store.put(Table::ChatidMsgidMessage, keys::message(chat, message), records::encode(record));
            }
        }
        for (&(a, b), slot) in &self.direct_chats {
            if let Some(chat) = slot.value {
                store.put(Table::UseridUseridDm, keys::direct_chat(a, b), chat.to_be_bytes().to_vec());
            }
        }
        for (code, slot) in &self.invites {
            if let Some(record) = &slot.value {
                store.put(Table::CodeInvite, keys::invite(code), records::encode(record));
            }
        }
        for (&user, slot) in self.users.iter() {
            if let Some(record) = &slot.value {
                store.put(Table::UseridUser, keys::user(user), records::encode(record));
            }
        }
        for (name, slot) in &self.usernames {
            if let Some(user) = slot.value {
                store.put(Table::UsernameUserid, name.clone(), user.to_be_bytes().to_vec());
            }
        }
        for (&(chat, user), slot) in &self.parked_overrides {
            if let Some(overrides) = slot.value {
                store.put(Table::ChatidUseridOverride, keys::parked_overrides(chat, user), records::encode_overrides(overrides));
            }
        }
        if let Some(kept) = &self.catch_up_kept {
            for table in [Table::UseridPositionUpdate, Table::ChatidPositionUpdate, Table::PositionEffect] {
                for (key, value) in kept.entries(table) {
                    store.put(table, key.to_vec(), value.to_vec());
                }
            }
        }
        records::save_checkpoint(&mut store, self.checkpoint);
        if self.checkpoint == Position::ZERO {
            // Nothing folded: a slot that was never flushed has no checkpoint key either.
            store.delete(Table::ProjectionMeta, keys::META_CHECKPOINT.to_vec());
        }
        Ok(store)
    }
}

fn unreachable_entry(what: &str) -> ProjectionError {
    // Every caller loads the entry first in the same call; were it missing, report it
    // instead of panicking.
    ProjectionError::Store(format!("{what} entry missing right after it was loaded"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::records::{ChatKind, GroupInfo, NotifPrefs};

    fn group(owner: UserId) -> ChatRecord {
        let info = GroupInfo { name: "g".into(), owner, photo: None, highlighted: None, closed: false };
        ChatRecord { kind: ChatKind::Group(info), last_seq: 0, last_message_id: MessageId(1), member_count: 0, joins: 0, large: false, chat_sequence: false, last_update_position: Position::ZERO }
    }

    fn member() -> MemberRecord {
        MemberRecord { join_order: 0, read_seq: 0, read_message_id: MessageId(0), draft: None, notif_prefs: NotifPrefs::All, overrides: None, chat_sequence_from: Position::ZERO }
    }

    /// A state with a small budget over an empty source, holding `chats` groups of one member.
    fn state_with_chats(chats: u64) -> ProjectionState<MemStore> {
        let mut state = ProjectionState::new(MemStore::new(), 16_384);
        for chat in 1..=chats {
            state.insert_chat(ChatId(chat), group(UserId(7))).unwrap();
            state.insert_member(ChatId(chat), UserId(7), member()).unwrap();
        }
        state
    }

    #[test]
    fn a_cached_message_counts_at_least_its_table_slot_and_its_text() {
        let text = "x".repeat(100);
        let record = MessageRecord {
            seq: 1,
            author: UserId(7),
            sent_at_ms: 0,
            deleted: false,
            text,
            entities: Vec::new(),
            media: Vec::new(),
            edited_at_ms: None,
            message_type: 0,
            client_id: None,
            reply: None,
            mentions: Vec::new(),
        };
        let slot_bytes = size_of::<((ChatId, MessageId), Slot<MessageRecord>)>();
        assert!(message_footprint(Some(&record)) >= slot_bytes + 100, "{} < {slot_bytes} + 100", message_footprint(Some(&record)));
    }

    #[test]
    fn records_changed_since_the_last_persisted_cut_are_never_evicted() {
        let mut state = state_with_chats(50);
        assert!(state.bytes() > state.bytes_max());
        state.take_writes(true).unwrap(); // cut 1, not yet persisted
        assert_eq!(state.evict(), 0, "nothing is clean before cut 1 lands");
        assert_eq!(state.chats.len(), 50);
        assert!(state.over_budget(), "over budget with dirty records only: the engine must flush");
    }

    /// `chats` chats, persisted (cut 1 landed), then each used in a batch of its own: chat
    /// 1 least recently, the last chat most (the cut used them all at one tick, which would
    /// leave their order to the hash map's).
    fn clean_chats_used_one_by_one(chats: u64) -> ProjectionState<MemStore> {
        let mut state = state_with_chats(chats);
        state.take_writes(true).unwrap();
        state.mark_persisted(1);
        for chat in 1..=chats {
            state.chat(ChatId(chat)).unwrap();
            state.take_writes(false).unwrap();
        }
        state
    }

    #[test]
    fn clean_records_are_evicted_least_recently_used_first_down_to_three_quarters_of_the_budget() {
        let mut state = clean_chats_used_one_by_one(50);
        assert!(state.evict() > 0);
        assert!(state.bytes() <= state.bytes_max() / 4 * 3, "{} bytes left", state.bytes());
        assert!(state.chats.contains_key(&ChatId(50)), "the most recently used chat stays");
        assert!(!state.chats.contains_key(&ChatId(1)), "the least recently used goes");
    }

    #[test]
    fn a_table_that_eviction_leaves_mostly_empty_gives_its_room_back() {
        let mut state = state_with_chats(20_000);
        let grown = state.chats.capacity();
        state.take_writes(true).unwrap();
        state.mark_persisted(1);
        // Chats 1 to 19,000 used least recently: the budget keeps about the last 1,000.
        for chat in 19_001..=20_000 {
            state.chat(ChatId(chat)).unwrap();
        }
        state.take_writes(false).unwrap();
        let kept_bytes = state.chats.values().filter(|entry| entry.last_used == state.tick).map(|entry| entry.bytes).sum::<usize>();
        let mut state = ProjectionState { bytes_max: kept_bytes * 4 / 3 + 1, ..state };
        assert!(state.evict() > 0);
        assert!(state.chats.len() <= 1_000, "{} chats left", state.chats.len());
        assert!(state.chats.capacity() <= 2 * state.chats.len() + SHRINK_ENTRIES_MIN, "capacity {} of {grown} kept for {} chats", state.chats.capacity(), state.chats.len());
    }

    #[test]
    fn eviction_frees_what_was_asked_and_at_most_one_bucket_of_last_uses_more() {
        let state = clean_chats_used_one_by_one(4_096);
        let entry_bytes = state.chats[&ChatId(1)].bytes;
        let mut state = ProjectionState { bytes_max: state.bytes() / 2, ..state };
        let target = state.bytes_max / 4 * 3;
        let asked = state.bytes() - target;
        let freed = state.evict();
        assert!(freed >= asked, "freed {freed} of {asked}");
        // 4,096 distinct last uses in 1,024 buckets: a bucket holds at most 4 chats.
        assert!(freed < asked + 4 * entry_bytes + entry_bytes, "freed {freed}, asked {asked}");
        assert!(state.chats.contains_key(&ChatId(4_096)) && !state.chats.contains_key(&ChatId(1)));
    }

    #[test]
    fn an_evicted_record_is_read_again_from_the_source() {
        let mut source = MemStore::new();
        let mut state = ProjectionState::new(MemStore::new(), 16_384);
        state.insert_chat(ChatId(1), group(UserId(7))).unwrap();
        for (table, key, value) in state.take_writes(true).unwrap().writes {
            if let Some(value) = value {
                crate::store::Store::put(&mut source, table, key, value);
            }
        }
        let mut state = ProjectionState::new(source, 0); // every clean record goes at once
        assert_eq!(state.chat(ChatId(1)).unwrap().map(|chat| chat.joins), Some(0));
        state.take_writes(false).unwrap();
        state.evict();
        assert!(state.chats.is_empty());
        assert!(state.chat(ChatId(1)).unwrap().is_some(), "loaded again");
    }

    #[test]
    fn a_record_changed_after_a_cut_stays_until_the_next_cut_lands() {
        let mut state = state_with_chats(1);
        state.take_writes(true).unwrap(); // cut 1
        state.mark_persisted(1);
        state.member_mut(ChatId(1), UserId(7)).unwrap().unwrap().draft = Some("d".into()); // for cut 2
        state.take_writes(false).unwrap();
        let mut state = ProjectionState { bytes_max: 0, ..state };
        state.evict();
        assert!(state.chats.contains_key(&ChatId(1)), "the draft is not persisted yet");
        state.take_writes(true).unwrap();
        state.mark_persisted(2);
        state.evict();
        assert!(state.chats.is_empty());
    }
}
