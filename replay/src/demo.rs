//! A realistic workload driven through the public `ChatEngine` API: DMs and groups of
//! mixed sizes (a few with thousands of members), activity skewed (Zipf-like) across
//! users and chats, reads, drafts, mutes, edits, deletions, invites created, used,
//! expired and deleted, and members leaving.
//!
//! The script of commands is generated from the seed alone. It runs on several workers
//! at once (to show group commit); each chat's commands stay on one worker in script
//! order, so the final state of every chat is the same for a seed. Ids and timestamps
//! come from the clock and differ between runs.

use osmium_engine::EngineError;
use osmium_engine::chat::{ChatEngine, EngineConfig};
use osmium_proto::ids::UserId;
use osmium_proto::refs::{ChatRef, GroupRef, UserRef, chat_ref::Ref};
use osmium_proto::{auth, chats, messages, types};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the demo should do.
#[derive(Clone, Debug)]
pub struct DemoPlan {
    /// Seed of every random choice.
    pub seed: u64,
    /// Users in the directory.
    pub users: u64,
    /// Messages to send (other actions are added in proportion).
    pub messages: u64,
    /// Commands in flight at once.
    pub workers: usize,
}

/// What the demo did.
#[derive(Clone, Debug, Default)]
pub struct DemoSummary {
    /// Commands the engine accepted.
    pub accepted: u64,
    /// Commands refused as expected by the script (expired or used-up invites).
    pub refused: u64,
    /// Messages sent.
    pub messages: u64,
    /// Groups created (and how many have 1,000 members or more).
    pub groups: u64,
    /// Groups with at least 1,000 members.
    pub large_groups: u64,
    /// Log position after the workload.
    pub last_position: u64,
    /// Wall time of the workload.
    pub elapsed: Duration,
    /// Id of the demo's first user (the busiest one).
    pub first_user: u64,
    /// Live updates received by the two "devices" (subscriptions) of each of the busiest users.
    pub device_updates: u64,
    /// Of those, read-position updates (a read on one device, seen on the others).
    pub device_read_updates: u64,
}

/// Busiest users given two devices each (two subscriptions) during the demo.
pub const DEMO_USERS_WITH_DEVICES: u64 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum ChatKey {
    Direct(u64, u64),
    Group(usize),
}

#[derive(Clone, Debug)]
enum Action {
    CreateGroup { owner: u64, members: Vec<u64> },
    Send { author: u64, peer: Option<u64>, text: String },
    MarkRead { reader: u64, peer: Option<u64> },
    Draft { user: u64, peer: Option<u64> },
    Mute { user: u64, peer: Option<u64>, muted: bool },
    EditLast { author: u64, peer: Option<u64> },
    DeleteLast { author: u64, peer: Option<u64> },
    Invite { owner: u64, joiner: u64, expires_in_ms: Option<u64>, max_uses: Option<u32>, delete_after: bool },
    Leave { user: u64 },
}

/// Index in `0..n` with a Zipf-like skew (low indexes far more likely).
fn skewed(rng: &mut StdRng, n: u64) -> u64 {
    let uniform: f64 = rng.random();
    ((n as f64).powf(uniform) - 1.0).floor().clamp(0.0, (n.max(1) - 1) as f64) as u64
}

struct Script {
    per_chat: Vec<(ChatKey, Vec<Action>)>,
    groups: u64,
    large_groups: u64,
}

