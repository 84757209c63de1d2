//! What readers see of the state that is not flushed yet: immutable layers of projection
//! writes over a base store (the flushed tables).
//!
//! The engine publishes after every durable batch a new version of the newest layer (a
//! persistent map: the new version shares everything but the changed paths with the old
//! one, so publishing costs O(writes · log n) and a reader keeps the version it took for
//! as long as it needs it). At a flush the newest layer is frozen and a new empty one
//! started; the frozen layer is dropped once its writes are in the base. A reader sees
//! `layers` (newest first) over `base`: exactly the state at the batch its layers were
//! published after, provided that the base holds every flush older than its oldest layer
//! and nothing newer than its newest (the engine's read path checks this, see
//! `engine/src/view.rs`).

use crate::error::ProjectionError;
use crate::store::{Direction, ScanRange, StoreRead, Visit, prefix_successor};
use crate::tables::Table;
use imbl::{HashMap as SharedHashMap, HashSet as SharedHashSet, OrdMap};
use osmium_proto::ids::{ChatId, UserId};
use std::ops::{Bound, ControlFlow};
use std::sync::Arc;

/// One write of a projection table: `Some(value)` puts, `None` deletes.
pub type KvWrite = (Table, Vec<u8>, Option<Vec<u8>>);

type TableEntries = OrdMap<Arc<[u8]>, Option<Arc<[u8]>>>;
/// A layer's entries in a range, in scan order: `(key, Some(value) | None)`.
type Entries<'a> = Box<dyn Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a>;
/// Entries as the persistent map yields them.
type RawEntries<'a> = Box<dyn Iterator<Item = (&'a Arc<[u8]>, &'a Option<Arc<[u8]>>)> + 'a>;

/// The projection writes of some consecutive batches, with the chats whose chat-list
/// entries they made stale (see [`StoreRead::touched_chats`]).
#[derive(Clone, Default, Debug)]
pub struct Layer {
    tables: [TableEntries; Table::ALL.len()],
    touched: SharedHashMap<UserId, SharedHashSet<ChatId>>,
    writes: usize,
}

impl Layer {
    /// An empty layer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one batch's writes and touched chat-list entries.
    pub fn apply(&mut self, writes: impl IntoIterator<Item = KvWrite>, touched: &[(UserId, ChatId)]) {
        for (table, key, value) in writes {
            self.tables[table.index()].insert(Arc::from(key), value.map(Arc::from));
            self.writes += 1;
        }
        for &(user, chat) in touched {
            self.touched.entry(user).or_default().insert(chat);
        }
    }

    /// Writes applied so far (a key written twice counts twice): what the layer costs to flush.
    pub fn writes(&self) -> usize {
        self.writes
    }

    /// Whether nothing was applied.
    pub fn is_empty(&self) -> bool {
        self.writes == 0 && self.touched.is_empty()
    }

    /// Every distinct key's final write, table by table in key order (what a flush writes).
    pub fn entries(&self) -> impl Iterator<Item = (Table, &[u8], Option<&[u8]>)> {
        Table::ALL.into_iter().flat_map(move |table| {
            self.tables[table.index()].iter().map(move |(key, value)| (table, &key[..], value.as_deref()))
        })
    }

    fn lookup(&self, table: Table, key: &[u8]) -> Option<Option<&Arc<[u8]>>> {
        self.tables[table.index()].get(key).map(Option::as_ref)
    }

    fn range<'a>(&'a self, table: Table, range: ScanRange<'a>) -> Entries<'a> {
        let entries = &self.tables[table.index()];
        let prefix = range.prefix;
        let items = |iter: RawEntries<'a>| {
            iter.take_while(move |(key, _)| key.starts_with(prefix)).map(|(key, value)| (&key[..], value.as_deref()))
        };
        match range.direction {
            Direction::Forward => {
                let lower: &[u8] = range.start.map_or(prefix, |start| start.max(prefix));
                Box::new(items(Box::new(entries.range::<_, [u8]>((Bound::Included(lower), Bound::Unbounded)))))
            }
            Direction::Reverse => {
                let successor = prefix_successor(prefix);
                let iter: Box<dyn Iterator<Item = _>> = match (range.start, successor) {
                    (Some(start), _) => Box::new(entries.range::<_, [u8]>((Bound::Unbounded, Bound::Included(start))).rev()),
                    (None, Some(successor)) => {
                        Box::new(entries.range::<_, [u8]>((Bound::Unbounded, Bound::Excluded(&successor[..]))).rev())
                    }
                    (None, None) => Box::new(entries.iter().rev()),
                };
                Box::new(items(iter))
            }
        }
    }
}

