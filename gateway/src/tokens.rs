//! Sign-in tokens: created and revoked by `osmium-server token ...` while the server may
//! be running (the engine holds the directory lock, so this never opens the engine when
//! its database exists), stored only as SHA-256 hashes in [`TOKENS_FILE_NAME`] in the
//! data directory, written atomically (temp file, fsync, rename). Create and revoke hold
//! [`TOKENS_LOCK_FILE_NAME`] while they read, change and rewrite the file, so concurrent
//! commands lose nothing. The server re-reads the file when its modification time, size
//! or inode changes, so a revocation takes effect without a restart: new `Authorize`
//! calls fail at once, and signed-in connections of the revoked token are closed as soon
//! as the server noticed (within [`TOKENS_POLL_INTERVAL_MS`]), with or without a call.

use crate::error::{GatewayError, random_bytes};
use base64::Engine as _;
use osmium_engine::{ChatEngine, EngineConfig, OpenError};
use osmium_proto::ids::UserId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;
use tokio::sync::watch;

/// The tokens file, in the data directory next to the engine's database.
pub const TOKENS_FILE_NAME: &str = "gateway-tokens.json";
/// The lock file that serializes `token create`/`revoke` (read, change, rewrite).
pub const TOKENS_LOCK_FILE_NAME: &str = "gateway-tokens.lock";
/// Bytes of OS randomness in a token (256 bits), URL-safe base64 without padding.
pub const TOKEN_RANDOM_BYTES: usize = 32;
/// How often the server checks the tokens file for changes, in milliseconds.
pub const TOKENS_POLL_INTERVAL_MS: u64 = 1_000;
/// How long `token create` waits for another engine that holds a fresh data directory
/// (a concurrent `token create`, or a server starting) to create its database, in
/// milliseconds.
pub const DATABASE_WAIT_MS: u64 = 10_000;
/// Longest user name a token may carry, in characters (the engine's default limit).
pub const TOKEN_NAME_MAX_CHARS: usize = 100;

/// One token as stored: never the token itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEntry {
    /// The user the token signs in as.
    pub user_id: u64,
    /// The user's display name (upserted into the engine's directory on sign-in).
    pub name: String,
    /// SHA-256 of the token, lowercase hex.
    pub sha256: String,
    /// When it was created, unix milliseconds.
    pub created_at_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokensFile {
    version: u32,
    tokens: Vec<TokenEntry>,
}

const TOKENS_FILE_VERSION: u32 = 1;

/// Lowercase hex SHA-256 of a token.
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest.iter() {
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 0x0f)]));
    }
    hex
}

fn tokens_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKENS_FILE_NAME)
}

fn read_file(path: &Path) -> Result<TokensFile, GatewayError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|err| GatewayError::TokensFile { path: path.to_path_buf(), reason: err.to_string() }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            Ok(TokensFile { version: TOKENS_FILE_VERSION, tokens: Vec::new() })
        }
        Err(err) => Err(GatewayError::Io { path: path.to_path_buf(), source: err }),
    }
}

fn write_file(data_dir: &Path, file: &TokensFile) -> Result<(), GatewayError> {
    let path = tokens_path(data_dir);
    let temp = data_dir.join(format!("{TOKENS_FILE_NAME}.tmp"));
    let json = serde_json::to_vec_pretty(file)
        .map_err(|err| GatewayError::TokensFile { path: path.clone(), reason: err.to_string() })?;
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .map_err(GatewayError::io(&temp))?;
        out.write_all(&json).map_err(GatewayError::io(&temp))?;
        out.sync_all().map_err(GatewayError::io(&temp))?;
    }
    std::fs::rename(&temp, &path).map_err(GatewayError::io(&path))?;
    std::fs::File::open(data_dir).and_then(|dir| dir.sync_all()).map_err(GatewayError::io(data_dir))
}

/// Holds the tokens lock of `data_dir` until dropped (waits for other token commands).
fn lock_tokens(data_dir: &Path) -> Result<std::fs::File, GatewayError> {
    let path = data_dir.join(TOKENS_LOCK_FILE_NAME);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(GatewayError::io(&path))?;
    lock.lock().map_err(GatewayError::io(&path))?;
    Ok(lock)
}

