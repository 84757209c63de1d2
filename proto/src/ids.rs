//! Typed identifiers. Every ID in the protocol is a 64-bit snowflake on the wire
//! (`fixed64`); inside the engine each kind gets its own newtype so that a user id
//! can never be passed where a chat id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw wire value.
            pub const fn get(self) -> u64 {
                self.0
            }
            /// Big-endian bytes: the form used in every storage key, so that byte order is numeric order.
            pub const fn to_be_bytes(self) -> [u8; 8] {
                self.0.to_be_bytes()
            }
            /// Inverse of [`Self::to_be_bytes`].
            pub const fn from_be_bytes(bytes: [u8; 8]) -> Self {
                Self(u64::from_be_bytes(bytes))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<$name> for u64 {
            fn from(id: $name) -> u64 {
                id.0
            }
        }
    };
}

id_newtype!(
    /// A user (snowflake, assigned by the embedding backend).
    UserId
);
id_newtype!(
    /// A chat: a group, a DM or a user's own "saved messages" chat (snowflake).
    ChatId
);
id_newtype!(
    /// A message (snowflake; within one chat, ids grow with send order).
    MessageId
);
id_newtype!(
    /// A record's global position in the event log: gapless, starting at 1.
    Position
);
id_newtype!(
    /// The number of events in one stream; the version of an empty stream is 0.
    StreamVersion
);

impl Position {
    /// The position before the first record: an empty log's last position.
    pub const ZERO: Position = Position(0);

    /// The following position.
    pub const fn next(self) -> Position {
        Position(self.0 + 1)
    }
}

impl StreamVersion {
    /// The version of a stream that has no event yet.
    pub const EMPTY: StreamVersion = StreamVersion(0);

    /// The following version.
    pub const fn next(self) -> StreamVersion {
        StreamVersion(self.0 + 1)
    }
}

/// What an event log stream is about: one chat, or one user's directory entry.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum StreamId {
    /// All events of one chat (group, DM or self chat).
    Chat(ChatId),
    /// A user's directory entry (`upsert_user`).
    User(UserId),
}

impl StreamId {
    /// Key tag of chat streams in the per-stream index.
    pub const CHAT_TAG: u8 = b'c';
    /// Key tag of user streams in the per-stream index.
    pub const USER_TAG: u8 = b'u';

    /// `tag | id (u64 BE)`: the 9-byte prefix of this stream's index keys.
    pub fn key_prefix(self) -> [u8; 9] {
        let (tag, id) = match self {
            StreamId::Chat(chat) => (Self::CHAT_TAG, chat.get()),
            StreamId::User(user) => (Self::USER_TAG, user.get()),
        };
        let mut key = [0u8; 9];
        key[0] = tag;
        key[1..].copy_from_slice(&id.to_be_bytes());
        key
    }

    /// Inverse of [`Self::key_prefix`]; `None` for an unknown tag.
    pub fn from_key_prefix(bytes: &[u8]) -> Option<StreamId> {
        let (&tag, rest) = bytes.split_first()?;
        let id = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
        match tag {
            Self::CHAT_TAG => Some(StreamId::Chat(ChatId(id))),
            Self::USER_TAG => Some(StreamId::User(UserId(id))),
            _ => None,
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamId::Chat(chat) => write!(f, "chat:{chat}"),
            StreamId::User(user) => write!(f, "user:{user}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_key_prefix_is_tag_then_big_endian_id() {
        let key = StreamId::Chat(ChatId(0x0102_0304_0506_0708)).key_prefix();
        assert_eq!(key, [b'c', 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(StreamId::from_key_prefix(&key), Some(StreamId::Chat(ChatId(0x0102_0304_0506_0708))));
        let user = StreamId::User(UserId(9)).key_prefix();
        assert_eq!(user, [b'u', 0, 0, 0, 0, 0, 0, 0, 9]);
    }

    #[test]
    fn unknown_stream_tag_is_not_a_stream() {
        assert_eq!(StreamId::from_key_prefix(&[b'x', 0, 0, 0, 0, 0, 0, 0, 1]), None);
        assert_eq!(StreamId::from_key_prefix(&[b'c', 0]), None);
    }
}
