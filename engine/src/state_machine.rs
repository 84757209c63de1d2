//! The state machine: one thread that decides every command against the projections in
//! memory and folds every event, in log order, into them.
//!
//! Per batch of queued commands: each is decided (against the state including every
//! earlier command, durable or not), its events are staged in the log with their
//! positions and folded at once, so the next command sees them. The batch then goes to
//! the log writer with a completion that, once the batch is durable, publishes its
//! projection writes to readers, answers the callers and hands the fold's effects to the
//! update fan-out. The thread goes on with the next batch meanwhile (pipelining): CPU
//! overlaps the disk. Every `flush_interval_ms` or `flush_events_max` events (or when the
//! memory budget is reached) the batch is also a cut: its completion freezes the layer
//! readers see and queues it for the flusher.
//!
//! Architecture invariants: nothing is folded twice (each event once, here or at recovery);
//! no caller is answered before its events are durable; a command that is refused stages
//! nothing; a fold error after an accepted decision is an engine bug: the batch is dropped
//! unwritten and the engine refuses further writes (reopening folds the log again).

use crate::clock::{Clock, SnowflakeGenerator};
use crate::error::EngineError;
use crate::log::{Append, LogBatch, LogWriter, Sequencer, panic_reason};
use crate::persist::{FlushState, Flusher};
use crate::view::{RocksSource, Views};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use osmium_projections::ProjectionState;
use osmium_projections::catch_up::Told;
use osmium_proto::events::EventEnvelope;
use osmium_proto::ids::{ChatId, MessageId, Position};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// The projections as the state machine holds them.
pub(crate) type LiveState = ProjectionState<RocksSource>;

/// What a command created, returned to its caller (and again to a retry with the same
/// idempotency key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Nothing to return.
    Done,
    /// The message sent.
    Message(MessageId),
    /// The chat created or changed.
    Chat(ChatId),
    /// The invite code created.
    Invite(String),
    /// How many invites a purge deleted.
    Purged(usize),
}

/// What a command's decision sees: the state (read it; never change it: the fold does),
/// the time of the batch and the id generator.
pub(crate) struct DecideContext<'a> {
    /// The projections, including every earlier command's events.
    pub(crate) state: &'a mut LiveState,
    /// The time of this decision (unix ms).
    pub(crate) now_ms: u64,
    pub(crate) ids: &'a mut SnowflakeGenerator,
}

impl DecideContext<'_> {
    /// A new snowflake id (strictly increasing across the whole engine).
    pub(crate) fn next_id(&mut self) -> u64 {
        self.ids.next_id()
    }
}

/// A decision: the events to append, and what the caller gets.
#[derive(Debug)]
pub(crate) struct Decision {
    pub(crate) append: Append,
    pub(crate) output: Output,
}

/// Decides a command on the state machine thread; refusing writes nothing. Re-runnable:
/// a replicated node decides again after a conflict (`replica`).
pub(crate) type Decide = Box<dyn Fn(&mut DecideContext<'_>) -> Result<Decision, EngineError> + Send>;

/// The output of an earlier append with the same idempotency key, from its events.
pub(crate) type Replay = fn(&[EventEnvelope]) -> Result<Output, EngineError>;

/// A command's idempotency key and what binds it to the request.
#[derive(Clone, Debug)]
pub(crate) struct Idempotency {
    /// The key (for sends: the sender and their `client_id`).
    pub(crate) key: Vec<u8>,
    /// The client's id, for errors.
    pub(crate) client_id: u64,
    /// A digest of the request (kind, chat, content): a retry must repeat it.
    pub(crate) fingerprint: [u8; 16],
}

/// One queued command.
pub(crate) struct Command {
    pub(crate) idempotency: Option<Idempotency>,
    pub(crate) decide: Decide,
    pub(crate) replay: Replay,
    pub(crate) reply: oneshot::Sender<Result<Output, EngineError>>,
}

/// What the state machine is asked to do.
pub(crate) enum Request {
    /// Decide a command.
    Command(Command),
    /// Cut now; answers the number of the flush that holds everything decided before.
    Flush(oneshot::Sender<u64>),
    /// Replicated mode: a record of the replicated log to fold (the next position).
    Ingest(osmium_cluster::Record),
    /// Replicated mode: the outcome of publishing a decision.
    Published(crate::replica::Published),
}

/// Effects of one durable batch, each with the position of the event that caused it.
pub(crate) type EffectBatch = Vec<(Position, Told)>;

/// When the state is cut for a flush.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FlushPolicy {
    pub(crate) interval_ms: u64,
    pub(crate) events_max: u64,
}

