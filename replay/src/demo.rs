//! A deterministic demo workload driven through the public `ChatEngine` API.

use osmium_engine::chat::{ChatEngine, EngineConfig};
use osmium_engine::EngineError;
use osmium_proto::ids::UserId;
use osmium_proto::refs::{ChatRef, GroupRef, UserRef, chat_ref::Ref};
use osmium_proto::{chats, messages, types};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::{Duration, Instant};

/// What the demo should do.
#[derive(Clone, Debug)]
pub struct DemoPlan {
    /// Seed of every random choice: the same seed gives the same workload.
    pub seed: u64,
    /// Users to create.
    pub users: u64,
    /// Messages to send.
    pub messages: u64,
    /// Groups to create.
    pub groups: u64,
}

/// What the demo did.
#[derive(Clone, Debug, Default)]
pub struct DemoSummary {
    /// Commands accepted by the engine.
    pub commands: u64,
    /// Messages sent.
    pub messages: u64,
    /// Events in the log afterwards.
    pub last_position: u64,
    /// Wall time of the workload.
    pub elapsed: Duration,
}

fn user_ref(user: u64) -> ChatRef {
    ChatRef { r#ref: Some(Ref::User(UserRef { user_id: user })) }
}

fn group_ref(group: u64) -> ChatRef {
    ChatRef { r#ref: Some(Ref::Group(GroupRef { group_id: group })) }
}

/// Picks an index in `0..n` with a Zipf-like skew: low indexes are far more likely.
fn skewed(rng: &mut StdRng, n: u64) -> u64 {
    let uniform: f64 = rng.random();
    ((n as f64).powf(uniform) - 1.0).floor().clamp(0.0, (n - 1) as f64) as u64
}

/// Runs the workload into the engine at `data_dir`, printing progress lines.
pub async fn run(data_dir: &Path, plan: &DemoPlan) -> Result<DemoSummary, EngineError> {
    let engine = ChatEngine::open(data_dir, EngineConfig::default()).await?;
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let started = Instant::now();
    let mut summary = DemoSummary::default();
    let users = plan.users.max(2);
    let first_user = 1_000 + engine.last_position().get() * 10_000; // fresh ids when run again
    let user_id = |index: u64| first_user + index;
    for index in 0..users {
        let user = types::User { id: user_id(index), name: format!("user {index}"), ..types::User::default() };
        engine.upsert_user(user).await?;
        summary.commands += 1;
    }
    let mut groups = Vec::new();
    for group in 0..plan.groups {
        let owner = UserId(user_id(skewed(&mut rng, users)));
        let size = 2 + skewed(&mut rng, users.min(200));
        let members = (0..size).map(|_| osmium_proto::refs::UserRef { user_id: user_id(rng.random_range(0..users)) }).collect();
        let created = engine.create_chat(owner, chats::CreateChat { users: members, name: format!("group {group}") }).await?;
        groups.push(created);
        summary.commands += 1;
    }
    for sent in 0..plan.messages {
        let in_group = !groups.is_empty() && rng.random_bool(0.6);
        let (author, chat_ref) = if in_group {
            let group = &groups[skewed(&mut rng, groups.len() as u64) as usize];
            let author = group.participant_ids[rng.random_range(0..group.participant_ids.len())];
            (author, group_ref(group.id))
        } else {
            let author = user_id(skewed(&mut rng, users));
            let mut peer = user_id(skewed(&mut rng, users));
            if peer == author {
                peer = user_id((peer - first_user + 1) % users);
            }
            (author, user_ref(peer))
        };
        let request = messages::SendMessage {
            chat_ref: Some(chat_ref),
            message: format!("message {sent}"),
            client_id: Some(sent),
            ..messages::SendMessage::default()
        };
        match engine.send_message(UserId(author), request).await {
            Ok(message) => {
                summary.messages += 1;
                if rng.random_bool(0.3) {
                    let reader = UserId(author);
                    let mark = chats::MarkChatRead { chat_ref: Some(chat_ref), message_id: message.message_id, read_amount: None };
                    engine.mark_chat_read(reader, mark).await?;
                    summary.commands += 1;
                }
            }
            Err(EngineError::NotFound { .. }) => {} // the author left a group in between
            Err(err) => return Err(err),
        }
        summary.commands += 1;
        if (sent + 1) % 10_000 == 0 {
            println!("demo: {} of {} messages sent", sent + 1, plan.messages);
        }
    }
    summary.elapsed = started.elapsed();
    summary.last_position = engine.last_position().get();
    let sample = UserId(user_id(0));
    let page = engine.get_chats(sample, chats::GetChats { limit: Some(5), ..chats::GetChats::default() }).await?;
    println!("demo: chat list of user {sample} (newest first):");
    for conversation in &page.chats {
        println!(
            "  last_message_id={} unread={} last_read={}",
            conversation.last_message_id, conversation.unread_count, conversation.last_read_message_id
        );
    }
    Ok(summary)
}
