//! A minimal WebSocket client of the gateway, for tests and the load tool: one call at a
//! time, updates that arrive meanwhile are kept in order for [`Client::next_update`].

use crate::error::GatewayError;
use futures_util::{SinkExt as _, StreamExt as _};
use osmium_proto::core::{ClientMessage, RpcResult, ServerMessage, client_message, server_message};
use osmium_proto::updates::Update;
use prost::Message as _;
use std::collections::VecDeque;
use std::net::SocketAddr;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as Frame;

/// One client connection.
#[derive(Debug)]
pub struct Client {
    socket: WebSocketStream<TcpStream>,
    next_id: u32,
    updates: VecDeque<Update>,
}

fn ws_error(err: impl std::fmt::Display) -> GatewayError {
    GatewayError::WebSocket(err.to_string())
}

impl Client {
    /// Connects to `ws://{addr}/`.
    pub async fn connect(addr: SocketAddr) -> Result<Client, GatewayError> {
        let stream = TcpStream::connect(addr).await.map_err(ws_error)?;
        stream.set_nodelay(true).map_err(ws_error)?;
        let (socket, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), stream).await.map_err(ws_error)?;
        Ok(Client { socket, next_id: 1, updates: VecDeque::new() })
    }

    /// Sends a call with the next request id and returns that id.
    pub async fn send(&mut self, message: client_message::Message) -> Result<u32, GatewayError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let bytes = ClientMessage { id, message: Some(message) }.encode_to_vec();
        self.send_frame(Frame::Binary(bytes.into())).await?;
        Ok(id)
    }

    /// Sends any frame as it is (for malformed input).
    pub async fn send_frame(&mut self, frame: Frame) -> Result<(), GatewayError> {
        self.socket.send(frame).await.map_err(ws_error)
    }

    /// The next frame from the server, as it is; `None` once the stream ended.
    pub async fn next_frame(&mut self) -> Result<Option<Frame>, GatewayError> {
        self.socket.next().await.transpose().map_err(ws_error)
    }

    /// The next server message (pings skipped); an error on close or a non-binary frame.
    pub async fn next_message(&mut self) -> Result<ServerMessage, GatewayError> {
        loop {
            match self.next_frame().await? {
                Some(Frame::Binary(bytes)) => return ServerMessage::decode(&bytes[..]).map_err(ws_error),
                Some(Frame::Ping(_) | Frame::Pong(_)) => continue,
                Some(other) => return Err(ws_error(format!("expected a binary frame, got {other:?}"))),
                None => return Err(ws_error("connection closed")),
            }
        }
    }

    /// The next result, keeping the updates that come first.
    pub async fn next_result(&mut self) -> Result<RpcResult, GatewayError> {
        loop {
            match self.next_message().await?.message {
                Some(server_message::Message::Result(result)) => return Ok(result),
                Some(server_message::Message::Update(update)) => self.updates.push_back(update),
                None => return Err(ws_error("server message without content")),
            }
        }
    }

    /// Sends a call and waits for its result (other results are an error).
    pub async fn call(&mut self, message: client_message::Message) -> Result<RpcResult, GatewayError> {
        let id = self.send(message).await?;
        let result = self.next_result().await?;
        if result.req_id != id {
            return Err(ws_error(format!("expected the result of request {id}, got {result:?}")));
        }
        Ok(result)
    }

    /// The next update (kept or newly read); a result meanwhile is an error.
    pub async fn next_update(&mut self) -> Result<Update, GatewayError> {
        if let Some(update) = self.updates.pop_front() {
            return Ok(update);
        }
        match self.next_message().await?.message {
            Some(server_message::Message::Update(update)) => Ok(update),
            other => Err(ws_error(format!("expected an update, got {other:?}"))),
        }
    }

    /// Updates received but not taken yet.
    pub fn pending_updates(&self) -> usize {
        self.updates.len()
    }

    /// Closes the connection normally.
    pub async fn close(mut self) -> Result<(), GatewayError> {
        self.socket.close(None).await.map_err(ws_error)
    }
}
