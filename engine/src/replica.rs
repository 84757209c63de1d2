//! Replicated mode (issue #15): an engine node that is a full replica of the state kept in
//! a NATS JetStream log ([`osmium_cluster::JetStreamLog`]).
//!
//! **What it owns:** the node's side of the replicated log: publishing each decision with
//! the expected last position of its stream, deciding again after a conflict (at most
//! `decide_retries_max` times, then [`EngineError::DecideRetriesExhausted`]), folding the
//! log's records in log order into the local log and projections (the ingest), the
//! checkpoint (the last folded JetStream position, stored with the local log batch that
//! holds its events) and answering a caller only once this node folded its record.
//!
//! How one command goes (all on the state machine thread except the publish itself):
//! 1. decided against the folded state, **not folded**; a refused command writes nothing;
//! 2. while this node has a publish on the command's stream in flight (or awaits the fold
//!    of its record), the command is parked behind it and decided again afterwards (so a
//!    node never conflicts with itself);
//! 3. its events are published as one record with `ExpectedLast::at(last folded position
//!    of the stream)` and the command's idempotency key (a send's `client_id` key; for a
//!    decision that creates a DM, the key `dm:<lower user>:<higher user>`, which only the
//!    first node to claim it gets: two nodes cannot both create the same DM);
//! 4. acknowledged at position `p`: the caller is answered in the completion of the first
//!    local batch whose fold reached `p` (read-your-writes for the node's own clients);
//!    a conflict (`found`) or a DM created by another node: the command waits until the
//!    fold reached that record, then is decided again.
//!
//! The ingest: one task follows `tail(checkpoint + 1)` and hands every record to the state
//! machine, which stages it in the local log (positions there stay gapless and identical
//! on every node, since all fold the same order), folds it and records the checkpoint and
//! the stream's last position in the same write batch.
//!
//! What is not covered: a username (unique across user streams) can be taken by two
//! nodes at once (the expected-position check is per stream); the client's idempotency
//! key of the first message of a new DM is replaced by the DM key; an idempotency key
//! reused for another request is not recognised across nodes (JetStream keeps no
//! fingerprint).

use crate::error::{EngineError, OpenError};
use crate::log::Append;
use crate::state_machine::{Command, DecideContext, EffectBatch, Output, Request, StateMachine};
use crossbeam_channel::{Sender, TrySendError};
use osmium_cluster::{ExpectedLast, JetStreamLog, JetStreamLogConfig, LogError, Record};
use osmium_proto::events::event_envelope::Event;
use osmium_proto::ids::{Position, StreamId, UserId};
use rocksdb::DB;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How many times a command is decided again after conflicts, by default.
pub const DECIDE_RETRIES_MAX_DEFAULT: u32 = 32;
/// How long opening a node waits, by default, for it to fold the log up to the log's last
/// position at open, in milliseconds.
pub const OPEN_CATCH_UP_TIMEOUT_MS_DEFAULT: u64 = 10 * 60 * 1_000;
/// How often opening checks whether the node caught up, in milliseconds.
const OPEN_CATCH_UP_POLL_MS: u64 = 10;
/// How often the log's last position is read for the fold lag, in milliseconds.
pub const FOLD_LAG_POLL_MS: u64 = 500;
/// How long a command waits before deciding again when another node's DM creation is
/// claimed but not stored yet, in milliseconds.
const DM_CLAIM_WAIT_MS: u64 = 50;
/// How long a task waits for room in the full command queue before trying again, in
/// milliseconds.
const QUEUE_FULL_WAIT_MS: u64 = 1;

/// The sequence bits of a snowflake id.
const SNOWFLAKE_SEQUENCE_MASK: u64 = (1 << crate::clock::SNOWFLAKE_SEQUENCE_BITS) - 1;

/// Meta key of the last folded JetStream position (the node's checkpoint).
const META_FOLDED: &[u8] = b"replica/folded";
/// Meta key prefix of each stream's last folded JetStream position.
const META_STREAM_LAST: &str = "replica/stream_last/";

/// How an engine node uses the replicated log.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// The JetStream log (servers, stream names, timeouts).
    pub log: JetStreamLogConfig,
    /// How many times a command is decided again after conflicts before
    /// [`EngineError::DecideRetriesExhausted`].
    pub decide_retries_max: u32,
    /// Opening waits until the node folded the log up to its last position at open (it
    /// then serves nothing older than that), at most this long, in milliseconds.
    pub open_catch_up_timeout_ms: u64,
}

