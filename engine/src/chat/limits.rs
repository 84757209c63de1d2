//! Named limits of the chat API. Each is checked before anything is written, and a
//! request over a limit gets [`crate::EngineError::InvalidArgument`] naming the field.

/// Bounds on requests and state, configurable per engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest message text, in characters.
    pub message_text_max_chars: usize,
    /// Longest draft, in characters.
    pub draft_max_chars: usize,
    /// Longest group name, in characters (names are 1 to this many characters).
    pub group_name_max_chars: usize,
    /// Largest group, in members.
    pub group_members_max: u32,
    /// Most active invites one chat can have.
    pub invites_per_chat_max: usize,
    /// Most invites one chat keeps, active or awaiting their purge: bounds every invite
    /// listing and the storage of a chat's invites.
    pub invites_kept_per_chat_max: usize,
    /// How long an expired or used-up invite is kept (so `lookup_invite` still says
    /// "expired" or "used up") before [`crate::ChatEngine::purge_invites`] deletes it,
    /// in milliseconds.
    pub invite_purge_grace_ms: u64,
    /// Invites one [`crate::ChatEngine::purge_invites`] call looks at (it goes on from
    /// where the previous call stopped).
    pub invite_purge_scan_max: usize,
    /// Most attachments on one message.
    pub media_per_message_max: usize,
    /// Most entities on one message.
    pub entities_per_message_max: usize,
    /// Most messages deleted by one call.
    pub delete_message_ids_max: usize,
    /// `get_chats` page size when the request names none.
    pub get_chats_limit_default: u32,
    /// Largest `get_chats` page (larger requests are capped to it).
    pub get_chats_limit_max: u32,
    /// `get_history` page size when the request names none.
    pub history_limit_default: u32,
    /// Largest `get_history` page (larger requests are capped to it).
    pub history_limit_max: u32,
    /// Longest user name, in characters.
    pub user_name_max_chars: usize,
    /// Longest username (the `@` handle), in characters.
    pub username_max_chars: usize,
    /// Group members listed in `GetChats.users` per group of the page (the first in join
    /// order), in users.
    pub chats_users_per_group_max: usize,
    /// Users in one `GetChats` answer, in users: group members are added (group by group, in
    /// page order) only while the answer holds fewer; DM peers and last-message authors
    /// are always listed (at most two per conversation), so an answer holds at most
    /// `max(chats_users_max, 2 * get_chats_limit_max)` users.
    pub chats_users_max: usize,
    /// Message ids in one `GetUnreadMentions` answer (the oldest unread mentions first), in ids.
    pub unread_mentions_ids_max: usize,
    /// How long a typing indicator lasts after its last refresh, in milliseconds.
    pub typing_expiry_ms: u64,
    /// Updates buffered per subscription before a slow subscriber is disconnected.
    pub subscription_queue_max: usize,
    /// Events with updates for a user that a catch-up (`updates_since`, `subscribe_from`)
    /// serves from one token, in events; a client further behind is told
    /// `TooFarBehind` and refetches its chat list.
    pub catch_up_updates_max: usize,
    /// How long the catch-up index keeps an event's updates, in milliseconds (by the time
    /// the event was recorded): `ChatEngine::trim_catch_up` trims what is older, and a
    /// catch-up from before that is `TooFarBehind`. At least 1.
    pub catch_up_retention_ms: u64,
    /// Largest request that stores client-provided bytes (`send_message`, `edit_chat`,
    /// `upsert_user`: attachments, previews, names), protobuf-encoded, in bytes. At most
    /// half of [`osmium_projections::limits::RECORD_BYTES_MAX`] (checked at open), so that
    /// every record written can be read back.
    pub request_bytes_max: usize,
}

/// Default [`Limits::catch_up_retention_ms`]: 7 days (a phone switched off for a week
/// still catches up; the index costs about 190 B per event on disk, BENCHMARKS.md).
pub const CATCH_UP_RETENTION_MS_DEFAULT: u64 = 7 * 24 * 60 * 60 * 1000;

/// Default [`Limits::invite_purge_grace_ms`]: 7 days.
pub const INVITE_PURGE_GRACE_MS_DEFAULT: u64 = 7 * 24 * 60 * 60 * 1000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            message_text_max_chars: 4_096,
            draft_max_chars: 4_096,
            group_name_max_chars: 100,
            group_members_max: 20_000,
            invites_per_chat_max: 100,
            invites_kept_per_chat_max: 1_000,
            invite_purge_grace_ms: INVITE_PURGE_GRACE_MS_DEFAULT,
            invite_purge_scan_max: 10_000,
            media_per_message_max: 10,
            entities_per_message_max: 100,
            delete_message_ids_max: 100,
            get_chats_limit_default: 50,
            get_chats_limit_max: 100,
            history_limit_default: 50,
            history_limit_max: 100,
            user_name_max_chars: 100,
            username_max_chars: 64,
            chats_users_per_group_max: 50,
            chats_users_max: 1_000,
            unread_mentions_ids_max: 1_000,
            typing_expiry_ms: 6_000,
            subscription_queue_max: 1_024,
            catch_up_updates_max: 10_000,
            catch_up_retention_ms: CATCH_UP_RETENTION_MS_DEFAULT,
            request_bytes_max: 1024 * 1024,
        }
    }
}