/// Makes sure `data_dir` holds an engine database, so that the engine accepts the tokens
/// file beside it (it refuses a directory with other files but no database). Opens the
/// engine only when there is no database yet (a running server always has one).
/// When another engine holds the directory, waits (up to [`DATABASE_WAIT_MS`]) for its
/// database to appear instead of failing: writing the tokens file before that would make
/// the directory foreign to the engine that is creating it.
async fn ensure_database(data_dir: &Path) -> Result<(), GatewayError> {
    let current = data_dir.join("CURRENT");
    if current.exists() {
        return Ok(());
    }
    match ChatEngine::open(data_dir, EngineConfig::default()).await {
        Ok(engine) => {
            drop(engine);
            Ok(())
        }
        Err(err @ OpenError::DirectoryInUse { .. }) => {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(DATABASE_WAIT_MS);
            while !current.exists() {
                if tokio::time::Instant::now() >= deadline {
                    return Err(err.into());
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Ok(())
        }
        Err(err) => Err(err.into()),
    }
}

/// Creates a token for `user` named `name` and returns it: the only time it is seen.
pub async fn create_token(data_dir: &Path, user: UserId, name: &str) -> Result<String, GatewayError> {
    if user.get() == 0 {
        return Err(GatewayError::InvalidArgument { field: "user", reason: "must not be 0".into() });
    }
    let chars = name.chars().count();
    if chars == 0 || chars > TOKEN_NAME_MAX_CHARS {
        return Err(GatewayError::InvalidArgument {
            field: "name",
            reason: format!("must be 1 to {TOKEN_NAME_MAX_CHARS} characters"),
        });
    }
    ensure_database(data_dir).await?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<TOKEN_RANDOM_BYTES>()?);
    let _lock = lock_tokens(data_dir)?;
    let mut file = read_file(&tokens_path(data_dir))?;
    file.version = TOKENS_FILE_VERSION;
    let created_at_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    file.tokens.push(TokenEntry { user_id: user.get(), name: name.to_owned(), sha256: token_hash(&token), created_at_ms });
    write_file(data_dir, &file)?;
    Ok(token)
}

/// Revokes every token of `user` (only those named `name` when given); returns how many.
pub fn revoke_tokens(data_dir: &Path, user: UserId, name: Option<&str>) -> Result<usize, GatewayError> {
    if !tokens_path(data_dir).exists() {
        return Ok(0); // and no lock file: it would make a fresh directory foreign to the engine
    }
    let _lock = lock_tokens(data_dir)?;
    let mut file = read_file(&tokens_path(data_dir))?;
    let before = file.tokens.len();
    file.tokens.retain(|entry| !(entry.user_id == user.get() && name.is_none_or(|name| entry.name == name)));
    let revoked = before - file.tokens.len();
    if revoked > 0 {
        write_file(data_dir, &file)?;
    }
    Ok(revoked)
}

/// Every stored token entry (hashes only).
pub fn list_tokens(data_dir: &Path) -> Result<Vec<TokenEntry>, GatewayError> {
    Ok(read_file(&tokens_path(data_dir))?.tokens)
}

/// Who a token signs in as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenGrant {
    /// The user.
    pub user: UserId,
    /// Their display name.
    pub name: String,
}

#[derive(Debug, Default)]
struct Cached {
    loaded: bool,
    /// Modification time, size and inode (every atomic rewrite is a new inode).
    stamp: Option<(SystemTime, u64, u64)>,
    by_hash: HashMap<String, TokenGrant>,
}

/// The server's view of the tokens file, re-read when it changes.
#[derive(Debug)]
pub(crate) struct TokenStore {
    path: PathBuf,
    cached: Mutex<Cached>,
    /// Bumped every time the file's contents were re-read; connections watch it to
    /// close themselves when their token is revoked.
    generation: watch::Sender<u64>,
}

impl TokenStore {
    pub(crate) fn new(data_dir: &Path) -> TokenStore {
        TokenStore { path: tokens_path(data_dir), cached: Mutex::new(Cached::default()), generation: watch::Sender::new(0) }
    }

    /// Bumped every time the file's contents were re-read.
    pub(crate) fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// Wakes when the generation changes (the file was re-read).
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Re-reads the file if its modification time or size changed.
    pub(crate) fn refresh(&self) -> Result<(), GatewayError> {
        let stamp = match std::fs::metadata(&self.path) {
            Ok(meta) => {
                use std::os::unix::fs::MetadataExt as _;
                Some((meta.modified().map_err(GatewayError::io(&self.path))?, meta.len(), meta.ino()))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(err) => return Err(GatewayError::Io { path: self.path.clone(), source: err }),
        };
        let mut cached = self.cached.lock().map_err(|_| GatewayError::TokensFile {
            path: self.path.clone(),
            reason: "token cache poisoned".into(),
        })?;
        if cached.loaded && cached.stamp == stamp {
            return Ok(());
        }
        let file = read_file(&self.path)?;
        cached.by_hash = file
            .tokens
            .into_iter()
            .map(|entry| (entry.sha256, TokenGrant { user: UserId(entry.user_id), name: entry.name }))
            .collect();
        cached.stamp = stamp;
        cached.loaded = true;
        drop(cached);
        self.generation.send_modify(|generation| *generation += 1);
        Ok(())
    }

    /// Who `token` signs in as (after a refresh), or `None` for an unknown or revoked one.
    pub(crate) fn lookup(&self, token: &str) -> Result<Option<(TokenGrant, String)>, GatewayError> {
        self.refresh()?;
        let hash = token_hash(token);
        Ok(self.grant_of(&hash).map(|grant| (grant, hash)))
    }

    /// The grant of a token hash in the current cache (no refresh).
    pub(crate) fn grant_of(&self, hash: &str) -> Option<TokenGrant> {
        self.cached.lock().ok().and_then(|cached| cached.by_hash.get(hash).cloned())
    }
}
