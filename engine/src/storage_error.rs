//! Typed storage failures read out of RocksDB's errors: a full disk
//! ([`EngineError::DiskFull`]) and a damaged file ([`EngineError::CorruptFile`]), each
//! naming the file RocksDB names.
//!
//! RocksDB reports both as a status string, for example
//! `IO error: No space left on device: While appending to file: /data/000004.log: No space left on device`
//! or `Corruption: block checksum mismatch: stored = 1, computed = 2, type = 1  in /data/000009.sst offset 0 size 3641`;
//! the Rust binding hands over only that string and a coarse kind, so the file is parsed
//! out of the string. A path containing white space is not recognised (the error then
//! stays [`EngineError::Storage`], or a `DiskFull` without a path).

use crate::error::EngineError;
use osmium_projections::ProjectionError;
use std::path::{Path, PathBuf};

/// `strerror(ENOSPC)`, as RocksDB's POSIX file system puts it into its messages.
const NO_SPACE: &str = "No space left on device";
/// `strerror(EDQUOT)`: a full quota is a full disk for the engine.
const QUOTA_EXCEEDED: &str = "Disk quota exceeded";
/// `ENOSPC` on Linux, for the error injected by the `commit::before_write` crash point.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
const ENOSPC: i32 = 28;
/// The payload of the `commit::before_write` crash point that injects a full disk
/// (`fail::cfg("commit::before_write", "return(disk_full)")`).
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
pub(crate) const INJECT_DISK_FULL: &str = "disk_full";

/// Classifies a RocksDB error: a full disk or a corrupt named file gets its own variant,
/// anything else stays [`EngineError::Storage`] with `context`.
pub(crate) fn from_rocksdb(context: &'static str, source: rocksdb::Error) -> EngineError {
    let message = source.as_ref();
    if is_disk_full(message) {
        return EngineError::DiskFull { path: file_named_in(message), detail: message.to_owned() };
    }
    if source.kind() == rocksdb::ErrorKind::Corruption
        && let Some(path) = file_named_in(message)
    {
        return EngineError::CorruptFile { path, detail: message.to_owned() };
    }
    EngineError::Storage { context, source }
}

/// RocksDB's info log in a data directory: where it names a damaged WAL.
const INFO_LOG_FILE_NAME: &str = "LOG";
/// How much of the end of the info log is searched for the damaged WAL, in bytes.
const INFO_LOG_TAIL_BYTES: u64 = 1 << 20;

/// Like [`EngineError::storage`], for opening the database at `dir`: a damaged
/// write-ahead log makes RocksDB answer only `Corruption: checksum mismatch`, without the
/// file, which it writes to its info log instead (`<file>: dropping N bytes; Corruption:
/// ...`); the file is taken from there.
pub(crate) fn opening(dir: &Path, context: &'static str) -> impl FnOnce(rocksdb::Error) -> EngineError {
    move |source| match from_rocksdb(context, source) {
        EngineError::Storage { context, source } if source.kind() == rocksdb::ErrorKind::Corruption => {
            match damaged_file_in_info_log(dir, source.as_ref()).or_else(|| damaged_write_ahead_log(dir)) {
                Some(path) => EngineError::CorruptFile { path, detail: source.into_string() },
                None => EngineError::Storage { context, source },
            }
        }
        classified => classified,
    }
}

/// The file of the last `dropping` line of the info log that reports `status`.
fn damaged_file_in_info_log(dir: &Path, status: &str) -> Option<PathBuf> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(dir.join(INFO_LOG_FILE_NAME)).ok()?;
    let length = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(length.saturating_sub(INFO_LOG_TAIL_BYTES))).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let tail = String::from_utf8_lossy(&tail);
    tail.lines()
        .rev()
        .filter(|line| line.contains(": dropping ") && line.contains(status))
        .find_map(file_named_in)
}

/// RocksDB's WAL format (`db/log_format.h`): 32 KiB blocks of records, each with a
/// 7-byte header (masked CRC32C, length, type), 11 bytes for recyclable types.
const WAL_BLOCK_BYTES: usize = 32_768;
const WAL_HEADER_BYTES: usize = 7;
const WAL_RECYCLABLE_HEADER_BYTES: usize = 11;
/// `crc32c::Mask`'s constant.
const CRC_MASK_DELTA: u32 = 0xa282_ead8;

