//! The async chat API a backend embeds: [`ChatEngine`].
//!
//! Every state-changing call is a command: it is validated against the current state on
//! the log's writer thread, recorded as events, folded into the projections in the same
//! write batch, acknowledged once durable, and then published to subscribers. Reads go
//! to a consistent snapshot of the projections. Typing is the one exception: ephemeral,
//! never in the log.
//!
//! # Semantics
//! - A DM is addressed as `ChatRef.user` from either side and is created by its first
//!   message, or opened by `get_chat` (seed 001: "Opening a DM: Call GetChat with a ChatRef
//!   pointing to the user"); it then appears in both users' lists (an opened DM without
//!   messages sorts by its chat id). `ChatRef.self` is the caller's own chat, opened the
//!   same way. `get_chat` is a read, except when the DM does not exist yet: then it is a
//!   command (one `direct_chat_created` event, decided on the state machine thread, so two
//!   concurrent opens and a racing first message create one chat). Every other call on a
//!   DM that was never opened answers `NotFound`.
//! - `last_message_id` is the newest non-deleted message, or the chat id when there is none.
//! - `unread_count` for a member = non-deleted messages after their read position not
//!   written by them. Sending moves the sender's read position to the new message.
//!   A member's read position starts at the last message when they join.
//! - `mark_chat_read(m)` sets the read position to `max(current, min(m, last message))`:
//!   it never moves back, and always publishes `UpdateConversationLastRead` (with the
//!   unread count, also when 0) to the user's subscriptions.
//! - `last_read_message_id` is shown clamped to `last_message_id` (the message read last
//!   may have been deleted since) and as 0 while the chat has no message.
//! - Deleting a message someone has not read lowers their count; editing changes none.
//!   Conversations count unread whatever their notification preferences; updates carry
//!   `notify`: for a new message from someone else, NONE never notifies, MENTIONS only
//!   when the member is mentioned, ALL and DEFAULT always; the author is never notified.
//! - Mentions (conventions in [`mentions`]): `unread_mentions_count` = mentions of the
//!   member by non-deleted messages after their read position, derived like the unread
//!   count from one `chatid_userid_seq_mention` key per mentioned member per message;
//!   editing a message resolves its mentions again. `get_unread_mentions` lists them.
//! - Replies: `SendMessage.reply_to` (or the deprecated `reply_to_old`) must name a
//!   non-deleted message of the same chat ([`EngineError::ReplyTargetNotFound`]); the
//!   message carries it as `Message.reply` and the deprecated `Message.reply_to`.
//! - A draft is per user per chat and is cleared when that user sends a message there.
//! - `get_chats` orders by `last_message_id` descending; `max_id` pages backwards
//!   (`last_message_id < max_id`), `min_id` alone pages forwards (the conversations just
//!   above it); `limit` defaults to 50 and is capped at 100.
//! - Groups are owner-based: only the owner edits the group, adds or removes others,
//!   sets permission overrides and creates, lists or deletes invites (an invite's creator
//!   may delete it too); any member may leave; when the owner leaves, the
//!   longest-standing member becomes owner; a group left empty is closed.
//! - Effective permissions = `(member defaults & !neg) | pos`; `send_message` needs
//!   SEND_MESSAGES (4) and, with media, SEND_MEDIA (32). Owners and DM members may do all.
//! - Non-members (never joined, removed, or the group closed) get `NotFound` for anything
//!   about a group.
//! - Invites: 128 random bits from the OS, URL-safe base64; groups only; `expires_at` in
//!   the future and `max_uses >= 1` when given. `use_invite` fails distinctly for unknown
//!   or deleted, expired, used up, and already a member (no use counted).
//! - Typing expires `typing_expiry_ms` after the last refresh (publishing `typing = false`);
//!   sending a message clears it.

pub mod catch_up;
mod commands;
pub mod limits;
pub mod mentions;
mod resolve;
pub mod updates;
mod views;

use crate::error::{EngineError, OpenError};
use crate::log::{LogConfig, LogReader};
use crate::runtime::{Core, StateConfig};
use crate::state_machine::{Command, Decide, DecideContext, Decision, Idempotency, Output, Replay};
use commands::{replay_done, replay_message};
use limits::Limits;
use osmium_projections::query::ChatListPage;
use osmium_projections::records::{NotifPrefs, load_member};
use osmium_projections::{MemStore, StoreRead, Table, query};
use osmium_proto::ids::{ChatId, MessageId, Position, UserId};
use osmium_proto::refs::{ChatRef, GroupRef, chat_ref::Ref};
use osmium_proto::{auth, chats, core, messages, types};
use resolve::{Resolved, Tables};
use std::path::Path;
use std::sync::Arc;
use catch_up::CatchUp;
use crate::retention::CatchUpTrim;
use updates::{Subscription, TaggedUpdate, TypingState, UpdateHub};
pub use views::InviteInfo;

