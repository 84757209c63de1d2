//! A rebuild's batch written into a projection slot as sorted table files (SSTs) that
//! RocksDB ingests, instead of through its write-ahead log and memtables: a rebuild
//! writes every record once per batch, and inserting them into memtables (then flushing
//! those, and replaying the WAL at the next open) cost more CPU than the fold.
//!
//! RocksDB ingests one column family at a time, so a batch is made redoable instead of
//! atomic:
//! 1. every table's file of the batch is written (synced) into the ingest directory, the
//!    `projection_meta` one holding the batch's checkpoint;
//! 2. a `READY` file says the set is complete; then the slot's `rebuild_ingesting` key is
//!    set (synced);
//! 3. the files are ingested, `projection_meta` last: its file deletes `rebuild_ingesting`
//!    and moves the checkpoint, in one step.
//!
//! Ingesting a file again is harmless (the same keys get the same values), so a rebuild
//! that died in step 3 is finished by the next resume ([`finish_interrupted`]): it ingests
//! what is left. Files without `READY` were never ingested and are dropped. The key
//! without `READY` means files were removed by hand after tables were ingested: the slot
//! is refused for resuming (start over).

use crate::directory::{column_family, db_options};
use crate::error::EngineError;
use crate::schema::ProjectionSlot;
use crate::view::RocksView;
use osmium_projections::limits::RECORD_BYTES_MAX;
use osmium_projections::{KvWrite, StoreRead, Table, keys};
use rocksdb::{DB, IngestExternalFileOptions, SstFileWriter, WriteBatch, WriteOptions};
use std::path::{Path, PathBuf};

/// The directory, inside the data directory, where a rebuild writes its table files
/// before RocksDB moves them in (same file system: a move is a hard link).
pub(crate) const INGEST_DIR_NAME: &str = "rebuild-ingest";

/// The file that says the ingest directory holds a whole batch.
const READY_FILE_NAME: &str = "READY";

/// The ingest directory of the database at `db_path`.
pub(crate) fn ingest_dir(db_path: &Path) -> PathBuf {
    db_path.join(INGEST_DIR_NAME)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |source| EngineError::Io { path: path.to_path_buf(), source }
}

/// Removes the ingest directory and what is in it.
pub(crate) fn remove_ingest_dir(db_path: &Path) -> Result<(), EngineError> {
    let dir = ingest_dir(db_path);
    match std::fs::remove_dir_all(&dir) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(EngineError::Io { path: dir, source: err }),
        _ => Ok(()),
    }
}

/// Writes one rebuild batch (a whole cut, its checkpoint included) into `slot` as one
/// ingested file per table, `projection_meta` last (see the module docs). Of two writes
/// of a key, the later one is kept.
pub(crate) fn ingest_writes(db: &DB, slot: ProjectionSlot, mut writes: Vec<KvWrite>) -> Result<(), EngineError> {
    let dir = ingest_dir(db.path());
    remove_ingest_dir(db.path())?;
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    // Stable: of two writes of a key, the later stays later.
    writes.sort_by(|(a, a_key, _), (b, b_key, _)| (a.index(), a_key).cmp(&(b.index(), b_key)));
    let mut meta_written = false;
    for of_table in writes.chunk_by(|(a, _, _), (b, _, _)| a == b) {
        let Some((table, _, _)) = of_table.first() else { continue };
        meta_written |= *table == Table::ProjectionMeta;
        write_table_file(&dir, slot, *table, of_table)?;
    }
    if !meta_written {
        write_table_file(&dir, slot, Table::ProjectionMeta, &[])?;
    }
    sync_dir(&dir)?;
    let ready = dir.join(READY_FILE_NAME);
    std::fs::File::create(&ready).and_then(|file| file.sync_all()).map_err(io(&ready))?;
    sync_dir(&dir)?;
    set_ingesting(db, slot)?;
    ingest_ready_files(db, slot)
}

