//! Model-based property test: random histories of chat commands from five users over two
//! DMs, two small groups and one group above the chat-list fan-out limit run against the
//! engine and against a plain in-memory model written below. The clock is part of the
//! generated input (invites expire), and so is closing and reopening the engine.
//!
//! After every step:
//! - the engine's answer to the command is the model's (success or the specific error);
//! - a refused command changed nothing: same log position, byte-identical projections;
//!   an accepted one appended to the log (typing, being ephemeral, never does);
//! - every user's view of every chat equals the model's: last message, read position,
//!   unread count, unread mention count (sends and edits mention members by id, by
//!   `<@id>` and by username, and non-members and unknown users, who count for nobody),
//!   draft, notification preferences, permission overrides (kept across leaving and
//!   rejoining until the owner clears them), or `NotFound` for non-members
//!   (removed members included: nothing that happens after their removal reaches them);
//!   `get_unread_mentions` lists exactly the model's unread mentions;
//! - every member subscribed gets each new message with `notify` as the model says (never
//!   for the author; NONE never, MENTIONS only when mentioned, ALL and DEFAULT always);
//! - a reply to a deleted message is refused; a DM opened by `get_chat` exists from then on;
//! - `last_read_message_id <= last_message_id`; read positions never move back (a view
//!   only shows less when the message read last was deleted); 0 unread right after
//!   reading the last message, and for the sender right after sending;
//! - `get_chats` lists exactly the model's chats, newest first, and paging with `max_id`
//!   or `min_id` at every limit from 1 to 5 visits each conversation exactly once;
//! - invite uses equal the successful `use_invite` calls and never exceed `max_uses`;
//!   `list_chat_invites` shows exactly the model's usable invites.
//!
//! At the end of every case the projections equal a fold of the log, and a closed and
//! reopened engine gives the same answers.
//!
//! Cases: `PROPTEST_CASES` (default 48). Failures are kept in
//! `proptest-regressions/read_state_model.txt` and replayed first.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::*;
use osmium_state::projections::limits::{
    CHAT_LIST_FANOUT_MAX, MEMBER_DEFAULT_PERMISSIONS, PERMISSION_SEND_MEDIA, PERMISSION_SEND_MESSAGES,
};
use osmium_state::proto::ids::UserId;
use osmium_state::proto::refs::ChatRef;
use osmium_state::proto::updates::update::Update;
use osmium_state::proto::{auth, chats, core, media, messages, refs, types};
use osmium_state::{ChatEngine, Clock, Durability, EngineError, Subscription};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// The users whose views are checked. User 5 starts in no chat: it joins by invite or
/// by being added.
const USERS: [u64; 5] = [1, 2, 3, 4, 5];
/// Directory users that only fill group L past the chat-list fan-out limit.
const FILLERS: std::ops::Range<u64> = 1_000..1_000 + CHAT_LIST_FANOUT_MAX as u64;
/// Paging is checked at every page size from 1 to this.
const PAGE_LIMIT_MAX: u32 = 5;
/// A user id nobody has: mentioning it mentions nobody.
const UNKNOWN_USER: u64 = 999;

