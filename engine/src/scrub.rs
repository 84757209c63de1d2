//! Reading every file of a data directory back with its checksums verified, so that a
//! damaged table file is found wherever it is, also in column families that `check` and
//! `verify` do not otherwise read (idempotency keys, the unused projection slot).

use crate::error::EngineError;
use crate::maintenance::DataDirectory;
use rocksdb::{DB, ReadOptions};

impl DataDirectory {
    /// Reads every record of every column family, block checksums verified, without
    /// filling the block cache. Blocks this process already holds in its (process-wide)
    /// cache are not read again: for this directory or for an identical copy of it, whose
    /// files keep the ids the cache keys are made of. `osmium-replay check` runs in a
    /// process of its own, so it reads every block from the disk. A damaged file is
    /// [`EngineError::CorruptFile`] naming it. Returns the number of records read.
    pub fn read_every_file(&self) -> Result<u64, EngineError> {
        let names = DB::list_cf(&crate::directory::db_options(), self.path()).map_err(EngineError::storage("listing column families"))?;
        let db = self.database();
        let mut records = 0u64;
        for name in names {
            let Some(cf) = db.cf_handle(&name) else { continue };
            let mut options = ReadOptions::default();
            options.set_verify_checksums(true);
            options.fill_cache(false);
            let mut iter = db.raw_iterator_cf_opt(&cf, options);
            iter.seek_to_first();
            while iter.valid() {
                records += 1;
                iter.next();
            }
            iter.status().map_err(EngineError::storage("reading every table file"))?;
        }
        Ok(records)
    }
}

/// One table file of a data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableFile {
    /// The file.
    pub path: std::path::PathBuf,
    /// The column family it belongs to (`position_event`, `chatid_msgid_message#a`, ...).
    pub column_family: String,
    /// Its size, in bytes.
    pub bytes: u64,
}

impl DataDirectory {
    /// The live table files and the column family of each, for telling whether a damaged
    /// file holds the log (restore from a backup) or projections (rebuild).
    pub fn table_files(&self) -> Result<Vec<TableFile>, EngineError> {
        let files = self.database().live_files().map_err(EngineError::storage("listing table files"))?;
        Ok(files
            .into_iter()
            .map(|file| TableFile {
                path: self.path().join(file.name.trim_start_matches('/')),
                column_family: file.column_family_name,
                bytes: file.size as u64,
            })
            .collect())
    }
}
