//! Time and identity: an injectable clock and the snowflake id generator.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in unix milliseconds. Injectable so that tests are
/// deterministic and can move time (invite expiry, typing timeouts).
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the unix epoch.
    fn now_ms(&self) -> u64;
}

/// The operating system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        // A clock before 1970 reads as 0; the id generator stays monotonic regardless.
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    now_ms: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        ManualClock { now_ms: Arc::new(AtomicU64::new(now_ms)) }
    }

    /// Sets the time (it may go backwards: the id generator must cope).
    pub fn set_ms(&self, now_ms: u64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }

    /// Moves the time forward by `delta_ms`.
    pub fn advance_ms(&self, delta_ms: u64) {
        self.now_ms.fetch_add(delta_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// Bits of a snowflake given to the worker id.
pub const SNOWFLAKE_WORKER_BITS: u32 = 10;
/// Bits of a snowflake given to the per-millisecond sequence.
pub const SNOWFLAKE_SEQUENCE_BITS: u32 = 12;
/// Largest worker id.
pub const SNOWFLAKE_WORKER_MAX: u16 = (1 << SNOWFLAKE_WORKER_BITS) - 1;
const SEQUENCE_MAX: u64 = (1 << SNOWFLAKE_SEQUENCE_BITS) - 1;
/// Default epoch of snowflakes: 2020-01-01T00:00:00Z in unix milliseconds.
pub const SNOWFLAKE_EPOCH_MS: u64 = 1_577_836_800_000;

/// Snowflake ids: `milliseconds since epoch (42 bits) | worker (10) | sequence (12)`.
///
/// Ids are strictly increasing for one generator, also when the clock steps back:
/// the generator keeps using its last millisecond (and borrows the next one when the
/// 4,096 ids of a millisecond are used up) until the clock catches up.
#[derive(Debug)]
pub struct SnowflakeGenerator {
    clock: Arc<dyn Clock>,
    epoch_ms: u64,
    worker: u64,
    last_ms: u64,
    sequence: u64,
}

impl SnowflakeGenerator {
    /// A generator for `worker` (at most [`SNOWFLAKE_WORKER_MAX`]; higher bits are dropped).
    pub fn new(clock: Arc<dyn Clock>, worker: u16) -> Self {
        SnowflakeGenerator {
            clock,
            epoch_ms: SNOWFLAKE_EPOCH_MS,
            worker: u64::from(worker & SNOWFLAKE_WORKER_MAX),
            last_ms: 0,
            sequence: 0,
        }
    }

    /// Never hands out an id at or below `floor` (used at open with the newest id in the log,
    /// so that a clock set back across a restart cannot repeat ids).
    pub fn advance_past(&mut self, floor: u64) {
        let floor_ms = floor >> (SNOWFLAKE_WORKER_BITS + SNOWFLAKE_SEQUENCE_BITS);
        if floor_ms >= self.last_ms {
            self.last_ms = floor_ms;
            self.sequence = floor & SEQUENCE_MAX;
        }
    }

    /// The largest id handed out so far (or the floor set with [`Self::advance_past`]).
    pub fn last_id(&self) -> u64 {
        (self.last_ms << (SNOWFLAKE_WORKER_BITS + SNOWFLAKE_SEQUENCE_BITS)) | (self.worker << SNOWFLAKE_SEQUENCE_BITS) | self.sequence
    }

    /// The next id.
    pub fn next_id(&mut self) -> u64 {
        let now_ms = self.clock.now_ms().saturating_sub(self.epoch_ms);
        if now_ms > self.last_ms {
            self.last_ms = now_ms;
            self.sequence = 0;
        } else if self.sequence < SEQUENCE_MAX {
            self.sequence += 1; // same millisecond, or the clock stepped back
        } else {
            self.last_ms += 1; // borrow the next millisecond
            self.sequence = 0;
        }
        let id = (self.last_ms << (SNOWFLAKE_WORKER_BITS + SNOWFLAKE_SEQUENCE_BITS))
            | (self.worker << SNOWFLAKE_SEQUENCE_BITS)
            | self.sequence;
        debug_assert!(id > 0, "snowflake ids are never zero");
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generator(clock: &ManualClock) -> SnowflakeGenerator {
        SnowflakeGenerator::new(Arc::new(clock.clone()), 3)
    }

    #[test]
    fn snowflake_packs_milliseconds_worker_and_sequence() {
        let clock = ManualClock::new(SNOWFLAKE_EPOCH_MS + 5);
        let mut ids = generator(&clock);
        assert_eq!(ids.next_id(), (5 << 22) | (3 << 12));
        assert_eq!(ids.next_id(), (5 << 22) | (3 << 12) | 1);
    }

    #[test]
    fn snowflakes_stay_strictly_increasing_when_the_clock_steps_back() {
        let clock = ManualClock::new(SNOWFLAKE_EPOCH_MS + 10_000);
        let mut ids = generator(&clock);
        let before = ids.next_id();
        clock.set_ms(SNOWFLAKE_EPOCH_MS + 1_000);
        let after = ids.next_id();
        assert!(after > before);
    }

    #[test]
    fn snowflakes_borrow_the_next_millisecond_when_a_millisecond_is_used_up() {
        let clock = ManualClock::new(SNOWFLAKE_EPOCH_MS + 1);
        let mut ids = generator(&clock);
        let mut previous = 0;
        for _ in 0..10_000 {
            let id = ids.next_id();
            assert!(id > previous);
            previous = id;
        }
    }

    #[test]
    fn snowflakes_never_repeat_an_id_seen_before_a_restart() {
        let clock = ManualClock::new(SNOWFLAKE_EPOCH_MS + 50);
        let mut first = generator(&clock);
        let seen = first.next_id();
        clock.set_ms(SNOWFLAKE_EPOCH_MS + 10);
        let mut restarted = generator(&clock);
        restarted.advance_past(seen);
        assert!(restarted.next_id() > seen);
    }
}
