//! Layers of not yet flushed writes over a base store must read exactly like a `BTreeMap`
//! with the same writes applied in order (the newest batch winning), and batches after
//! the visible one must not show: checked against `MemStore` on random operations, with
//! one to three layers of one to three batches each, plus an invisible batch.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use osmium_projections::store::{Direction, MemStore, ScanRange, Store, StoreRead, Table};
use osmium_projections::{Layer, LayeredView};
use std::sync::Arc;
use proptest::prelude::*;
use std::ops::ControlFlow;

#[derive(Clone, Debug)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// Short keys, and keys around 24 bytes (where layers split a key into words and a tail).
fn key() -> impl Strategy<Value = Vec<u8>> {
    let long = (22usize..25, 0u8..2, proptest::collection::vec(0u8..3, 0..3)).prop_map(|(len, byte, tail)| {
        let mut key = vec![byte; len];
        key.extend(tail);
        key
    });
    prop_oneof![proptest::collection::vec(0u8..4, 0..4), long]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (key(), proptest::collection::vec(any::<u8>(), 0..3)).prop_map(|(k, v)| Op::Put(k, v)),
        key().prop_map(Op::Delete),
    ]
}

fn apply(store: &mut impl Store, ops: &[Op]) {
    for op in ops {
        match op {
            Op::Put(key, value) => store.put(Table::ChatidChat, key.clone(), value.clone()),
            Op::Delete(key) => store.delete(Table::ChatidChat, key.clone()),
        }
    }
}

fn scan(store: &impl StoreRead, range: ScanRange<'_>, limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    scan_table(store, Table::ChatidChat, range, limit)
}

