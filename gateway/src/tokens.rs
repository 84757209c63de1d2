//! Sign-in tokens: created and revoked by `osmium-server token ...` while the server may
//! be running (the engine holds the directory lock, so this never opens the engine when
//! its database exists), stored only as SHA-256 hashes in [`TOKENS_FILE_NAME`] in the
//! data directory, written atomically (temp file, fsync, rename). Create and revoke hold
//! [`TOKENS_LOCK_FILE_NAME`] while they read, change and rewrite the file, so concurrent
//! commands lose nothing. The server re-reads the file when its modification time, size
//! or inode changes, so a revocation takes effect without a restart: new `Authorize`
//! calls fail at once, and signed-in connections of the revoked token are closed as soon
//! as the server noticed (within [`TOKENS_POLL_INTERVAL_MS`]), with or without a call.
//!
//! A presented token is hashed and its SHA-256 compared with every stored hash in
//! constant time (`subtle`), always all of them: how long a sign-in takes depends on the
//! number of stored tokens only, never on how many bytes of a guess match a stored hash
//! nor on which entry matched. What that protects against: a timing side channel through
//! which an attacker who measures `Authorize` latencies for chosen tokens would learn a
//! prefix of a stored hash. Since the hashes are of 256-bit random tokens, such a leak
//! would not give a token (that needs a SHA-256 preimage), but the stored hashes are the
//! verifiers of live credentials and the comparison should not say anything about them.

use crate::error::{GatewayError, random_bytes};
use base64::Engine as _;
use osmium_engine::{ChatEngine, EngineConfig, OpenError};
use osmium_proto::ids::UserId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable as _, ConstantTimeEq as _};
use std::collections::HashSet;
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

/// A token's SHA-256.
pub type TokenHash = [u8; 32];

/// SHA-256 of a token.
pub fn token_digest(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Lowercase hex SHA-256 of a token (as stored in the tokens file).
pub fn token_hash(token: &str) -> String {
    let digest = token_digest(token);
    let mut hex = String::with_capacity(64);
    for byte in digest.iter() {
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 0x0f)]));
    }
    hex
}

/// The hash of a stored entry's 64 lowercase or uppercase hex digits.
fn parse_hash(hex: &str) -> Option<TokenHash> {
    let digits = hex.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (byte, pair) in hash.iter_mut().zip(digits.chunks_exact(2)) {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        *byte = u8::try_from(high << 4 | low).ok()?;
    }
    Some(hash)
}

/// Whether two hashes are equal, in constant time: four 64-bit words compared with
/// `subtle` (a quarter of the work of comparing bytes one at a time).
fn hash_ct_eq(a: &TokenHash, b: &TokenHash) -> subtle::Choice {
    let (a, _) = a.as_chunks::<8>();
    let (b, _) = b.as_chunks::<8>();
    a.iter().zip(b).fold(subtle::Choice::from(1), |equal, (a, b)| {
        equal & u64::from_ne_bytes(*a).ct_eq(&u64::from_ne_bytes(*b))
    })
}

/// The index of `hash` in `entries`, comparing with every entry in constant time.
fn find_constant_time(entries: &[(TokenHash, TokenGrant)], hash: &TokenHash) -> Option<usize> {
    let mut found = subtle::Choice::from(0);
    let mut index = 0u64;
    for (position, (stored, _)) in entries.iter().enumerate() {
        let equal = hash_ct_eq(stored, hash);
        index = u64::conditional_select(&index, &(position as u64), equal);
        found |= equal;
    }
    bool::from(found).then(|| usize::try_from(index).ok()).flatten()
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
    /// Every stored hash with its grant; searched in full, in constant time, for a
    /// presented token.
    entries: Vec<(TokenHash, TokenGrant)>,
    /// The same hashes, for the server's own checks of its sessions' hashes (no secret
    /// from outside is compared there, so no side channel to close).
    signed_in: HashSet<TokenHash>,
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
        let mut entries = Vec::with_capacity(file.tokens.len());
        for (number, entry) in file.tokens.into_iter().enumerate() {
            let hash = parse_hash(&entry.sha256).ok_or_else(|| GatewayError::TokensFile {
                path: self.path.clone(),
                reason: format!("token {number} (user {}): sha256 is not 64 hex digits", entry.user_id),
            })?;
            entries.push((hash, TokenGrant { user: UserId(entry.user_id), name: entry.name }));
        }
        cached.signed_in = entries.iter().map(|(hash, _)| *hash).collect();
        cached.entries = entries;
        cached.stamp = stamp;
        cached.loaded = true;
        drop(cached);
        self.generation.send_modify(|generation| *generation += 1);
        Ok(())
    }

    /// Who `token` signs in as (after a refresh), or `None` for an unknown or revoked one.
    pub(crate) fn lookup(&self, token: &str) -> Result<Option<(TokenGrant, TokenHash)>, GatewayError> {
        self.refresh()?;
        let hash = token_digest(token);
        let cached = self.cached.lock().map_err(|_| GatewayError::TokensFile {
            path: self.path.clone(),
            reason: "token cache poisoned".into(),
        })?;
        let grant = find_constant_time(&cached.entries, &hash).and_then(|index| cached.entries.get(index));
        Ok(grant.map(|(_, grant)| (grant.clone(), hash)))
    }

    /// Whether the hash of a signed-in session's token is still stored (no refresh). A
    /// hash lookup, not a full scan: every connection checks this after each re-read of
    /// the file, and the hash is the server's own, not a guess from outside.
    pub(crate) fn still_stored(&self, hash: &TokenHash) -> bool {
        self.cached.lock().is_ok_and(|cached| cached.signed_in.contains(hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(user: u64) -> TokenGrant {
        TokenGrant { user: UserId(user), name: format!("user {user}") }
    }

    #[test]
    fn constant_time_search_finds_the_entry_with_the_same_hash_only() {
        let entries: Vec<(TokenHash, TokenGrant)> =
            (1..=50).map(|user| (token_digest(&format!("token {user}")), grant(user))).collect();
        for (index, (hash, _)) in entries.iter().enumerate() {
            assert_eq!(find_constant_time(&entries, hash), Some(index));
        }
        // One bit off in the last byte, or in the first: not found.
        let mut near = entries[17].0;
        near[31] ^= 1;
        assert_eq!(find_constant_time(&entries, &near), None);
        near[31] ^= 1;
        near[0] ^= 0x80;
        assert_eq!(find_constant_time(&entries, &near), None);
        assert_eq!(find_constant_time(&[], &entries[0].0), None);
    }

    #[test]
    fn stored_hex_parses_to_the_digest() {
        let token = "some token";
        assert_eq!(parse_hash(&token_hash(token)), Some(token_digest(token)));
        assert_eq!(parse_hash(&token_hash(token).to_uppercase()), Some(token_digest(token)));
        assert_eq!(parse_hash("abc"), None);
        assert_eq!(parse_hash(&"zz".repeat(32)), None);
    }

    #[test]
    fn a_stored_hash_that_is_not_hex_makes_the_tokens_file_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let file = r#"{"version":1,"tokens":[{"user_id":5,"name":"ann","sha256":"not hex","created_at_ms":0}]}"#;
        std::fs::write(dir.path().join(TOKENS_FILE_NAME), file).unwrap();
        let store = TokenStore::new(dir.path());
        let refreshed = store.refresh();
        assert!(matches!(&refreshed, Err(GatewayError::TokensFile { reason, .. }) if reason.contains("user 5")), "{refreshed:?}");
    }
}
