//! `get_chats`: order, paging, limits, large groups, and a whole day in a small group.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::*;
use osmium_state::proto::ids::UserId;
use osmium_state::proto::{auth, chats, types};

#[tokio::test]
async fn get_chats_orders_by_last_message_newest_first() {
    let f = fixture().await;
    let quiet = create_group(&f.engine, ANN, &[BOB]).await;
    send(&f.engine, BOB, &dm(ANN), "dm").await;
    let busy = create_group(&f.engine, ANN, &[CAT]).await;
    let newest = send(&f.engine, CAT, &group(busy), "latest").await;
    let list = chat_list(&f.engine, ANN, chats::GetChats::default()).await;
    assert_eq!(list.len(), 3);
    assert_eq!(list[0], newest.get());
    assert_eq!(list[2], quiet, "a group without messages sorts by its own id");
    assert!(list.windows(2).all(|pair| pair[0] > pair[1]));
}

#[tokio::test]
async fn paging_with_max_id_or_min_id_visits_every_conversation_exactly_once() {
    let f = fixture().await;
    for peer in 2..=6 {
        send(&f.engine, ANN, &dm(UserId(peer)), "hi").await;
    }
    for _ in 0..4 {
        create_group(&f.engine, ANN, &[BOB]).await;
    }
    let all = chat_list(&f.engine, ANN, chats::GetChats::default()).await;
    assert_eq!(all.len(), 9);
    for limit in 1..=5 {
        let mut backwards = Vec::new();
        let mut max_id = None;
        loop {
            let page = chat_list(&f.engine, ANN, chats::GetChats { limit: Some(limit), max_id, min_id: None }).await;
            if page.is_empty() {
                break;
            }
            max_id = page.last().copied();
            backwards.extend(page);
        }
        assert_eq!(backwards, all, "max_id paging at limit {limit}");
        let mut forwards = Vec::new();
        let mut min_id = Some(0);
        loop {
            let page = chat_list(&f.engine, ANN, chats::GetChats { limit: Some(limit), max_id: None, min_id }).await;
            if page.is_empty() {
                break;
            }
            min_id = page.first().copied();
            forwards.splice(0..0, page);
        }
        assert_eq!(forwards, all, "min_id paging at limit {limit}");
    }
}

#[tokio::test]
async fn the_page_size_defaults_to_50_and_is_capped_at_100() {
    let f = fixture().await;
    for _ in 0..120 {
        create_group(&f.engine, ANN, &[]).await;
    }
    assert_eq!(chat_list(&f.engine, ANN, chats::GetChats::default()).await.len(), 50);
    assert_eq!(chat_list(&f.engine, ANN, chats::GetChats { limit: Some(500), ..Default::default() }).await.len(), 100);
}

#[tokio::test]
async fn a_group_above_the_fan_out_limit_is_listed_and_ordered_like_any_other() {
    let f = fixture().await;
    for id in 1_000..1_300 {
        f.engine.upsert_user(types::User { id, name: format!("u{id}"), ..Default::default() }).await.unwrap();
    }
    let members: Vec<UserId> = (1_000..1_300).map(UserId).collect();
    let big = create_group(&f.engine, ANN, &members).await;
    send(&f.engine, ANN, &dm(BOB), "small chat").await;
    let list = chat_list(&f.engine, UserId(1_000), chats::GetChats::default()).await;
    assert_eq!(list, [big]);
    let newest = send(&f.engine, UserId(1_299), &group(big), "to everyone").await;
    let ann = chat_list(&f.engine, ANN, chats::GetChats::default()).await;
    assert_eq!(ann[0], newest.get());
    assert_eq!(conversation(&f.engine, UserId(1_000), &group(big)).await.unread_count, 1);
    let older = chat_list(&f.engine, ANN, chats::GetChats { max_id: Some(newest.get()), ..Default::default() }).await;
    assert_eq!(older.len(), 1, "the DM only");
    assert_projections_equal_a_fold_of_the_log(&f.engine).await;
}