/// Everything the thread owns.
pub(crate) struct StateMachine {
    pub(crate) state: LiveState,
    pub(crate) sequencer: Sequencer,
    pub(crate) ids: SnowflakeGenerator,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) writer: Arc<LogWriter>,
    pub(crate) flusher: Arc<Flusher>,
    pub(crate) flush_state: Arc<FlushState>,
    pub(crate) views: Arc<Views>,
    pub(crate) effects: mpsc::UnboundedSender<EffectBatch>,
    pub(crate) policy: FlushPolicy,
    pub(crate) batch_max: usize,
    /// Whether a batch may end early while the writer is idle, its other commands carried
    /// to the next batch (see [`StateMachine::run`]): for `Sync` logs, whose commits cost
    /// a sync, about the same for few events as for many.
    pub(crate) submit_when_writer_idle: bool,
    /// Nanoseconds a command took lately to decide, stage and fold (a moving average over
    /// about as many batches as the writer's `commit_ns`).
    pub(crate) command_ns: u64,
    /// How long an idempotency key is remembered, in milliseconds.
    pub(crate) idempotency_window_ms: u64,
    /// Set by a failed commit (on the writer thread) or a fold error: refuse everything.
    pub(crate) failure: Arc<std::sync::Mutex<Option<String>>>,
    pub(crate) meters: Arc<crate::meters::Meters>,
    /// Where the writes since the last cut go, each batch's under its sequence number:
    /// readers see them once the engine publishes that number (the batch is durable).
    pub(crate) active: Arc<osmium_projections::Layer>,
    /// The sequence number of the last batch with projection writes.
    pub(crate) batch_seq: u64,
    /// Replicated mode (`None`: the embedded log decides and folds here).
    pub(crate) replica: Option<crate::replica::Replica>,
}

/// Outcome of one command inside a batch.
type Outcome = (oneshot::Sender<Result<Output, EngineError>>, Result<Output, EngineError>);