/// Layers (newest first) over a base store, read as one store.
#[derive(Debug)]
pub struct LayeredView<'a, B: StoreRead + ?Sized> {
    base: &'a B,
    layers: &'a [Arc<Layer>],
}

impl<'a, B: StoreRead + ?Sized> LayeredView<'a, B> {
    /// `layers`, newest first, over `base`.
    pub fn new(base: &'a B, layers: &'a [Arc<Layer>]) -> Self {
        LayeredView { base, layers }
    }

    /// The newest write of `key` in any layer: `Some(None)` when deleted there.
    fn layered(&self, table: Table, key: &[u8]) -> Option<Option<&'a Arc<[u8]>>> {
        self.layers.iter().find_map(|layer| layer.lookup(table, key))
    }
}

/// The layers' entries in `range`, merged in scan order, the newest layer winning on equal
/// keys (deletions included, as `None`).
fn merged_layers<'a>(
    layers: &'a [Arc<Layer>],
    table: Table,
    range: ScanRange<'a>,
) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
    let mut iters: Vec<_> = layers.iter().map(|layer| layer.range(table, range).peekable()).collect();
    let before = move |a: &[u8], b: &[u8]| match range.direction {
        Direction::Forward => a < b,
        Direction::Reverse => a > b,
    };
    std::iter::from_fn(move || {
        // The first key in scan order among the layers; the newest layer (lowest index) wins ties.
        let mut best: Option<(usize, &'a [u8])> = None;
        for (index, iter) in iters.iter_mut().enumerate() {
            if let Some(&(key, _)) = iter.peek()
                && best.is_none_or(|(_, best_key)| before(key, best_key))
            {
                best = Some((index, key));
            }
        }
        let (winner, key) = best?;
        let mut found = None;
        for (index, iter) in iters.iter_mut().enumerate() {
            if iter.peek().is_some_and(|&(other, _)| other == key) {
                let entry = iter.next();
                if index == winner {
                    found = entry;
                }
            }
        }
        found
    })
}

impl<B: StoreRead + ?Sized> StoreRead for LayeredView<'_, B> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        match self.layered(table, key) {
            Some(value) => Ok(value.map(|value| value.to_vec())),
            None => self.base.get(table, key),
        }
    }

    fn scan(
        &self,
        table: Table,
        range: ScanRange<'_>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Visit,
    ) -> Result<(), ProjectionError> {
        if self.layers.iter().all(|layer| layer.tables[table.index()].is_empty()) {
            return self.base.scan(table, range, visit);
        }
        let layers: &[Arc<Layer>] = self.layers;
        let mut pending = merged_layers(layers, table, range).peekable();
        let before = |a: &[u8], b: &[u8]| match range.direction {
            Direction::Forward => a < b,
            Direction::Reverse => a > b,
        };
        let mut stopped = false;
        // Emits the layered entries that come before `bound` (all of them when `bound` is None).
        let mut drain = |bound: Option<&[u8]>, visit: &mut dyn FnMut(&[u8], &[u8]) -> Visit, stopped: &mut bool| {
            while let Some(&(key, value)) = pending.peek() {
                if *stopped || bound.is_some_and(|bound| !before(key, bound)) {
                    break;
                }
                pending.next();
                if let Some(value) = value
                    && visit(key, value).is_break()
                {
                    *stopped = true;
                }
            }
        };
        self.base.scan(table, range, &mut |key, value| {
            drain(Some(key), visit, &mut stopped);
            if stopped {
                return ControlFlow::Break(());
            }
            if layers.iter().any(|layer| layer.lookup(table, key).is_some()) {
                return ControlFlow::Continue(()); // shadowed: emitted (or deleted) by a layer
            }
            if visit(key, value).is_break() {
                stopped = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })?;
        drain(None, visit, &mut stopped);
        Ok(())
    }

    fn touched_chats(&self, user: UserId) -> Vec<ChatId> {
        let mut chats: Vec<ChatId> = self
            .layers
            .iter()
            .filter_map(|layer| layer.touched.get(&user))
            .flat_map(|touched| touched.iter().copied())
            .collect();
        chats.extend(self.base.touched_chats(user));
        chats.sort_unstable();
        chats.dedup();
        chats
    }

    fn touched_entries(&self) -> Vec<(UserId, ChatId)> {
        let mut entries: Vec<(UserId, ChatId)> = self
            .layers
            .iter()
            .flat_map(|layer| layer.touched.iter().flat_map(|(user, chats)| chats.iter().map(move |chat| (*user, *chat))))
            .collect();
        entries.extend(self.base.touched_entries());
        entries.sort_unstable();
        entries.dedup();
        entries
    }
}
