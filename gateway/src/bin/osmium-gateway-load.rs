//! Load run of the gateway on loopback (not a test): starts `osmium-server`'s gateway in
//! this process on a temporary directory, opens many WebSocket connections (several
//! devices per user, users in groups), drives a mix of GetChats, GetHistory, SendMessage,
//! MarkChatRead and SetTyping with think time, and prints requests/s, request latency
//! percentiles, send-to-update delivery latency and peak RSS (VmHWM: server and clients
//! together, since both run here). Raises the open-files soft limit to the hard limit
//! first (two sockets per connection live in this process).
//!
//! `cargo run --release -p osmium-gateway --bin osmium-gateway-load -- --connections 1000`

use clap::{Parser, ValueEnum};
use futures_util::{SinkExt as _, StreamExt as _};
use osmium_engine::{Durability, EngineConfig, LogConfig};
use osmium_gateway::{Gateway, GatewayError, GatewayLimits, ServerConfig, tokens};
use osmium_proto::core::client_message::Message as Call;
use osmium_proto::core::rpc_result::Result as Answer;
use osmium_proto::core::{ClientMessage, ServerMessage, server_message};
use osmium_proto::ids::UserId;
use osmium_proto::refs::{ChatRef, GroupRef, UserRef, chat_ref::Ref};
use osmium_proto::updates::update::Update as U;
use osmium_proto::{auth, chats, messages};
use prost::Message as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Frame;

/// Gateway load run on loopback.
#[derive(Debug, Parser)]
struct Args {
    /// WebSocket connections.
    #[arg(long, default_value_t = 1_000)]
    connections: usize,
    /// Connections (devices) per user.
    #[arg(long, default_value_t = 4)]
    devices_per_user: usize,
    /// Users per group.
    #[arg(long, default_value_t = 8)]
    group_users: usize,
    /// Measured seconds (after every connection is signed in).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Mean think time between a result and the connection's next call, in milliseconds.
    #[arg(long, default_value_t = 500)]
    think_ms: u64,
    /// Engine durability.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Buffered)]
    durability: DurabilityArg,
    /// Chance, per mille, that a connection drops its socket without a close frame after
    /// a result, then connects and signs in again (random client disconnects, for the soak).
    #[arg(long, default_value_t = 0)]
    disconnect_per_mille: u64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DurabilityArg {
    Sync,
    Buffered,
}

#[derive(Debug, Default)]
struct Samples {
    /// Request latency by kind index, in microseconds.
    request_us: Vec<Vec<u32>>,
    /// Send-to-update delivery latency, in microseconds.
    delivery_us: Vec<u32>,
    errors: u64,
    /// Sockets dropped on purpose (`--disconnect-per-mille`) and signed in again.
    disconnects: u64,
}

const KINDS: [&str; 5] = ["GetChats", "GetHistory", "SendMessage", "MarkChatRead", "SetTyping"];
/// Cumulative weights (percent) of the kinds above.
const MIX: [u32; 5] = [25, 50, 70, 85, 100];

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}