/// The first write-ahead log of `dir` (oldest first) holding a record that fails its
/// checksum or claims more bytes than its block has. A read-only open has no info log to
/// name the file, so this reads the WALs the way RocksDB does; a record cut short at the
/// very end of a file (a torn last write, tolerated on open) is not a failure.
fn damaged_write_ahead_log(dir: &Path) -> Option<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    logs.sort();
    logs.into_iter().find(|path| std::fs::read(path).is_ok_and(|bytes| !wal_records_intact(&bytes)))
}

fn wal_records_intact(bytes: &[u8]) -> bool {
    for block in bytes.chunks(WAL_BLOCK_BYTES) {
        let mut at = 0;
        while block.len() - at >= WAL_HEADER_BYTES {
            let header = &block[at..];
            let stored = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            let length = usize::from(u16::from_le_bytes([header[4], header[5]]));
            let kind = header[6];
            if kind == 0 && length == 0 {
                break; // zeros: preallocated space or a block's padding
            }
            let recyclable = (5..=8).contains(&kind) || (kind >= 10 && kind % 2 == 1);
            let header_bytes = if recyclable { WAL_RECYCLABLE_HEADER_BYTES } else { WAL_HEADER_BYTES };
            let end = at + header_bytes + length;
            if end > block.len() {
                let at_end_of_file = std::ptr::eq(block.as_ptr_range().end, bytes.as_ptr_range().end);
                return at_end_of_file; // cut short: tolerated at the very end only
            }
            let covered = &block[at + 6..end]; // type, log number when recyclable, payload
            if unmask(stored) != crc32c(covered) {
                return false;
            }
            at = end;
        }
    }
    true
}

fn unmask(masked: u32) -> u32 {
    let rotated = masked.wrapping_sub(CRC_MASK_DELTA);
    rotated.rotate_left(15)
}

/// CRC-32C (Castagnoli), bitwise: only run on the error path.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82f6_3b78 } else { crc >> 1 };
        }
    }
    !crc
}

/// Makes opening a directory whose write-ahead log is damaged an error instead of a
/// silent loss. RocksDB's default (`PointInTimeRecovery`) replays a WAL up to its first
/// bad record and drops everything after it, acknowledged events included, then opens as
/// if nothing happened. `TolerateCorruptedTailRecords` still accepts a WAL whose last
/// record was cut short (a crash or power loss in the middle of a write: that record was
/// never acknowledged) but refuses a record that is complete and fails its checksum.
pub(crate) fn refuse_damaged_write_ahead_logs(options: &mut rocksdb::Options) {
    options.set_wal_recovery_mode(rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords);
}

/// A projection store error carries RocksDB's message as text: a full disk or a damaged
/// named file under the projections gets its typed variant, like any RocksDB error.
impl From<ProjectionError> for EngineError {
    fn from(err: ProjectionError) -> EngineError {
        if let ProjectionError::Store(message) = &err {
            if is_disk_full(message) {
                return EngineError::DiskFull { path: file_named_in(message), detail: message.clone() };
            }
            if message.starts_with("Corruption:")
                && let Some(path) = file_named_in(message)
            {
                return EngineError::CorruptFile { path, detail: message.clone() };
            }
        }
        EngineError::Projection(err)
    }
}

/// The error a command gets from a log writer that stopped after a failed commit
/// (`reason` is that commit's error, as text): [`EngineError::DiskFull`] when the disk
/// filled up, so that every append after a full disk says so, otherwise
/// [`EngineError::WriterFailed`].
pub(crate) fn writer_failed(reason: &str) -> EngineError {
    if is_disk_full(reason) {
        let detail = unwrap_disk_full(reason).unwrap_or(reason);
        return EngineError::DiskFull { path: file_named_in(detail), detail: detail.to_owned() };
    }
    EngineError::WriterFailed { reason: reason.to_owned() }
}

/// The `detail` of a [`EngineError::DiskFull`]'s message (its format is in `error.rs`).
fn unwrap_disk_full(message: &str) -> Option<&str> {
    let (_path, rest) = message.strip_prefix("disk full writing ")?.split_once(": ")?;
    rest.strip_suffix("; free space on its file system, then reopen the engine")
}

/// The error of the `commit::before_write` crash point: a full disk when configured with
/// the payload [`INJECT_DISK_FULL`], otherwise an I/O error naming the crash point.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
pub(crate) fn injected(dir: &Path, point: &str, payload: Option<String>) -> EngineError {
    if payload.as_deref() == Some(INJECT_DISK_FULL) {
        let source = std::io::Error::from_raw_os_error(ENOSPC);
        return EngineError::DiskFull { path: Some(dir.to_path_buf()), detail: format!("injected at {point}: {source}") };
    }
    EngineError::Io { path: dir.to_path_buf(), source: std::io::Error::other(format!("injected at {point}")) }
}