fn generate(plan: &DemoPlan) -> Script {
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let users = plan.users.max(4);
    let mut per_chat: HashMap<ChatKey, Vec<Action>> = HashMap::new();
    let mut members: Vec<(u64, BTreeSet<u64>)> = Vec::new();
    let group_count = (users / 20).clamp(2, 200) as usize;
    let mut large_groups = 0;
    for index in 0..group_count {
        let owner = skewed(&mut rng, users);
        let size = if index < 2 && users >= 1_500 {
            large_groups += 1;
            users.min(2_000) - 1
        } else {
            2 + skewed(&mut rng, 40)
        };
        let mut set: BTreeSet<u64> = BTreeSet::new();
        while (set.len() as u64) < size.min(users - 1) {
            let user = rng.random_range(0..users);
            if user != owner {
                set.insert(user);
            }
        }
        per_chat.entry(ChatKey::Group(index)).or_default().push(Action::CreateGroup { owner, members: set.iter().copied().collect() });
        set.insert(owner);
        members.push((owner, set));
    }
    let mut sent = 0;
    while sent < plan.messages {
        let in_group = rng.random_bool(0.55);
        let (key, user, peer) = if in_group {
            let index = skewed(&mut rng, group_count as u64) as usize;
            let (owner, set) = &members[index];
            if set.is_empty() {
                continue;
            }
            let user = *set.iter().nth(skewed(&mut rng, set.len() as u64) as usize).unwrap_or(owner);
            (ChatKey::Group(index), user, None)
        } else {
            let a = skewed(&mut rng, users);
            let mut b = skewed(&mut rng, users);
            if a == b {
                b = (b + 1) % users;
            }
            (ChatKey::Direct(a.min(b), a.max(b)), a, Some(b))
        };
        let roll: f64 = rng.random();
        let action = match roll {
            r if r < 0.70 => {
                sent += 1;
                Action::Send { author: user, peer, text: format!("message {sent}") }
            }
            r if r < 0.85 => Action::MarkRead { reader: user, peer },
            r if r < 0.89 => Action::Draft { user, peer },
            r if r < 0.91 => Action::Mute { user, peer, muted: rng.random_bool(0.7) },
            r if r < 0.93 => Action::EditLast { author: user, peer },
            r if r < 0.95 => Action::DeleteLast { author: user, peer },
            r if r < 0.98 => {
                let ChatKey::Group(index) = key else { continue };
                let joiner = rng.random_range(0..users);
                let (owner, set) = &mut members[index];
                if set.contains(&joiner) {
                    continue;
                }
                set.insert(joiner);
                let expires_in_ms = rng.random_bool(0.2).then_some(50);
                let max_uses = rng.random_bool(0.5).then(|| rng.random_range(1..4));
                Action::Invite { owner: *owner, joiner, expires_in_ms, max_uses, delete_after: rng.random_bool(0.3) }
            }
            _ => {
                let ChatKey::Group(index) = key else { continue };
                let (owner, set) = &mut members[index];
                if user == *owner || set.len() <= 2 {
                    continue;
                }
                set.remove(&user);
                Action::Leave { user }
            }
        };
        per_chat.entry(key).or_default().push(action);
    }
    let mut per_chat: Vec<_> = per_chat.into_iter().collect();
    per_chat.sort_by_key(|(key, _)| *key);
    Script { per_chat, groups: group_count as u64, large_groups }
}

fn dm_ref(peer: u64, first_user: u64) -> ChatRef {
    ChatRef { r#ref: Some(Ref::User(UserRef { user_id: first_user + peer })) }
}

struct Worker {
    engine: ChatEngine,
    first_user: u64,
    /// Shared by all workers: a `client_id` is an idempotency key, so it must never repeat
    /// for one sender (a repeat returns the first message instead of sending a new one).
    client_ids: Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Default)]
struct Tally {
    accepted: u64,
    refused: u64,
    messages: u64,
}

impl Worker {
    fn user(&self, index: u64) -> UserId {
        UserId(self.first_user + index)
    }

