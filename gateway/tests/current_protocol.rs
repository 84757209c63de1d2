//! The current protocol's messaging calls over the wire, as a real client sends them:
//! frames built byte for byte from the protobuf encoding rules (field number, wire type,
//! length) and answers decoded with hand-written messages that know only the protocol's
//! numbers. Replies (`SendMessage.reply_to` 7 -> `Message.reply` 11 and `reply_to` 5),
//! uploaded files (`MediaRefUploadedFile` with an `UploadedFileRef`), mentions
//! (`unread_mentions_count` 9, `UpdateConversationLastRead.unread_mentions_count` 4),
//! notification preferences (`Conversation.notif_prefs` 8), `GetUnreadMentions` (86 -> 38)
//! and `GetChat` opening a DM.
//!
//! `notify` is the engine's flag on a live update (the protocol's `Update` has no such
//! field): it is read from an engine subscription of the same gateway, for the messages
//! sent over the wire.

#![allow(clippy::unwrap_used, clippy::expect_used)]


use crate::common::{ANN, BOB, EVE, WAIT, start_with};
use futures_util::{SinkExt as _, StreamExt as _};
use osmium_gateway::{Gateway, GatewayLimits, tokens};
use osmium_proto::ids::UserId;
use osmium_proto::updates::update::Update as EngineUpdate;
use prost::Message as _;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as Frame;