impl ReplicaConfig {
    /// The defaults for a log on `servers` (`nats://host:port` URLs).
    pub fn with_servers(servers: Vec<String>) -> Self {
        ReplicaConfig {
            log: JetStreamLogConfig::with_servers(servers),
            decide_retries_max: DECIDE_RETRIES_MAX_DEFAULT,
            open_catch_up_timeout_ms: OPEN_CATCH_UP_TIMEOUT_MS_DEFAULT,
        }
    }
}

/// A command on its way through the replicated log.
pub(crate) struct Pending {
    command: Command,
    /// How many times it was decided and conflicted.
    attempts: u32,
    /// How many of its records (or records found under its key) were void: its
    /// idempotency key gets this suffix, so that a retry never finds a void record again.
    voids: u32,
}

impl Pending {
    fn new(command: Command) -> Pending {
        Pending { command, attempts: 0, voids: 0 }
    }
}

/// Void records remembered for acknowledgements that arrive after their fold, in positions.
const VOIDED_KEPT_POSITIONS: u64 = 100_000;

/// One publish, from the state machine to the publisher task.
pub(crate) struct Publish {
    stream: StreamId,
    expected: ExpectedLast,
    actor: UserId,
    events: Vec<Event>,
    key: Option<Vec<u8>>,
    /// The key is the DM key (not the caller's): a record found under it is another
    /// command's.
    dm_key: bool,
    output: Output,
    pending: Pending,
}

/// The outcome of a publish, back on the state machine thread.
pub(crate) struct Published {
    stream: StreamId,
    pending: Pending,
    outcome: Outcome,
}

enum Outcome {
    /// Stored at this position: answer once folded.
    Stored { position: u64, output: Result<Output, EngineError> },
    /// Decide again once the fold reached this position.
    Retry { after: u64 },
    /// Failed: answer the error.
    Failed(EngineError),
}

/// A stream on which this node has a publish in flight or awaits its record's fold.
#[derive(Default)]
struct Busy {
    /// Released once the fold reached this position (`None`: the publish is in flight).
    until: Option<u64>,
    /// Commands on the stream decided after it: decided again once released.
    parked: VecDeque<Pending>,
}

type Answer = (oneshot::Sender<Result<Output, EngineError>>, Result<Output, EngineError>);

/// A command whose record is stored, with what it answers once folded.
type Stored = (Pending, Result<Output, EngineError>);

/// The replicated mode's part of the state machine (lives on its thread).
pub(crate) struct Replica {
    db: Arc<DB>,
    publish: mpsc::UnboundedSender<Publish>,
    /// The last folded JetStream position.
    folded: u64,
    link: Arc<Link>,
    stream_last: HashMap<StreamId, u64>,
    busy: HashMap<StreamId, Busy>,
    /// Commands whose record is stored, waiting for its fold (then answered, or decided
    /// again when the record is void), by its position.
    waiting: BTreeMap<u64, Vec<Stored>>,
    /// Positions of recent void records (stored, but not after the record they expected).
    voided: std::collections::BTreeSet<u64>,
    /// Checkpoint writes not in a written batch yet: a batch without events (only void
    /// records) is not written, so they go again into every batch until one is.
    carry: BTreeMap<Vec<u8>, u64>,
    retries_max: u32,
}

/// What the node's tasks share with the engine.
#[derive(Debug)]
pub(crate) struct Link {
    /// The state machine's queue; emptied when the engine closes, so that no task keeps
    /// it open.
    commands: Mutex<Option<Sender<Request>>>,
    /// The last folded JetStream position that reads see.
    folded: AtomicU64,
    /// Where the ingest starts: the checkpoint at open.
    checkpoint: u64,
    /// Folded batches not known visible yet: (the local log's last position of the batch,
    /// the last JetStream position it folded), in order.
    folds: Mutex<VecDeque<(u64, u64)>>,
    /// What reads see (weak: the tasks never keep the database open).
    views: std::sync::Weak<crate::view::Views>,
    /// The log's last position, as last read.
    pub(crate) log_last: AtomicU64,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    publish_rx: Mutex<Option<mpsc::UnboundedReceiver<Publish>>>,
}

