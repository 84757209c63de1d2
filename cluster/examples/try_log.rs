//! Appends to the log on a running cluster, reads it back and follows its tail for a few
//! seconds. Start the cluster first (`bash scripts/cluster.sh`), then:
//!
//! ```sh
//! cargo run --release -p osmium-cluster --example try_log [-- nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224]
//! ```
//!
//! Kill a node (`bash scripts/cluster.sh status` lists their pids) while it runs to see the
//! appends wait for a new leader and go on.

use futures_util::StreamExt as _;
use osmium_cluster::{ExpectedLast, JetStreamLog, JetStreamLogConfig, LogError};
use osmium_proto::events::{MessageSent, event_envelope::Event};
use osmium_proto::ids::{ChatId, Position, StreamId, UserId};
use std::time::{Duration, Instant};

/// Appends made, one every [`APPEND_EVERY_MS`].
const APPENDS: u64 = 20;
/// Pause between two appends, in milliseconds.
const APPEND_EVERY_MS: u64 = 250;
/// How long the tail is followed after the last append, in milliseconds.
const TAIL_AFTER_MS: u64 = 2_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let servers = std::env::args().nth(1).unwrap_or_else(|| {
        "nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224".to_owned()
    });
    let log = JetStreamLog::open(JetStreamLogConfig::with_servers(
        servers.split(',').map(str::to_owned).collect(),
    ))
    .await?;
    let chat = StreamId::Chat(ChatId(1));
    let start = log.last_position().await?;
    println!("log at position {start}; {:?}", log.replication().await?);

    let mut tail = log.tail(start.next());
    let follower = tokio::spawn(async move {
        let deadline =
            Instant::now() + Duration::from_millis(APPENDS * APPEND_EVERY_MS + TAIL_AFTER_MS);
        while let Ok(Some(record)) = tokio::time::timeout_at(deadline.into(), tail.next()).await {
            match record {
                Ok(record) => println!(
                    "  tail: position {} ({}, {} event(s))",
                    record.position,
                    record.stream,
                    record.events.len()
                ),
                Err(error) => println!("  tail: {error}"),
            }
        }
    });

    let run = std::process::id();
    for index in 0..APPENDS {
        let expected = ExpectedLast::at(log.stream_last_position(chat).await?);
        let event = Event::MessageSent(MessageSent {
            message_id: index,
            author_id: 1,
            text: format!("hello {index}"),
            ..Default::default()
        });
        let key = format!("try:{run}:{index}").into_bytes();
        let started = Instant::now();
        match log
            .append(chat, expected, UserId(1), vec![event], Some(key))
            .await
        {
            Ok(appended) => println!(
                "append {index}: position {} in {} ms",
                appended.position(),
                started.elapsed().as_millis()
            ),
            Err(error @ LogError::Unavailable { .. }) => {
                println!("append {index}: {error} (retry with the same key)")
            }
            Err(error) => return Err(error.into()),
        }
        tokio::time::sleep(Duration::from_millis(APPEND_EVERY_MS)).await;
    }
    follower.await?;
    let records = log.read(start.next(), APPENDS as usize).await?;
    println!(
        "read back {} records from position {}",
        records.len(),
        records
            .first()
            .map_or(Position::ZERO, |record| record.position)
    );
    Ok(())
}
