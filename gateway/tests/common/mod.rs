//! Helpers shared by the gateway's test files (a server on an ephemeral port, signed-in
//! clients, metrics). Each test file uses a part of them.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use osmium_engine::{Durability, EngineConfig, LogConfig};
use osmium_gateway::client::Client;
use osmium_gateway::{Gateway, GatewayLimits, ServerConfig, tokens};
use osmium_proto::auth;
use osmium_proto::core::RpcResult;
use osmium_proto::core::client_message::Message as Call;
use osmium_proto::core::rpc_result::Result as Answer;
use osmium_proto::ids::UserId;
use osmium_proto::refs::{ChatRef, GroupRef, UserRef, chat_ref::Ref};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

pub const ANN: UserId = UserId(1001);
pub const BOB: UserId = UserId(1002);
pub const EVE: UserId = UserId(1005);
/// The bound on every wait for something that should come.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn config(dir: &Path, limits: GatewayLimits) -> ServerConfig {
    ServerConfig {
        engine: EngineConfig {
            log: LogConfig { durability: Durability::Buffered, ..LogConfig::default() },
            ..EngineConfig::default()
        },
        limits,
        ..ServerConfig::ephemeral(dir)
    }
}

pub async fn start_with(dir: &Path, limits: GatewayLimits) -> Gateway {
    Gateway::start(config(dir, limits)).await.unwrap()
}

pub async fn connect(gateway: &Gateway) -> Client {
    Client::connect(gateway.local_addr()).await.unwrap()
}

pub async fn call(client: &mut Client, message: Call) -> RpcResult {
    tokio::time::timeout(WAIT, client.call(message)).await.expect("result in time").unwrap()
}

/// A new connection signed in as `user` with a new token.
pub async fn signed_in(gateway: &Gateway, dir: &Path, user: UserId, name: &str) -> Client {
    let token = tokens::create_token(dir, user, name).await.unwrap();
    let mut client = connect(gateway).await;
    let result = call(&mut client, Call::AuthAuthorize(auth::Authorize { token })).await;
    assert!(matches!(result.result, Some(Answer::Authorization(_))), "{result:?}");
    client
}

pub fn error_code(result: &RpcResult) -> Option<u32> {
    match &result.result {
        Some(Answer::Error(error)) => Some(error.error_code),
        _ => None,
    }
}

pub fn group_ref(id: u64) -> ChatRef {
    ChatRef { r#ref: Some(Ref::Group(GroupRef { group_id: id })) }
}

pub fn user_ref(user: UserId) -> ChatRef {
    ChatRef { r#ref: Some(Ref::User(UserRef { user_id: user.get() })) }
}

/// The body of `GET /metrics` once every line of `expected` is in it (within `WAIT`).
pub async fn metrics_with(gateway: &Gateway, expected: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut http = tokio::net::TcpStream::connect(gateway.metrics_addr().unwrap()).await.unwrap();
        http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut body = String::new();
        http.read_to_string(&mut body).await.unwrap();
        let missing: Vec<_> = expected.iter().filter(|line| !body.lines().any(|got| got == **line)).collect();
        if missing.is_empty() {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "missing {missing:?} in\n{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that no frame but pings arrives for a moment (updates already taken by the
/// client included).
pub async fn assert_quiet(client: &mut Client) {
    use tokio_tungstenite::tungstenite::Message as Frame;
    if client.pending_updates() > 0 {
        panic!("update left unchecked: {:?}", client.next_update().await);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    loop {
        match tokio::time::timeout_at(deadline, client.next_frame()).await {
            Err(_) => return,
            Ok(Ok(Some(Frame::Ping(_) | Frame::Pong(_)))) => continue,
            Ok(other) => panic!("unexpected frame: {other:?}"),
        }
    }
}

/// Disconnects the clients, then shuts down (a client that is not polled would never
/// answer the server's close frame, and shutdown would wait for it).
pub async fn stop<const N: usize>(gateway: Gateway, clients: [Client; N]) {
    drop(clients);
    gateway.shutdown().await;
}