impl StateMachine {
    /// Runs until the command channel closes, then cuts and hands over a final flush.
    ///
    /// A batch is every command queued when it starts (at most `batch_max`). When
    /// `submit_when_writer_idle` is set, a batch ends early, after a command that staged
    /// events, if the writer is idle then and the commands left would take longer to
    /// decide than a commit takes (both by recent averages): the commit starts while they
    /// are decided (carried to the next batch, ahead of newer commands), instead of the
    /// disk waiting for the whole queue. Shorter queues stay one batch: a sync of 8 events
    /// costs about 90% of one of 14 (BENCHMARKS.md), so splitting them would cost more
    /// syncs than it saves waiting.
    pub(crate) fn run(mut self, commands: Receiver<Request>) {
        let mut events_since_cut: u64 = 0;
        let mut last_cut = Instant::now();
        let mut carried: Vec<Command> = Vec::new();
        loop {
            let wait = if events_since_cut == 0 {
                Duration::from_secs(3_600)
            } else {
                Duration::from_millis(self.policy.interval_ms).saturating_sub(last_cut.elapsed())
            };
            let mut batch = Vec::new();
            if carried.is_empty() {
                match crate::log::recv_spinning(&commands, Some(wait)) {
                    Ok(command) => batch.push(command),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            while batch.len() + carried.len() < self.batch_max.max(1) {
                match commands.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            let mut flushes = Vec::new();
            let mut work = Vec::new(); // replicated mode's records and publish outcomes
            let batch: Vec<Command> = std::mem::take(&mut carried)
                .into_iter()
                .map(Request::Command)
                .chain(batch)
                .filter_map(|request| match request {
                    Request::Command(command) => Some(command),
                    Request::Flush(reply) => {
                        flushes.push(reply);
                        None
                    }
                    other => {
                        work.push(other);
                        None
                    }
                })
                .collect();
            let due = events_since_cut > 0
                && (!flushes.is_empty() || last_cut.elapsed() >= Duration::from_millis(self.policy.interval_ms));
            // A flush answers for every command queued before it: no batch ends early then.
            let early = self.submit_when_writer_idle && flushes.is_empty() && work.is_empty() && self.replica.is_none();
            let committed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.run_batch(batch, work, due, flushes, early, &mut events_since_cut)
            }));
            match committed {
                Ok((was_cut, rest)) => {
                    if was_cut {
                        last_cut = Instant::now();
                    }
                    carried = rest;
                }
                Err(panic) => self.fail(format!("a decision or fold panicked: {}", panic_reason(&panic))),
            }
        }
        // Clean shutdown: whatever is not flushed yet goes in one last cut.
        if events_since_cut > 0 {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.run_batch(Vec::new(), Vec::new(), true, Vec::new(), false, &mut events_since_cut)
            }));
        }
    }

    fn failure(&self) -> Option<String> {
        let own = self.failure.lock().ok().and_then(|failure| failure.clone());
        own.or_else(|| self.flush_state.failure.lock().ok().and_then(|failure| failure.clone()))
    }

    fn fail(&self, reason: String) {
        tracing::error!(%reason, "the engine refuses further writes");
        if let Ok(mut failure) = self.failure.lock() {
            failure.get_or_insert(reason);
        }
    }

    /// Decides, stages and folds `commands` (with `early`, only up to the first command
    /// after which the writer is idle and the batch has events), then submits the batch.
    /// Returns whether the batch was a cut, and the commands not run.
    fn run_batch(
        &mut self,
        commands: Vec<Command>,
        work: Vec<Request>,
        due: bool,
        flushes: Vec<oneshot::Sender<u64>>,
        early: bool,
        events_since_cut: &mut u64,
    ) -> (bool, Vec<Command>) {
        if let Some(reason) = self.failure() {
            for command in commands {
                let _ = command.reply.send(Err(crate::storage_error::writer_failed(&reason)));
            }
            return (false, Vec::new());
        }
        let started = std::time::Instant::now();
        self.state.mark_persisted(self.flush_state.landed.load(Ordering::Acquire));
        let mut log_batch = self.sequencer.batch();
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(commands.len());
        let mut effects: EffectBatch = Vec::new();
        // Replicated mode: commands are published, not staged; records of the log are folded.
        let commands = match self.replica.take() {
            None => commands,
            Some(mut replica) => {
                let ran = replica.run(self, commands, work, &mut log_batch, &mut outcomes, &mut effects);
                self.replica = Some(replica);
                if let Err(fatal) = ran {
                    let reason = fatal.to_string();
                    self.fail(format!("folding a record of the replicated log failed: {reason}"));
                    answer_failed(outcomes, &reason);
                    return (false, Vec::new());
                }
                Vec::new()
            }
        };
        let mut commands = commands.into_iter();
        let commit_ns = self.writer.commit_ns();
        let deciding = Instant::now();
        let mut decided: u64 = 0;
        while let Some(Command { idempotency, decide, replay, reply }) = commands.next() {
            decided += 1;
            match self.run_command(idempotency, decide, replay, &mut log_batch, &mut effects) {
                Ok(outcome) => outcomes.push((reply, outcome)),
                Err(fatal) => {
                    // The batch is dropped unwritten: answer everyone, refuse from now on.
                    let reason = fatal.to_string();
                    self.fail(format!("a fold failed after its command was accepted: {reason}"));
                    let _ = reply.send(Err(fatal));
                    answer_failed(outcomes, &reason);
                    for command in commands {
                        let _ = command.reply.send(Err(crate::storage_error::writer_failed(&reason)));
                    }
                    return (false, Vec::new());
                }
            }
            if early && !log_batch.is_empty() && ends_batch_early(commands.len(), self.command_ns, commit_ns, || self.writer.is_idle()) {
                break;
            }
        }
        if let Some(took_ns) = u64::try_from(deciding.elapsed().as_nanos()).unwrap_or(u64::MAX).checked_div(decided) {
            self.command_ns = crate::meters::Meters::moving_average(self.command_ns, took_ns, crate::log::COMMIT_NS_AVERAGED);
        }
        let rest: Vec<Command> = commands.collect();
        *events_since_cut += log_batch.events().len() as u64;
        let cut = *events_since_cut > 0
            && (due || *events_since_cut >= self.policy.events_max || self.state.over_budget());
        let batch_writes = match self.state.take_writes(cut) {
            Ok(writes) => writes,
            Err(err) => {
                self.fail(format!("encoding projection writes failed: {err}"));
                for (reply, _) in outcomes {
                    let _ = reply.send(Err(crate::storage_error::writer_failed(&err.to_string())));
                }
                return (false, rest); // refused by the next batch: the engine failed
            }
        };
        if let Err(err) = self.sequencer.seal(&mut log_batch, Some(self.ids.last_id())) {
            self.fail(err.to_string());
            for (reply, _) in outcomes {
                let _ = reply.send(Err(crate::storage_error::writer_failed(&err.to_string())));
            }
            return (false, rest); // refused by the next batch: the engine failed
        }
        let visible = if batch_writes.writes.is_empty() && batch_writes.appended.is_empty() && batch_writes.touched.is_empty() {
            None
        } else {
            self.batch_seq += 1;
            Some(self.batch_seq)
        };
        let layer = self.active.clone();
        // At a cut the writes of later batches go to a new layer; the completion freezes
        // this one for the flusher.
        let next = cut.then(|| {
            let next = Arc::new(osmium_projections::Layer::new());
            self.active = next.clone();
            next
        });
        let flush_number = self.state.cuts();
        self.meters.events.fetch_add(log_batch.events().len() as u64, Ordering::Relaxed);
        self.meters.batches.fetch_add(1, Ordering::Relaxed);
        crate::meters::Meters::add_since(&self.meters.decide_ns, started);
        let flushed = Flushed { number: flush_number, replies: flushes };
        let completion = self.completion(&log_batch, visible, next.map(|next| (flush_number, next)), outcomes, effects, flushed);
        if let Err(err) = self.writer.submit(log_batch, completion) {
            self.fail(err.to_string());
        }
        // The batch's writes go into its layer now, while the writer writes and syncs it:
        // readers read as of the last published batch, every version in a layer carries
        // its batch, and the caches serve an entry only to readers at or after its batch,
        // so nothing of this batch shows before its completion, which waits for these
        // inserts (`Views::wait_inserted`), publishes it. (Before the submit, they delayed
        // the sync; on the writer thread, after it, they delayed the next group's write.)
        if let Some(seq) = visible {
            let started = Instant::now();
            fail::fail_point!("state_machine::before_insert");
            self.views.caches.record(seq, &batch_writes);
            layer.insert(seq, batch_writes.writes, batch_writes.appended, &batch_writes.touched);
            self.views.inserted(seq);
            crate::meters::Meters::add_since(&self.meters.decide_ns, started);
        }
        if cut {
            *events_since_cut = 0;
        }
        self.state.evict();
        self.meters.state_bytes.store(self.state.bytes() as u64, Ordering::Relaxed);
        (cut, rest)
    }

    /// Runs one command: `Ok(outcome)` for its caller, `Err` for a fold error (fatal).
    fn run_command(
        &mut self,
        idempotency: Option<Idempotency>,
        decide: Decide,
        replay: Replay,
        log_batch: &mut LogBatch,
        effects: &mut EffectBatch,
    ) -> Result<Result<Output, EngineError>, EngineError> {
        let now_ms = self.clock.now_ms();
        // Checked before the decision: a retry gets its original result whatever changed since.
        if let Some(idempotency) = &idempotency {
            match self.sequencer.earlier(&idempotency.key) {
                Ok(Some(earlier)) => {
                    let age_ms = earlier.recorded_at_ms.map_or(0, |recorded| now_ms.saturating_sub(recorded));
                    if age_ms < self.idempotency_window_ms {
                        if earlier.fingerprint.is_some_and(|fingerprint| fingerprint != idempotency.fingerprint) {
                            return Ok(Err(EngineError::IdempotencyKeyReused { client_id: idempotency.client_id, age_ms }));
                        }
                        return Ok(replay(&earlier.events));
                    }
                    // Past the window: the key is forgotten, the request runs again.
                }
                Ok(None) => {}
                Err(err) => return Ok(Err(err)),
            }
        }
        let mut context = DecideContext { state: &mut self.state, now_ms, ids: &mut self.ids };
        let decision = match decide(&mut context) {
            Ok(decision) => decision,
            Err(refused) => return Ok(Err(refused)),
        };
        if decision.append.events.is_empty() { return Ok(Ok(decision.output)); } // a no-op decision (a DM opened meanwhile) stages nothing
        let mut append = decision.append;
        if let Some(idempotency) = idempotency {
            append.idempotency_key = Some(idempotency.key);
            append.fingerprint = Some(idempotency.fingerprint);
        }
        let envelopes = match self.sequencer.stage(append, now_ms, log_batch) {
            Ok(envelopes) => envelopes,
            Err(refused) => return Ok(Err(refused)),
        };
        for envelope in &envelopes {
            let mut told = Vec::new();
            osmium_projections::apply_with_effects(&mut self.state, envelope, &mut told)?;
            effects.extend(told.into_iter().map(|effect| (Position(envelope.position), effect)));
        }
        Ok(Ok(decision.output))
    }

    /// What runs on the writer thread once the batch is durable.
    fn completion(
        &self,
        log_batch: &LogBatch,
        visible: Option<u64>,
        flush: Option<(u64, Arc<osmium_projections::Layer>)>,
        outcomes: Vec<Outcome>,
        effects: EffectBatch,
        flushed: Flushed,
    ) -> crate::log::Completion {
        let views = self.views.clone();
        let flusher = self.flusher.clone();
        let effects_tx = self.effects.clone();
        let failure = self.failure.clone();
        let position = if log_batch.is_empty() { None } else { Some(log_batch.last_position()) };
        Box::new(move |written| match written {
            Ok(()) if visible.is_some_and(|seq| !views.wait_inserted(seq, &failure)) => {
                // The state machine failed before inserting the batch's writes: nothing of it
                // is published, and the engine refuses writes until it reopens (which folds
                // the batch from the log).
                answer_failed(outcomes, "the state machine failed");
            }
            Ok(()) => {
                if let Some(seq) = visible {
                    views.publish_batch(seq, position.unwrap_or(Position::ZERO));
                }
                if let Some((number, next)) = flush {
                    flusher.submit(number, views.freeze(next));
                }
                for (reply, outcome) in outcomes {
                    let _ = reply.send(outcome);
                }
                flushed.answer();
                if !effects.is_empty() {
                    let _ = effects_tx.send(effects);
                }
            }
            Err(err) => {
                if let Ok(mut failure) = failure.lock() {
                    failure.get_or_insert_with(|| err.to_string());
                }
                answer_failed(outcomes, &err.to_string());
                drop(flushed); // its callers see the engine failed
            }
        })
    }
}