fn scan_table(store: &impl StoreRead, table: Table, range: ScanRange<'_>, limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut seen = Vec::new();
    store
        .scan(table, range, &mut |key, value| {
            seen.push((key.to_vec(), value.to_vec()));
            if seen.len() >= limit { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        })
        .unwrap();
    seen
}

fn writes(ops: &[Op]) -> Vec<osmium_projections::KvWrite> {
    ops.iter()
        .map(|op| match op {
            Op::Put(key, value) => (Table::ChatidChat, key.clone(), Some(value.clone())),
            Op::Delete(key) => (Table::ChatidChat, key.clone(), None),
        })
        .collect()
}

proptest! {
    #[test]
    fn layers_read_like_their_writes_applied_to_the_base_in_order(
        base_ops in proptest::collection::vec(op(), 0..20),
        layer_batches in proptest::collection::vec(proptest::collection::vec(proptest::collection::vec(op(), 0..8), 1..4), 1..4),
        invisible_ops in proptest::collection::vec(op(), 0..8),
        prefix in proptest::collection::vec(0u8..4, 0..2),
        start in proptest::option::of(key()),
        reverse in any::<bool>(),
        limit in 1usize..8,
    ) {
        let mut base = MemStore::new();
        apply(&mut base, &base_ops);
        let mut model = base.clone();
        let mut layers: Vec<Arc<Layer>> = Vec::new(); // oldest first while building
        let mut seq = 0;
        for batches in &layer_batches {
            let layer = Layer::new();
            for ops in batches {
                seq += 1;
                layer.insert(seq, writes(ops), Vec::new(), &[]);
                apply(&mut model, ops);
            }
            layers.push(Arc::new(layer));
        }
        let visible = seq;
        // A batch decided but not durable yet: in the newest layer, past `visible`.
        layers.last().unwrap().insert(seq + 1, writes(&invisible_ops), Vec::new(), &[]);
        layers.reverse(); // newest first
        let view = LayeredView::new(&base, &layers, visible);

        let start = start.filter(|start| start.starts_with(&prefix));
        let direction = if reverse { Direction::Reverse } else { Direction::Forward };
        let range = ScanRange { prefix: &prefix, start: start.as_deref(), direction };
        prop_assert_eq!(scan(&view, range, limit), scan(&model, range, limit));
        for probe in [vec![], vec![0], vec![1, 2], vec![3, 3, 3]] {
            prop_assert_eq!(view.get(Table::ChatidChat, &probe).unwrap(), model.get(Table::ChatidChat, &probe).unwrap());
        }
    }
}

/// Append-only puts as the append-only tests lay them out: `keys` split at `cuts` (indexes
/// into `keys`) into batches, the first standing for the flushed base (`in_base` keys) and
/// the others inserted into one layer as batches 1, 2, ... up to `visible`; `invisible` in
/// one more batch past it. The model holds every batch but the invisible one.
struct AppendOnly {
    base: MemStore,
    model: MemStore,
    layers: Vec<Arc<Layer>>,
    visible: u64,
    in_base: usize,
}

fn append_only(table: Table, keys: &[Vec<u8>], cuts: &[usize], invisible: &[Vec<u8>]) -> AppendOnly {
    let mut bounds: Vec<usize> = cuts.iter().map(|cut| cut % (keys.len() + 1)).collect();
    bounds.push(0);
    bounds.push(keys.len());
    bounds.sort_unstable();
    bounds.dedup();
    let (mut base, mut model, layer) = (MemStore::new(), MemStore::new(), Layer::new());
    let value = |key: &[u8]| key.iter().rev().copied().collect::<Vec<u8>>();
    for (seq, window) in bounds.windows(2).enumerate() {
        let batch: Vec<(Table, Vec<u8>, Vec<u8>)> =
            keys[window[0]..window[1]].iter().map(|key| (table, key.clone(), value(key))).collect();
        for (_, key, value) in &batch {
            model.put(table, key.clone(), value.clone());
            if seq == 0 {
                base.put(table, key.clone(), value.clone()); // the first batch stands for the flushed base
            }
        }
        if seq > 0 {
            layer.insert(seq as u64, Vec::new(), batch, &[]);
        }
    }
    let visible = bounds.len() as u64;
    layer.insert(visible + 1, Vec::new(), invisible.iter().map(|key| (table, key.clone(), value(key))).collect(), &[]);
    let in_base = bounds.get(1).copied().unwrap_or(0);
    AppendOnly { base, model, layers: vec![Arc::new(layer)], visible, in_base }
}

proptest! {
    /// Append-only tables (the catch-up index) go into groups, not the skip list: the same
    /// reads, with keys that are each put once (in the base or a batch), in any order and of
    /// any length (shorter than the table's group, here).
    #[test]
    fn append_only_groups_read_like_their_puts_applied_to_the_base(
        keys in proptest::collection::btree_set(proptest::collection::vec(0u8..4, 1..4), 0..40),
        cuts in proptest::collection::vec(0usize..40, 0..8),
        invisible in 0usize..5,
        prefix in proptest::collection::vec(0u8..4, 0..2),
        start in proptest::option::of(key()),
        reverse in any::<bool>(),
        limit in 1usize..50,
    ) {
        let table = Table::UseridPositionUpdate;
        let mut keys: Vec<Vec<u8>> = keys.into_iter().collect();
        // Puts come in any key order: shuffle deterministically by a rotation.
        let rotation = cuts.first().copied().unwrap_or(0) % keys.len().max(1);
        keys.rotate_left(rotation);
        let invisible: Vec<Vec<u8>> = keys.split_off(keys.len().saturating_sub(invisible));
        let AppendOnly { base, model, layers, visible, in_base } = append_only(table, &keys, &cuts, &invisible);
        let view = LayeredView::new(&base, &layers, visible);

        let start = start.filter(|start| start.starts_with(&prefix));
        let direction = if reverse { Direction::Reverse } else { Direction::Forward };
        let range = ScanRange { prefix: &prefix, start: start.as_deref(), direction };
        prop_assert_eq!(scan_table(&view, table, range, limit), scan_table(&model, table, range, limit));
        for probe in keys.iter().chain(&invisible).chain([vec![9u8]].iter()) {
            prop_assert_eq!(view.get(table, probe).unwrap(), model.get(table, probe).unwrap());
        }
        let flushed: usize = layers[0].entries().len();
        prop_assert_eq!(flushed, keys.len() - in_base + invisible.len());
    }
}

proptest! {
    /// The catch-up index as the fold writes it: `user | position` keys, positions
    /// increasing across batches, read through a prefix of no user, one user, or one user
    /// and part of a position, from any start, both ways.
    #[test]
    fn append_only_groups_read_like_the_base_with_the_folds_key_layout(
        users in proptest::collection::vec(0u64..4, 0..60),
        cuts in proptest::collection::vec(0usize..60, 0..8),
        invisible in 0usize..5,
        prefix_user in proptest::option::of(0u64..4),
        prefix_extra in 0usize..3,
        start in proptest::option::of((0u64..4, 0u64..70)),
        reverse in any::<bool>(),
        limit in 1usize..70,
    ) {
        let table = Table::UseridPositionUpdate;
        let key = |user: u64, position: u64| [user.to_be_bytes(), position.to_be_bytes()].concat();
        let mut keys: Vec<Vec<u8>> = users.iter().enumerate().map(|(position, &user)| key(user, position as u64 + 1)).collect();
        let invisible: Vec<Vec<u8>> = keys.split_off(keys.len().saturating_sub(invisible));
        let AppendOnly { base, model, layers, visible, .. } = append_only(table, &keys, &cuts, &invisible);
        let view = LayeredView::new(&base, &layers, visible);

        let prefix: Vec<u8> = match prefix_user {
            Some(user) => key(user, 0)[..8 + prefix_extra * 4].to_vec(),
            None => Vec::new(),
        };
        let start = start.map(|(user, position)| key(user, position)).filter(|start| start.starts_with(&prefix));
        let direction = if reverse { Direction::Reverse } else { Direction::Forward };
        let range = ScanRange { prefix: &prefix, start: start.as_deref(), direction };
        prop_assert_eq!(scan_table(&view, table, range, limit), scan_table(&model, table, range, limit));
        for probe in keys.iter().chain(&invisible).chain([key(9, 1)].iter()) {
            prop_assert_eq!(view.get(table, probe).unwrap(), model.get(table, probe).unwrap());
        }
    }
}

/// Many one-key batches (a busy engine's sequential sends): a reader at any batch sees
/// exactly the keys of the batches up to it.
#[test]
fn many_small_batches_keep_each_batchs_visibility() {
    let table = Table::UseridPositionUpdate;
    let layer = Layer::new();
    let key = |batch: u64| [(batch % 7).to_be_bytes(), batch.to_be_bytes()].concat(); // 7 users, interleaved
    for batch in 1..=5_000u64 {
        layer.insert(batch, Vec::new(), vec![(table, key(batch), batch.to_be_bytes().to_vec())], &[]);
    }
    let base = MemStore::new();
    let layers = vec![Arc::new(layer)];
    for visible in [0u64, 1, 2, 3, 64, 1_000, 4_097, 4_999, 5_000] {
        let view = LayeredView::new(&base, &layers, visible);
        let prefix = 3u64.to_be_bytes();
        let seen: Vec<u64> = scan_table(&view, table, ScanRange::prefix(&prefix), usize::MAX)
            .into_iter()
            .map(|(_, value)| u64::from_be_bytes(value.try_into().unwrap()))
            .collect();
        let expected: Vec<u64> = (1..=visible).filter(|batch| batch % 7 == 3).collect();
        assert_eq!(seen, expected, "visible {visible}");
        for batch in [1u64, visible, visible + 1] {
            let got = view.get(table, &key(batch)).unwrap();
            assert_eq!(got.is_some(), batch >= 1 && batch <= visible, "batch {batch} at visible {visible}");
        }
    }
    assert_eq!(layers[0].entries().len(), 5_000);
}
