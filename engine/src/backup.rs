//! Backups of a data directory, and restoring one.
//!
//! A backup is itself a data directory: a RocksDB checkpoint (`rocksdb::checkpoint`),
//! which `osmium-replay check` and `verify` read like any other, and which is restored by
//! copying its files. It is a point-in-time copy: every event up to one position, with
//! the projections and the idempotency keys written in the same batches.
//!
//! * With the directory free, the checkpoint is taken on the directory itself (memtables
//!   flushed, file deletions held while the table files are linked).
//! * While an engine runs on it (its lock is held), RocksDB refuses a checkpoint of a
//!   read-only instance (`DisableFileDeletions` is not supported read-only), so the backup
//!   opens the directory read-only, which is a frozen view as of that open (the WAL
//!   replayed up to its last complete batch), and writes every record of every column
//!   family into a new database at the target, flushed to table files. Same result, the
//!   bytes written once more.
//!
//! Either way no file of the backup is shared with the directory: a checkpoint's hard
//! links are replaced by copies, so that damage to a live file never reaches the backup.

use crate::error::{EngineError, OpenError};
use crate::directory::{LOCK_FILE_NAME, db_options};
use crate::maintenance::DataDirectory;
use osmium_proto::ids::Position;
use rocksdb::{ColumnFamilyDescriptor, DB, WriteBatch, WriteOptions};
use std::path::{Path, PathBuf};

/// Records per write batch when a backup copies a read-only view.
const COPY_BATCH_RECORDS: usize = 10_000;
/// Files of a data directory that a backup or a restore never copies: locks and RocksDB's
/// info logs belong to the directory, not to its contents.
const NOT_COPIED: [&str; 3] = [LOCK_FILE_NAME, "LOCK", "LOG"];

/// Why a backup or a restore failed. Nothing was written under the target's name.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The directory to copy could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Reading, writing or checking the copy failed, or an argument is refused.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// How a backup was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupMethod {
    /// A RocksDB checkpoint of the directory, which no engine was using.
    Checkpoint,
    /// A copy of a read-only view of the directory, which an engine was using.
    ReadOnlyCopy,
}

impl BackupMethod {
    /// `checkpoint` or `read_only_copy`.
    pub fn name(self) -> &'static str {
        match self {
            BackupMethod::Checkpoint => "checkpoint",
            BackupMethod::ReadOnlyCopy => "read_only_copy",
        }
    }
}

/// What a backup or a restore wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackupReport {
    /// The last event position the copy holds (it holds every event up to it).
    pub last_position: Position,
    /// How the backup was taken (for a restore: `Checkpoint`, a copy of files).
    pub method: BackupMethod,
    /// Files written.
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| EngineError::Io { path: path.to_path_buf(), source }.into()
}

/// Refuses a target that exists and holds anything (an empty one is replaced at the end).
fn refuse_non_empty_target(target: &Path, field: &'static str, what: &str) -> Result<(), BackupError> {
    match std::fs::read_dir(target) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotADirectory => Err(EngineError::InvalidArgument {
            field,
            reason: format!("{} is a file; {what} goes into a new or empty directory", target.display()),
        }
        .into()),
        Err(err) => Err(io(target)(err)),
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(EngineError::InvalidArgument {
                field,
                reason: format!("{} is not empty; {what} never overwrites: name a new or empty directory", target.display()),
            }
            .into()),
        },
    }
}

/// A sibling of `target` to build into, renamed to `target` once complete, so that an
/// interrupted backup or restore never leaves a half-written directory under its name.
fn staging_path(target: &Path) -> Result<PathBuf, BackupError> {
    let name = target.file_name().ok_or_else(|| EngineError::InvalidArgument {
        field: "to",
        reason: format!("{} names no directory", target.display()),
    })?;
    let mut staging = name.to_os_string();
    staging.push(format!(".partial-{}", std::process::id()));
    Ok(target.with_file_name(staging))
}

/// Backs up the data directory `dir` into `to`, a new or empty directory (its parent must
/// exist). Works while an engine runs on `dir`. See the module documentation.
pub fn backup(dir: &Path, to: &Path) -> Result<BackupReport, BackupError> {
    if !dir.join("CURRENT").exists() {
        return Err(OpenError::NotAnEngineDirectory { path: dir.to_path_buf(), reason: "it holds no RocksDB database".into() }.into());
    }
    refuse_non_empty_target(to, "to", "a backup")?;
    let staging = staging_path(to)?;
    let result = (|| {
        let method = match DataDirectory::open_exclusive(dir) {
            Ok(directory) => {
                let checkpoint = rocksdb::checkpoint::Checkpoint::new(directory.database())
                    .map_err(EngineError::storage("preparing a checkpoint"))?;
                checkpoint.create_checkpoint(&staging).map_err(EngineError::storage("creating a checkpoint"))?;
                BackupMethod::Checkpoint
            }
            Err(OpenError::DirectoryInUse { .. }) => {
                let directory = DataDirectory::open_read_only(dir)?;
                copy_database(directory.database(), dir, &staging)?;
                BackupMethod::ReadOnlyCopy
            }
            Err(err) => return Err(err.into()),
        };
        let (files, bytes) = unshare_and_sync(&staging)?;
        let last_position = DataDirectory::open_read_only(&staging)?.last_position();
        Ok(BackupReport { last_position, method, files, bytes })
    })();
    finish(result, &staging, to)
}