/// Answers a batch that will never be published: its refusals as they are, its accepted
/// commands with the engine's failure.
fn answer_failed(outcomes: Vec<Outcome>, reason: &str) {
    for (reply, outcome) in outcomes {
        let _ = reply.send(outcome.and(Err(crate::storage_error::writer_failed(reason))));
    }
}

/// Whether a batch with events ends before its `left` other commands (see
/// [`StateMachine::run`]): when deciding them would take at least a commit, by the
/// recent `command_ns` and `commit_ns`, and the writer is idle.
fn ends_batch_early(left: usize, command_ns: u64, commit_ns: u64, writer_idle: impl FnOnce() -> bool) -> bool {
    left > 0 && (left as u64).saturating_mul(command_ns) >= commit_ns && writer_idle()
}

/// Callers of a flush, answered once the batch that cut is published.
struct Flushed {
    number: u64,
    replies: Vec<oneshot::Sender<u64>>,
}

impl Flushed {
    fn answer(self) {
        for reply in self.replies {
            let _ = reply.send(self.number);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ends_batch_early;

    #[test]
    fn a_batch_ends_early_when_the_commands_left_take_longer_than_a_commit_and_the_writer_is_idle() {
        assert!(ends_batch_early(100, 8_000, 300_000, || true), "800 µs of commands left, a 300 µs commit");
        assert!(ends_batch_early(1, 300_000, 300_000, || true), "exactly a commit's worth left");
    }

    #[test]
    fn a_batch_stays_whole_when_its_commands_left_take_less_than_a_commit() {
        assert!(!ends_batch_early(15, 8_000, 300_000, || true), "120 µs of commands left: one sync for all");
    }

    #[test]
    fn a_batch_stays_whole_while_the_writer_is_busy() {
        assert!(!ends_batch_early(100, 8_000, 300_000, || false));
    }

    #[test]
    fn the_last_command_of_a_batch_never_ends_it_early() {
        assert!(!ends_batch_early(0, 8_000, 0, || true), "nothing left to carry");
    }
}