/// The username of one of [`USERS`] (mentions write it lowercased: usernames match
/// ASCII-case-insensitively).
fn username(user: u64) -> String {
    format!("User{user}")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Chat {
    /// DM between users 1 and 2.
    DmOneTwo,
    /// DM between users 2 and 3.
    DmTwoThree,
    /// Group owned by 1 with 2 and 3.
    GroupA,
    /// Group owned by 2 with 3 and 4.
    GroupB,
    /// Group owned by 3 with 1, 4 and the fillers: above the fan-out limit, so listed
    /// through the large-chat set rather than the per-message chat-list index.
    GroupLarge,
}

impl Chat {
    fn dm_members(self) -> Option<(u64, u64)> {
        match self {
            Chat::DmOneTwo => Some((1, 2)),
            Chat::DmTwoThree => Some((2, 3)),
            Chat::GroupA | Chat::GroupB | Chat::GroupLarge => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum ReadTarget {
    Old,
    Latest,
    BeyondLast,
}

/// Permission overrides an owner may set (one of them contradicts itself).
#[derive(Clone, Copy, Debug)]
enum Overrides {
    Cleared,
    DenySend,
    DenyMedia,
    GrantMediaDenySend,
    Contradictory,
}

impl Overrides {
    fn bits(self) -> (u64, u64) {
        match self {
            Overrides::Cleared => (0, 0),
            Overrides::DenySend => (0, PERMISSION_SEND_MESSAGES),
            Overrides::DenyMedia => (0, PERMISSION_SEND_MEDIA),
            Overrides::GrantMediaDenySend => (PERMISSION_SEND_MEDIA, PERMISSION_SEND_MESSAGES),
            Overrides::Contradictory => (PERMISSION_SEND_MEDIA, PERMISSION_SEND_MEDIA),
        }
    }
}

/// How a mention is written (see the engine's `chat::mentions`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum MentionForm {
    /// `@id` under a `user_mention` entity.
    Id,
    /// `<@id>` under a `user_mention` entity.
    Angle,
    /// `@username` under a `username` entity.
    Username,
}

/// Someone a message mentions: one of [`USERS`] or [`UNKNOWN_USER`].
#[derive(Clone, Copy, Debug, PartialEq)]
struct MentionOf {
    user: u64,
    form: MentionForm,
}

/// Notification preferences as a step sets them: through `set_muted` or `set_notif_prefs`.
#[derive(Clone, Copy, Debug)]
enum PrefsChange {
    Muted(bool),
    Set(types::NotifPrefs),
}

#[derive(Clone, Debug)]
enum Step {
    /// `reply`: the nth message ever sent to the chat, if there is one.
    Send { user: u64, chat: Chat, media: bool, mentions: Vec<MentionOf>, reply: Option<usize> },
    MarkRead { user: u64, chat: Chat, target: ReadTarget },
    Delete { user: u64, chat: Chat, nth: usize },
    /// New text with these mentions (an empty list mentions nobody any more).
    Edit { user: u64, chat: Chat, nth: usize, mentions: Vec<MentionOf> },
    Draft { user: u64, chat: Chat, text: Option<String> },
    Prefs { user: u64, chat: Chat, change: PrefsChange },
    /// `get_chat` of a DM, which opens it when it does not exist.
    OpenDm { user: u64, chat: Chat },
    Typing { user: u64, chat: Chat, typing: bool },
    Leave { user: u64, chat: Chat },
    Remove { actor: Actor, chat: Chat, user: u64 },
    Add { actor: Actor, chat: Chat, user: u64 },
    SetOverrides { actor: Actor, chat: Chat, user: u64, overrides: Overrides },
    CreateInvite { actor: Actor, chat: Chat, expires_in_ms: Option<u64>, max_uses: Option<u32> },
    UseInvite { user: u64, nth: usize },
    DeleteInvite { actor: Actor, nth: usize },
    AdvanceClock { ms: u64 },
    /// Flushes the projections now (they are also cut every few events and whenever the
    /// engine's tiny memory budget is full: see `model_config`).
    Flush,
    Reopen,
}

fn user() -> impl Strategy<Value = u64> {
    prop::sample::select(USERS.to_vec())
}

/// Who runs an owner-only command: mostly whoever owns the chat when the step runs (a
/// random user would rarely be the owner, leaving the accepted paths untested).
#[derive(Clone, Copy, Debug)]
enum Actor {
    Owner,
    User(u64),
}

fn actor() -> impl Strategy<Value = Actor> {
    prop_oneof![2 => Just(Actor::Owner), 1 => user().prop_map(Actor::User)]
}

fn chat() -> impl Strategy<Value = Chat> {
    prop::sample::select(vec![Chat::DmOneTwo, Chat::DmTwoThree, Chat::GroupA, Chat::GroupB, Chat::GroupLarge])
}

fn group_chat() -> impl Strategy<Value = Chat> {
    prop::sample::select(vec![Chat::GroupA, Chat::GroupB, Chat::GroupLarge])
}

fn dm_chat() -> impl Strategy<Value = Chat> {
    prop::sample::select(vec![Chat::DmOneTwo, Chat::DmTwoThree])
}

fn mentions() -> impl Strategy<Value = Vec<MentionOf>> {
    let form = prop::sample::select(vec![MentionForm::Id, MentionForm::Angle, MentionForm::Username]);
    let target = prop_oneof![5 => user(), 1 => Just(UNKNOWN_USER)];
    let mention = (target, form).prop_map(|(user, form)| MentionOf { user, form });
    prop_oneof![2 => Just(Vec::new()), 3 => prop::collection::vec(mention, 1..4)]
}

fn prefs_change() -> impl Strategy<Value = PrefsChange> {
    prop_oneof![
        any::<bool>().prop_map(PrefsChange::Muted),
        prop::sample::select(vec![
            types::NotifPrefs::All,
            types::NotifPrefs::Mentions,
            types::NotifPrefs::None,
            types::NotifPrefs::Default,
        ])
        .prop_map(PrefsChange::Set),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let target = prop_oneof![Just(ReadTarget::Old), Just(ReadTarget::Latest), Just(ReadTarget::BeyondLast)];
    let overrides = prop::sample::select(vec![
        Overrides::Cleared,
        Overrides::DenySend,
        Overrides::DenyMedia,
        Overrides::GrantMediaDenySend,
        Overrides::Contradictory,
    ]);
    let expires_in_ms = prop::option::of(prop::sample::select(vec![0u64, 1_000, 5_000]));
    let max_uses = prop::option::of(0u32..3);
    prop_oneof![
        8 => (user(), chat(), prop::bool::weighted(0.2), mentions(), prop::option::weighted(0.15, 0usize..6))
            .prop_map(|(user, chat, media, mentions, reply)| Step::Send { user, chat, media, mentions, reply }),
        5 => (user(), chat(), target).prop_map(|(user, chat, target)| Step::MarkRead { user, chat, target }),
        2 => (user(), chat(), 0usize..6).prop_map(|(user, chat, nth)| Step::Delete { user, chat, nth }),
        1 => (user(), chat(), 0usize..6, mentions()).prop_map(|(user, chat, nth, mentions)| Step::Edit { user, chat, nth, mentions }),
        2 => (user(), chat(), prop::option::of("[a-z]{0,3}")).prop_map(|(user, chat, text)| Step::Draft { user, chat, text }),
        2 => (user(), chat(), prefs_change()).prop_map(|(user, chat, change)| Step::Prefs { user, chat, change }),
        1 => (user(), dm_chat()).prop_map(|(user, chat)| Step::OpenDm { user, chat }),
        1 => (user(), chat(), any::<bool>()).prop_map(|(user, chat, typing)| Step::Typing { user, chat, typing }),
        1 => (user(), group_chat()).prop_map(|(user, chat)| Step::Leave { user, chat }),
        1 => (actor(), group_chat(), user()).prop_map(|(actor, chat, user)| Step::Remove { actor, chat, user }),
        1 => (actor(), group_chat(), user()).prop_map(|(actor, chat, user)| Step::Add { actor, chat, user }),
        2 => (actor(), group_chat(), user(), overrides)
            .prop_map(|(actor, chat, user, overrides)| Step::SetOverrides { actor, chat, user, overrides }),
        2 => (actor(), group_chat(), expires_in_ms, max_uses)
            .prop_map(|(actor, chat, expires_in_ms, max_uses)| Step::CreateInvite { actor, chat, expires_in_ms, max_uses }),
        2 => (user(), 0usize..3).prop_map(|(user, nth)| Step::UseInvite { user, nth }),
        1 => (actor(), 0usize..3).prop_map(|(actor, nth)| Step::DeleteInvite { actor, nth }),
        1 => (0u64..4_000).prop_map(|ms| Step::AdvanceClock { ms }),
        1 => Just(Step::Flush),
        1 => Just(Step::Reopen),
    ]
}

// ---- the model -------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
struct ModelMember {
    read: u64,
    join_order: u64,
    draft: Option<String>,
    prefs: types::NotifPrefs,
    overrides: Option<(u64, u64)>,
}

impl Default for ModelMember {
    fn default() -> Self {
        ModelMember { read: 0, join_order: 0, draft: None, prefs: types::NotifPrefs::All, overrides: None }
    }
}

/// Whether a new message from someone else notifies a member with `prefs`.
fn notifies(prefs: types::NotifPrefs, mentioned: bool) -> bool {
    match prefs {
        types::NotifPrefs::All | types::NotifPrefs::Default => true,
        types::NotifPrefs::Mentions => mentioned,
        types::NotifPrefs::None => false,
    }
}

#[derive(Clone, Debug)]
struct ModelMessage {
    id: u64,
    author: u64,
    live: bool,
    /// Members it mentions (resolved when sent or last edited).
    mentions: BTreeSet<u64>,
}

#[derive(Clone, Debug, Default)]
struct ModelChat {
    id: u64,
    exists: bool,
    group_owner: Option<u64>,
    closed: bool,
    joins: u64,
    members: BTreeMap<u64, ModelMember>,
    /// Overrides of users who are not members: restored when they join (bans stick).
    parked_overrides: BTreeMap<u64, (u64, u64)>,
    messages: Vec<ModelMessage>,
}

/// What a user should see of a chat.
#[derive(Clone, Debug, PartialEq)]
struct ExpectedView {
    last_message_id: u64,
    last_read_message_id: u64,
    unread_count: u32,
    unread_mentions_count: u32,
    draft: Option<String>,
    notif_prefs: i32,
    overrides: Option<(u64, u64)>,
}

impl ExpectedView {
    fn of(view: &types::Conversation) -> Self {
        ExpectedView {
            last_message_id: view.last_message_id,
            last_read_message_id: view.last_read_message_id,
            unread_count: view.unread_count,
            unread_mentions_count: view.unread_mentions_count,
            draft: view.draft.clone(),
            notif_prefs: view.notif_prefs,
            overrides: view.permissions.map(|overrides| (overrides.pos, overrides.neg)),
        }
    }
}

impl ModelChat {
    fn last_live(&self) -> Option<u64> {
        self.messages.iter().rev().find(|message| message.live).map(|message| message.id)
    }

    fn last_message_id(&self) -> u64 {
        self.last_live().unwrap_or(self.id)
    }

    /// The user an [`Actor`] stands for in this chat now (a DM has no owner: user 1).
    fn resolve(&self, actor: Actor) -> u64 {
        match actor {
            Actor::User(user) => user,
            Actor::Owner => self.group_owner.unwrap_or(1),
        }
    }

    fn member(&self, user: u64) -> Option<&ModelMember> {
        if !self.exists || self.closed { None } else { self.members.get(&user) }
    }

    fn member_mut(&mut self, user: u64) -> Option<&mut ModelMember> {
        if !self.exists || self.closed { None } else { self.members.get_mut(&user) }
    }

    fn join(&mut self, user: u64) {
        let member = ModelMember {
            read: self.last_live().unwrap_or(0),
            join_order: self.joins,
            overrides: self.parked_overrides.remove(&user),
            ..ModelMember::default()
        };
        self.joins += 1;
        self.members.insert(user, member);
    }

    /// Removes a member; when it was the owner, the longest-standing member takes over,
    /// and a group left empty is closed.
    fn leave(&mut self, user: u64) {
        if let Some(overrides) = self.members.remove(&user).and_then(|member| member.overrides) {
            self.parked_overrides.insert(user, overrides);
        }
        if self.group_owner == Some(user) {
            match self.members.iter().min_by_key(|(_, member)| member.join_order) {
                Some((&successor, _)) => self.group_owner = Some(successor),
                None => self.closed = true,
            }
        }
    }

    /// Owners and DM members may do everything; others get `(defaults & !neg) | pos`.
    fn may_send(&self, user: u64, with_media: bool) -> bool {
        if self.group_owner.is_none_or(|owner| owner == user) {
            return true;
        }
        let (pos, neg) = self.members.get(&user).and_then(|member| member.overrides).unwrap_or((0, 0));
        let permissions = (MEMBER_DEFAULT_PERMISSIONS & !neg) | pos;
        permissions & PERMISSION_SEND_MESSAGES != 0 && (!with_media || permissions & PERMISSION_SEND_MEDIA != 0)
    }

    fn unread(&self, user: u64, read: u64) -> u32 {
        self.messages.iter().filter(|message| message.live && message.id > read && message.author != user).count() as u32
    }

    /// Live messages after the read position that mention `user`, oldest first.
    fn unread_mentions(&self, user: u64, read: u64) -> Vec<u64> {
        let mentioning = |message: &&ModelMessage| message.live && message.id > read && message.mentions.contains(&user);
        self.messages.iter().filter(mentioning).map(|message| message.id).collect()
    }

    /// The members `mentions` mention in a message of `author`: resolved (unknown users
    /// and non-members mention nobody), the author left out.
    fn mentioned(&self, author: u64, mentions: &[MentionOf]) -> BTreeSet<u64> {
        mentions
            .iter()
            .map(|mention| mention.user)
            .filter(|&user| user != author && self.member(user).is_some())
            .collect()
    }

    fn expected(&self, user: u64) -> Option<ExpectedView> {
        let member = self.member(user)?;
        Some(ExpectedView {
            last_message_id: self.last_message_id(),
            last_read_message_id: self.last_live().map_or(0, |last| member.read.min(last)),
            unread_count: self.unread(user, member.read),
            unread_mentions_count: self.unread_mentions(user, member.read).len() as u32,
            draft: member.draft.clone(),
            notif_prefs: member.prefs as i32,
            overrides: member.overrides,
        })
    }
}

#[derive(Clone, Debug)]
struct ModelInvite {
    code: String,
    chat: Chat,
    creator: u64,
    expires_at_ms: Option<u64>,
    max_uses: Option<u32>,
    uses: u32,
    deleted: bool,
}

impl ModelInvite {
    fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|expires| now_ms >= expires)
    }

    fn used_up(&self) -> bool {
        self.max_uses.is_some_and(|max| self.uses >= max)
    }
}

/// What `delete_or_edit` does to a message.
#[derive(Clone, Debug, PartialEq)]
enum Change {
    Delete,
    /// New text with these mentions.
    Edit(Vec<MentionOf>),
}

/// What a step did, as the model predicts it (the engine's answer already checked).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    /// Recorded in the log.
    Recorded,
    /// Refused with the expected error: must have written nothing.
    Refused,
    /// Accepted without a log entry (typing).
    Ephemeral,
    /// Not sent to the engine (an address the user cannot form, a clock step, a reopen).
    NotSent,
}

// ---- the harness -----------------------------------------------------------------

struct Harness {
    fixture: Option<Fixture>,
    chats: BTreeMap<Chat, ModelChat>,
    invites: Vec<ModelInvite>,
    /// The read position each user last saw in each chat they are in.
    seen_reads: BTreeMap<(u64, Chat), u64>,
    /// Every user's live updates (subscribed again after each reopen).
    updates: BTreeMap<u64, Subscription>,
}

fn chat_ref(chat: Chat, viewer: u64, model: &ModelChat) -> ChatRef {
    match chat.dm_members() {
        Some((a, b)) => dm(UserId(if viewer == a { b } else { a })),
        None => group(model.id),
    }
}

fn media_attachment() -> media::MediaRef {
    uploaded(7, "image/png")
}

/// A text with the mentions written as [`MentionForm`] says, and their entities.
fn text_with(mentions: &[MentionOf]) -> (String, Vec<types::MessageEntity>) {
    use types::message_entity::Entity;
    let mut text = String::from("m");
    let mut entities = Vec::new();
    for mention in mentions {
        let (token, entity) = match mention.form {
            MentionForm::Id => (format!("@{}", mention.user), Entity::UserMention(types::UserMentionEntity {})),
            MentionForm::Angle => (format!("<@{}>", mention.user), Entity::UserMention(types::UserMentionEntity {})),
            MentionForm::Username => (format!("@{}", username(mention.user).to_lowercase()), Entity::Username(true)),
        };
        text.push(' ');
        let start_index = text.len() as u32; // ASCII: bytes are UTF-16 units
        text.push_str(&token);
        entities.push(types::MessageEntity { start_index, length: token.len() as u32, entity: Some(entity) });
    }
    (text, entities)
}

/// Asserts that `result` is the error `expected` describes and returns [`Outcome::Refused`].
macro_rules! refused {
    ($result:expr, $pattern:pat) => {{
        let result = $result;
        assert!(matches!(result, Err($pattern)), "expected {}, got {result:?}", stringify!($pattern));
        Outcome::Refused
    }};
}

/// The engine under test: `Buffered` (durability is the crash tests' business), cut for a
/// flush every 7 events, and a memory budget of 16 KiB, far below the records the model
/// touches (the 259-member group alone is more), so that records are evicted and loaded
/// again all the time: a record evicted before its flush landed would show as a wrong view.
fn model_config(clock: &osmium_state::ManualClock) -> osmium_state::EngineConfig {
    let mut config = config(clock);
    config.log.durability = Durability::Buffered;
    config.state = osmium_state::StateConfig { flush_interval_ms: 1_000, flush_events_max: 7, state_bytes_max: 16 * 1024 };
    config
}

impl Harness {
    async fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let clock = osmium_state::ManualClock::new(START_MS);
        let engine = ChatEngine::open(dir.path(), model_config(&clock)).await.unwrap();
        let upserts = USERS.into_iter().chain(FILLERS).map(|id| {
            let engine = engine.clone();
            let username = USERS.contains(&id).then(|| username(id));
            tokio::spawn(async move { engine.upsert_user(types::User { id, name: format!("u{id}"), username, ..Default::default() }).await })
        });
        for upsert in upserts.collect::<Vec<_>>() {
            upsert.await.unwrap().unwrap();
        }
        let mut chats = BTreeMap::new();
        let groups = [
            (Chat::GroupA, 1u64, vec![2u64, 3]),
            (Chat::GroupB, 2, vec![3, 4]),
            (Chat::GroupLarge, 3, [1, 4].into_iter().chain(FILLERS).collect()),
        ];
        for (chat, owner, members) in groups {
            let users = members.iter().map(|&user_id| refs::UserRef { user_id }).collect();
            let created = engine.create_chat(UserId(owner), chats::CreateChat { users, name: "g".into() }).await.unwrap();
            let mut model = ModelChat { id: created.id, exists: true, group_owner: Some(owner), ..ModelChat::default() };
            model.join(owner);
            for member in members {
                model.join(member);
            }
            chats.insert(chat, model);
        }
        chats.insert(Chat::DmOneTwo, ModelChat::default());
        chats.insert(Chat::DmTwoThree, ModelChat::default());
        let updates = USERS.into_iter().map(|user| (user, engine.subscribe(UserId(user)))).collect();
        Harness { fixture: Some(Fixture { dir, engine, clock }), chats, invites: Vec::new(), seen_reads: BTreeMap::new(), updates }
    }

    fn fixture(&self) -> &Fixture {
        self.fixture.as_ref().expect("the fixture is only taken out while reopening")
    }

    fn engine(&self) -> ChatEngine {
        self.fixture().engine.clone()
    }

    fn now_ms(&self) -> u64 {
        self.fixture().clock.now_ms()
    }

    async fn reopen(&mut self) {
        let Fixture { dir, engine, clock } = self.fixture.take().expect("the fixture is only taken out while reopening");
        drop(engine);
        let engine = ChatEngine::open(dir.path(), model_config(&clock)).await.unwrap();
        self.updates = USERS.into_iter().map(|user| (user, engine.subscribe(UserId(user)))).collect();
        self.fixture = Some(Fixture { dir, engine, clock });
    }

    /// Every member of `model` gets the new message `message_id` with `notify` as the model
    /// says (other updates on the way are skipped).
    async fn check_notify(&mut self, model: &ModelChat, message_id: u64) {
        let message = model.messages.iter().find(|message| message.id == message_id).expect("the model has the message");
        for (user, updates) in &mut self.updates {
            let Some(member) = model.member(*user) else { continue };
            let expected = *user != message.author && notifies(member.prefs, message.mentions.contains(user));
            let update = loop {
                let next = tokio::time::timeout(std::time::Duration::from_secs(10), updates.next()).await;
                let update = next.expect("the new message reaches every member in time").expect("subscription open");
                match &update.update.update {
                    Some(Update::MessageCreated(created)) if created.message.as_ref().unwrap().message_id == message_id => break update,
                    _ => continue,
                }
            };
            assert_eq!(update.notify, expected, "notify of user {user} ({:?}) for message {message:?}", member.prefs);
        }
    }

    /// Runs one step on the engine and the model, then checks that a refused command
    /// wrote nothing and an accepted one was logged.
    async fn run(&mut self, step: &Step) {
        // No engine handle may live across `step`: a reopen needs the directory released.
        let position_before = self.engine().last_position();
        let projections_before = self.engine().projection_contents().unwrap();
        let outcome = self.step(step).await;
        let engine = self.engine();
        let position_after = engine.last_position();
        match outcome {
            Outcome::Recorded => assert!(position_after > position_before, "{step:?} was accepted but not logged"),
            Outcome::Refused | Outcome::Ephemeral | Outcome::NotSent => {
                assert_eq!(position_after, position_before, "{step:?} ({outcome:?}) appended to the log");
                let projections_after = engine.projection_contents().unwrap();
                assert!(projections_after == projections_before, "{step:?} ({outcome:?}) changed the projections");
            }
        }
    }

    /// Runs one step on the engine and the model; the engine's answer must be the model's.
    async fn step(&mut self, step: &Step) -> Outcome {
        match step {
            Step::Reopen => {
                self.reopen().await;
                return Outcome::NotSent;
            }
            Step::AdvanceClock { ms } => {
                self.fixture().clock.advance_ms(*ms);
                return Outcome::NotSent;
            }
            Step::Flush => {
                self.engine().flush().await.unwrap();
                return Outcome::NotSent;
            }
            _ => {}
        }
        let engine = self.engine();
        let now_ms = self.now_ms();
        let may_address = |user: u64, chat: Chat| chat.dm_members().is_none_or(|(a, b)| user == a || user == b);
        match step.clone() {
            Step::Reopen | Step::AdvanceClock { .. } | Step::Flush => unreachable!("handled above, before an engine handle is taken"),
            Step::Send { user, chat, .. }
            | Step::MarkRead { user, chat, .. }
            | Step::Delete { user, chat, .. }
            | Step::Edit { user, chat, .. }
            | Step::Draft { user, chat, .. }
            | Step::Prefs { user, chat, .. }
            | Step::Typing { user, chat, .. }
            | Step::OpenDm { user, chat }
                if !may_address(user, chat) =>
            {
                Outcome::NotSent
            }
            Step::Send { user, chat, media, mentions, reply } => {
                let model = self.chats.get_mut(&chat).unwrap();
                let (text, entities) = text_with(&mentions);
                let reply_to = reply.and_then(|nth| model.messages.get(nth)).map(|message| (message.id, message.live));
                let request = messages::SendMessage {
                    chat_ref: Some(chat_ref(chat, user, model)),
                    message: text,
                    entities,
                    media: if media { vec![media_attachment()] } else { Vec::new() },
                    reply_to: reply_to.map(|(message_id, _)| messages::send_message::ReplyTo { message_id, quote: None }),
                    ..Default::default()
                };
                let result = engine.send_message(UserId(user), request).await;
                let sent = if let (Some((a, b)), false) = (chat.dm_members(), model.exists) {
                    let sent = result.unwrap(); // a DM that does not exist has no message to reply to
                    model.exists = true;
                    model.join(a);
                    model.join(b);
                    model.id = dm_chat_id(&engine, a, b);
                    let mentions = model.mentioned(user, &mentions);
                    model.messages.push(ModelMessage { id: sent.message_id, author: user, live: true, mentions });
                    model.members.get_mut(&user).unwrap().read = sent.message_id;
                    sent.message_id
                } else if model.member(user).is_none() {
                    return refused!(result, EngineError::NotFound { .. });
                } else if !model.may_send(user, media) {
                    return refused!(result, EngineError::PermissionDenied { .. });
                } else if reply_to.is_some_and(|(_, live)| !live) {
                    return refused!(result, EngineError::ReplyTargetNotFound { .. });
                } else {
                    let sent = result.unwrap();
                    let mentions = model.mentioned(user, &mentions);
                    model.messages.push(ModelMessage { id: sent.message_id, author: user, live: true, mentions });
                    let member = model.member_mut(user).unwrap();
                    member.read = sent.message_id;
                    member.draft = None;
                    sent.message_id
                };
                let view = conversation(&engine, UserId(user), &chat_ref(chat, user, model)).await;
                assert_eq!(view.unread_count, 0, "the sender has nothing unread right after sending");
                let model = model.clone();
                self.check_notify(&model, sent).await;
                Outcome::Recorded
            }
            Step::MarkRead { user, chat, target } => {
                let model = self.chats.get_mut(&chat).unwrap();
                let last = model.last_live();
                let message_id = match target {
                    ReadTarget::Old => model.messages.first().map_or(1, |message| message.id),
                    ReadTarget::Latest => last.unwrap_or(1),
                    ReadTarget::BeyondLast => u64::MAX - 1,
                };
                let chat_ref = chat_ref(chat, user, model);
                let request = chats::MarkChatRead { chat_ref: Some(chat_ref), message_id, read_amount: None };
                let result = engine.mark_chat_read(UserId(user), request).await;
                let Some(member) = model.member_mut(user) else { return refused!(result, EngineError::NotFound { .. }) };
                result.unwrap();
                if let Some(last) = last {
                    member.read = member.read.max(message_id.min(last));
                }
                if let ReadTarget::Latest | ReadTarget::BeyondLast = target {
                    let view = conversation(&engine, UserId(user), &chat_ref).await;
                    assert_eq!(view.unread_count, 0, "nothing is unread right after reading the last message");
                }
                Outcome::Recorded
            }
            Step::Delete { user, chat, nth } => self.delete_or_edit(&engine, user, chat, nth, Change::Delete).await,
            Step::Edit { user, chat, nth, mentions } => self.delete_or_edit(&engine, user, chat, nth, Change::Edit(mentions)).await,
            Step::Draft { user, chat, text } => {
                let model = self.chats.get_mut(&chat).unwrap();
                let result = engine.save_draft(UserId(user), chat_ref(chat, user, model), text.clone()).await;
                let Some(member) = model.member_mut(user) else { return refused!(result, EngineError::NotFound { .. }) };
                result.unwrap();
                member.draft = text.filter(|text| !text.is_empty());
                Outcome::Recorded
            }
            Step::Prefs { user, chat, change } => {
                let model = self.chats.get_mut(&chat).unwrap();
                let chat_ref = chat_ref(chat, user, model);
                let (result, prefs) = match change {
                    PrefsChange::Muted(muted) => {
                        let prefs = if muted { types::NotifPrefs::None } else { types::NotifPrefs::All };
                        (engine.set_muted(UserId(user), chat_ref, muted).await, prefs)
                    }
                    PrefsChange::Set(prefs) => (engine.set_notif_prefs(UserId(user), chat_ref, prefs).await, prefs),
                };
                let Some(member) = model.member_mut(user) else { return refused!(result, EngineError::NotFound { .. }) };
                result.unwrap();
                member.prefs = prefs;
                Outcome::Recorded
            }
            Step::OpenDm { user, chat } => {
                let model = self.chats.get_mut(&chat).unwrap();
                let view = conversation(&engine, UserId(user), &chat_ref(chat, user, model)).await;
                if model.exists {
                    return Outcome::Ephemeral; // a read: the DM is there
                }
                let (a, b) = chat.dm_members().unwrap();
                model.exists = true;
                model.join(a);
                model.join(b);
                model.id = dm_chat_id(&engine, a, b);
                assert_eq!(view.last_message_id, model.id, "an opened DM without messages sorts by its id");
                Outcome::Recorded
            }
            Step::Typing { user, chat, typing } => {
                let model = &self.chats[&chat];
                let request = chats::SetTyping { chat_ref: Some(chat_ref(chat, user, model)), typing, action: None };
                let result = engine.set_typing(UserId(user), request).await;
                if model.member(user).is_none() {
                    return refused!(result, EngineError::NotFound { .. });
                }
                result.unwrap();
                Outcome::Ephemeral
            }
            Step::Leave { user, chat } => self.remove(&engine, user, chat, user).await,
            Step::Remove { actor, chat, user } => {
                let actor = self.chats[&chat].resolve(actor);
                self.remove(&engine, actor, chat, user).await
            }
            Step::Add { actor, chat, user } => {
                let model = self.chats.get_mut(&chat).unwrap();
                let actor = model.resolve(actor);
                let request = chats::AddChatMember { chat_ref: Some(group(model.id)), user_id: user };
                let result = engine.add_chat_member(UserId(actor), request).await;
                if model.member(actor).is_none() {
                    return refused!(result, EngineError::NotFound { .. });
                }
                if model.group_owner != Some(actor) {
                    return refused!(result, EngineError::PermissionDenied { .. });
                }
                if model.members.contains_key(&user) {
                    return refused!(result, EngineError::AlreadyMember);
                }
                result.unwrap();
                model.join(user);
                Outcome::Recorded
            }
            Step::SetOverrides { actor, chat, user, overrides } => {
                let model = self.chats.get_mut(&chat).unwrap();
                let actor = model.resolve(actor);
                let (pos, neg) = overrides.bits();
                let request = types::PermissionOverrides { pos, neg };
                let result = engine.set_permission_overrides(UserId(actor), group(model.id), UserId(user), request).await;
                if model.member(actor).is_none() {
                    return refused!(result, EngineError::NotFound { .. });
                }
                if model.group_owner != Some(actor) {
                    return refused!(result, EngineError::PermissionDenied { .. });
                }
                if pos & neg != 0 {
                    return refused!(result, EngineError::InvalidArgument { .. });
                }
                result.unwrap();
                let overrides = (pos != 0 || neg != 0).then_some((pos, neg));
                match model.member_mut(user) {
                    Some(member) => member.overrides = overrides,
                    // Any known user: kept until they join.
                    None => {
                        if let Some(overrides) = overrides {
                            model.parked_overrides.insert(user, overrides);
                        } else {
                            model.parked_overrides.remove(&user);
                        }
                    }
                }
                Outcome::Recorded
            }
            Step::CreateInvite { actor, chat, expires_in_ms, max_uses } => {
                let model = &self.chats[&chat];
                let actor = model.resolve(actor);
                let expires_at_ms = expires_in_ms.map(|ms| now_ms + ms);
                let request =
                    chats::CreateChatInvite { chat_ref: Some(group(model.id)), expires_at: expires_at_ms, max_uses };
                let result = engine.create_chat_invite(UserId(actor), request).await;
                if model.member(actor).is_none() {
                    return refused!(result, EngineError::NotFound { .. });
                }
                if model.group_owner != Some(actor) {
                    return refused!(result, EngineError::PermissionDenied { .. });
                }
                if expires_in_ms == Some(0) || max_uses == Some(0) {
                    return refused!(result, EngineError::InvalidArgument { .. });
                }
                let code = result.unwrap().code;
                let invite = ModelInvite { code, chat, creator: actor, expires_at_ms, max_uses, uses: 0, deleted: false };
                self.invites.push(invite);
                Outcome::Recorded
            }
            Step::UseInvite { user, nth } => {
                let Some(invite) = self.invites.get_mut(nth) else { return Outcome::NotSent };
                let model = self.chats.get_mut(&invite.chat).unwrap();
                let result = engine.use_invite(UserId(user), auth::UseInvite { code: invite.code.clone() }).await;
                if invite.deleted || model.closed {
                    return refused!(result, EngineError::InviteNotFound);
                }
                if invite.expired(now_ms) {
                    return refused!(result, EngineError::InviteExpired);
                }
                if invite.used_up() {
                    return refused!(result, EngineError::InviteUsedUp);
                }
                if model.members.contains_key(&user) {
                    return refused!(result, EngineError::AlreadyMember);
                }
                result.unwrap();
                invite.uses += 1;
                model.join(user);
                Outcome::Recorded
            }
            Step::DeleteInvite { actor, nth } => {
                let Some(invite) = self.invites.get_mut(nth) else { return Outcome::NotSent };
                let model = &self.chats[&invite.chat];
                let actor = model.resolve(actor);
                let request = chats::DeleteChatInvite { code: invite.code.clone() };
                let result = engine.delete_chat_invite(UserId(actor), request).await;
                if invite.deleted || model.member(actor).is_none() {
                    return refused!(result, EngineError::InviteNotFound);
                }
                if invite.creator != actor && model.group_owner != Some(actor) {
                    return refused!(result, EngineError::PermissionDenied { .. });
                }
                result.unwrap();
                invite.deleted = true;
                Outcome::Recorded
            }
        }
    }

    /// `user` deletes or edits the `nth` message ever sent to `chat`.
    async fn delete_or_edit(&mut self, engine: &ChatEngine, user: u64, chat: Chat, nth: usize, change: Change) -> Outcome {
        let model = self.chats.get_mut(&chat).unwrap();
        let Some(&ModelMessage { id, author, live, .. }) = model.messages.get(nth) else { return Outcome::NotSent };
        let chat_ref = Some(chat_ref(chat, user, model));
        let result = match &change {
            Change::Delete => {
                engine.delete_message(UserId(user), messages::DeleteMessage { chat_ref, message_ids: vec![id] }).await
            }
            Change::Edit(mentions) => {
                let (text, entities) = text_with(mentions);
                let edit = messages::EditMessage { chat_ref, message_id: id, message: Some(text), entities, ..Default::default() };
                engine.edit_message(UserId(user), edit).await
            }
        };
        let allowed = author == user || (change == Change::Delete && model.group_owner == Some(user));
        if model.member(user).is_none() || !live {
            return refused!(result, EngineError::NotFound { .. });
        }
        if !allowed {
            return refused!(result, EngineError::PermissionDenied { .. });
        }
        result.unwrap();
        match change {
            Change::Delete => model.messages[nth].live = false,
            Change::Edit(mentions) => model.messages[nth].mentions = model.mentioned(user, &mentions),
        }
        Outcome::Recorded
    }

    /// `actor` removes `user` from a group (leaving when they are the same).
    async fn remove(&mut self, engine: &ChatEngine, actor: u64, chat: Chat, user: u64) -> Outcome {
        let model = self.chats.get_mut(&chat).unwrap();
        let request = chats::RemoveChatMember { chat_ref: Some(group(model.id)), user_id: user };
        let result = engine.remove_chat_member(UserId(actor), request).await;
        if model.member(actor).is_none() {
            return refused!(result, EngineError::NotFound { .. });
        }
        if actor != user && model.group_owner != Some(actor) {
            return refused!(result, EngineError::PermissionDenied { .. });
        }
        if !model.members.contains_key(&user) {
            return refused!(result, EngineError::NotFound { .. });
        }
        result.unwrap();
        model.leave(user);
        Outcome::Recorded
    }

    /// Every user's view of every chat, their chat list and its pages, and every
    /// group's invites equal the model's.
    async fn check(&mut self) {
        let engine = self.engine();
        for user in USERS {
            for (&chat, model) in &self.chats {
                if chat.dm_members().is_some_and(|(a, b)| user != a && user != b) {
                    continue;
                }
                if chat.dm_members().is_some() && !model.exists {
                    continue; // get_chat would open it (the chat list shows it is not there)
                }
                let got = conversation_result(&engine, UserId(user), &chat_ref(chat, user, model)).await;
                let mentions = engine.get_unread_mentions(UserId(user), core::GetUnreadMentions { chat_ref: Some(chat_ref(chat, user, model)) });
                let mentions = mentions.await;
                let Some(expected) = model.expected(user) else {
                    assert!(matches!(got, Err(EngineError::NotFound { .. })), "user {user} in {chat:?}: {got:?}");
                    assert!(matches!(mentions, Err(EngineError::NotFound { .. })), "user {user} in {chat:?}: {mentions:?}");
                    self.seen_reads.remove(&(user, chat));
                    continue;
                };
                let view = got.unwrap_or_else(|err| panic!("user {user} in {chat:?}: {err}"));
                assert_eq!(ExpectedView::of(&view), expected, "user {user} in {chat:?}");
                let read = model.member(user).unwrap().read;
                assert_eq!(mentions.unwrap().message_ids, model.unread_mentions(user, read), "unread mentions of user {user} in {chat:?}");
                assert!(view.last_read_message_id <= view.last_message_id, "user {user} in {chat:?}: {view:?}");
                if model.last_live().is_some()
                    && let Some(&before) = self.seen_reads.get(&(user, chat))
                {
                    assert!(
                        view.last_read_message_id >= before.min(view.last_message_id),
                        "user {user} in {chat:?}: read position moved back from {before} to {}",
                        view.last_read_message_id
                    );
                }
                self.seen_reads.insert((user, chat), view.last_read_message_id);
            }
            self.check_chat_list(&engine, user).await;
        }
        self.check_invites(&engine).await;
    }

    /// `get_chats` lists the model's chats newest first, and every way of paging through
    /// it visits each conversation exactly once.
    async fn check_chat_list(&self, engine: &ChatEngine, user: u64) {
        let mut expected: Vec<(u64, u32, u32)> = self
            .chats
            .values()
            .filter_map(|model| model.expected(user).map(|view| (view.last_message_id, view.unread_count, view.unread_mentions_count)))
            .collect();
        expected.sort_by(|a, b| b.cmp(a));
        let list = engine.get_chats(UserId(user), chats::GetChats::default()).await.unwrap();
        let listed: Vec<(u64, u32, u32)> =
            list.chats.iter().map(|c| (c.last_message_id, c.unread_count, c.unread_mentions_count)).collect();
        assert_eq!(listed, expected, "chat list of user {user}");
        let all: Vec<u64> = expected.iter().map(|(last, ..)| *last).collect();
        for limit in 1..=PAGE_LIMIT_MAX {
            let mut backwards = Vec::new();
            let mut max_id = None;
            loop {
                let page = chat_list(engine, UserId(user), chats::GetChats { limit: Some(limit), max_id, min_id: None }).await;
                assert!(page.len() <= limit as usize);
                let Some(&oldest) = page.last() else { break };
                backwards.extend(page);
                max_id = Some(oldest);
            }
            assert_eq!(backwards, all, "user {user}: paging back with max_id at limit {limit}");
            let mut forwards = Vec::new();
            let mut min_id = Some(0);
            loop {
                let page = chat_list(engine, UserId(user), chats::GetChats { limit: Some(limit), max_id: None, min_id }).await;
                assert!(page.len() <= limit as usize);
                let Some(&newest) = page.first() else { break };
                forwards.splice(0..0, page);
                min_id = Some(newest);
            }
            assert_eq!(forwards, all, "user {user}: paging forward with min_id at limit {limit}");
        }
    }

    /// Use counters equal the model's (so the successful `use_invite` calls) and never
    /// exceed `max_uses`; `list_chat_invites` shows exactly the usable ones.
    async fn check_invites(&self, engine: &ChatEngine) {
        let now_ms = self.now_ms();
        for (&chat, model) in &self.chats {
            let Some(owner) = model.group_owner.filter(|_| !model.closed) else { continue };
            let details = engine.chat_invite_details(UserId(owner), group(model.id)).await.unwrap();
            let found: BTreeMap<String, (u32, Option<u32>)> =
                details.into_iter().map(|info| (info.code, (info.uses, info.max_uses))).collect();
            let ours = self.invites.iter().filter(|invite| invite.chat == chat && !invite.deleted);
            let expected: BTreeMap<String, (u32, Option<u32>)> =
                ours.map(|invite| (invite.code.clone(), (invite.uses, invite.max_uses))).collect();
            assert_eq!(found, expected, "invites of {chat:?}");
            assert!(found.values().all(|(uses, max)| max.is_none_or(|max| *uses <= max)), "{found:?}");
            let listed = engine.list_chat_invites(UserId(owner), chats::ListChatInvites { chat_ref: Some(group(model.id)) });
            let listed: BTreeSet<String> = listed.await.unwrap().invites.into_iter().map(|preview| preview.code).collect();
            let usable: BTreeSet<String> = self
                .invites
                .iter()
                .filter(|invite| invite.chat == chat && !invite.deleted && !invite.expired(now_ms) && !invite.used_up())
                .map(|invite| invite.code.clone())
                .collect();
            assert_eq!(listed, usable, "usable invites of {chat:?} at {now_ms}");
        }
    }

    /// Everything a client can ask about the model's users, for comparing two engines.
    async fn answers(&self) -> Vec<String> {
        let engine = self.engine();
        let mut answers = Vec::new();
        for user in USERS {
            answers.push(format!("{:?}", engine.get_chats(UserId(user), chats::GetChats::default()).await));
            for (&chat, model) in &self.chats {
                let chat_ref = Some(chat_ref(chat, user, model));
                // get_chat would open a DM that does not exist (or one with someone else).
                if chat.dm_members().is_none_or(|(a, b)| model.exists && (user == a || user == b)) {
                    answers.push(format!("{:?}", engine.get_chat(UserId(user), chats::GetChat { chat_ref }).await));
                }
                let mentions = core::GetUnreadMentions { chat_ref };
                answers.push(format!("{:?}", engine.get_unread_mentions(UserId(user), mentions).await));
                let history = messages::GetHistory { chat_ref, limit: Some(100), offset: None };
                answers.push(format!("{:?}", engine.get_history(UserId(user), history).await));
            }
        }
        answers
    }
}