/// The groups of `viewer`'s first page, in order.
async fn listed_groups(engine: &osmium_state::ChatEngine, viewer: UserId) -> Vec<u64> {
    use osmium_state::proto::refs::chat_ref::Ref;
    let chats = engine.get_chats(viewer, chats::GetChats::default()).await.unwrap().chats;
    chats
        .iter()
        .filter_map(|conversation| match conversation.chat_ref.as_ref().and_then(|chat| chat.r#ref.as_ref()) {
            Some(Ref::Group(group)) => Some(group.group_id),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn large_groups_move_up_with_each_new_message_while_chat_lists_are_read_between_messages() {
    // Large groups are placed from an in-memory cache of their last message ids, filled
    // both by the state machine and by readers: every read between two sends must see the order
    // as of its own state, never an older or a newer one.
    let f = fixture().await;
    for id in 1_000..1_258 {
        f.engine.upsert_user(types::User { id, name: format!("u{id}"), ..Default::default() }).await.unwrap();
    }
    let members: Vec<UserId> = (1_000..1_258).map(UserId).collect();
    let mut groups = Vec::new();
    for _ in 0..3 {
        groups.push(create_group(&f.engine, ANN, &members).await);
    }
    let mut expected: Vec<u64> = groups.iter().rev().copied().collect(); // newest created first
    for (round, &target) in [0usize, 2, 1, 0, 0, 1, 2, 1].iter().enumerate() {
        for viewer in [ANN, UserId(1_000), UserId(1_257)] {
            assert_eq!(listed_groups(&f.engine, viewer).await, expected, "round {round}, user {viewer}");
        }
        let sent = send(&f.engine, UserId(1_000 + round as u64), &group(groups[target]), "news").await;
        expected.retain(|&chat| chat != groups[target]);
        expected.insert(0, groups[target]);
        assert_eq!(chat_list(&f.engine, ANN, chats::GetChats::default()).await[0], sent.get());
    }
    assert_eq!(listed_groups(&f.engine, ANN).await, expected);
    let f = f.reopen().await;
    assert_eq!(listed_groups(&f.engine, UserId(1_100)).await, expected, "after a restart");
    assert_projections_equal_a_fold_of_the_log(&f.engine).await;
}

#[tokio::test]
async fn get_chats_lists_a_users_large_groups_as_of_every_join_leave_and_growth_read_between_them() {
    // A user's large groups are read from an in-memory cache, filled by readers and
    // invalidated by the state machine whenever the user's `userid_chatid_largechat` keys change:
    // every read between two changes must list the groups as of its own state.
    let f = fixture().await;
    for id in 1_000..1_300 {
        f.engine.upsert_user(types::User { id, name: format!("u{id}"), ..Default::default() }).await.unwrap();
    }
    let joiner = UserId(1_299);
    let large_members: Vec<UserId> = (1_000..1_258).map(UserId).collect();
    let (first, second) = (create_group(&f.engine, ANN, &large_members).await, create_group(&f.engine, ANN, &large_members).await);
    let mut growing_members: Vec<UserId> = (1_000..1_254).map(UserId).collect();
    growing_members.push(joiner);
    let growing = create_group(&f.engine, ANN, &growing_members).await; // 256 members: not large yet
    let member = |chat: u64, user: UserId| chats::AddChatMember { chat_ref: Some(group(chat)), user_id: user.get() };
    assert_eq!(listed_groups(&f.engine, joiner).await, [growing], "before");
    assert_eq!(listed_groups(&f.engine, joiner).await, [growing], "before, read again (from the cache)");
    f.engine.add_chat_member(ANN, member(first, joiner)).await.unwrap();
    assert_eq!(listed_groups(&f.engine, joiner).await, [growing, first], "joined the first");
    assert_eq!(listed_groups(&f.engine, joiner).await, [growing, first], "joined the first, read again");
    f.engine.add_chat_member(ANN, member(second, joiner)).await.unwrap();
    assert_eq!(listed_groups(&f.engine, joiner).await, [growing, second, first], "joined the second");
    let leave = chats::RemoveChatMember { chat_ref: Some(group(first)), user_id: joiner.get() };
    f.engine.remove_chat_member(ANN, leave).await.unwrap();
    assert_eq!(listed_groups(&f.engine, joiner).await, [growing, second], "left the first");
    send(&f.engine, ANN, &group(first), "after the joiner left").await;
    assert_eq!(listed_groups(&f.engine, joiner).await, [growing, second], "a message where they are no longer");
    f.engine.add_chat_member(ANN, member(growing, UserId(1_298))).await.unwrap(); // 257: large from now on
    assert_eq!(listed_groups(&f.engine, joiner).await, [growing, second], "the third became large");
    send(&f.engine, UserId(1_000), &group(second), "news").await;
    assert_eq!(listed_groups(&f.engine, joiner).await, [second, growing], "the second moved up");
    let news = send(&f.engine, UserId(1_000), &group(growing), "more news").await;
    assert_eq!(listed_groups(&f.engine, joiner).await, [growing, second], "the third moved up");
    assert_eq!(chat_list(&f.engine, joiner, chats::GetChats::default()).await[0], news.get());
    let f = f.reopen().await;
    assert_eq!(listed_groups(&f.engine, joiner).await, [growing, second], "after a restart");
    assert_projections_equal_a_fold_of_the_log(&f.engine).await;
}

/// The participant ids of group `id` in `viewer`'s first page of `get_chats`.
async fn listed_participants(engine: &osmium_state::ChatEngine, viewer: UserId, id: u64) -> Vec<u64> {
    let groups = engine.get_chats(viewer, chats::GetChats::default()).await.unwrap().groups;
    groups.into_iter().find(|listed| listed.id == id).map(|listed| listed.participant_ids).unwrap_or_default()
}

#[tokio::test]
async fn get_chats_shows_each_groups_participants_as_of_every_join_and_leave_read_between_them() {
    // Participants are read from an in-memory cache, filled by readers and invalidated by
    // the state machine at every join or leave: every read between two changes must see the
    // members as of its own state, in join order, in small and large groups alike.
    let f = fixture().await;
    for id in 1_000..1_300 {
        f.engine.upsert_user(types::User { id, name: format!("u{id}"), ..Default::default() }).await.unwrap();
    }
    let small = create_group(&f.engine, ANN, &[BOB]).await;
    let large_members: Vec<UserId> = (1_000..1_258).map(UserId).collect();
    let large = create_group(&f.engine, ANN, &large_members).await;
    for (id, mut expected) in [(small, vec![ANN.get(), BOB.get()]), (large, [1].into_iter().chain(1_000..1_258).collect())] {
        let chat_ref = Some(group(id));
        for step in 0..4 {
            assert_eq!(listed_participants(&f.engine, ANN, id).await, expected, "group {id}, step {step}, read twice:");
            assert_eq!(listed_participants(&f.engine, ANN, id).await, expected, "group {id}, step {step}, from the cache");
            let joining = UserId(1_290 + step);
            f.engine.add_chat_member(ANN, chats::AddChatMember { chat_ref, user_id: joining.get() }).await.unwrap();
            expected.push(joining.get());
            assert_eq!(listed_participants(&f.engine, ANN, id).await, expected, "group {id}, after {joining} joined");
            let leaving = expected[1];
            f.engine.remove_chat_member(ANN, chats::RemoveChatMember { chat_ref, user_id: leaving }).await.unwrap();
            expected.remove(1);
        }
        assert_eq!(listed_participants(&f.engine, ANN, id).await, expected, "group {id}, at the end");
    }
    let f = f.reopen().await;
    assert_eq!(listed_participants(&f.engine, ANN, small).await, [1, 1_293], "after a restart");
    assert_projections_equal_a_fold_of_the_log(&f.engine).await;
}

/// A day in a small group: created, invite, join by code, chat, read on two devices,
/// leave, owner hand-over; checked against the expected chat lists.
#[tokio::test]
async fn a_whole_day_in_a_small_group() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    let code = f
        .engine
        .create_chat_invite(ANN, chats::CreateChatInvite { chat_ref: Some(group(id)), expires_at: None, max_uses: Some(2) })
        .await
        .unwrap()
        .code;
    f.engine.use_invite(CAT, auth::UseInvite { code: code.clone() }).await.unwrap();
    let morning = send(&f.engine, ANN, &group(id), "good morning").await;
    send(&f.engine, BOB, &group(id), "morning!").await;
    let lunch = send(&f.engine, CAT, &group(id), "lunch?").await;

    let mut cat_phone = f.engine.subscribe(CAT);
    mark_read(&f.engine, CAT, &group(id), lunch).await; // on the laptop
    let seen_on_phone = loop {
        let update = cat_phone.next().await.unwrap();
        if let Some(osmium_state::proto::updates::update::Update::ConversationLastRead(read)) = update.update.update {
            break read;
        }
    };
    assert_eq!((seen_on_phone.last_read_message_id, seen_on_phone.unread_count), (lunch.get(), Some(0)));

    let ann_view = conversation(&f.engine, ANN, &group(id)).await;
    assert_eq!((ann_view.unread_count, ann_view.last_read_message_id), (2, morning.get()));

    f.engine.remove_chat_member(ANN, chats::RemoveChatMember { chat_ref: Some(group(id)), user_id: ANN.get() }).await.unwrap();
    let evening = send(&f.engine, BOB, &group(id), "ann left, bob owns it now").await;
    let bob_chat = f.engine.get_chat(BOB, chats::GetChat { chat_ref: Some(group(id)) }).await.unwrap();
    let bob_group = bob_chat.group.unwrap();
    assert!(bob_group.owner, "bob joined before cat");
    assert_eq!(bob_group.participant_ids, [BOB.get(), CAT.get()]);

    let cat_list = f.engine.get_chats(CAT, chats::GetChats::default()).await.unwrap();
    assert_eq!(cat_list.chats.len(), 1);
    assert_eq!(cat_list.chats[0].last_message_id, evening.get());
    assert_eq!(cat_list.chats[0].unread_count, 1);
    assert_eq!(cat_list.messages[0].message, "ann left, bob owns it now");
    assert_eq!(cat_list.groups[0].participant_ids, [BOB.get(), CAT.get()]);
    assert!(f.engine.get_chats(ANN, chats::GetChats::default()).await.unwrap().chats.is_empty());
    let details = f.engine.chat_invite_details(BOB, group(id)).await.unwrap();
    assert_eq!(details[0].uses, 1);
    assert_projections_equal_a_fold_of_the_log(&f.engine).await;
}

/// The users of a `get_chats` answer, by id.
async fn listed_users(engine: &osmium_state::ChatEngine, viewer: UserId) -> Vec<u64> {
    let list = engine.get_chats(viewer, chats::GetChats::default()).await.unwrap();
    list.users.iter().map(|user| user.id).collect()
}

#[tokio::test]
async fn get_chats_users_are_the_dm_peers_the_group_members_and_the_last_message_authors() {
    let f = fixture().await;
    send(&f.engine, BOB, &dm(ANN), "dm").await;
    create_group(&f.engine, ANN, &[CAT, DAN]).await;
    let other = create_group(&f.engine, DAN, &[ANN]).await;
    send(&f.engine, DAN, &group(other), "from dan").await;
    assert_eq!(listed_users(&f.engine, ANN).await, [1, 2, 3, 4], "seed 001: DM participants, group members, message authors");
}

#[tokio::test]
async fn a_page_holding_a_10000_member_group_lists_its_first_members_in_join_order_and_every_peer_and_author() {
    let dir = tempfile::tempdir().unwrap();
    let clock = osmium_state::ManualClock::new(START_MS);
    let mut config = config(&clock);
    config.log.durability = osmium_state::Durability::Buffered;
    let per_group = config.limits.chats_users_per_group_max;
    let engine = osmium_state::ChatEngine::open(dir.path(), config).await.unwrap();
    // Members join in descending id order, so join order is not id order.
    let members: Vec<u64> = (10_001..=20_000).rev().collect();
    let upserts: Vec<_> = (1..=3).chain(members.iter().copied()).map(|id| {
        let engine = engine.clone();
        tokio::spawn(async move { engine.upsert_user(types::User { id, name: format!("u{id}"), ..Default::default() }).await })
    }).collect();
    for upsert in upserts {
        upsert.await.unwrap().unwrap();
    }
    let users = members.iter().map(|&user_id| osmium_state::proto::refs::UserRef { user_id }).collect();
    let big = engine.create_chat(ANN, chats::CreateChat { users, name: "everyone".into() }).await.unwrap();
    assert_eq!(big.participant_ids.len(), 10_001);
    let last_member = UserId(*members.last().unwrap());
    send(&engine, last_member, &group(big.id), "from the last to join").await;
    send(&engine, BOB, &dm(ANN), "dm").await;
    send(&engine, CAT, &dm(ANN), "dm").await;

    let listed = listed_users(&engine, ANN).await;
    let mut expected: Vec<u64> = big.participant_ids[..per_group].to_vec(); // the owner first, then the first to join
    expected.extend([BOB.get(), CAT.get(), last_member.get()]);
    expected.sort_unstable();
    assert_eq!(listed, expected, "{per_group} members in join order, the DM peers, the last message's author");
}

#[tokio::test]
async fn get_chats_lists_group_members_only_while_fewer_than_chats_users_max_users_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = osmium_state::ManualClock::new(START_MS);
    let mut config = config(&clock);
    config.limits.chats_users_per_group_max = 3;
    config.limits.chats_users_max = 4;
    let engine = osmium_state::ChatEngine::open(dir.path(), config).await.unwrap();
    for id in 1..=6 {
        engine.upsert_user(types::User { id, name: format!("user{id}"), ..Default::default() }).await.unwrap();
    }
    create_group(&engine, ANN, &[BOB, CAT, DAN]).await;
    send(&engine, EVE, &dm(ANN), "dm").await; // the newest: its peers come first, always
    let listed = listed_users(&engine, ANN).await;
    // ANN and EVE from the DM; then the group's first three in join order (ANN, BOB, CAT)
    // while fewer than 4 users are listed: BOB, CAT.
    assert_eq!(listed, [1, 2, 3, 5]);
}