impl Link {
    /// Stops the node's tasks and lets go of the queue.
    pub(crate) fn close(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
        if let Ok(mut commands) = self.commands.lock() {
            commands.take();
        }
    }

    /// How far the fold (as reads see it) is behind the log (positions).
    pub(crate) fn fold_lag(&self) -> u64 {
        self.log_last.load(Ordering::Relaxed).saturating_sub(self.folded())
    }

    /// The last JetStream position folded into what reads see.
    pub(crate) fn folded(&self) -> u64 {
        if let (Some(views), Ok(mut folds)) = (self.views.upgrade(), self.folds.lock()) {
            let visible = views.position().get();
            while let Some(&(local, folded)) = folds.front() {
                if local > visible {
                    break;
                }
                self.folded.fetch_max(folded, Ordering::AcqRel);
                folds.pop_front();
            }
        }
        self.folded.load(Ordering::Acquire)
    }

    /// Hands `request` to the state machine, waiting while its queue is full. False once
    /// the engine is closed.
    async fn deliver(&self, mut request: Request) -> bool {
        loop {
            let sender = match self.commands.lock() {
                Ok(commands) => commands.clone(),
                Err(_) => None,
            };
            let Some(sender) = sender else { return false };
            match sender.try_send(request) {
                Ok(()) => return true,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) => {
                    request = back;
                    drop(sender);
                    tokio::time::sleep(Duration::from_millis(QUEUE_FULL_WAIT_MS)).await;
                }
            }
        }
    }
}

fn meta_cf(db: &DB) -> Result<&rocksdb::ColumnFamily, EngineError> {
    crate::directory::column_family(db, crate::schema::CF_META)
}

fn stream_last_key(stream: StreamId) -> Vec<u8> {
    format!("{META_STREAM_LAST}{stream}").into_bytes()
}

fn read_u64(db: &DB, key: &[u8]) -> Result<u64, EngineError> {
    let value = db.get_cf(meta_cf(db)?, key).map_err(EngineError::storage("reading the replica checkpoint"))?;
    Ok(value.as_deref().and_then(crate::schema::parse_u64).unwrap_or(0))
}

/// The replica part of a state machine on `db`, and what its tasks share.
pub(crate) fn open(
    db: Arc<DB>,
    views: &Arc<crate::view::Views>,
    commands: Sender<Request>,
    retries_max: u32,
) -> Result<(Replica, Arc<Link>), OpenError> {
    let folded = read_u64(&db, META_FOLDED)?;
    let (publish, publish_rx) = mpsc::unbounded_channel();
    let link = Arc::new(Link {
        commands: Mutex::new(Some(commands)),
        folded: AtomicU64::new(folded),
        checkpoint: folded,
        folds: Mutex::new(VecDeque::new()),
        views: Arc::downgrade(views),
        log_last: AtomicU64::new(folded),
        tasks: Mutex::new(Vec::new()),
        publish_rx: Mutex::new(Some(publish_rx)),
    });
    let replica = Replica {
        db,
        publish,
        folded,
        link: link.clone(),
        stream_last: HashMap::new(),
        busy: HashMap::new(),
        waiting: BTreeMap::new(),
        voided: std::collections::BTreeSet::new(),
        carry: BTreeMap::new(),
        retries_max,
    };
    Ok((replica, link))
}

/// Starts the node's tasks (ingest, publisher, fold lag) on the current runtime.
pub(crate) fn start(link: &Arc<Link>, log: Arc<JetStreamLog>) {
    let publish_rx = link.publish_rx.lock().ok().and_then(|mut rx| rx.take());
    let mut tasks = Vec::new();
    if let Some(publish_rx) = publish_rx {
        tasks.push(tokio::spawn(publisher(log.clone(), link.clone(), publish_rx)));
    }
    tasks.push(tokio::spawn(ingest(log.clone(), link.clone())));
    tasks.push(tokio::spawn(fold_lag(log, link.clone())));
    if let Ok(mut running) = link.tasks.lock() {
        running.extend(tasks);
    }
}