/// What a generated client knows of the server's messages: only the protocol's numbers.
mod wire {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ServerMessage {
        #[prost(message, optional, tag = "2")]
        pub update: Option<Update>,
        #[prost(message, optional, tag = "3")]
        pub result: Option<RpcResult>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RpcResult {
        #[prost(uint32, tag = "1")]
        pub req_id: u32,
        #[prost(message, optional, tag = "2")]
        pub error: Option<RpcError>,
        #[prost(message, optional, tag = "3")]
        pub sent_message: Option<SentMessage>,
        #[prost(message, optional, tag = "7")]
        pub messages: Option<Messages>,
        #[prost(message, optional, tag = "9")]
        pub chats: Option<Chats>,
        #[prost(message, optional, tag = "15")]
        pub chat: Option<Chat>,
        #[prost(message, optional, tag = "38")]
        pub unread_mentions: Option<UnreadMentions>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RpcError {
        #[prost(uint32, tag = "1")]
        pub error_code: u32,
        #[prost(string, tag = "2")]
        pub error_message: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SentMessage {
        #[prost(fixed64, tag = "1")]
        pub message_id: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Messages {
        #[prost(message, repeated, tag = "1")]
        pub messages: Vec<Message>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Chats {
        #[prost(message, repeated, tag = "1")]
        pub chats: Vec<Conversation>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Chat {
        #[prost(message, optional, tag = "1")]
        pub chat: Option<Conversation>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ChatRef {
        #[prost(message, optional, tag = "1")]
        pub user: Option<UserRef>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct UserRef {
        #[prost(fixed64, tag = "1")]
        pub user_id: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Conversation {
        #[prost(message, optional, tag = "1")]
        pub chat_ref: Option<ChatRef>,
        #[prost(fixed64, tag = "2")]
        pub last_message_id: u64,
        #[prost(uint32, tag = "5")]
        pub unread_count: u32,
        /// `NotifPrefs`: ALL 0, MENTIONS 1, NONE 2, DEFAULT 3.
        #[prost(int32, tag = "8")]
        pub notif_prefs: i32,
        #[prost(uint32, tag = "9")]
        pub unread_mentions_count: u32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Message {
        #[prost(fixed64, tag = "2")]
        pub message_id: u64,
        #[prost(string, tag = "4")]
        pub message: String,
        #[prost(fixed64, optional, tag = "5")]
        pub reply_to: Option<u64>,
        #[prost(message, repeated, tag = "6")]
        pub media: Vec<MessageMedia>,
        #[prost(message, optional, tag = "11")]
        pub reply: Option<MessageReplyInfo>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MessageReplyInfo {
        #[prost(fixed64, optional, tag = "1")]
        pub message_id: Option<u64>,
        #[prost(message, optional, tag = "2")]
        pub quote: Option<Quote>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Quote {
        #[prost(string, tag = "1")]
        pub message: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MessageMedia {
        #[prost(message, optional, tag = "1")]
        pub file: Option<MediaFile>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MediaFile {
        #[prost(message, optional, tag = "1")]
        pub file: Option<File>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct File {
        #[prost(fixed64, tag = "1")]
        pub file_id: u64,
        #[prost(uint32, tag = "2")]
        pub region: u32,
        #[prost(uint64, tag = "3")]
        pub size: u64,
        #[prost(string, tag = "4")]
        pub mimetype: String,
        #[prost(string, optional, tag = "5")]
        pub filename: Option<String>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Update {
        #[prost(message, optional, tag = "24")]
        pub conversation_last_read: Option<UpdateConversationLastRead>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct UpdateConversationLastRead {
        #[prost(fixed64, tag = "2")]
        pub last_read_message_id: u64,
        #[prost(uint32, optional, tag = "3")]
        pub unread_count: Option<u32>,
        #[prost(uint32, optional, tag = "4")]
        pub unread_mentions_count: Option<u32>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct UnreadMentions {
        #[prost(fixed64, repeated, tag = "1")]
        pub message_ids: Vec<u64>,
    }
}

// ---- the client's frames, by the encoding rules -----------------------------------------

/// A base-128 varint.
fn varint(mut value: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    while value >= 0x80 {
        bytes.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    bytes.push(value as u8);
    bytes
}

/// Field `field` with wire type 0 (varint).
fn varint_field(field: u32, value: u64) -> Vec<u8> {
    let mut bytes = varint(u64::from(field) << 3);
    bytes.extend(varint(value));
    bytes
}

/// Field `field` with wire type 1 (fixed64, little-endian): every snowflake id.
fn fixed64_field(field: u32, value: u64) -> Vec<u8> {
    let mut bytes = varint((u64::from(field) << 3) | 1);
    bytes.extend(value.to_le_bytes());
    bytes
}

/// Field `field` with wire type 2 (length-delimited): strings and messages.
fn len_field(field: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = varint((u64::from(field) << 3) | 2);
    bytes.extend(varint(payload.len() as u64));
    bytes.extend(payload);
    bytes
}

/// `ClientMessage { id (1); <call> (call_field, LEN) }`.
fn frame(id: u32, call_field: u32, call: &[u8]) -> Vec<u8> {
    let mut bytes = varint_field(1, u64::from(id));
    bytes.extend(len_field(call_field, call));
    bytes
}

/// `ChatRef.user (1) { user_id (1, fixed64) }`.
fn user_ref(user: UserId) -> Vec<u8> {
    len_field(1, &fixed64_field(1, user.get()))
}

/// `ChatRef.group (3) { group_id (1, fixed64) }`.
fn group_ref(group: u64) -> Vec<u8> {
    len_field(3, &fixed64_field(1, group))
}

const SEND_MESSAGE: u32 = 4;
const GET_HISTORY: u32 = 5;
const GET_CHATS: u32 = 11;
const MARK_CHAT_READ: u32 = 21;
const GET_CHAT: u32 = 25;
const SET_TYPING: u32 = 28;
const GET_UNREAD_MENTIONS: u32 = 86;

/// `SendMessage { chat_ref (1); message (2) }` plus `extra` fields (already encoded, in
/// field-number order after 2).
fn send_message(chat_ref: &[u8], text: &str, extra: &[u8]) -> Vec<u8> {
    let mut send = len_field(1, chat_ref);
    send.extend(len_field(2, text.as_bytes()));
    send.extend(extra);
    send
}

/// `MessageEntity { start_index (1); length (2); user_mention (13) = {} }` over `@<id>`.
fn user_mention_entity(start_index: u32, length: u32) -> Vec<u8> {
    let mut entity = varint_field(1, u64::from(start_index));
    entity.extend(varint_field(2, u64::from(length)));
    entity.extend(len_field(13, &[]));
    entity
}

/// A text mentioning `user` as the engine's convention writes it ("hi @<id>"), and its
/// `SendMessage.entities` (5) field.
fn mentioning(user: UserId) -> (String, Vec<u8>) {
    let text = format!("hi @{user}");
    let entity = user_mention_entity(3, text.len() as u32 - 3);
    (text, len_field(5, &entity))
}

// ---- a raw connection signed in as the official client ----------------------------------

type Socket = WebSocketStream<TcpStream>;

struct Raw {
    socket: Socket,
    next_id: u32,
    /// Messages that arrived while a call waited for its result (an update may come
    /// before the result of the call that caused it), for `next_message`.
    skipped: std::collections::VecDeque<wire::ServerMessage>,
}

impl Raw {
    /// Connects and signs in as `user` the way the official client does (Initialize, then
    /// Authorize), with live updates unless `results_only`.
    async fn sign_in(gateway: &Gateway, dir: &std::path::Path, user: UserId, name: &str, results_only: bool) -> Raw {
        let token = tokens::create_token(dir, user, name).await.unwrap();
        let addr = gateway.local_addr();
        let stream = TcpStream::connect(addr).await.unwrap();
        let socket = tokio_tungstenite::client_async(format!("ws://{addr}/"), stream).await.unwrap().0;
        let mut raw = Raw { socket, next_id: 1, skipped: std::collections::VecDeque::new() };
        let mut initialize = len_field(2, b"@osmiumchat/sdk"); // Initialize.device_type (2)
        if results_only {
            initialize.extend(varint_field(5, 1)); // no_subscribe (5) = true
        }
        let result = raw.call(19, &initialize).await; // core_initialize (19)
        assert_eq!(result.error, None);
        let result = raw.call(20, &len_field(5, token.as_bytes())).await; // auth_authorize (20): Authorize.token (5)
        assert_eq!(result.error, None);
        raw
    }

    /// The next message: those a call skipped first, then the socket's.
    async fn next_message(&mut self) -> wire::ServerMessage {
        match self.skipped.pop_front() {
            Some(message) => message,
            None => self.read_message().await,
        }
    }

    async fn read_message(&mut self) -> wire::ServerMessage {
        loop {
            match tokio::time::timeout(WAIT, self.socket.next()).await.expect("a frame in time") {
                Some(Ok(Frame::Binary(bytes))) => return wire::ServerMessage::decode(&bytes[..]).unwrap(),
                Some(Ok(Frame::Ping(_) | Frame::Pong(_))) => continue,
                other => panic!("expected a binary frame, got {other:?}"),
            }
        }
    }

    /// Sends the call and returns its result; updates meanwhile are kept for
    /// `next_message`.
    async fn call(&mut self, call_field: u32, call: &[u8]) -> wire::RpcResult {
        let id = self.next_id;
        self.next_id += 1;
        self.socket.send(Frame::Binary(frame(id, call_field, call).into())).await.unwrap();
        loop {
            let mut message = self.read_message().await;
            match message.result.take() {
                Some(result) => {
                    assert_eq!(result.req_id, id);
                    return result;
                }
                None => self.skipped.push_back(message),
            }
        }
    }

    /// The next `UpdateConversationLastRead` (other updates skipped).
    async fn next_last_read(&mut self) -> wire::UpdateConversationLastRead {
        loop {
            if let Some(last_read) = self.next_message().await.update.and_then(|update| update.conversation_last_read) {
                return last_read;
            }
        }
    }

    async fn send(&mut self, send_message: &[u8]) -> u64 {
        let result = self.call(SEND_MESSAGE, send_message).await;
        assert_eq!(result.error, None, "the send is accepted");
        result.sent_message.expect("SentMessage at RPCResult field 3").message_id
    }

    async fn history(&mut self, chat_ref: &[u8]) -> Vec<wire::Message> {
        let result = self.call(GET_HISTORY, &len_field(1, chat_ref)).await; // GetHistory.chat_ref (1)
        result.messages.expect("Messages at RPCResult field 7").messages
    }

    /// `GetChats {}`: the conversations.
    async fn chats(&mut self) -> Vec<wire::Conversation> {
        self.call(GET_CHATS, &[]).await.chats.expect("Chats at RPCResult field 9").chats
    }

    /// `GetUnreadMentions { chat_ref (1) }`: the message ids.
    async fn unread_mentions(&mut self, chat_ref: &[u8]) -> Vec<u64> {
        let result = self.call(GET_UNREAD_MENTIONS, &len_field(1, chat_ref)).await;
        assert_eq!(result.error, None);
        result.unread_mentions.expect("UnreadMentions at RPCResult field 38").message_ids
    }
}

/// A gateway with Ann, Bob and Eve signed in (results only), and a group of the three
/// owned by Ann (made through the engine: group creation is not what is tested here).
async fn three_in_a_group(dir: &std::path::Path) -> (Gateway, Raw, Raw, Raw, u64) {
    let gateway = start_with(dir, GatewayLimits::default()).await;
    let ann = Raw::sign_in(&gateway, dir, ANN, "ann", true).await;
    let bob = Raw::sign_in(&gateway, dir, BOB, "bob", true).await;
    let eve = Raw::sign_in(&gateway, dir, EVE, "eve", true).await;
    let users = [BOB, EVE].iter().map(|user| osmium_proto::refs::UserRef { user_id: user.get() }).collect();
    let create = osmium_proto::chats::CreateChat { users, name: "crew".into() };
    let group = gateway.engine().create_chat(ANN, create).await.unwrap().id;
    (gateway, ann, bob, eve, group)
}

async fn stop(gateway: Gateway, raws: Vec<Raw>) {
    drop(raws);
    gateway.shutdown().await;
}

/// The engine's `notify` for `message` on `subscription` (other updates skipped).
async fn notify_of(subscription: &mut osmium_engine::chat::updates::Subscription, message: u64) -> bool {
    loop {
        let update = tokio::time::timeout(WAIT, subscription.next()).await.expect("in time").expect("open");
        if let Some(EngineUpdate::MessageCreated(created)) = &update.update.update
            && created.message.as_ref().is_some_and(|m| m.message_id == message)
        {
            return update.notify;
        }
    }
}

// ---- the tests --------------------------------------------------------------------------

#[tokio::test]
async fn a_reply_at_send_message_7_comes_back_as_message_reply_11_and_the_deprecated_reply_to_5() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start_with(dir.path(), GatewayLimits::default()).await;
    let mut ann = Raw::sign_in(&gateway, dir.path(), ANN, "ann", true).await;
    let mut bob = Raw::sign_in(&gateway, dir.path(), BOB, "bob", true).await;
    let question = bob.send(&send_message(&user_ref(ANN), "lunch at noon?", &[])).await;
    let mut reply_to = fixed64_field(1, question); // ReplyTo.message_id (1)
    reply_to.extend(len_field(2, &len_field(1, b"noon"))); // quote (2): Quote.message (1) = "noon"
    let answer = ann.send(&send_message(&user_ref(BOB), "yes", &len_field(7, &reply_to))).await;

    let history = bob.history(&user_ref(ANN)).await;
    let message = history.iter().find(|message| message.message_id == answer).unwrap();
    let reply = message.reply.as_ref().expect("Message.reply (11)");
    assert_eq!(reply.message_id, Some(question));
    assert_eq!(reply.quote.as_ref().map(|quote| quote.message.as_str()), Some("noon"));
    assert_eq!(message.reply_to, Some(question), "Message.reply_to (5) for older clients");
    stop(gateway, vec![ann, bob]).await;
}

#[tokio::test]
async fn a_reply_to_a_message_of_another_chat_is_answered_404() {
    let dir = tempfile::tempdir().unwrap();
    let (gateway, mut ann, mut bob, eve, group) = three_in_a_group(dir.path()).await;
    let in_group = bob.send(&send_message(&group_ref(group), "in the group", &[])).await;
    let reply_to = len_field(7, &fixed64_field(1, in_group));
    let result = ann.call(SEND_MESSAGE, &send_message(&user_ref(BOB), "wrong chat", &reply_to)).await;
    let error = result.error.expect("an RPCError");
    assert_eq!(error.error_code, 404, "{error:?}");
    assert!(error.error_message.contains("not in this chat"), "{error:?}");
    stop(gateway, vec![ann, bob, eve]).await;
}

#[tokio::test]
async fn an_uploaded_file_ref_is_accepted_and_comes_back_as_message_media_file() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start_with(dir.path(), GatewayLimits::default()).await;
    let mut ann = Raw::sign_in(&gateway, dir.path(), ANN, "ann", true).await;
    let mut bob = Raw::sign_in(&gateway, dir.path(), BOB, "bob", true).await;
    let mut file_ref = fixed64_field(1, 0x1234); // UploadedFileRef.id (1)
    file_ref.extend(len_field(2, b"cat.png")); // name (2)
    file_ref.extend(varint_field(3, 1)); // part_count (3)
    let mut uploaded = len_field(1, &file_ref); // MediaRefUploadedFile.file (1)
    uploaded.extend(len_field(3, b"image/png")); // mimetype (3)
    let mut image = varint_field(1, 640); // MetadataImage.width (1)
    image.extend(varint_field(2, 480)); // height (2)
    uploaded.extend(len_field(4, &len_field(1, &image))); // metadata (4): FileMetadata.image (1)
    let media = len_field(4, &len_field(1, &uploaded)); // SendMessage.media (4): MediaRef.uploaded (1)
    let sent = ann.send(&send_message(&user_ref(BOB), "", &media)).await;

    let history = bob.history(&user_ref(ANN)).await;
    let message = history.iter().find(|message| message.message_id == sent).unwrap();
    let file = message.media[0].file.as_ref().and_then(|media| media.file.as_ref()).expect("MessageMedia.file.file");
    let expected = wire::File { file_id: 0x1234, region: 0, size: 0, mimetype: "image/png".into(), filename: Some("cat.png".into()) };
    assert_eq!(file, &expected);
    stop(gateway, vec![ann, bob]).await;
}

#[tokio::test]
async fn a_mention_notifies_the_mentioned_member_and_counts_in_their_unread_mentions_count() {
    let dir = tempfile::tempdir().unwrap();
    let (gateway, mut ann, mut bob, mut eve, group) = three_in_a_group(dir.path()).await;
    let mut bobs_updates = gateway.engine().subscribe(BOB);
    let (text, entities) = mentioning(BOB);
    let sent = ann.send(&send_message(&group_ref(group), &text, &entities)).await;

    assert!(notify_of(&mut bobs_updates, sent).await, "Bob is notified");
    let bobs = bob.chats().await;
    assert_eq!((bobs[0].unread_count, bobs[0].unread_mentions_count), (1, 1), "Conversation fields 5 and 9");
    let eves = eve.chats().await;
    assert_eq!((eves[0].unread_count, eves[0].unread_mentions_count), (1, 0), "Eve is not mentioned");
    stop(gateway, vec![ann, bob, eve]).await;
}

#[tokio::test]
async fn notif_prefs_mentions_shows_as_1_and_gets_no_notify_for_a_plain_message() {
    let dir = tempfile::tempdir().unwrap();
    let (gateway, mut ann, mut bob, eve, group) = three_in_a_group(dir.path()).await;
    // The chat subset has no call for notification preferences: the backend sets them.
    let chat_ref = osmium_proto::refs::ChatRef {
        r#ref: Some(osmium_proto::refs::chat_ref::Ref::Group(osmium_proto::refs::GroupRef { group_id: group })),
    };
    gateway.engine().set_notif_prefs(BOB, chat_ref, osmium_proto::types::NotifPrefs::Mentions).await.unwrap();
    assert_eq!(bob.chats().await[0].notif_prefs, 1, "Conversation.notif_prefs (8) = MENTIONS (1)");
    let mut bobs_updates = gateway.engine().subscribe(BOB);
    let plain = ann.send(&send_message(&group_ref(group), "plain", &[])).await;
    assert!(!notify_of(&mut bobs_updates, plain).await, "MENTIONS: no notify for a plain message");
    let (text, entities) = mentioning(BOB);
    let mention = ann.send(&send_message(&group_ref(group), &text, &entities)).await;
    assert!(notify_of(&mut bobs_updates, mention).await, "MENTIONS: notify for a mention");
    stop(gateway, vec![ann, bob, eve]).await;
}

#[tokio::test]
async fn muted_shows_as_notif_prefs_none_2() {
    let dir = tempfile::tempdir().unwrap();
    let (gateway, ann, mut bob, eve, group) = three_in_a_group(dir.path()).await;
    let chat_ref = osmium_proto::refs::ChatRef {
        r#ref: Some(osmium_proto::refs::chat_ref::Ref::Group(osmium_proto::refs::GroupRef { group_id: group })),
    };
    gateway.engine().set_muted(BOB, chat_ref, true).await.unwrap();
    assert_eq!(bob.chats().await[0].notif_prefs, 2, "NONE (2), which a client of the seeds' bool reads as muted");
    stop(gateway, vec![ann, bob, eve]).await;
}

#[tokio::test]
async fn get_unread_mentions_at_86_answers_unread_mentions_at_38_and_reading_updates_the_count_at_4() {
    let dir = tempfile::tempdir().unwrap();
    let (gateway, mut ann, bob, eve, group) = three_in_a_group(dir.path()).await;
    drop(bob);
    let mut bob = Raw::sign_in(&gateway, dir.path(), BOB, "bob", false).await; // with live updates
    let (text, entities) = mentioning(BOB);
    let first = ann.send(&send_message(&group_ref(group), &text, &entities)).await;
    ann.send(&send_message(&group_ref(group), "no mention", &[])).await;
    let second = ann.send(&send_message(&group_ref(group), &text, &entities)).await;
    assert_eq!(bob.unread_mentions(&group_ref(group)).await, [first, second]);

    let mut mark = len_field(1, &group_ref(group)); // MarkChatRead.chat_ref (1)
    mark.extend(fixed64_field(2, first)); // message_id (2)
    let result = bob.call(MARK_CHAT_READ, &mark).await;
    assert_eq!(result.error, None);
    let last_read = bob.next_last_read().await;
    assert_eq!(last_read.last_read_message_id, first);
    assert_eq!((last_read.unread_count, last_read.unread_mentions_count), (Some(2), Some(1)));
    assert_eq!(bob.unread_mentions(&group_ref(group)).await, [second]);
    stop(gateway, vec![ann, bob, eve]).await;
}

#[tokio::test]
async fn get_chat_with_a_user_ref_opens_the_dm_and_typing_works_before_the_first_message() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start_with(dir.path(), GatewayLimits::default()).await;
    let mut ann = Raw::sign_in(&gateway, dir.path(), ANN, "ann", true).await;
    let bob = Raw::sign_in(&gateway, dir.path(), BOB, "bob", true).await;
    let result = ann.call(GET_CHAT, &len_field(1, &user_ref(BOB))).await; // GetChat.chat_ref (1)
    assert_eq!(result.error, None, "seed 001: opening a DM is GetChat with the user");
    let conversation = result.chat.and_then(|chat| chat.chat).expect("Chat.chat (15.1)");
    assert_eq!(conversation.chat_ref.and_then(|chat_ref| chat_ref.user).map(|user| user.user_id), Some(BOB.get()));
    assert_ne!(conversation.last_message_id, 0, "the chat id, without messages");
    let mut typing = len_field(1, &user_ref(BOB)); // SetTyping.chat_ref (1)
    typing.extend(varint_field(2, 1)); // typing (2) = true
    let result = ann.call(SET_TYPING, &typing).await;
    assert_eq!(result.error, None, "typing in the opened DM");
    stop(gateway, vec![ann, bob]).await;
}