fn group_ref(id: u64) -> ChatRef {
    ChatRef { r#ref: Some(Ref::Group(GroupRef { group_id: id })) }
}

/// A small xorshift generator: enough for picking calls.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

async fn run(args: Args) -> Result<(), GatewayError> {
    let nofile = rlimit::increase_nofile_limit(u64::MAX).map_err(|err| GatewayError::Io { path: "RLIMIT_NOFILE".into(), source: err })?;
    let dir = tempfile::tempdir().map_err(|source| GatewayError::Io { path: "temporary directory".into(), source })?;
    let durability = match args.durability {
        DurabilityArg::Sync => Durability::Sync,
        DurabilityArg::Buffered => Durability::Buffered,
    };
    let users = args.connections.div_ceil(args.devices_per_user.max(1));
    eprintln!(
        "load: {} connections, {users} users ({} devices each), groups of {}, {:?}, think {} ms, open-files limit {nofile}",
        args.connections, args.devices_per_user, args.group_users, durability, args.think_ms
    );
    let mut user_tokens = Vec::with_capacity(users);
    for index in 0..users {
        let user = UserId(1_000 + index as u64);
        user_tokens.push(tokens::create_token(dir.path(), user, &format!("user{index}")).await?);
    }
    let config = ServerConfig {
        metrics_listen: None,
        engine: EngineConfig { log: LogConfig { durability, ..LogConfig::default() }, ..EngineConfig::default() },
        limits: GatewayLimits::default(),
        ..ServerConfig::ephemeral(dir.path())
    };
    let gateway = Gateway::start(config).await?;
    let engine = gateway.engine().clone();
    // Users in groups, owned by the group's first user.
    let mut group_of_user = vec![0u64; users];
    for first in (0..users).step_by(args.group_users.max(1)) {
        let members: Vec<usize> = (first..(first + args.group_users).min(users)).collect();
        let owner = UserId(1_000 + first as u64);
        for &member in &members {
            engine.upsert_user(osmium_proto::types::User { id: 1_000 + member as u64, name: format!("user{member}"), ..Default::default() }).await?;
        }
        let others = members.iter().skip(1).map(|&member| UserRef { user_id: 1_000 + member as u64 }).collect();
        let group = engine.create_chat(owner, chats::CreateChat { users: others, name: format!("group{first}") }).await?;
        for &member in &members {
            group_of_user[member] = group.id;
        }
    }
    let addr = gateway.local_addr();
    let epoch = Instant::now();
    let start_barrier = Arc::new(tokio::sync::Barrier::new(args.connections + 1));
    let mut tasks = Vec::with_capacity(args.connections);
    let connect_limit = Arc::new(tokio::sync::Semaphore::new(64));
    for index in 0..args.connections {
        let user = index % users;
        let token = user_tokens[user].clone();
        let group = group_of_user[user];
        let barrier = start_barrier.clone();
        let connect_limit = connect_limit.clone();
        let think_ms = args.think_ms;
        let seconds = args.seconds;
        let reconnect = (args.disconnect_per_mille > 0).then(|| Reconnect { addr, token: token.clone(), per_mille: args.disconnect_per_mille });
        tasks.push(tokio::spawn(async move {
            let socket = {
                let _permit = connect_limit.acquire().await;
                connect(addr, token).await
            };
            barrier.wait().await;
            match socket {
                Ok(socket) => drive(socket, group, index as u64, think_ms, seconds, epoch, reconnect).await,
                Err(err) => {
                    eprintln!("connection {index}: {err}");
                    Samples { errors: 1, ..Samples::default() }
                }
            }
        }));
    }
    start_barrier.wait().await;
    let started = Instant::now();
    eprintln!("load: {} connections signed in after {:.1} s; measuring {} s", args.connections, epoch.elapsed().as_secs_f64(), args.seconds);
    let mut all = Samples { request_us: vec![Vec::new(); KINDS.len()], ..Samples::default() };
    for task in tasks {
        if let Ok(samples) = task.await {
            for (kind, values) in samples.request_us.into_iter().enumerate() {
                all.request_us[kind].extend(values);
            }
            all.delivery_us.extend(samples.delivery_us);
            all.errors += samples.errors;
            all.disconnects += samples.disconnects;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut every: Vec<u32> = all.request_us.iter().flatten().copied().collect();
    every.sort_unstable();
    println!("connections          {}", args.connections);
    println!("durability           {durability:?}");
    println!("requests             {} in {elapsed:.1} s = {:.0} requests/s", every.len(), every.len() as f64 / elapsed);
    println!("request latency      p50 {} p99 {} max {}", ms(&every, 0.50), ms(&every, 0.99), ms(&every, 1.0));
    for (kind, values) in all.request_us.iter_mut().enumerate() {
        values.sort_unstable();
        println!("  {:<18} n {:>7}  p50 {} p99 {}", KINDS[kind], values.len(), ms(values, 0.50), ms(values, 0.99));
    }
    all.delivery_us.sort_unstable();
    println!(
        "send-to-update       n {} p50 {} p99 {}",
        all.delivery_us.len(),
        ms(&all.delivery_us, 0.50),
        ms(&all.delivery_us, 0.99)
    );
    println!("error results        {}", all.errors);
    println!("client disconnects   {}", all.disconnects);
    println!("peak RSS (VmHWM)     {}", peak_rss());
    gateway.shutdown().await;
    Ok(())
}

fn ms(sorted: &[u32], quantile: f64) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    let index = ((sorted.len() as f64 - 1.0) * quantile).round() as usize;
    format!("{:.2} ms", f64::from(sorted[index.min(sorted.len() - 1)]) / 1_000.0)
}

fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| status.lines().find(|line| line.starts_with("VmHWM:")).map(|line| line["VmHWM:".len()..].trim().to_owned()))
        .unwrap_or_else(|| "unknown".into())
}

type Socket = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn connect(addr: std::net::SocketAddr, token: String) -> Result<Socket, GatewayError> {
    let error = |err: &dyn std::fmt::Display| GatewayError::WebSocket(err.to_string());
    let stream = TcpStream::connect(addr).await.map_err(|err| error(&err))?;
    stream.set_nodelay(true).map_err(|err| error(&err))?;
    let buffers = GatewayLimits::default().socket_buffer_bytes;
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(buffers)
        .write_buffer_size(buffers);
    let (mut socket, _) = tokio_tungstenite::client_async_with_config(format!("ws://{addr}/"), stream, Some(config))
        .await
        .map_err(|err| error(&err))?;
    let authorize = ClientMessage { id: 1, message: Some(Call::AuthAuthorize(auth::Authorize { token })) };
    socket.send(Frame::Binary(authorize.encode_to_vec().into())).await.map_err(|err| error(&err))?;
    loop {
        let Some(frame) = socket.next().await else { return Err(error(&"closed during sign-in")) };
        let Frame::Binary(bytes) = frame.map_err(|err| error(&err))? else { continue };
        let message = ServerMessage::decode(&bytes[..]).map_err(|err| error(&err))?;
        if let Some(server_message::Message::Result(result)) = message.message {
            return match result.result {
                Some(Answer::Authorization(_)) => Ok(socket),
                other => Err(error(&format!("sign-in refused: {other:?}"))),
            };
        }
    }
}