/// Invites to purge among the `scan_max` codes from `cursor` on, by chat; the codes
/// scanned; and the code the next scan starts from (`None`: the scan reached the end).
type PurgeCandidates = (std::collections::BTreeMap<ChatId, Vec<String>>, usize, Option<String>);

fn purge_candidates(
    view: &dyn StoreRead,
    cursor: Option<&str>,
    scan_max: usize,
    purgeable: impl Fn(&osmium_projections::records::InviteRecord) -> bool,
) -> Result<PurgeCandidates, EngineError> {
    use std::ops::ControlFlow;
    let mut codes = Vec::new();
    let range = osmium_projections::ScanRange::prefix(&[]).starting_at(cursor.unwrap_or_default().as_bytes());
    view.scan(Table::CodeInvite, range, &mut |key, _| {
        codes.push(String::from_utf8_lossy(key).into_owned());
        if codes.len() > scan_max { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    })?;
    // The one past `scan_max`, when there is more: where the next call starts.
    let next = if codes.len() > scan_max { codes.pop() } else { None };
    let mut by_chat: std::collections::BTreeMap<ChatId, Vec<String>> = std::collections::BTreeMap::new();
    for code in &codes {
        if let Some(invite) = osmium_projections::records::load_invite(view, code)?
            && purgeable(&invite)
        {
            by_chat.entry(invite.chat).or_default().push(code.clone());
        }
    }
    Ok((by_chat, codes.len(), next))
}

/// What one [`ChatEngine::purge_invites`] call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvitePurge {
    /// Invites looked at.
    pub scanned: usize,
    /// Invites deleted.
    pub purged: usize,
    /// Whether the scan reached the last invite (the next call starts from the first).
    pub swept: bool,
}

/// How to open a [`ChatEngine`].
#[derive(Clone, Debug, Default)]
pub struct EngineConfig {
    /// The event log's settings (durability, queue bounds, clock, snowflake worker).
    pub log: LogConfig,
    /// When projections are flushed and how much memory they may take.
    pub state: StateConfig,
    /// Request and state limits.
    pub limits: Limits,
    /// Replicated mode: the node is a full replica of a NATS JetStream log (issue #15,
    /// `crate::replica`). `None` (the default): the embedded RocksDB log.
    pub replica: Option<crate::replica::ReplicaConfig>,
}

/// Bytes of OS randomness in an invite code (128 bits).
pub const INVITE_CODE_RANDOM_BYTES: usize = 16;

pub(crate) fn group_ref(chat: ChatId) -> ChatRef {
    ChatRef { r#ref: Some(Ref::Group(GroupRef { group_id: chat.get() })) }
}

struct EngineInner {
    // Dropped first: its threads stop (deciding, writing and flushing what is queued)
    // before the background tasks are aborted.
    core: Core,
    limits: Limits,
    hub: Arc<UpdateHub>,
    typing: Arc<TypingState>,
    clock: Arc<dyn crate::clock::Clock>,
    background: Vec<tokio::task::JoinHandle<()>>,
    /// Where the next [`ChatEngine::purge_invites`] goes on scanning (`None`: from the start).
    purge_cursor: std::sync::Mutex<Option<String>>,
    /// Held by a [`ChatEngine::trim_catch_up`]: one at a time.
    trimming: tokio::sync::Mutex<()>,
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
    }
}

/// The embedded engine: a cheap-to-clone async handle on one data directory.
#[derive(Clone)]
pub struct ChatEngine {
    inner: Arc<EngineInner>,
}

impl std::fmt::Debug for ChatEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatEngine").field("path", &self.inner.core.path()).finish_non_exhaustive()
    }
}