/// Waits until the node folded the log up to its last position now (at most `timeout_ms`).
pub(crate) async fn catch_up(link: &Link, log: &JetStreamLog, timeout_ms: u64) -> Result<(), OpenError> {
    let last = log.last_position().await.map_err(|err| OpenError::ReplicatedLog { reason: err.to_string() })?.get();
    link.log_last.fetch_max(last, Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    while link.folded() < last {
        if tokio::time::Instant::now() >= deadline {
            return Err(OpenError::ReplicatedLog {
                reason: format!(
                    "folded the log up to position {} of {last} in {timeout_ms} ms (open_catch_up_timeout_ms)",
                    link.folded()
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(OPEN_CATCH_UP_POLL_MS)).await;
    }
    Ok(())
}

/// Follows the log from the checkpoint on and hands every record to the state machine.
async fn ingest(log: Arc<JetStreamLog>, link: Arc<Link>) {
    use futures_util::StreamExt as _;
    let from = link.checkpoint + 1;
    let mut tail = log.tail(Position(from));
    while let Some(record) = tail.next().await {
        match record {
            Ok(record) => {
                if !link.deliver(Request::Ingest(record)).await {
                    return;
                }
            }
            Err(err) => {
                // The next record would leave a gap: stop folding (the lag shows it).
                tracing::error!(%err, "a record of the replicated log does not decode; this node stops folding");
                return;
            }
        }
    }
}

/// Reads the log's last position every [`FOLD_LAG_POLL_MS`].
async fn fold_lag(log: Arc<JetStreamLog>, link: Arc<Link>) {
    let mut tick = tokio::time::interval(Duration::from_millis(FOLD_LAG_POLL_MS));
    loop {
        tick.tick().await;
        if let Ok(last) = log.last_position().await {
            link.log_last.fetch_max(last.get(), Ordering::Relaxed);
        }
        link.folded(); // also keeps the list of folds not known visible short
    }
}

/// Publishes each decision (concurrently) and hands back the outcome.
async fn publisher(log: Arc<JetStreamLog>, link: Arc<Link>, mut publishes: mpsc::UnboundedReceiver<Publish>) {
    while let Some(publish) = publishes.recv().await {
        let (log, link) = (log.clone(), link.clone());
        tokio::spawn(async move {
            let published = publish_one(&log, publish).await;
            link.deliver(Request::Published(published)).await;
        });
    }
}

async fn publish_one(log: &JetStreamLog, publish: Publish) -> Published {
    let Publish { stream, expected, actor, events, key, dm_key, output, pending } = publish;
    let outcome = match log.append(stream, expected, actor, events, key).await {
        Ok(appended) if appended.deduplicated && dm_key => Outcome::Retry { after: appended.position().get() },
        Ok(appended) => {
            let output = if appended.deduplicated { (pending.command.replay)(&appended.record.events) } else { Ok(output) };
            Outcome::Stored { position: appended.position().get(), output }
        }
        Err(LogError::Conflict { found, .. }) => Outcome::Retry { after: found.get() },
        Err(LogError::Duplicate { original_position, .. }) if dm_key => {
            if original_position == Position::ZERO {
                tokio::time::sleep(Duration::from_millis(DM_CLAIM_WAIT_MS)).await;
            }
            Outcome::Retry { after: original_position.get() }
        }
        Err(LogError::Unavailable { operation, detail }) => {
            Outcome::Failed(EngineError::LogUnavailable { reason: format!("{operation}: {detail}") })
        }
        Err(err) => Outcome::Failed(EngineError::ReplicatedLog { reason: err.to_string() }),
    };
    Published { stream, pending, outcome }
}

/// The DM key of a decision creating a DM.
fn dm_key(events: &[Event]) -> Option<Vec<u8>> {
    events.iter().find_map(|event| match event {
        Event::DirectChatCreated(created) => {
            let (low, high) = (created.user_a.min(created.user_b), created.user_a.max(created.user_b));
            Some(format!("dm:{low}:{high}").into_bytes())
        }
        _ => None,
    })
}

impl Replica {
    /// Runs one batch's work on the state machine thread: folds the ingested records,
    /// takes in publish outcomes, then decides the commands. Answers go to `answers`
    /// (sent in the batch's completion). `Err` is fatal (a record that does not fold).
    pub(crate) fn run(
        &mut self,
        machine: &mut StateMachine,
        commands: Vec<Command>,
        work: Vec<Request>,
        log_batch: &mut crate::log::LogBatch,
        answers: &mut Vec<Answer>,
        effects: &mut EffectBatch,
    ) -> Result<(), EngineError> {
        let mut ready: VecDeque<Pending> = VecDeque::new();
        let folded_before = self.folded;
        let meta = meta_cf(&self.db)?;
        for (key, value) in &self.carry {
            log_batch.write_batch.put_cf(meta, key, value.to_be_bytes());
        }
        for request in work {
            match request {
                Request::Ingest(record) => self.ingest(machine, record, log_batch, effects)?,
                Request::Published(published) => self.published(published, answers, &mut ready),
                Request::Command(command) => ready.push_back(Pending::new(command)),
                Request::Flush(_) => {}
            }
        }
        ready.extend(commands.into_iter().map(Pending::new));
        self.release(answers, &mut ready);
        while let Some(pending) = ready.pop_front() {
            self.decide(machine, pending, answers)?;
        }
        if !log_batch.is_empty() {
            self.carry.clear(); // written with this batch
        }
        if self.folded > folded_before
            && let Ok(mut folds) = self.link.folds.lock()
        {
            folds.push_back((log_batch.last_position().get(), self.folded));
        }
        Ok(())
    }

    /// Answers and streams that the fold released.
    fn release(&mut self, answers: &mut Vec<Answer>, ready: &mut VecDeque<Pending>) {
        while let Some(entry) = self.waiting.first_entry() {
            if *entry.key() > self.folded {
                break;
            }
            let void = self.voided.contains(entry.key());
            for (mut pending, output) in entry.remove() {
                if void {
                    pending.attempts += 1;
                    pending.voids += 1;
                    ready.push_back(pending);
                } else {
                    answers.push((pending.command.reply, output));
                }
            }
        }
        if let Some(&oldest) = self.voided.first()
            && oldest + VOIDED_KEPT_POSITIONS < self.folded
        {
            self.voided = self.voided.split_off(&(self.folded - VOIDED_KEPT_POSITIONS));
        }
        let folded = self.folded;
        let released: Vec<StreamId> =
            self.busy.iter().filter(|(_, busy)| busy.until.is_some_and(|until| until <= folded)).map(|(stream, _)| *stream).collect();
        for stream in released {
            if let Some(busy) = self.busy.remove(&stream) {
                ready.extend(busy.parked);
            }
        }
    }

    fn published(&mut self, published: Published, answers: &mut Vec<Answer>, ready: &mut VecDeque<Pending>) {
        let Published { stream, mut pending, outcome } = published;
        match outcome {
            Outcome::Stored { position, output } => {
                self.busy.entry(stream).or_default().until = Some(position);
                self.waiting.entry(position).or_default().push((pending, output));
            }
            Outcome::Retry { after } => {
                pending.attempts += 1;
                if self.voided.contains(&after) {
                    pending.voids += 1; // the DM record found under its key is void
                }
                let busy = self.busy.entry(stream).or_default();
                busy.until = Some(after);
                busy.parked.push_front(pending);
            }
            Outcome::Failed(err) => {
                answers.push((pending.command.reply, Err(err)));
                if let Some(busy) = self.busy.remove(&stream) {
                    ready.extend(busy.parked);
                }
            }
        }
    }

    fn stream_last(&mut self, stream: StreamId) -> Result<u64, EngineError> {
        if let Some(last) = self.stream_last.get(&stream) {
            return Ok(*last);
        }
        if self.stream_last.len() >= crate::log::STREAM_VERSIONS_CACHED_MAX {
            self.stream_last.clear();
        }
        let last = read_u64(&self.db, &stream_last_key(stream))?;
        self.stream_last.insert(stream, last);
        Ok(last)
    }

    /// Decides one command and publishes its events (or parks it behind this node's
    /// publish on the same stream). `Err` only for a storage error (fatal).
    fn decide(&mut self, machine: &mut StateMachine, pending: Pending, answers: &mut Vec<Answer>) -> Result<(), EngineError> {
        if pending.attempts > self.retries_max {
            answers.push((pending.command.reply, Err(EngineError::DecideRetriesExhausted { attempts: pending.attempts })));
            return Ok(());
        }
        let now_ms = machine.clock.now_ms();
        let mut context = DecideContext { state: &mut machine.state, now_ms, ids: &mut machine.ids };
        let decision = match (pending.command.decide)(&mut context) {
            Ok(decision) => decision,
            Err(refused) => {
                answers.push((pending.command.reply, Err(refused)));
                return Ok(());
            }
        };
        if decision.append.events.is_empty() {
            answers.push((pending.command.reply, Ok(decision.output)));
            return Ok(());
        }
        let stream = decision.append.stream;
        if let Some(busy) = self.busy.get_mut(&stream) {
            busy.parked.push_back(pending);
            return Ok(());
        }
        let expected = ExpectedLast::at(Position(self.stream_last(stream)?));
        let Append { actor, events, .. } = decision.append;
        let dm = dm_key(&events);
        let dm_key = dm.is_some();
        let mut key = dm.or_else(|| pending.command.idempotency.as_ref().map(|idempotency| idempotency.key.clone()));
        if let Some(key) = key.as_mut()
            && pending.voids > 0
        {
            key.extend_from_slice(format!("#{}", pending.voids).as_bytes());
        }
        self.busy.insert(stream, Busy::default());
        let publish = Publish { stream, expected, actor, events, key, dm_key, output: decision.output, pending };
        if let Err(mpsc::error::SendError(publish)) = self.publish.send(publish) {
            self.busy.remove(&stream);
            answers.push((publish.pending.command.reply, Err(EngineError::Closed)));
        }
        Ok(())
    }

    /// Stages one record in the local log and folds it.
    fn ingest(
        &mut self,
        machine: &mut StateMachine,
        record: Record,
        log_batch: &mut crate::log::LogBatch,
        effects: &mut EffectBatch,
    ) -> Result<(), EngineError> {
        let position = record.position.get();
        if position <= self.folded {
            return Ok(()); // delivered again after the tail recreated its consumer
        }
        if position != self.folded + 1 {
            return Err(EngineError::Corrupt {
                what: "the replicated log's tail".into(),
                expected: format!("position {}", self.folded + 1),
                found: format!("position {position}"),
            });
        }
        let Some(first) = record.events.first() else {
            return Err(EngineError::Corrupt {
                what: format!("record at position {position} of the replicated log"),
                expected: "1 or more events".into(),
                found: "none".into(),
            });
        };
        let (actor, recorded_at_ms) = (UserId(first.actor_id), first.recorded_at_ms);
        // Serializability, checked here because JetStream 2.9 does not (nats-server#4320):
        // a record that did not follow the stream's record its appender expected was
        // decided against an older state. Every node voids it alike (same order, same
        // check): nothing of it is folded, and its appender decides again.
        let previous = self.stream_last(record.stream)?;
        let meta = meta_cf(&self.db)?;
        for key in [META_FOLDED.to_vec(), stream_last_key(record.stream)] {
            log_batch.write_batch.put_cf(meta, &key, position.to_be_bytes());
            self.carry.insert(key, position);
        }
        self.stream_last.insert(record.stream, position);
        self.folded = position;
        if record.expected_last().is_some_and(|expected| expected != previous) {
            tracing::debug!(position, stream = %record.stream, ?previous, "a void record (not after the record it expected)");
            self.voided.insert(position);
            return Ok(());
        }
        let events: Vec<Event> = record.events.into_iter().filter_map(|envelope| envelope.event).collect();
        for event in &events {
            // This node's ids stay above every folded message's: a chat's messages keep
            // increasing ids whichever node decided them.
            // (Past the whole millisecond's sequence: a lower worker id in the same
            // millisecond would make a smaller id.)
            if let Event::MessageSent(sent) = event {
                machine.ids.advance_past(sent.message_id | SNOWFLAKE_SEQUENCE_MASK);
            }
        }
        let append = Append {
            stream: record.stream,
            expected_version: crate::log::ExpectedVersion::Any,
            actor,
            events,
            idempotency_key: None,
            fingerprint: None,
        };
        let envelopes = machine.sequencer.stage(append, recorded_at_ms, log_batch)?;
        for envelope in &envelopes {
            let mut told = Vec::new();
            osmium_projections::apply_with_effects(&mut machine.state, envelope, &mut told)?;
            effects.extend(told.into_iter().map(|effect| (Position(envelope.position), effect)));
        }
        Ok(())
    }
}
