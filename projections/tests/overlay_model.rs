//! The overlay (pending writes over a base store) must read exactly like a `BTreeMap`
//! with the same writes applied: checked against `MemStore` on random operations.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use osmium_projections::store::{Direction, MemStore, Overlay, ScanRange, Store, StoreRead, Table};
use proptest::prelude::*;
use std::ops::ControlFlow;

#[derive(Clone, Debug)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(0u8..4, 0..4)
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
    let mut seen = Vec::new();
    store
        .scan(Table::ChatidChat, range, &mut |key, value| {
            seen.push((key.to_vec(), value.to_vec()));
            if seen.len() >= limit { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        })
        .unwrap();
    seen
}

proptest! {
    #[test]
    fn an_overlay_reads_like_the_writes_applied_to_its_base(
        base_ops in proptest::collection::vec(op(), 0..20),
        pending_ops in proptest::collection::vec(op(), 0..20),
        prefix in proptest::collection::vec(0u8..4, 0..2),
        start in proptest::option::of(key()),
        reverse in any::<bool>(),
        limit in 1usize..8,
    ) {
        let mut base = MemStore::new();
        apply(&mut base, &base_ops);
        let mut model = base.clone();
        apply(&mut model, &pending_ops);
        let mut overlay = Overlay::new(&base);
        apply(&mut overlay, &pending_ops);

        let start = start.filter(|start| start.starts_with(&prefix));
        let direction = if reverse { Direction::Reverse } else { Direction::Forward };
        let range = ScanRange { prefix: &prefix, start: start.as_deref(), direction };
        prop_assert_eq!(scan(&overlay, range, limit), scan(&model, range, limit));
        for probe in [vec![], vec![0], vec![1, 2], vec![3, 3, 3]] {
            prop_assert_eq!(overlay.get(Table::ChatidChat, &probe).unwrap(), model.get(Table::ChatidChat, &probe).unwrap());
        }
    }
}