fn is_disk_full(message: &str) -> bool {
    message.contains(NO_SPACE) || message.contains(QUOTA_EXCEEDED)
}

/// The file an error message names: the first absolute path in it whose file name is one
/// of RocksDB's (`*.sst`, `*.log`, `*.blob`, `MANIFEST-*`, `CURRENT`, `OPTIONS-*`,
/// `IDENTITY`, `LOCK`), else the first absolute path.
pub(crate) fn file_named_in(message: &str) -> Option<PathBuf> {
    let paths: Vec<&str> = message
        .split_whitespace()
        .map(|word| word.trim_start_matches(['(', '\'', '"']).trim_end_matches([':', ',', ';', ')', '.', '\'', '"']))
        .filter(|word| word.starts_with('/') && word.len() > 1)
        .collect();
    let rocksdb_file = |path: &&str| {
        let name = path.rsplit('/').next().unwrap_or_default();
        name.ends_with(".sst")
            || name.ends_with(".log")
            || name.ends_with(".blob")
            || name.starts_with("MANIFEST-")
            || name.starts_with("OPTIONS-")
            || ["CURRENT", "IDENTITY", "LOCK"].contains(&name)
    };
    paths.iter().copied().find(rocksdb_file).or(paths.first().copied()).map(PathBuf::from)
}

/// `path` for an error message, or `an unnamed file`.
pub(crate) fn describe(path: &Option<PathBuf>) -> String {
    path.as_ref().map_or_else(|| "an unnamed file".to_owned(), |path| path.display().to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_no_space_message_names_the_file_being_appended() {
        let message = "IO error: No space left on device: While appending to file: /d/000004.log: No space left on device";
        assert_eq!(file_named_in(message), Some(PathBuf::from("/d/000004.log")));
        assert!(is_disk_full(message));
    }

    #[test]
    fn a_checksum_mismatch_names_the_table_file() {
        let message = "Corruption: block checksum mismatch: stored = 1, computed = 2, type = 1  in /tmp/x/000009.sst offset 0 size 3641";
        assert_eq!(file_named_in(message), Some(PathBuf::from("/tmp/x/000009.sst")));
    }

    #[test]
    fn a_rocksdb_file_name_wins_over_an_earlier_directory() {
        let message = "IO error: While open a file for appending: /d (dir): /d/000012.sst: No space left on device";
        assert_eq!(file_named_in(message), Some(PathBuf::from("/d/000012.sst")));
    }

    #[test]
    fn crc32c_matches_its_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn an_intact_write_ahead_log_reads_clean_and_a_flipped_byte_in_it_does_not() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = rocksdb::DB::open(&crate::directory::db_options(), dir.path()).unwrap();
            for n in 0u32..2_000 {
                db.put(n.to_be_bytes(), vec![n as u8; 100 + (n as usize % 50_000)]).unwrap();
            }
        }
        let wal = damaged_write_ahead_log(dir.path());
        assert_eq!(wal, None, "an intact WAL has no bad record");
        let file = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|e| e == "log")).unwrap();
        let mut bytes = std::fs::read(&file).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&file, bytes).unwrap();
        assert_eq!(damaged_write_ahead_log(dir.path()), Some(file));
    }

    #[test]
    fn a_message_without_a_path_names_no_file() {
        assert_eq!(file_named_in("Corruption: checksum mismatch"), None);
    }

    #[test]
    fn a_disk_full_error_passed_on_as_text_keeps_its_file_and_detail() {
        let detail = "IO error: No space left on device: While appending to file: /d/000004.log: No space left on device";
        let first = EngineError::DiskFull { path: file_named_in(detail), detail: detail.to_owned() };
        let passed_on = writer_failed(&first.to_string());
        assert_eq!(passed_on.to_string(), first.to_string());
    }

    #[test]
    fn a_writer_stopped_by_a_full_disk_answers_disk_full_and_otherwise_writer_failed() {
        let full = writer_failed("disk full writing /d/000004.log: IO error: No space left on device");
        assert!(matches!(&full, EngineError::DiskFull { path: Some(path), .. } if path == Path::new("/d/000004.log")), "{full:?}");
        let other = writer_failed("a commit panicked: boom");
        assert!(matches!(other, EngineError::WriterFailed { .. }), "{other:?}");
    }
}