/// Finishes or drops what a rebuild that died left in the ingest directory, before a
/// resume reads the slot's checkpoint (see the module docs).
pub(crate) fn finish_interrupted(db: &DB, slot: ProjectionSlot) -> Result<(), EngineError> {
    let ready = ingest_dir(db.path()).join(READY_FILE_NAME).exists();
    if ready {
        return ingest_ready_files(db, slot);
    }
    let view = RocksView::latest(db, slot);
    if view.get(Table::ProjectionMeta, keys::META_REBUILD_INGESTING)?.is_some() {
        return Err(EngineError::InvalidArgument {
            field: "from",
            reason: format!(
                "the unused projection slot holds a batch of a rebuild ingested half-way, and its files are gone from {}; \
                 start over with --from 1 (or omit --from)",
                ingest_dir(db.path()).display()
            ),
        });
    }
    remove_ingest_dir(db.path())
}

/// Ingests every table file in the ingest directory into `slot`, `projection_meta` last,
/// then removes the directory.
fn ingest_ready_files(db: &DB, slot: ProjectionSlot) -> Result<(), EngineError> {
    let dir = ingest_dir(db.path());
    let meta = slot.column_family(Table::ProjectionMeta);
    let tables = Table::ALL.iter().map(|&table| slot.column_family(table)).filter(|&name| name != meta);
    for (number, name) in tables.chain(std::iter::once(meta)).enumerate() {
        let path = table_file(&dir, name);
        if !path.exists() {
            continue; // no write of that table in the batch, or ingested before a crash
        }
        let mut ingest = IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        db.ingest_external_file_cf_opts(column_family(db, name)?, &ingest, vec![&path])
            .map_err(EngineError::storage("ingesting a rebuilt table file"))?;
        // Moved files are linked into the database and unlinked here by RocksDB; a copy
        // (another file system) is not.
        if let Err(err) = std::fs::remove_file(&path)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            return Err(EngineError::Io { path, source: err });
        }
        if number == 0 {
            fail::fail_point!("rebuild::mid_ingest", |_| Err(EngineError::Io {
                path: dir.clone(),
                source: std::io::Error::other("injected at rebuild::mid_ingest"),
            }));
        }
    }
    remove_ingest_dir(db.path())
}

fn table_file(dir: &Path, column_family: &str) -> PathBuf {
    dir.join(format!("{column_family}.sst"))
}

/// Sets the slot's `rebuild_ingesting` key, synced: from now on its tables may hold part
/// of a batch that the checkpoint does not cover.
fn set_ingesting(db: &DB, slot: ProjectionSlot) -> Result<(), EngineError> {
    let mut batch = WriteBatch::default();
    batch.put_cf(column_family(db, slot.column_family(Table::ProjectionMeta))?, keys::META_REBUILD_INGESTING, []);
    let mut sync = WriteOptions::default();
    sync.set_sync(true);
    db.write_opt(batch, &sync).map_err(EngineError::storage("marking a rebuilt slot's batch"))
}

/// Writes `writes` (all of `table`, sorted by key) as the batch's file of that table; the
/// `projection_meta` file also deletes `rebuild_ingesting`.
fn write_table_file(dir: &Path, slot: ProjectionSlot, table: Table, writes: &[KvWrite]) -> Result<(), EngineError> {
    let path = table_file(dir, slot.column_family(table));
    let options = db_options();
    let mut file = SstFileWriter::create(&options);
    file.open(&path).map_err(EngineError::storage("creating a rebuilt table file"))?;
    let mut ingesting_deleted = table != Table::ProjectionMeta;
    for (index, (_, key, value)) in writes.iter().enumerate() {
        if writes.get(index + 1).is_some_and(|(_, next, _)| next == key) {
            continue; // a later write of the same key follows
        }
        if !ingesting_deleted && key.as_slice() > keys::META_REBUILD_INGESTING {
            file.delete(keys::META_REBUILD_INGESTING).map_err(EngineError::storage("writing a rebuilt table file"))?;
            ingesting_deleted = true;
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
    if !ingesting_deleted {
        file.delete(keys::META_REBUILD_INGESTING).map_err(EngineError::storage("writing a rebuilt table file"))?;
    }
    // `finish` syncs the file.
    file.finish().map_err(EngineError::storage("finishing a rebuilt table file"))
}

fn sync_dir(dir: &Path) -> Result<(), EngineError> {
    std::fs::File::open(dir).and_then(|file| file.sync_all()).map_err(io(dir))
}