/// Restores the backup `from` into `to`, a new or empty directory: copies its files after
/// checking that it is a data directory, and checks that the copy opens.
pub fn restore(from: &Path, to: &Path) -> Result<BackupReport, BackupError> {
    let source = DataDirectory::open_read_only(from)?;
    let last_position = source.last_position();
    drop(source);
    refuse_non_empty_target(to, "data_dir", "a restore")?;
    let staging = staging_path(to)?;
    let result = (|| {
        std::fs::create_dir(&staging).map_err(io(&staging))?;
        let (mut files, mut bytes) = (0, 0);
        for entry in std::fs::read_dir(from).map_err(io(from))? {
            let entry = entry.map_err(io(from))?;
            let name = entry.file_name();
            if !copied(&name.to_string_lossy()) || !entry.file_type().map_err(io(from))?.is_file() {
                continue;
            }
            bytes += std::fs::copy(entry.path(), staging.join(&name)).map_err(io(&entry.path()))?;
            files += 1;
        }
        sync_files(&staging)?;
        let restored = DataDirectory::open_read_only(&staging)?.last_position();
        if restored != last_position {
            return Err(EngineError::Corrupt {
                what: format!("restored copy of {}", from.display()),
                expected: format!("last position {last_position}"),
                found: format!("last position {restored}"),
            }
            .into());
        }
        Ok(BackupReport { last_position, method: BackupMethod::Checkpoint, files, bytes })
    })();
    finish(result, &staging, to)
}

fn copied(name: &str) -> bool {
    !NOT_COPIED.contains(&name) && !name.starts_with("LOG.old")
}

/// Renames a complete staging directory to its target (replacing it when it is an empty
/// directory), or removes a failed one: a failure leaves the target as it was.
fn finish(result: Result<BackupReport, BackupError>, staging: &Path, to: &Path) -> Result<BackupReport, BackupError> {
    match result {
        Ok(report) => {
            if let Err(err) = std::fs::rename(staging, to) {
                let _ = std::fs::remove_dir_all(staging);
                return Err(io(to)(err));
            }
            if let Some(parent) = to.parent().filter(|parent| !parent.as_os_str().is_empty()) {
                std::fs::File::open(parent).and_then(|parent| parent.sync_all()).map_err(io(parent))?;
            }
            Ok(report)
        }
        Err(err) => {
            let _ = std::fs::remove_dir_all(staging);
            Err(err)
        }
    }
}

/// Writes every record of every column family of `source` (opened on `dir`) into a new
/// database at `to`, flushed to table files.
fn copy_database(source: &DB, dir: &Path, to: &Path) -> Result<(), BackupError> {
    let names = DB::list_cf(&db_options(), dir).map_err(EngineError::storage("listing column families"))?;
    let descriptors = names.iter().map(|name| ColumnFamilyDescriptor::new(name, db_options()));
    let target = DB::open_cf_descriptors(&db_options(), to, descriptors).map_err(EngineError::storage("creating the backup"))?;
    let mut unlogged = WriteOptions::default();
    unlogged.disable_wal(true); // flushed below
    for name in &names {
        let (Some(from), Some(into)) = (source.cf_handle(name), target.cf_handle(name)) else {
            continue; // listed but not open: a column family dropped meanwhile
        };
        let mut iter = source.raw_iterator_cf(&from);
        iter.seek_to_first();
        let mut batch = WriteBatch::default();
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            batch.put_cf(&into, key, value);
            if batch.len() >= COPY_BATCH_RECORDS {
                target.write_opt(std::mem::take(&mut batch), &unlogged).map_err(EngineError::storage("writing the backup"))?;
            }
            iter.next();
        }
        iter.status().map_err(EngineError::storage("reading the directory for a backup"))?;
        target.write_opt(batch, &unlogged).map_err(EngineError::storage("writing the backup"))?;
        target.flush_cf(&into).map_err(EngineError::storage("flushing the backup"))?;
    }
    Ok(())
}

/// Replaces every hard-linked file in `dir` by a copy of its own, drops what a backup does
/// not keep, and syncs every file; returns the files and bytes.
fn unshare_and_sync(dir: &Path) -> Result<(usize, u64), BackupError> {
    use std::os::unix::fs::MetadataExt as _;
    let (mut files, mut bytes) = (0, 0);
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let metadata = entry.metadata().map_err(io(&path))?;
        if !metadata.is_file() {
            continue;
        }
        if !copied(&entry.file_name().to_string_lossy()) {
            std::fs::remove_file(&path).map_err(io(&path))?;
            continue;
        }
        if metadata.nlink() > 1 {
            let copy = path.with_extension("unshared");
            std::fs::copy(&path, &copy).map_err(io(&copy))?;
            std::fs::rename(&copy, &path).map_err(io(&path))?;
        }
        files += 1;
        bytes += metadata.len();
    }
    sync_files(dir)?;
    Ok((files, bytes))
}

/// fsyncs every file of `dir` and the directory itself.
fn sync_files(dir: &Path) -> Result<(), BackupError> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.is_file() {
            std::fs::File::open(&path).and_then(|file| file.sync_all()).map_err(io(&path))?;
        }
    }
    std::fs::File::open(dir).and_then(|dir| dir.sync_all()).map_err(io(dir))
}