    async fn run_chat(&self, actions: Vec<Action>, tally: &mut Tally) -> Result<(), EngineError> {
        let mut group: Option<ChatRef> = None;
        let mut last_sent: HashMap<u64, u64> = HashMap::new();
        let chat = |peer: Option<u64>, group: &Option<ChatRef>| match peer {
            Some(peer) => Some(dm_ref(peer, self.first_user)),
            None => *group,
        };
        for action in actions {
            let outcome = match action {
                Action::CreateGroup { owner, members } => {
                    let users = members.iter().map(|&m| UserRef { user_id: self.first_user + m }).collect();
                    let created = self.engine.create_chat(self.user(owner), chats::CreateChat { users, name: format!("group of {owner}") }).await?;
                    group = Some(ChatRef { r#ref: Some(Ref::Group(GroupRef { group_id: created.id })) });
                    Ok(())
                }
                Action::Send { author, peer, text } => {
                    let request = messages::SendMessage { chat_ref: chat(peer, &group), message: text, client_id: Some(self.client_ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed)), ..Default::default() };
                    self.engine.send_message(self.user(author), request).await.map(|sent| {
                        last_sent.insert(author, sent.message_id);
                        tally.messages += 1;
                    })
                }
                Action::MarkRead { reader, peer } => {
                    let request = chats::MarkChatRead { chat_ref: chat(peer, &group), message_id: u64::MAX, read_amount: None };
                    self.engine.mark_chat_read(self.user(reader), request).await
                }
                Action::Draft { user, peer } => {
                    let Some(chat_ref) = chat(peer, &group) else { continue };
                    self.engine.save_draft(self.user(user), chat_ref, Some("unfinished thought".into())).await
                }
                Action::Mute { user, peer, muted } => {
                    let Some(chat_ref) = chat(peer, &group) else { continue };
                    self.engine.set_muted(self.user(user), chat_ref, muted).await
                }
                Action::EditLast { author, peer } => {
                    let Some(&message_id) = last_sent.get(&author) else { continue };
                    let request = messages::EditMessage { chat_ref: chat(peer, &group), message_id, message: Some("edited".into()), ..Default::default() };
                    self.engine.edit_message(self.user(author), request).await
                }
                Action::DeleteLast { author, peer } => {
                    let Some(message_id) = last_sent.remove(&author) else { continue };
                    let request = messages::DeleteMessage { chat_ref: chat(peer, &group), message_ids: vec![message_id] };
                    self.engine.delete_message(self.user(author), request).await
                }
                Action::Invite { owner, joiner, expires_in_ms, max_uses, delete_after } => {
                    let expires_at = expires_in_ms.map(|ms| now_ms() + ms);
                    let request = chats::CreateChatInvite { chat_ref: group, expires_at, max_uses };
                    let code = self.engine.create_chat_invite(self.user(owner), request).await?.code;
                    if expires_in_ms.is_some() {
                        tokio::time::sleep(Duration::from_millis(60)).await;
                    }
                    let used = self.engine.use_invite(self.user(joiner), auth::UseInvite { code: code.clone() }).await;
                    if delete_after {
                        self.engine.delete_chat_invite(self.user(owner), chats::DeleteChatInvite { code }).await?;
                    }
                    used
                }
                Action::Leave { user } => {
                    let request = chats::RemoveChatMember { chat_ref: group, user_id: self.first_user + user };
                    self.engine.remove_chat_member(self.user(user), request).await
                }
            };
            match outcome {
                Ok(()) => tally.accepted += 1,
                Err(EngineError::InviteExpired | EngineError::InviteUsedUp | EngineError::AlreadyMember) => tally.refused += 1,
                // A joiner whose invite expired is not a member: their later actions are refused.
                Err(EngineError::NotFound { .. }) => tally.refused += 1,
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Runs the workload into the engine at `data_dir`. `progress(done, total)` counts chats.
pub async fn run(
    data_dir: &Path,
    plan: &DemoPlan,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<DemoSummary, crate::ReplayError> {
    let engine = ChatEngine::open(data_dir, EngineConfig::default()).await?;
    let script = generate(plan);
    let started = Instant::now();
    let users = plan.users.max(4);
    // Fresh user ids on every run into the same directory.
    let first_user = 1_000_000 * (1 + engine.last_position().get());
    for index in 0..users {
        let user = types::User { id: first_user + index, name: format!("user {index}"), ..types::User::default() };
        engine.upsert_user(user).await?;
    }
    let mut devices = Vec::new();
    for index in 0..DEMO_USERS_WITH_DEVICES.min(users) {
        for _device in 0..2 {
            let mut subscription = engine.subscribe(UserId(first_user + index));
            devices.push(tokio::spawn(async move {
                let (mut updates, mut reads) = (0u64, 0u64);
                while let Some(update) = subscription.next().await {
                    updates += 1;
                    let read = matches!(update.update.update, Some(osmium_proto::updates::update::Update::ConversationLastRead(_)));
                    reads += u64::from(read);
                }
                (updates, reads)
            }));
        }
    }
    let total = script.per_chat.len() as u64;
    let queue = Arc::new(std::sync::Mutex::new(script.per_chat.into_iter()));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut workers = Vec::new();
    let client_ids = Arc::new(std::sync::atomic::AtomicU64::new(1));
    for _ in 0..plan.workers.max(1) {
        let queue = queue.clone();
        let worker = Worker { engine: engine.clone(), first_user, client_ids: client_ids.clone() };
        let done_tx = done_tx.clone();
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            loop {
                let next = queue.lock().ok().and_then(|mut queue| queue.next());
                let Some((_, actions)) = next else { return Ok::<Tally, EngineError>(tally) };
                worker.run_chat(actions, &mut tally).await?;
                let _ = done_tx.send(());
            }
        }));
    }
    drop(done_tx);
    let mut done = 0;
    while done_rx.recv().await.is_some() {
        done += 1;
        progress(done, total);
    }
    let mut summary =
        DemoSummary { groups: script.groups, large_groups: script.large_groups, first_user, ..DemoSummary::default() };
    summary.accepted = users;
    for worker in workers {
        let tally = worker.await.map_err(|_| EngineError::Closed)??;
        summary.accepted += tally.accepted;
        summary.refused += tally.refused;
        summary.messages += tally.messages;
    }
    summary.elapsed = started.elapsed();
    summary.last_position = engine.last_position().get();
    tokio::time::sleep(Duration::from_millis(200)).await; // the fan-out delivers the last batches
    drop(engine); // ends every subscription
    for device in devices {
        let (updates, reads) = device.await.map_err(|_| EngineError::Closed)?;
        summary.device_updates += updates;
        summary.device_read_updates += reads;
    }
    Ok(summary)
}