impl ChatEngine {
    /// Opens the data directory at `path` (created when missing), folds the log's events
    /// after the projections' checkpoint, and starts serving. Must be called inside a
    /// tokio runtime: the update fan-out and typing expiry run as tasks on it.
    pub async fn open(path: impl AsRef<Path>, config: EngineConfig) -> Result<ChatEngine, OpenError> {
        // An `async fn` can be polled by any executor; the background tasks need tokio's.
        tokio::runtime::Handle::try_current().map_err(|_| OpenError::NoRuntime)?;
        let record_bytes_max = osmium_projections::limits::RECORD_BYTES_MAX;
        if config.limits.request_bytes_max > record_bytes_max / 2 {
            return Err(OpenError::InvalidConfig {
                setting: "limits.request_bytes_max",
                reason: format!("must be at most {} bytes (half the largest readable record)", record_bytes_max / 2),
            });
        }
        if config.limits.catch_up_retention_ms == 0 {
            return Err(OpenError::InvalidConfig {
                setting: "limits.catch_up_retention_ms",
                reason: "must be at least 1 (0 would trim every update as it is written)".into(),
            });
        }
        let clock = config.log.clock.clone();
        let path = path.as_ref().to_path_buf();
        let (log, state) = (config.log.clone(), config.state.clone());
        let replicated = match &config.replica {
            None => None,
            Some(replica) => {
                let log = osmium_cluster::JetStreamLog::open(replica.log.clone())
                    .await
                    .map_err(|err| OpenError::ReplicatedLog { reason: err.to_string() })?;
                Some((Arc::new(log), replica.decide_retries_max, replica.open_catch_up_timeout_ms))
            }
        };
        let retries = replicated.as_ref().map(|(_, retries, _)| *retries);
        let (core, effects) = tokio::task::spawn_blocking(move || Core::open(&path, &log, &state, retries))
            .await
            .map_err(|_| OpenError::Engine(EngineError::Closed))??;
        if let (Some(link), Some((log, _, timeout_ms))) = (&core.replica, replicated) {
            crate::replica::start(link, log.clone());
            crate::replica::catch_up(link, &log, timeout_ms).await?;
        }
        let hub = Arc::new(UpdateHub::default());
        let typing = Arc::new(TypingState::new(clock.clone(), config.limits.typing_expiry_ms));
        let targets = Arc::new(updates::FanOut { hub: hub.clone(), typing: typing.clone(), views: Arc::downgrade(&core.views) });
        let fan_out = tokio::spawn(updates::fan_out(targets.clone(), effects));
        // Holds no engine handle (only the state weakly): dropping the last handle closes
        // the engine at once, never from inside this task.
        let expiry = tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
            loop {
                tick.tick().await;
                if targets.views.strong_count() == 0 {
                    return;
                }
                targets.expire_typing();
            }
        });
        let inner = Arc::new(EngineInner { core, limits: config.limits, hub, typing, clock, background: vec![fan_out, expiry], purge_cursor: std::sync::Mutex::new(None), trimming: tokio::sync::Mutex::new(()) });
        Ok(ChatEngine { inner })
    }

    /// Reads of the event log underneath (and its live tail).
    pub fn log(&self) -> &LogReader {
        &self.inner.core.reader
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Replicated mode: how many positions of the replicated log this node has not folded
    /// yet (the log's last position, read every [`crate::FOLD_LAG_POLL_MS`], minus the
    /// last folded one); `None` with the embedded log.
    pub fn fold_lag(&self) -> Option<u64> {
        self.inner.core.replica.as_ref().map(|link| link.fold_lag())
    }

    /// Replicated mode: the last position of the replicated log this node folded; `None`
    /// with the embedded log.
    pub fn folded_position(&self) -> Option<u64> {
        self.inner.core.replica.as_ref().map(|link| link.folded())
    }

    async fn command(
        &self,
        idempotency: Option<Idempotency>,
        replay: Replay,
        decide: impl Fn(&mut DecideContext<'_>, &Limits) -> Result<Decision, EngineError> + Send + 'static,
    ) -> Result<Output, EngineError> {
        let limits = self.inner.limits.clone();
        let decide: Decide = Box::new(move |ctx| decide(ctx, &limits));
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.inner.core.submit(Command { idempotency, decide, replay, reply })?;
        answer.await.map_err(|_| EngineError::Closed)?
    }

    fn read<T>(&self, read: impl FnOnce(&dyn StoreRead) -> Result<T, EngineError>) -> Result<T, EngineError> {
        self.inner.core.views.read(read)
    }

    /// Live updates for `user`, from now on, on every chat they are in.
    pub fn subscribe(&self, user: UserId) -> Subscription {
        self.inner.hub.subscribe(user, self.inner.limits.subscription_queue_max, self.read_position())
    }

    /// The updates `user` missed after `token` (the position of the last update they
    /// applied, or a `token` answered before), in order, at most `limit` events' worth
    /// (capped at `catch_up_updates_max`), with the token to continue from; or
    /// [`CatchUp::TooFarBehind`] when more than `catch_up_updates_max` events are missed.
    /// Cost: O(updates missed + the user's large chats), see [`catch_up`].
    pub fn updates_since(&self, user: UserId, token: Position, limit: usize) -> Result<CatchUp, EngineError> {
        let updates_max = self.inner.limits.catch_up_updates_max;
        let limit = limit.clamp(1, updates_max.max(1));
        let core = &self.inner.core;
        core.views.read_at(|view, at| {
            // Loaded after the snapshot `view` reads: a trim that raises it later deletes
            // nothing this snapshot sees (see `crate::retention`).
            if crate::retention::below_floor(token, core.catch_up_floor()) {
                return Ok(CatchUp::TooFarBehind { resume_token: at });
            }
            catch_up::updates_since(view, &core.reader, at, user, token, limit, updates_max)
        })
    }

    /// Trims the catch-up index of events recorded more than `catch_up_retention_ms` ago
    /// (see [`crate::retention`]): a catch-up from before them is `TooFarBehind` from now
    /// on, and their entries' disk space is returned (the effect records at once, the
    /// per-user and per-chat keys as compactions reach them). Call it periodically
    /// (osmium-server does, hourly); idempotent.
    pub async fn trim_catch_up(&self) -> Result<CatchUpTrim, EngineError> {
        let cutoff_ms = self.inner.clock.now_ms().saturating_sub(self.inner.limits.catch_up_retention_ms);
        let _trimming = self.inner.trimming.lock().await;
        let (trimmer, read_position) = (self.inner.core.trimmer(), self.read_position());
        tokio::task::spawn_blocking(move || trimmer.trim(read_position, cutoff_ms)).await.map_err(|_| EngineError::Closed)?
    }

    /// Updates for `user` after `token`: the missed ones first, then live ones, with no
    /// gap and no duplicate at the seam; or [`Resumed::TooFarBehind`] (see
    /// [`Self::updates_since`]).
    pub fn subscribe_from(&self, user: UserId, token: Position) -> Result<Resumed, EngineError> {
        // Subscribed first: every batch the catch-up below does not see is published to
        // subscribers after it is visible to reads, so the live queue has it.
        let mut subscription = self.inner.hub.subscribe(user, self.inner.limits.subscription_queue_max, token);
        let updates_max = self.inner.limits.catch_up_updates_max;
        let mut backlog = Vec::new();
        let mut token = token;
        loop {
            match self.updates_since(user, token, updates_max)? {
                CatchUp::Updates { updates, token: next, complete } => {
                    backlog.extend(updates);
                    token = next;
                    if complete {
                        break;
                    }
                }
                CatchUp::TooFarBehind { resume_token } => return Ok(Resumed::TooFarBehind { resume_token }),
            }
        }
        subscription.set_backlog(backlog, token);
        Ok(Resumed::Subscribed(subscription))
    }

    // ---- users ------------------------------------------------------------------

    /// Adds or replaces a user's directory entry (where responses' `users` come from). A
    /// username held by another user is refused ([`EngineError::UsernameTaken`]).
    pub async fn upsert_user(&self, user: types::User) -> Result<(), EngineError> {
        self.command(None, replay_done, move |ctx, limits| commands::upsert_user(ctx, limits, user.clone())).await.map(drop)
    }

    // ---- chats ------------------------------------------------------------------

    /// The caller's conversations, newest first (see the module docs for paging).
    pub async fn get_chats(&self, actor: UserId, request: chats::GetChats) -> Result<chats::Chats, EngineError> {
        let limits = &self.inner.limits;
        let limit = match request.limit {
            None => limits.get_chats_limit_default,
            Some(0) => return Err(EngineError::invalid("limit", "must be at least 1")),
            Some(limit) => limit.min(limits.get_chats_limit_max),
        };
        let page = ChatListPage {
            limit: limit as usize,
            max_id: request.max_id.map(MessageId),
            min_id: request.min_id.map(MessageId),
        };
        let users = views::UsersBound { per_group: limits.chats_users_per_group_max, total: limits.chats_users_max };
        self.read(|view| Ok(views::chats_view(view, actor, page, users)?))
    }

    /// One conversation with its last message, users and group. A DM (or the self chat)
    /// that does not exist yet is opened: see the module docs.
    pub async fn get_chat(&self, actor: UserId, request: chats::GetChat) -> Result<chats::Chat, EngineError> {
        let found = self.read(|view| match resolve::resolve(&mut Tables(view), actor, request.chat_ref.as_ref())? {
            Resolved::Member(chat) => Ok(Some(chat.id)),
            Resolved::NoDirectChatYet { .. } => Ok(None),
        })?;
        let chat = match found {
            Some(chat) => chat,
            None => {
                let chat_ref = request.chat_ref;
                let output = self
                    .command(None, replay_done, move |ctx, _| commands::open_direct_chat(ctx, actor, chat_ref.as_ref()))
                    .await?;
                created_chat(&output)?
            }
        };
        self.read(|view| views::chat_view(view, actor, chat)?.ok_or_else(|| EngineError::not_found("chat")))
    }

    /// Creates a group owned by the caller.
    pub async fn create_chat(&self, actor: UserId, request: chats::CreateChat) -> Result<types::Group, EngineError> {
        let output = self.command(None, replay_done, move |ctx, limits| commands::create_chat(ctx, limits, actor, &request)).await?;
        let chat = created_chat(&output)?;
        self.read(|view| {
            let record = osmium_projections::records::load_chat(view, chat)?.ok_or_else(|| EngineError::not_found("chat"))?;
            query::group_view(view, actor, chat, &record)?.ok_or_else(|| EngineError::not_found("chat"))
        })
    }

    /// Renames the group, sets its photo or highlighted message (owner only).
    pub async fn edit_chat(&self, actor: UserId, request: chats::EditChat) -> Result<chats::Chat, EngineError> {
        let output = self.command(None, replay_done, move |ctx, limits| commands::edit_chat(ctx, limits, actor, &request)).await?;
        let chat = created_chat(&output)?;
        self.read(|view| views::chat_view(view, actor, chat)?.ok_or_else(|| EngineError::not_found("chat")))
    }

    /// Adds a member (owner only).
    pub async fn add_chat_member(&self, actor: UserId, request: chats::AddChatMember) -> Result<(), EngineError> {
        self.command(None, replay_done, move |ctx, limits| commands::add_chat_member(ctx, limits, actor, &request)).await.map(drop)
    }

    /// Removes a member (owner only), or leaves when `user_id` is the caller.
    pub async fn remove_chat_member(&self, actor: UserId, request: chats::RemoveChatMember) -> Result<(), EngineError> {
        self.command(None, replay_done, move |ctx, _| commands::remove_chat_member(ctx, actor, &request)).await.map(drop)
    }

    // ---- messages ---------------------------------------------------------------

    /// Sends a message; `client_id` makes retries idempotent.
    pub async fn send_message(
        &self,
        actor: UserId,
        request: messages::SendMessage,
    ) -> Result<messages::SentMessage, EngineError> {
        let idempotency = request.client_id.map(|client_id| commands::send_idempotency(actor, client_id, &request));
        let output =
            self.command(idempotency, replay_message, move |ctx, limits| commands::send_message(ctx, limits, actor, &request)).await?;
        match output {
            Output::Message(message) => Ok(messages::SentMessage { message_id: message.get() }),
            other => Err(unexpected_output("a sent message", &other)),
        }
    }

    /// Edits the caller's message: text, entities, media (see `commands::edit_message`).
    pub async fn edit_message(&self, actor: UserId, request: messages::EditMessage) -> Result<(), EngineError> {
        self.command(None, replay_done, move |ctx, limits| commands::edit_message(ctx, limits, actor, &request)).await.map(drop)
    }

    /// Deletes messages (the author's own, or any as group owner).
    pub async fn delete_message(&self, actor: UserId, request: messages::DeleteMessage) -> Result<(), EngineError> {
        self.command(None, replay_done, move |ctx, limits| commands::delete_message(ctx, limits, actor, &request)).await.map(drop)
    }

    /// A page of non-deleted messages, oldest first.
    pub async fn get_history(&self, actor: UserId, request: messages::GetHistory) -> Result<messages::Messages, EngineError> {
        let limits = &self.inner.limits;
        let limit = match request.limit {
            None => limits.history_limit_default,
            Some(0) => return Err(EngineError::invalid("limit", "must be at least 1")),
            Some(limit) => limit.min(limits.history_limit_max),
        };
        self.read(|view| {
            let chat = resolve::resolve_member(&mut Tables(view), actor, request.chat_ref.as_ref())?;
            let from = views::history_from(request.offset.as_ref());
            Ok(views::history_view(view, actor, chat.id, from, limit as usize)?)
        })
    }

    // ---- read state and settings ------------------------------------------------

    /// Moves the caller's read position forward (never back).
    pub async fn mark_chat_read(&self, actor: UserId, request: chats::MarkChatRead) -> Result<(), EngineError> {
        self.command(None, replay_done, move |ctx, _| commands::mark_chat_read(ctx, actor, &request)).await.map(drop)
    }

    /// Saves (or with `None` or an empty string, clears) the caller's draft in a chat.
    pub async fn save_draft(&self, actor: UserId, chat_ref: ChatRef, draft: Option<String>) -> Result<(), EngineError> {
        self.command(None, replay_done, move |ctx, limits| commands::save_draft(ctx, limits, actor, Some(&chat_ref), draft.clone()))
            .await
            .map(drop)
    }

    /// Sets who notifies the caller of new messages in a chat (`Conversation.notif_prefs`).
    /// The chat subset has no call for it: the embedding backend sets it.
    pub async fn set_notif_prefs(&self, actor: UserId, chat_ref: ChatRef, prefs: types::NotifPrefs) -> Result<(), EngineError> {
        let prefs = match prefs {
            types::NotifPrefs::All => NotifPrefs::All,
            types::NotifPrefs::Mentions => NotifPrefs::Mentions,
            types::NotifPrefs::None => NotifPrefs::None,
            types::NotifPrefs::Default => NotifPrefs::Default,
        };
        self.command(None, replay_done, move |ctx, _| commands::set_notif_prefs(ctx, actor, Some(&chat_ref), prefs))
            .await
            .map(drop)
    }

    /// Mutes (`NotifPrefs::None`) or unmutes (`NotifPrefs::All`) a chat for the caller.
    pub async fn set_muted(&self, actor: UserId, chat_ref: ChatRef, muted: bool) -> Result<(), EngineError> {
        let prefs = if muted { types::NotifPrefs::None } else { types::NotifPrefs::All };
        self.set_notif_prefs(actor, chat_ref, prefs).await
    }

    /// The caller's unread mentions in a chat: the ids of the non-deleted messages after
    /// their read position that mention them, oldest first, at most
    /// `unread_mentions_ids_max`.
    pub async fn get_unread_mentions(
        &self,
        actor: UserId,
        request: core::GetUnreadMentions,
    ) -> Result<core::UnreadMentions, EngineError> {
        let limit = self.inner.limits.unread_mentions_ids_max;
        self.read(|view| {
            let chat = resolve::resolve_member(&mut Tables(view), actor, request.chat_ref.as_ref())?;
            let mentions = osmium_projections::records::load_mentions_after(view, chat.id, actor, chat.member.read_seq, limit)?;
            Ok(core::UnreadMentions { message_ids: mentions.into_iter().map(|(_, message)| message.get()).collect() })
        })
    }

    /// Sets a member's permission overrides (owner only).
    pub async fn set_permission_overrides(
        &self,
        actor: UserId,
        chat_ref: ChatRef,
        user: UserId,
        overrides: types::PermissionOverrides,
    ) -> Result<(), EngineError> {
        self.command(None, replay_done, move |ctx, _| {
            commands::set_permission_overrides(ctx, actor, Some(&chat_ref), user, overrides)
        })
        .await
        .map(drop)
    }

    /// Starts or stops the caller's typing indicator (ephemeral: never logged).
    pub async fn set_typing(&self, actor: UserId, request: chats::SetTyping) -> Result<(), EngineError> {
        let (chat_id, members, record) = self.read(|view| {
            let chat = resolve::resolve_member(&mut Tables(view), actor, request.chat_ref.as_ref())?;
            let members = osmium_projections::query::participants(view, chat.id)?;
            let record = osmium_projections::records::load_chat(view, chat.id)?.ok_or_else(|| EngineError::not_found("chat"))?;
            Ok((chat.id, members, record))
        })?;
        if self.inner.typing.set(chat_id, actor, request.typing) {
            let position = self.last_position();
            for user in members.iter().filter(|&&user| user != actor) {
                let mut update = updates::typing_update(&record, chat_id, *user, actor, request.typing, position);
                if let Some(osmium_proto::updates::update::Update::ChatTyping(typing)) = update.update.update.as_mut() {
                    typing.action = request.action;
                }
                self.inner.hub.publish(*user, update);
            }
        }
        Ok(())
    }

    /// Publishes `typing = false` for every indicator past its expiry. Runs every 500 ms
    /// on its own; tests call it after moving a manual clock.
    pub fn expire_typing(&self) {
        let targets = updates::FanOut {
            hub: self.inner.hub.clone(),
            typing: self.inner.typing.clone(),
            views: Arc::downgrade(&self.inner.core.views),
        };
        targets.expire_typing();
    }

    // ---- invites ----------------------------------------------------------------

    /// Creates an invite code for a group (owner only).
    pub async fn create_chat_invite(
        &self,
        actor: UserId,
        request: chats::CreateChatInvite,
    ) -> Result<auth::CreatedInvite, EngineError> {
        let code = new_invite_code()?;
        let output = self
            .command(None, replay_done, move |ctx, limits| commands::create_chat_invite(ctx, limits, actor, &request, code.clone()))
            .await?;
        match output {
            Output::Invite(code) => Ok(auth::CreatedInvite { code }),
            other => Err(unexpected_output("an invite code", &other)),
        }
    }

    /// The group's active invites (owner only).
    pub async fn list_chat_invites(
        &self,
        actor: UserId,
        request: chats::ListChatInvites,
    ) -> Result<auth::InviteList, EngineError> {
        let now_ms = self.inner.clock.now_ms();
        self.read(|view| {
            let group = resolve::resolve_owned_group(&mut Tables(view), actor, request.chat_ref.as_ref(), "invites")?;
            let mut invites = Vec::new();
            for (code, invite) in query::chat_invites(view, group.id)? {
                if invite.is_active(now_ms) {
                    invites.push(views::invite_preview(view, actor, &code, &invite)?);
                }
            }
            Ok(auth::InviteList { invites })
        })
    }

    /// Every invite of the group with its use counters, active or not (owner only).
    pub async fn chat_invite_details(&self, actor: UserId, chat_ref: ChatRef) -> Result<Vec<InviteInfo>, EngineError> {
        self.read(|view| {
            let group = resolve::resolve_owned_group(&mut Tables(view), actor, Some(&chat_ref), "invites")?;
            Ok(query::chat_invites(view, group.id)?.into_iter().map(|(code, record)| InviteInfo::new(code, &record)).collect())
        })
    }

    /// Revokes an invite (its creator or the group owner). Members who joined with it stay.
    pub async fn delete_chat_invite(&self, actor: UserId, request: chats::DeleteChatInvite) -> Result<(), EngineError> {
        self.command(None, replay_done, move |ctx, _| commands::delete_chat_invite(ctx, actor, &request)).await.map(drop)
    }

    /// What an invite leads to; fails like `use_invite` would for unusable codes.
    pub async fn lookup_invite(&self, actor: UserId, request: auth::LookupInvite) -> Result<auth::InvitePreview, EngineError> {
        let now_ms = self.inner.clock.now_ms();
        self.read(|view| {
            let invite = commands::usable_invite(&mut Tables(view), &request.code, now_ms)?;
            views::invite_preview(view, actor, &request.code, &invite)
        })
    }

    /// Joins a group with an invite code, counting one use.
    pub async fn use_invite(&self, actor: UserId, request: auth::UseInvite) -> Result<(), EngineError> {
        self.command(None, replay_done, move |ctx, limits| commands::use_invite(ctx, limits, actor, &request)).await.map(drop)
    }

    /// Deletes invites that have been expired or used up for `invite_purge_grace_ms`
    /// (until then `lookup_invite` still answers "expired" or "used up"), through
    /// `invite_deleted` events with `deleted_by` 0 (the engine), so a rebuild agrees.
    /// Looks at `invite_purge_scan_max` invites per call, going on from where the last
    /// call stopped; call it periodically (osmium-server does, hourly) or until
    /// [`InvitePurge::swept`].
    pub async fn purge_invites(&self) -> Result<InvitePurge, EngineError> {
        let (now_ms, grace_ms, scan_max) =
            (self.inner.clock.now_ms(), self.inner.limits.invite_purge_grace_ms, self.inner.limits.invite_purge_scan_max);
        let cursor = self.inner.purge_cursor.lock().map_err(|_| EngineError::Closed)?.clone();
        let (candidates, scanned, next) =
            self.read(|view| purge_candidates(view, cursor.as_deref(), scan_max, |invite| invite.is_purgeable(now_ms, grace_ms)))?;
        let mut purged = 0;
        for (chat, codes) in candidates {
            let output =
                self.command(None, replay_done, move |ctx, limits| commands::purge_invites(ctx, limits, chat, &codes)).await?;
            match output {
                Output::Purged(count) => purged += count,
                other => return Err(unexpected_output("a purge count", &other)),
            }
        }
        let swept = next.is_none();
        *self.inner.purge_cursor.lock().map_err(|_| EngineError::Closed)? = next;
        Ok(InvitePurge { scanned, purged, swept })
    }

    /// Whether `user` is a member of the group `chat` (for embedders' authorization checks).
    pub fn is_member(&self, chat: ChatId, user: UserId) -> Result<bool, EngineError> {
        self.read(|view| Ok(load_member(view, chat, user)?.is_some()))
    }

    /// A user's directory entry as the protocol `User`, or `None` when the user was never
    /// upserted (for embedders that answer with the signed-in user, e.g. a gateway).
    pub fn get_user(&self, user: UserId) -> Result<Option<types::User>, EngineError> {
        self.read(|view| match osmium_projections::records::load_user(view, user)? {
            None => Ok(None),
            Some(_) => Ok(Some(query::user_view(view, user)?)),
        })
    }

    /// The newest durable log position.
    pub fn last_position(&self) -> Position {
        self.inner.core.reader.last_position()
    }

    /// The last log position folded into what reads see (equal to [`Self::last_position`]
    /// once every acknowledged command's completion ran).
    pub fn read_position(&self) -> Position {
        self.inner.core.views.position()
    }

    /// Every entry of every projection table as reads see them now (flushed and not),
    /// copied into memory: compare with a fold of the log (tests). The chat-list index is
    /// shown as the next flush will write it (it is derived when the state is flushed).
    pub fn projection_contents(&self) -> Result<MemStore, EngineError> {
        self.read(|view| {
            let mut contents = MemStore::new();
            for table in Table::ALL {
                if table == Table::UseridLastmsgidChatidChatlist {
                    for key in query::chat_list_index(view)? {
                        osmium_projections::Store::put(&mut contents, table, key, Vec::new());
                    }
                    continue;
                }
                view.scan(table, osmium_projections::ScanRange::prefix(&[]), &mut |key, value| {
                    osmium_projections::Store::put(&mut contents, table, key.to_vec(), value.to_vec());
                    std::ops::ControlFlow::Continue(())
                })?;
            }
            Ok(contents)
        })
    }

    /// Flushes the projections now and waits until the flush landed: the flushed tables
    /// then hold everything acknowledged before the call (an engine also flushes every
    /// `flush_interval_ms`, every `flush_events_max` events, and when it closes). Returns
    /// the flush's number.
    pub async fn flush(&self) -> Result<u64, EngineError> {
        self.inner.core.flush().await
    }

    /// Figures for metrics and operators.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            last_position: self.last_position(),
            read_position: self.read_position(),
            flushes_landed: self.inner.core.flushes_landed(),
            unflushed_layers: self.inner.core.views.layers(),
            failure: self.inner.core.failure(),
            meters: self.inner.core.meters(),
            rocksdb_memory: self.inner.core.rocksdb_memory(),
        }
    }
}