fn dm_chat_id(engine: &ChatEngine, a: u64, b: u64) -> u64 {
    // A DM's id is what its conversation sorts by before any message: read it from the log.
    let events = engine.log().read_all(osmium_state::proto::ids::Position(1), 100_000).unwrap();
    events
        .iter()
        .rev()
        .find_map(|event| match (&event.event, event.stream.as_ref().and_then(|s| s.stream)) {
            (
                Some(osmium_state::proto::events::event_envelope::Event::DirectChatCreated(created)),
                Some(osmium_state::proto::events::stream_ref::Stream::ChatId(chat)),
            ) if (created.user_a, created.user_b) == (a, b) || (created.user_a, created.user_b) == (b, a) => Some(chat),
            _ => None,
        })
        .unwrap()
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::Direct(
            "tests/proptest-regressions/read_state_model.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn read_state_matches_the_model_after_every_step(steps in prop::collection::vec(step(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async {
            let mut harness = Harness::new().await;
            for step in &steps {
                harness.run(step).await;
                harness.check().await;
            }
            assert_projections_equal_a_fold_of_the_log(&harness.engine()).await;
            let before = harness.answers().await;
            harness.reopen().await;
            let after = harness.answers().await;
            assert_eq!(after.len(), before.len(), "a reopened engine answers as many questions");
            for (after, before) in after.iter().zip(&before) {
                assert_eq!(after, before, "a reopened engine answers the same");
            }
        });
    }
}
