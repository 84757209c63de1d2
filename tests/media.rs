//! Media as the current protocol sends it: an uploaded file (`MediaRefUploadedFile` with an
//! `UploadedFileRef`) becomes the message's `File`; an embed keeps its url; `EditChat.photo`
//! sets or removes a group's photo. The engine stores no file bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::*;
use osmium_state::proto::{chats, media, messages};

fn image() -> media::FileMetadata {
    let image = media::MetadataImage { width: 640, height: 480, preview: Some(vec![1, 2]) };
    media::FileMetadata { metadata: Some(media::file_metadata::Metadata::Image(image)) }
}

async fn sent_media(f: &Fixture, attachment: media::MediaRef) -> media::message_media::Media {
    let request = messages::SendMessage { chat_ref: Some(dm(BOB)), media: vec![attachment], ..Default::default() };
    f.engine.send_message(ANN, request).await.unwrap();
    let history = f.engine.get_history(BOB, messages::GetHistory { chat_ref: Some(dm(ANN)), ..Default::default() }).await.unwrap();
    history.messages[0].media[0].media.clone().unwrap()
}

fn upload(file: media::UploadedFileRef, filename: Option<&str>, metadata: Option<media::FileMetadata>) -> media::MediaRef {
    let uploaded = media::MediaRefUploadedFile { file: Some(file), filename: filename.map(Into::into), mimetype: "image/png".into(), metadata };
    media::MediaRef { r#ref: Some(media::media_ref::Ref::Uploaded(uploaded)) }
}

#[tokio::test]
async fn an_uploaded_file_becomes_a_file_with_its_id_region_0_size_unknown_mimetype_filename_and_metadata() {
    let f = fixture().await;
    let file = media::UploadedFileRef { id: 9, name: "IMG_1.png".into(), part_count: 3 };
    let got = sent_media(&f, upload(file, Some("holiday.png"), Some(image()))).await;
    let expected = media::File {
        file_id: 9,
        region: 0,
        size: 0,
        mimetype: "image/png".into(),
        filename: Some("holiday.png".into()),
        metadata: Some(image()),
    };
    assert_eq!(got, media::message_media::Media::File(media::MediaFile { file: Some(expected) }));
}

#[tokio::test]
async fn an_uploaded_file_without_a_filename_is_named_after_the_uploaded_file() {
    let f = fixture().await;
    let file = media::UploadedFileRef { id: 9, name: "IMG_1.png".into(), part_count: 1 };
    let media::message_media::Media::File(got) = sent_media(&f, upload(file, None, None)).await else { panic!("expected a file") };
    assert_eq!(got.file.unwrap().filename.as_deref(), Some("IMG_1.png"));
}

#[tokio::test]
async fn an_embed_becomes_a_media_embed_with_only_its_url() {
    let f = fixture().await;
    let embed = media::MediaRef { r#ref: Some(media::media_ref::Ref::Embed(media::MediaRefEmbed { url: "https://osmium.chat".into() })) };
    let got = sent_media(&f, embed).await;
    let expected = media::MediaEmbed { url: "https://osmium.chat".into(), title: None, description: None, file: None };
    assert_eq!(got, media::message_media::Media::Embed(expected));
}

#[tokio::test]
async fn edit_chat_photo_with_an_uploaded_file_sets_the_group_photo_to_its_id() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    let photo = chats::edit_chat::Photo { file: Some(media::UploadedFileRef { id: 42, name: "logo.png".into(), part_count: 1 }) };
    let chat = f.engine.edit_chat(ANN, chats::EditChat { chat_ref: Some(group(id)), photo: Some(photo), ..Default::default() }).await.unwrap();
    let photo = chat.group.unwrap().photo.unwrap();
    assert_eq!((photo.file_id, photo.preview.len()), (42, 0), "the file's id; no preview (no file bytes)");
}

#[tokio::test]
async fn edit_chat_photo_without_a_file_removes_the_photo() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    let set = chats::edit_chat::Photo { file: Some(media::UploadedFileRef { id: 42, ..Default::default() }) };
    f.engine.edit_chat(ANN, chats::EditChat { chat_ref: Some(group(id)), photo: Some(set), ..Default::default() }).await.unwrap();
    let remove = chats::edit_chat::Photo { file: None };
    let chat = f.engine.edit_chat(ANN, chats::EditChat { chat_ref: Some(group(id)), photo: Some(remove), ..Default::default() }).await.unwrap();
    assert_eq!(chat.group.unwrap().photo, None);
    assert_projections_equal_a_fold_of_the_log(&f.engine).await;
}

#[tokio::test]
async fn edit_chat_without_photo_keeps_the_photo() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    let set = chats::edit_chat::Photo { file: Some(media::UploadedFileRef { id: 42, ..Default::default() }) };
    f.engine.edit_chat(ANN, chats::EditChat { chat_ref: Some(group(id)), photo: Some(set), ..Default::default() }).await.unwrap();
    let rename = chats::EditChat { chat_ref: Some(group(id)), name: Some("renamed".into()), ..Default::default() };
    let chat = f.engine.edit_chat(ANN, rename).await.unwrap();
    assert_eq!(chat.group.unwrap().photo.map(|photo| photo.file_id), Some(42));
}
