//! One signed-in call: the `ClientMessage` variant to its engine method, the engine's
//! answer to the `RPCResult` variant (or none, for calls whose result is `()`).
//! `Initialize` and `Authorize` bind connection state and are handled by the connection.

use osmium_engine::{ChatEngine, EngineError};
use osmium_proto::core::RpcError;
use osmium_proto::core::client_message::Message;
use osmium_proto::core::rpc_result::Result as Answer;
use osmium_proto::ids::UserId;

/// The metrics label of a call: the `ClientMessage` oneof field's name.
pub fn kind(message: &Message) -> &'static str {
    match message {
        Message::MessagesSendMessage(_) => "messages_send_message",
        Message::MessagesGetHistory(_) => "messages_get_history",
        Message::ChatsGetChats(_) => "chats_get_chats",
        Message::ChatsCreateChatInvite(_) => "chats_create_chat_invite",
        Message::AuthLookupInvite(_) => "auth_lookup_invite",
        Message::AuthUseInvite(_) => "auth_use_invite",
        Message::MessagesDeleteMessage(_) => "messages_delete_message",
        Message::AuthAuthorize(_) => "auth_authorize",
        Message::ChatsMarkChatRead(_) => "chats_mark_chat_read",
        Message::ChatsGetChat(_) => "chats_get_chat",
        Message::MessagesEditMessage(_) => "messages_edit_message",
        Message::ChatsSetTyping(_) => "chats_set_typing",
        Message::ChatsCreateChat(_) => "chats_create_chat",
        Message::ChatsEditChat(_) => "chats_edit_chat",
        Message::ChatsRemoveChatMember(_) => "chats_remove_chat_member",
        Message::ChatsDeleteChatInvite(_) => "chats_delete_chat_invite",
        Message::ChatsListChatInvites(_) => "chats_list_chat_invites",
        Message::ChatsAddChatMember(_) => "chats_add_chat_member",
        Message::CoreInitialize(_) => "core_initialize",
        Message::MessagesGetUnreadMentions(_) => "messages_get_unread_mentions",
        Message::OsmiumResumeUpdates(_) => "osmium_resume_updates",
    }
}

/// Runs a chat call as `user`. `Ok(None)` is a `()` result; an engine error becomes its
/// `RPCError` (`EngineError::to_rpc_error`). `Initialize` and `Authorize` never reach
/// here (the connection answers them); they are refused as invalid.
pub async fn call(engine: &ChatEngine, user: UserId, message: Message) -> Result<Option<Answer>, RpcError> {
    engine_call(engine, user, message).await.map_err(|err| err.to_rpc_error())
}

async fn engine_call(engine: &ChatEngine, user: UserId, message: Message) -> Result<Option<Answer>, EngineError> {
    Ok(match message {
        Message::ChatsGetChats(request) => Some(Answer::Chats(engine.get_chats(user, request).await?)),
        Message::ChatsGetChat(request) => Some(Answer::Chat(engine.get_chat(user, request).await?)),
        Message::ChatsCreateChat(request) => Some(Answer::Group(engine.create_chat(user, request).await?)),
        Message::ChatsEditChat(request) => Some(Answer::Chat(engine.edit_chat(user, request).await?)),
        Message::ChatsAddChatMember(request) => engine.add_chat_member(user, request).await.map(|()| None)?,
        Message::ChatsRemoveChatMember(request) => engine.remove_chat_member(user, request).await.map(|()| None)?,
        Message::ChatsMarkChatRead(request) => engine.mark_chat_read(user, request).await.map(|()| None)?,
        Message::ChatsSetTyping(request) => engine.set_typing(user, request).await.map(|()| None)?,
        Message::ChatsCreateChatInvite(request) => {
            Some(Answer::CreatedInvite(engine.create_chat_invite(user, request).await?))
        }
        Message::ChatsListChatInvites(request) => Some(Answer::InviteList(engine.list_chat_invites(user, request).await?)),
        Message::ChatsDeleteChatInvite(request) => engine.delete_chat_invite(user, request).await.map(|()| None)?,
        Message::AuthLookupInvite(request) => Some(Answer::InvitePreview(engine.lookup_invite(user, request).await?)),
        Message::AuthUseInvite(request) => engine.use_invite(user, request).await.map(|()| None)?,
        Message::MessagesSendMessage(request) => Some(Answer::SentMessage(engine.send_message(user, request).await?)),
        Message::MessagesEditMessage(request) => engine.edit_message(user, request).await.map(|()| None)?,
        Message::MessagesDeleteMessage(request) => engine.delete_message(user, request).await.map(|()| None)?,
        Message::MessagesGetHistory(request) => Some(Answer::Messages(engine.get_history(user, request).await?)),
        Message::MessagesGetUnreadMentions(request) => {
            Some(Answer::UnreadMentions(engine.get_unread_mentions(user, request).await?))
        }
        Message::AuthAuthorize(_) | Message::CoreInitialize(_) | Message::OsmiumResumeUpdates(_) => {
            return Err(EngineError::InvalidArgument {
                field: "message",
                reason: "Initialize, Authorize and ResumeUpdates are answered by the connection".into(),
            });
        }
    })
}