/// What [`ChatEngine::subscribe_from`] answers.
#[derive(Debug)]
pub enum Resumed {
    /// The missed updates, then live ones.
    Subscribed(Subscription),
    /// Too far behind: refetch the chat list, then subscribe from `resume_token`.
    TooFarBehind {
        /// The token to continue from after the refetch.
        resume_token: Position,
    },
}

/// What [`ChatEngine::stats`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineStats {
    /// The newest durable log position.
    pub last_position: Position,
    /// The last position folded into what reads see.
    pub read_position: Position,
    /// Projection flushes done since the open.
    pub flushes_landed: u64,
    /// Layers of unflushed writes readers hold (the active one included).
    pub unflushed_layers: usize,
    /// Why the engine refuses writes, if it does.
    pub failure: Option<String>,
    /// Busy times and counts of the engine's threads.
    pub meters: crate::meters::MeterReadings,
    /// RocksDB's memory: with [`crate::meters::MeterReadings::state_bytes`], most of what
    /// the engine holds (`state_bytes_max` plus
    /// [`crate::directory::ROCKSDB_MEMORY_BYTES_MAX`], BENCHMARKS.md "peak RSS").
    pub rocksdb_memory: crate::directory::RocksMemory,
}

fn created_chat(output: &Output) -> Result<ChatId, EngineError> {
    match output {
        Output::Chat(chat) => Ok(*chat),
        other => Err(unexpected_output("a chat", other)),
    }
}

fn unexpected_output(expected: &str, found: &Output) -> EngineError {
    EngineError::Corrupt { what: "a command's output".into(), expected: expected.into(), found: format!("{found:?}") }
}

/// A fresh invite code: [`INVITE_CODE_RANDOM_BYTES`] from the OS, URL-safe base64 without padding.
fn new_invite_code() -> Result<String, EngineError> {
    use base64::Engine as _;
    let mut bytes = [0u8; INVITE_CODE_RANDOM_BYTES];
    getrandom::fill(&mut bytes).map_err(|err| EngineError::Io {
        path: std::path::PathBuf::from("<os random source>"),
        source: std::io::Error::other(err.to_string()),
    })?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// For updates: re-exported so embedders can name the type.
pub type Update = TaggedUpdate;