/// Random disconnects of one connection (`--disconnect-per-mille`).
struct Reconnect {
    addr: std::net::SocketAddr,
    token: String,
    per_mille: u64,
}

/// One connection's closed loop: a call, its result, think time, the next call; updates
/// are read all along and the delivery latency of messages is measured from the send
/// time carried in their text.
async fn drive(mut socket: Socket, group: u64, seed: u64, think_ms: u64, seconds: u64, epoch: Instant, reconnect: Option<Reconnect>) -> Samples {
    let mut samples = Samples { request_us: vec![Vec::new(); KINDS.len()], ..Samples::default() };
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let chat = group_ref(group);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let mut next_call = tokio::time::Instant::now() + Duration::from_millis(rng.below(2 * think_ms + 1));
    let mut outstanding: Option<(u32, usize, Instant)> = None;
    let mut next_id: u32 = 2;
    let mut last_message: u64 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = tokio::time::sleep_until(next_call), if outstanding.is_none() => {
                let roll = rng.below(100) as u32;
                let kind = MIX.iter().position(|&bound| roll < bound).unwrap_or(0);
                let call = match kind {
                    0 => Call::ChatsGetChats(chats::GetChats { limit: Some(20), ..Default::default() }),
                    1 => Call::MessagesGetHistory(messages::GetHistory { chat_ref: Some(chat), limit: Some(20), offset: None }),
                    2 => Call::MessagesSendMessage(messages::SendMessage {
                        chat_ref: Some(chat),
                        message: format!("t:{} hello from a load client", epoch.elapsed().as_micros()),
                        ..Default::default()
                    }),
                    3 => Call::ChatsMarkChatRead(chats::MarkChatRead { chat_ref: Some(chat), message_id: last_message.max(group), read_amount: None }),
                    _ => Call::ChatsSetTyping(chats::SetTyping { chat_ref: Some(chat), typing: true, action: None }),
                };
                let id = next_id;
                next_id = next_id.wrapping_add(1).max(2);
                let bytes = ClientMessage { id, message: Some(call) }.encode_to_vec();
                outstanding = Some((id, kind, Instant::now()));
                if socket.send(Frame::Binary(bytes.into())).await.is_err() {
                    samples.errors += 1;
                    break;
                }
            }
            frame = socket.next() => {
                let Some(Ok(Frame::Binary(bytes))) = frame else {
                    if matches!(frame, None | Some(Err(_)) | Some(Ok(Frame::Close(_)))) {
                        samples.errors += 1;
                        break;
                    }
                    continue;
                };
                let Ok(message) = ServerMessage::decode(&bytes[..]) else { continue };
                match message.message {
                    Some(server_message::Message::Result(result)) => {
                        if let Some((id, kind, sent)) = outstanding
                            && id == result.req_id
                        {
                            let micros = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                            samples.request_us[kind].push(micros);
                            if matches!(result.result, Some(Answer::Error(_))) {
                                samples.errors += 1;
                            }
                            outstanding = None;
                            next_call = tokio::time::Instant::now() + Duration::from_millis(rng.below(2 * think_ms + 1));
                            if let Some(reconnect) = &reconnect
                                && rng.below(1_000) < reconnect.per_mille
                            {
                                drop(socket); // no close frame: the gateway sees the TCP connection end
                                match connect(reconnect.addr, reconnect.token.clone()).await {
                                    Ok(again) => socket = again,
                                    Err(_) => {
                                        samples.errors += 1;
                                        return samples;
                                    }
                                }
                                samples.disconnects += 1;
                            }
                        }
                    }
                    Some(server_message::Message::Update(update)) => {
                        if let Some(U::MessageCreated(created)) = update.update
                            && let Some(message) = created.message
                        {
                            last_message = last_message.max(message.message_id);
                            let sent_us = message.message.strip_prefix("t:").and_then(|rest| rest.split(' ').next()).and_then(|t| t.parse::<u128>().ok());
                            if let Some(sent_us) = sent_us {
                                let delay = epoch.elapsed().as_micros().saturating_sub(sent_us);
                                samples.delivery_us.push(u32::try_from(delay).unwrap_or(u32::MAX));
                            }
                        }
                    }
                    None => {}
                }
            }
        }
    }
    let _ = socket.close(None).await;
    samples
}
