//! A rebuild's batch written into a projection slot as sorted table files (SSTs) that
//! RocksDB ingests, instead of through its write-ahead log and memtables: a rebuild
//! writes every record once per batch, and inserting them into memtables (then
//! flushing those, and replaying the WAL at the next open) cost more CPU than the fold.
//!
//! RocksDB ingests one column family at a time, so a batch spanning several tables is
//! not atomic. The slot's checkpoint says how far it holds the fold: it is deleted
//! (synced) before the first table of a batch is ingested and written again after the
//! last, with the batch's other `ProjectionMeta` writes. A rebuild that dies in between
//! leaves a slot without a checkpoint, which `rebuild --from` refuses to resume (it starts
//! over); the served slot is never touched.

use crate::directory::{column_family, db_options};
use crate::error::EngineError;
use crate::schema::ProjectionSlot;
use osmium_projections::limits::RECORD_BYTES_MAX;
use osmium_projections::{KvWrite, Table, keys};
use rocksdb::{DB, IngestExternalFileOptions, SstFileWriter, WriteBatch, WriteOptions};
use std::path::{Path, PathBuf};

/// The directory, inside the data directory, where a rebuild writes its table files
/// before RocksDB moves them in (same file system: a move is a hard link).
pub(crate) const INGEST_DIR_NAME: &str = "rebuild-ingest";

/// The ingest directory of the database at `db_path`.
pub(crate) fn ingest_dir(db_path: &Path) -> PathBuf {
    db_path.join(INGEST_DIR_NAME)
}

/// Removes what an interrupted rebuild left in the ingest directory.
pub(crate) fn remove_ingest_dir(db_path: &Path) -> Result<(), EngineError> {
    let dir = ingest_dir(db_path);
    match std::fs::remove_dir_all(&dir) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(EngineError::Io { path: dir, source: err }),
        _ => Ok(()),
    }
}

/// Writes one rebuild batch (a whole cut, its checkpoint included) into `slot`: the
/// `ProjectionMeta` writes through a `WriteBatch` after every other table's writes were
/// ingested as one sorted file per table. A key written twice keeps its last write.
pub(crate) fn ingest_writes(db: &DB, slot: ProjectionSlot, mut writes: Vec<KvWrite>) -> Result<(), EngineError> {
    let dir = ingest_dir(db.path());
    std::fs::create_dir_all(&dir).map_err(|source| EngineError::Io { path: dir.clone(), source })?;
    // Stable: of two writes of a key, the later stays later.
    writes.sort_by(|(a, a_key, _), (b, b_key, _)| (a.index(), a_key).cmp(&(b.index(), b_key)));
    let (meta, tables): (Vec<KvWrite>, Vec<KvWrite>) = writes.into_iter().partition(|(table, _, _)| *table == Table::ProjectionMeta);
    forget_checkpoint(db, slot)?;
    for (number, of_table) in tables.chunk_by(|(a, _, _), (b, _, _)| a == b).enumerate() {
        ingest_table(db, slot, of_table[0].0, of_table, &dir)?;
        if number == 0 {
            fail::fail_point!("rebuild::mid_ingest", |_| Err(EngineError::Io {
                path: dir.clone(),
                source: std::io::Error::other("injected at rebuild::mid_ingest"),
            }));
        }
    }
    crate::persist::flush_writes(db, slot, &meta)
}

/// Deletes the slot's checkpoint, synced, so that no checkpoint stands beside a batch
/// ingested half-way.
fn forget_checkpoint(db: &DB, slot: ProjectionSlot) -> Result<(), EngineError> {
    let mut batch = WriteBatch::default();
    batch.delete_cf(column_family(db, slot.column_family(Table::ProjectionMeta))?, keys::META_CHECKPOINT);
    let mut sync = WriteOptions::default();
    sync.set_sync(true);
    db.write_opt(batch, &sync).map_err(EngineError::storage("clearing a rebuilt slot's checkpoint"))
}

/// Ingests `writes` (all of `table`, sorted by key) into `slot` as one file.
fn ingest_table(db: &DB, slot: ProjectionSlot, table: Table, writes: &[KvWrite], dir: &Path) -> Result<(), EngineError> {
    let name = slot.column_family(table);
    let path = dir.join(format!("{name}.sst"));
    let options = db_options();
    let mut file = SstFileWriter::create(&options);
    file.open(&path).map_err(EngineError::storage("creating a rebuilt table file"))?;
    for (index, (_, key, value)) in writes.iter().enumerate() {
        if writes.get(index + 1).is_some_and(|(_, next, _)| next == key) {
            continue; // a later write of the same key follows
        }
        match value {
            Some(value) => {
                // Architecture invariant: every record written can be read back.
                assert!(value.len() <= RECORD_BYTES_MAX, "a projection record of {} bytes is over RECORD_BYTES_MAX", value.len());
                file.put(key, value)
            }
            None => file.delete(key),
        }
        .map_err(EngineError::storage("writing a rebuilt table file"))?;
    }
    file.finish().map_err(EngineError::storage("finishing a rebuilt table file"))?;
    let mut ingest = IngestExternalFileOptions::default();
    ingest.set_move_files(true);
    db.ingest_external_file_cf_opts(column_family(db, name)?, &ingest, vec![&path])
        .map_err(EngineError::storage("ingesting a rebuilt table file"))?;
    // Moved files are linked into the database and unlinked here by RocksDB; a copy
    // (another file system) is not.
    match std::fs::remove_file(&path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(EngineError::Io { path, source: err }),
        _ => Ok(()),
    }
}
