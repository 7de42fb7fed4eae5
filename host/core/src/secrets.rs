//! Encrypted secrets store for dc-host: named values (passwords, tokens,
//! database URLs) kept in `secrets.json`, each encrypted with AES-256-GCM.
//!
//! # Key
//! The 32-byte key comes from the `DC_SECRETS_KEY` environment variable
//! (base64) when it is set, otherwise from a key file holding the same base64
//! text; [`load_or_create_key`] creates that file (mode 0600) on first use.
//! A key file that group or other users may access (any of the mode bits
//! 0o077) is refused ([`SecretsError::KeyFilePermissions`]), and a missing key
//! file beside an existing store is never replaced by a new key, which could
//! not decrypt the stored secrets ([`SecretsError::MissingKeyFile`]).
//!
//! A key's **key id** ([`SecretKey::key_id`]) is the first 12 hex characters
//! of the AES-GCM tag of an empty message with associated data
//! `dc-host key id` under the all-zero nonce. It identifies a key without
//! revealing it, so opening a store with the wrong key fails up front with
//! [`SecretsError::WrongKey`] instead of failing per secret.
//!
//! # Store format
//! ```json
//! {"version":1,"key_id":"…","secrets":{"NAME":{"nonce":"b64","ciphertext":"b64","updated_at":"RFC3339"}}}
//! ```
//! Every value has its own random 96-bit nonce, and the secret's name is the
//! AES-GCM associated data, so a ciphertext copied under another name does
//! not decrypt. Every write goes to a temporary file in the same directory,
//! is fsynced and then renamed over the target, so the file on disk is always
//! either the old or the new version, never a mix.
//!
//! # Key rotation
//! [`rotate_key_files`] rotates in three crash-safe steps:
//! 1. write the new key to `<key_file>.new`,
//! 2. re-encrypt the store under the new key (it now carries the new key id),
//! 3. rename `<key_file>.new` over `<key_file>`.
//!
//! [`open_store`] (= [`load_or_create_key`] + [`SecretStore::open`] plus
//! recovery) finishes an interrupted rotation: if the store already carries
//! the key id of `<key_file>.new`, step 3 is completed; if it still carries
//! the old key id, the unused `<key_file>.new` is deleted. Temporary files
//! left by interrupted writes (`.<file>.tmp-<pid>-<random>`) are deleted too.
//!
//! # Concurrency
//! Processes coordinate through an advisory lock (`flock`) on `<store>.lock`
//! ([`lock_path`]), next to the store file:
//! - writers hold it **exclusively** around the whole read-modify-write:
//!   [`open_store_for_update`] takes it before reading the key and the store
//!   and keeps it until the returned store is dropped; [`rotate_key_files`]
//!   holds it through all three steps; [`SecretStore::set`],
//!   [`SecretStore::remove`] and [`SecretStore::rotate_key`] on a store opened
//!   without it take it themselves and re-read the file under it, so no
//!   writer overwrites another's change;
//! - readers ([`open_store`]) hold it **shared** while they read the key and
//!   the store, so they never pair a key with a store from the other side of
//!   a rotation; recovery after a crash upgrades to the exclusive lock.
//!
//! Temporary files are only deleted under the exclusive lock, when no other
//! process can be writing one. The lock file itself stays (removing it would
//! let two processes lock different files).
//!
//! # Settings
//! [`open_configured_store`] and [`open_configured_store_for_update`] open the
//! store at [`Settings::secrets_file`] with the key from `DC_SECRETS_KEY` or
//! [`Settings::secrets_key_file`]; [`resolve_setting_references`] replaces the
//! `${secret:NAME}` references in the settings that may hold secrets. The CLI
//! and any other front end share them.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Settings;

/// Name of the environment variable that overrides the key file.
pub const KEY_ENV_VAR: &str = "DC_SECRETS_KEY";

/// Version written to and accepted from `secrets.json`.
pub const STORE_VERSION: u32 = 1;

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const MAX_NAME_LEN: usize = 64;
const KEY_ID_AAD: &[u8] = b"dc-host key id";
const REFERENCE_PREFIX: &str = "${secret:";

/// Errors from the secrets store.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("invalid secret name {name}: use 1-64 characters from A-Z, a-z, 0-9, '_', '.' and '-'")]
    InvalidName { name: String },

    #[error("secret {name} not found: add it with `dc-host secrets set {name}`")]
    NotFound { name: String },

    #[error("secret {name} could not be decrypted: the key is wrong or the store was tampered with")]
    Decrypt { name: String },

    #[error(
        "secrets file {} is encrypted with key id {store_key_id} but the key from {key_source} has key id {key_id}: \
         check the key file and the DC_SECRETS_KEY environment variable (which overrides it)",
        path.display()
    )]
    WrongKey { path: PathBuf, store_key_id: String, key_id: String, key_source: String },

    #[error(
        "DC_SECRETS_KEY is not a valid secrets key ({reason}): set it to the base64 of 32 random bytes \
         (the contents of the key file), or unset it to use the key file"
    )]
    InvalidEnvKey { reason: String },

    #[error(
        "key file {} does not hold a valid secrets key ({reason}): restore it from a backup, or set DC_SECRETS_KEY",
        path.display()
    )]
    InvalidKeyFile { path: PathBuf, reason: String },

    #[error(
        "secrets file {} is not a valid secrets store ({reason}): restore it from a backup or move it aside",
        path.display()
    )]
    CorruptStore { path: PathBuf, reason: String },

    #[error(
        "secrets file {} has version {found}, this dc-host only reads version {STORE_VERSION}: upgrade dc-host",
        path.display()
    )]
    UnsupportedVersion { path: PathBuf, found: u64 },

    #[error("secret reference starting at byte {offset} is not closed: write it as ${{secret:NAME}}")]
    UnterminatedReference { offset: usize },

    #[error("could not get random bytes from the operating system ({reason}): check the system's entropy source")]
    Random { reason: String },

    #[error("could not encrypt secret {name}: the value is too large")]
    Encrypt { name: String },

    #[error(
        "key file {} is accessible to group or other users (mode {mode:04o}), but a secrets key must be private \
         to its owner: run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    KeyFilePermissions { path: PathBuf, mode: u32 },

    #[error(
        "key file {} is missing but secrets file {} exists ({count} secret(s)), and a new key could not decrypt them: \
         restore the key file from a backup, or set DC_SECRETS_KEY to the key, or remove {} to start over without \
         those secrets",
        key_file.display(),
        store.display(),
        store.display()
    )]
    MissingKeyFile { store: PathBuf, key_file: PathBuf, count: usize },

    #[error(
        "secrets file {} was re-encrypted with key id {store_key_id} after it was opened (another process rotated \
         the key or replaced the file): open the store again",
        path.display()
    )]
    KeyChanged { path: PathBuf, store_key_id: String },

    #[error("could not {action} {}: {source}; check that the path exists and is writable", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

type Result<T, E = SecretsError> = std::result::Result<T, E>;

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SecretsError {
    move |source| SecretsError::Io { action, path: path.to_path_buf(), source }
}

// ---------------------------------------------------------------------------
// Key
// ---------------------------------------------------------------------------

/// Where a [`SecretKey`] came from; used in error messages.
#[derive(Clone, Debug)]
enum KeySource {
    Env,
    File(PathBuf),
    Generated,
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Env => f.write_str(KEY_ENV_VAR),
            KeySource::File(p) => write!(f, "key file {}", p.display()),
            KeySource::Generated => f.write_str("a newly generated key"),
        }
    }
}

/// A 256-bit AES-GCM key. `Debug` shows only the key id, never the bytes.
#[derive(Clone)]
pub struct SecretKey {
    bytes: [u8; KEY_LEN],
    source: KeySource,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("key_id", &self.key_id())
            .field("source", &self.source.to_string())
            .finish_non_exhaustive()
    }
}

impl SecretKey {
    /// A fresh random key from the operating system's random source.
    pub fn generate() -> Result<SecretKey> {
        let mut bytes = [0u8; KEY_LEN];
        fill_random(&mut bytes)?;
        Ok(SecretKey { bytes, source: KeySource::Generated })
    }

    /// Parses base64 (standard alphabet, padded) of exactly 32 bytes.
    /// Surrounding whitespace is ignored. On error the returned text explains
    /// what is wrong without repeating the input.
    pub fn from_base64(text: &str) -> Result<SecretKey, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("it is empty".to_string());
        }
        let decoded = BASE64.decode(text).map_err(|e| format!("it is not valid base64: {e}"))?;
        let bytes: [u8; KEY_LEN] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| format!("it decodes to {} bytes, a key must be {KEY_LEN} bytes", decoded.len()))?;
        Ok(SecretKey { bytes, source: KeySource::Generated })
    }

    /// The key as standard padded base64 (the key file / `DC_SECRETS_KEY` format).
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.bytes)
    }

    /// 12 hex characters identifying this key: the start of the AES-GCM tag
    /// of an empty message (associated data `dc-host key id`, zero nonce).
    pub fn key_id(&self) -> String {
        let nonce = aes_gcm::aead::Nonce::<Aes256Gcm>::from([0u8; NONCE_LEN]);
        let tag = self.cipher().encrypt(&nonce, Payload { msg: &[], aad: KEY_ID_AAD }).unwrap_or_default();
        tag.iter().take(6).map(|b| format!("{b:02x}")).collect()
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&Key::<Aes256Gcm>::from(self.bytes))
    }

    fn with_source(mut self, source: KeySource) -> SecretKey {
        self.source = source;
        self
    }
}

fn fill_random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| SecretsError::Random { reason: e.to_string() })
}

/// Path of the pending key written during rotation: `<key_file>.new`.
pub fn pending_key_path(key_file: &Path) -> PathBuf {
    let mut name = key_file.as_os_str().to_os_string();
    name.push(".new");
    PathBuf::from(name)
}

/// Loads the secrets key.
///
/// `env_value` is the value of `DC_SECRETS_KEY` (if set); it wins over the
/// key file. Otherwise `key_file` is read; if it does not exist it is created
/// (with its parent directories, mode 0600 on unix) holding a new random key.
/// Creation never overwrites a key file that appears concurrently. An
/// existing key file with any group/other mode bit is refused
/// ([`SecretsError::KeyFilePermissions`]).
///
/// This function does not look at the store: [`open_store`] is what refuses
/// to create a key while a store file exists.
pub fn load_or_create_key(key_file: &Path, env_value: Option<&str>) -> Result<SecretKey> {
    if let Some(value) = env_value {
        return SecretKey::from_base64(value)
            .map(|k| k.with_source(KeySource::Env))
            .map_err(|reason| SecretsError::InvalidEnvKey { reason });
    }
    match read_key_file(key_file)? {
        Some(key) => Ok(key),
        None => {
            let key = SecretKey::generate()?;
            if write_file(key_file, format!("{}\n", key.to_base64()).as_bytes(), false)? {
                Ok(key.with_source(KeySource::File(key_file.to_path_buf())))
            } else {
                // Another process created it first: use theirs.
                read_key_file(key_file)?.ok_or_else(|| SecretsError::InvalidKeyFile {
                    path: key_file.to_path_buf(),
                    reason: "it disappeared while being created".to_string(),
                })
            }
        }
    }
}

/// Reads a key file; `Ok(None)` if it does not exist. A file that group or
/// other users may access is refused before its contents are read.
fn read_key_file(path: &Path) -> Result<Option<SecretKey>> {
    let mut file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read key file", path)(e)),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata().map_err(io_err("read key file", path))?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretsError::KeyFilePermissions { path: path.to_path_buf(), mode });
        }
    }
    let mut text = String::new();
    match io::Read::read_to_string(&mut file, &mut text) {
        Ok(_) => SecretKey::from_base64(&text)
            .map(|k| Some(k.with_source(KeySource::File(path.to_path_buf()))))
            .map_err(|reason| SecretsError::InvalidKeyFile { path: path.to_path_buf(), reason }),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            Err(SecretsError::InvalidKeyFile { path: path.to_path_buf(), reason: "it is not text".to_string() })
        }
        Err(e) => Err(io_err("read key file", path)(e)),
    }
}

/// Atomically writes (replacing) a key file with mode 0600.
pub fn write_key_file(path: &Path, key: &SecretKey) -> Result<()> {
    write_file(path, format!("{}\n", key.to_base64()).as_bytes(), true).map(|_| ())
}

// ---------------------------------------------------------------------------
// Atomic file writes
// ---------------------------------------------------------------------------

/// Writes `data` to a temp file next to `path` (mode 0600), fsyncs it and
/// moves it into place. With `replace` the target is replaced by rename;
/// without, it is hard-linked into place only if `path` does not exist yet
/// (returns `Ok(false)` when it already existed). The temp file is always
/// removed.
fn write_file(path: &Path, data: &[u8], replace: bool) -> Result<bool> {
    let dir = parent_dir(path);
    fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;

    let mut suffix = [0u8; 6];
    fill_random(&mut suffix)?;
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!("{}{}-{suffix}", temp_prefix(path), std::process::id()));

    let result = write_tmp(&tmp, data).and_then(|()| {
        if replace {
            fs::rename(&tmp, path).map(|()| true).map_err(io_err("replace", path))
        } else {
            match fs::hard_link(&tmp, path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(io_err("create", path)(e)),
            }
        }
    });
    // After a rename the temp path is gone; otherwise clean it up.
    let _ = fs::remove_file(&tmp);
    let created = result?;
    sync_dir(&dir);
    Ok(created)
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Start of the names of the temporary files [`write_file`] uses for `path`:
/// `.<file name>.tmp-` (followed by `<pid>-<random hex>`).
fn temp_prefix(path: &Path) -> String {
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "secrets".to_string());
    format!(".{file_name}.tmp-")
}

fn write_tmp(tmp: &Path, data: &[u8]) -> Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(tmp).map_err(io_err("create", tmp))?;
    #[cfg(unix)]
    {
        // The umask can only remove bits; make the mode exactly 0600.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(io_err("set permissions on", tmp))?;
    }
    file.write_all(data).map_err(io_err("write", tmp))?;
    file.sync_all().map_err(io_err("sync", tmp))?;
    Ok(())
}

/// Best effort: make a rename durable by syncing the directory.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

// ---------------------------------------------------------------------------
// Lock
// ---------------------------------------------------------------------------

/// Path of the lock file that coordinates processes using the store at
/// `store_path`: `<store_path>.lock`.
pub fn lock_path(store_path: &Path) -> PathBuf {
    let mut name = store_path.as_os_str().to_os_string();
    name.push(".lock");
    PathBuf::from(name)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LockMode {
    /// Readers: many at a time, never beside a writer.
    Shared,
    /// Writers and recovery: one at a time.
    Exclusive,
}

/// An advisory lock (`flock`) on [`lock_path`], released when dropped (the
/// file is closed). Locks on different opens of the file conflict even within
/// one process, so a holder must never take the lock a second time.
#[derive(Debug)]
struct StoreLock {
    _file: fs::File,
    mode: LockMode,
}

impl StoreLock {
    /// Waits for the lock. Only a shared lock may come back as `None`: when
    /// the lock file cannot be created because the directory is read-only to
    /// this process, a reader reads without it (it cannot write anything).
    fn acquire(store_path: &Path, mode: LockMode) -> Result<Option<StoreLock>> {
        let path = lock_path(store_path);
        let dir = parent_dir(&path);
        let opened = fs::create_dir_all(&dir).and_then(|()| {
            let mut options = fs::OpenOptions::new();
            options.read(true).write(true).create(true).truncate(false);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            options.open(&path)
        });
        let file = match opened {
            Ok(f) => f,
            Err(e)
                if mode == LockMode::Shared
                    && matches!(e.kind(), io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem) =>
            {
                match fs::File::open(&path) {
                    Ok(f) => f,
                    Err(_) => return Ok(None),
                }
            }
            Err(e) => return Err(io_err("create lock file", &path)(e)),
        };
        match mode {
            LockMode::Shared => file.lock_shared(),
            LockMode::Exclusive => file.lock(),
        }
        .map_err(io_err("lock", &path))?;
        Ok(Some(StoreLock { _file: file, mode }))
    }
}

// ---------------------------------------------------------------------------
// Names and store
// ---------------------------------------------------------------------------

/// Checks a secret name: 1-64 characters of `[A-Za-z0-9_.-]`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        // Quote (and shorten) so odd characters are visible.
        let shown: String = name.chars().take(MAX_NAME_LEN).collect();
        let ellipsis = if name.chars().count() > MAX_NAME_LEN { "…" } else { "" };
        Err(SecretsError::InvalidName { name: format!("{shown:?}{ellipsis}") })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredSecret {
    nonce: String,
    ciphertext: String,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoreFile {
    version: u32,
    key_id: String,
    secrets: BTreeMap<String, StoredSecret>,
}

/// Encrypted secrets kept in one JSON file. Every mutating call writes the
/// file atomically before returning; on error the in-memory state is unchanged.
///
/// A store from [`open_store_for_update`] holds the exclusive lock until it is
/// dropped (keep it short-lived). Any other store takes the exclusive lock for
/// each change and applies the change to the file as it is then, so changes
/// made by other processes since it was opened are kept.
#[derive(Debug)]
pub struct SecretStore {
    path: PathBuf,
    key: SecretKey,
    secrets: BTreeMap<String, StoredSecret>,
    /// The exclusive lock, when held for the store's whole lifetime.
    lock: Option<StoreLock>,
}

impl SecretStore {
    /// Opens the store at `path` (without locking or recovery: see
    /// [`open_store`]). A missing file is an empty store (nothing is written
    /// until the first change). A file written under another key gives
    /// [`SecretsError::WrongKey`].
    pub fn open(path: &Path, key: SecretKey) -> Result<SecretStore> {
        let Some(file) = read_store_file(path)? else {
            return Ok(SecretStore { path: path.to_path_buf(), key, secrets: BTreeMap::new(), lock: None });
        };
        let key_id = key.key_id();
        if file.key_id != key_id {
            return Err(SecretsError::WrongKey {
                path: path.to_path_buf(),
                store_key_id: file.key_id,
                key_id,
                key_source: key.source.to_string(),
            });
        }
        validate_names(path, &file.secrets)?;
        Ok(SecretStore { path: path.to_path_buf(), key, secrets: file.secrets, lock: None })
    }

    /// Starts a change: returns the exclusive lock (unless this store holds it
    /// already) and the secrets to change. A store that had to take the lock
    /// re-reads the file under it, so the change includes every change other
    /// processes made since the store was opened.
    fn begin_update(&self) -> Result<(Option<StoreLock>, BTreeMap<String, StoredSecret>)> {
        if self.lock.is_some() {
            return Ok((None, self.secrets.clone()));
        }
        let lock = StoreLock::acquire(&self.path, LockMode::Exclusive)?;
        let secrets = match read_store_file(&self.path)? {
            None => BTreeMap::new(),
            Some(file) if file.key_id != self.key.key_id() => {
                return Err(SecretsError::KeyChanged { path: self.path.clone(), store_key_id: file.key_id });
            }
            Some(file) => {
                validate_names(&self.path, &file.secrets)?;
                file.secrets
            }
        };
        Ok((lock, secrets))
    }

    /// Path of the store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Key id of the key the store is encrypted with.
    pub fn key_id(&self) -> String {
        self.key.key_id()
    }

    /// Encrypts `plaintext` under `name` (replacing any previous value) and
    /// writes the store.
    pub fn set(&mut self, name: &str, plaintext: &str) -> Result<()> {
        validate_name(name)?;
        let entry = encrypt(&self.key, name, plaintext)?;
        let (_lock, mut secrets) = self.begin_update()?;
        secrets.insert(name.to_string(), entry);
        write_secrets(&self.path, &self.key, &secrets)?;
        self.secrets = secrets;
        Ok(())
    }

    /// Decrypts the value of `name`.
    pub fn get(&self, name: &str) -> Result<String> {
        validate_name(name)?;
        let entry = self.secrets.get(name).ok_or_else(|| SecretsError::NotFound { name: name.to_string() })?;
        decrypt(&self.key, name, entry)
    }

    /// Whether a secret called `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.secrets.contains_key(name)
    }

    /// When `name` was last set, if it exists.
    pub fn updated_at(&self, name: &str) -> Option<DateTime<Utc>> {
        self.secrets.get(name).map(|e| e.updated_at)
    }

    /// All secret names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.secrets.keys().cloned().collect()
    }

    /// Removes `name` and writes the store. Returns whether it existed
    /// (nothing is written when it did not).
    pub fn remove(&mut self, name: &str) -> Result<bool> {
        validate_name(name)?;
        let (_lock, mut secrets) = self.begin_update()?;
        let existed = secrets.remove(name).is_some();
        if existed {
            write_secrets(&self.path, &self.key, &secrets)?;
        }
        self.secrets = secrets;
        Ok(existed)
    }

    /// Re-encrypts every secret under `new_key` and writes the store with the
    /// new key id. All values are decrypted and re-encrypted in memory first;
    /// if any step fails, neither memory nor the file changes.
    pub fn rotate_key(&mut self, new_key: SecretKey) -> Result<()> {
        let (_lock, current) = self.begin_update()?;
        let mut rotated = BTreeMap::new();
        for (name, entry) in &current {
            let plaintext = decrypt(&self.key, name, entry)?;
            let mut fresh = encrypt(&new_key, name, &plaintext)?;
            fresh.updated_at = entry.updated_at;
            rotated.insert(name.clone(), fresh);
        }
        let file = StoreFile { version: STORE_VERSION, key_id: new_key.key_id(), secrets: rotated };
        write_store_file(&self.path, &file)?;
        self.key = new_key;
        self.secrets = file.secrets;
        Ok(())
    }
}

/// Writes `secrets` under `key` to the store file at `path`.
fn write_secrets(path: &Path, key: &SecretKey, secrets: &BTreeMap<String, StoredSecret>) -> Result<()> {
    // Serialise by reference via a borrowed view to avoid cloning.
    #[derive(Serialize)]
    struct View<'a> {
        version: u32,
        key_id: String,
        secrets: &'a BTreeMap<String, StoredSecret>,
    }
    write_json(path, &View { version: STORE_VERSION, key_id: key.key_id(), secrets })
}

fn validate_names(path: &Path, secrets: &BTreeMap<String, StoredSecret>) -> Result<()> {
    for name in secrets.keys() {
        validate_name(name)
            .map_err(|e| SecretsError::CorruptStore { path: path.to_path_buf(), reason: e.to_string() })?;
    }
    Ok(())
}

fn write_store_file(path: &Path, file: &StoreFile) -> Result<()> {
    write_json(path, file)
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(value).map_err(|e| SecretsError::CorruptStore {
        path: path.to_path_buf(),
        reason: format!("cannot serialise: {e}"),
    })?;
    json.push(b'\n');
    write_file(path, &json, true).map(|_| ())
}

/// Reads and parses the store file; `Ok(None)` if it does not exist.
fn read_store_file(path: &Path) -> Result<Option<StoreFile>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read secrets file", path)(e)),
    };
    let corrupt = |reason: String| SecretsError::CorruptStore { path: path.to_path_buf(), reason };
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("invalid JSON: {e}")))?;
    let version = value
        .get("version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| corrupt("missing numeric \"version\"".to_string()))?;
    if version != u64::from(STORE_VERSION) {
        return Err(SecretsError::UnsupportedVersion { path: path.to_path_buf(), found: version });
    }
    serde_json::from_value(value).map(Some).map_err(|e| corrupt(e.to_string()))
}

fn encrypt(key: &SecretKey, name: &str, plaintext: &str) -> Result<StoredSecret> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    let ciphertext = key
        .cipher()
        .encrypt(
            &aes_gcm::aead::Nonce::<Aes256Gcm>::from(nonce),
            Payload { msg: plaintext.as_bytes(), aad: name.as_bytes() },
        )
        .map_err(|_| SecretsError::Encrypt { name: name.to_string() })?;
    Ok(StoredSecret { nonce: BASE64.encode(nonce), ciphertext: BASE64.encode(ciphertext), updated_at: Utc::now() })
}

fn decrypt(key: &SecretKey, name: &str, entry: &StoredSecret) -> Result<String> {
    let fail = || SecretsError::Decrypt { name: name.to_string() };
    let nonce: [u8; NONCE_LEN] =
        BASE64.decode(&entry.nonce).ok().and_then(|n| n.as_slice().try_into().ok()).ok_or_else(fail)?;
    let ciphertext = BASE64.decode(&entry.ciphertext).map_err(|_| fail())?;
    let plaintext = key
        .cipher()
        .decrypt(&aes_gcm::aead::Nonce::<Aes256Gcm>::from(nonce), Payload { msg: &ciphertext, aad: name.as_bytes() })
        .map_err(|_| fail())?;
    String::from_utf8(plaintext).map_err(|_| fail())
}

// ---------------------------------------------------------------------------
// Open with recovery, rotation
// ---------------------------------------------------------------------------

/// Opens the store for reading: loads the key ([`load_or_create_key`]) and
/// reads the store under the shared lock, after recovering from a crash
/// under the exclusive lock when needed (an interrupted [`rotate_key_files`]
/// is completed or rolled back, temporary files are deleted):
/// - store carries the key id of `<key_file>.new`: the rotation got past
///   step 2, so `<key_file>.new` is renamed over `<key_file>` and used;
/// - store carries the key id of `<key_file>`: the rotation stopped after
///   step 1, so the unused `<key_file>.new` is deleted.
///
/// A missing key file is created only when there is no store file either;
/// beside an existing store it is [`SecretsError::MissingKeyFile`].
///
/// The lock is released before returning; changes made through the returned
/// store take it again (see [`SecretStore`]). For a read-modify-write use
/// [`open_store_for_update`].
///
/// With `DC_SECRETS_KEY` set (`env_value`), key files are neither read nor
/// touched.
pub fn open_store(store_path: &Path, key_file: &Path, env_value: Option<&str>) -> Result<SecretStore> {
    let _lock = lock_and_recover(store_path, key_file, env_value, LockMode::Shared)?;
    open_under_lock(store_path, key_file, env_value)
}

/// Like [`open_store`], but takes the exclusive lock **before** reading the
/// key and the store and keeps it until the returned store is dropped, so a
/// change made through it is based on the latest file and no other process
/// writes in between.
pub fn open_store_for_update(store_path: &Path, key_file: &Path, env_value: Option<&str>) -> Result<SecretStore> {
    let lock = lock_and_recover(store_path, key_file, env_value, LockMode::Exclusive)?;
    let mut store = open_under_lock(store_path, key_file, env_value)?;
    store.lock = lock;
    Ok(store)
}

/// Takes the lock in `mode`; if a crash left work behind ([`needs_recovery`]),
/// switches to the exclusive lock (a shared lock is released first, so two
/// readers never wait for each other) and runs [`recover`].
fn lock_and_recover(
    store_path: &Path,
    key_file: &Path,
    env_value: Option<&str>,
    mode: LockMode,
) -> Result<Option<StoreLock>> {
    let key_files = env_value.is_none();
    let mut lock = StoreLock::acquire(store_path, mode)?;
    if needs_recovery(store_path, key_file, key_files) {
        if lock.as_ref().map(|l| l.mode) != Some(LockMode::Exclusive) {
            drop(lock.take());
            lock = StoreLock::acquire(store_path, LockMode::Exclusive)?;
        }
        recover(store_path, key_file, key_files)?;
    }
    Ok(lock)
}

/// Whether a crash left something behind: a pending key (only looked at
/// when `key_files`) or temporary files.
fn needs_recovery(store_path: &Path, key_file: &Path, key_files: bool) -> bool {
    (key_files && pending_key_path(key_file).exists()) || !stray_temp_files(store_path, key_file, key_files).is_empty()
}

/// Temporary files of [`write_file`] for the store file and (with
/// `key_files`) the key file and the pending key file.
fn stray_temp_files(store_path: &Path, key_file: &Path, key_files: bool) -> Vec<PathBuf> {
    let mut targets = vec![store_path.to_path_buf()];
    if key_files {
        targets.push(key_file.to_path_buf());
        targets.push(pending_key_path(key_file));
    }
    let mut found = Vec::new();
    for target in targets {
        let dir = parent_dir(&target);
        let prefix = temp_prefix(&target);
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                found.push(entry.path());
            }
        }
    }
    found
}

/// Repairs what a crash left behind. Must run under the exclusive lock: then
/// no process is between two steps of a rotation or writing a temp file.
/// With `key_files`, finishes or rolls back an interrupted
/// [`rotate_key_files`] (see [`open_store`]); a pending key that matches
/// neither the store nor the key file is left for the operator. Deletes the
/// temporary files.
fn recover(store_path: &Path, key_file: &Path, key_files: bool) -> Result<()> {
    if key_files {
        let pending_path = pending_key_path(key_file);
        if let Some(pending) = read_key_file(&pending_path)? {
            let store_key_id = read_store_file(store_path)?.map(|f| f.key_id);
            if store_key_id.as_deref() == Some(pending.key_id().as_str()) {
                // Step 2 was done: finish step 3.
                fs::rename(&pending_path, key_file).map_err(io_err("replace", key_file))?;
                sync_dir(&parent_dir(key_file));
            } else {
                let unused = match (&store_key_id, read_key_file(key_file)?) {
                    (None, _) => true,
                    (Some(id), Some(key)) => *id == key.key_id(),
                    (Some(_), None) => false,
                };
                if unused {
                    // Stopped after step 1: roll back.
                    fs::remove_file(&pending_path).map_err(io_err("remove", &pending_path))?;
                    sync_dir(&parent_dir(&pending_path));
                }
            }
        }
    }
    for tmp in stray_temp_files(store_path, key_file, key_files) {
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove temporary file", &tmp)(e)),
        }
    }
    Ok(())
}

/// Loads the key and opens the store; the caller holds the lock. Refuses to
/// create a key while a store file exists.
fn open_under_lock(store_path: &Path, key_file: &Path, env_value: Option<&str>) -> Result<SecretStore> {
    if env_value.is_none()
        && matches!(key_file.try_exists(), Ok(false))
        && let Some(file) = read_store_file(store_path)?
    {
        return Err(SecretsError::MissingKeyFile {
            store: store_path.to_path_buf(),
            key_file: key_file.to_path_buf(),
            count: file.secrets.len(),
        });
    }
    let key = load_or_create_key(key_file, env_value)?;
    SecretStore::open(store_path, key)
}

/// Rotates the key kept in `key_file` and re-encrypts the store at
/// `store_path`, in crash-safe order (see the module docs), holding the
/// exclusive lock from before reading the store until the new key file is in
/// place. Returns the new key. Not for `DC_SECRETS_KEY` users: they call
/// [`SecretStore::rotate_key`] and update the variable themselves.
pub fn rotate_key_files(store_path: &Path, key_file: &Path) -> Result<SecretKey> {
    let lock = lock_and_recover(store_path, key_file, None, LockMode::Exclusive)?;
    if matches!(key_file.try_exists(), Ok(false)) && read_store_file(store_path)?.is_none() {
        return Err(SecretsError::InvalidKeyFile {
            path: key_file.to_path_buf(),
            reason: "it does not exist".to_string(),
        });
    }
    let mut store = open_under_lock(store_path, key_file, None)?;
    store.lock = lock;
    let new_key = SecretKey::generate()?.with_source(KeySource::File(key_file.to_path_buf()));
    let pending_path = pending_key_path(key_file);
    // Step 1: the new key is on disk before anything is encrypted with it.
    write_key_file(&pending_path, &new_key)?;
    // Step 2: the store now carries the new key id. If that fails, the
    // pending key is unused unless the store was written after all.
    if let Err(e) = store.rotate_key(new_key.clone()) {
        if read_store_file(store_path).ok().flatten().is_none_or(|f| f.key_id != new_key.key_id()) {
            let _ = fs::remove_file(&pending_path);
        }
        return Err(e);
    }
    // Step 3: the new key becomes the key file.
    fs::rename(&pending_path, key_file).map_err(io_err("replace", key_file))?;
    sync_dir(&parent_dir(key_file));
    drop(store);
    Ok(new_key)
}

// ---------------------------------------------------------------------------
// References
// ---------------------------------------------------------------------------

/// Replaces every `${secret:NAME}` in `text` with the value of secret NAME.
/// Substituted values are not scanned again; other `${…}` text is kept.
pub fn resolve_references(text: &str, store: &SecretStore) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut offset = 0;
    while let Some(start) = rest.find(REFERENCE_PREFIX) {
        out.push_str(&rest[..start]);
        let after = &rest[start + REFERENCE_PREFIX.len()..];
        let end = after.find('}').ok_or(SecretsError::UnterminatedReference { offset: offset + start })?;
        out.push_str(&store.get(&after[..end])?);
        let consumed = start + REFERENCE_PREFIX.len() + end + 1;
        rest = &rest[consumed..];
        offset += consumed;
    }
    out.push_str(rest);
    Ok(out)
}

// ---------------------------------------------------------------------------
// The store configured by the settings
// ---------------------------------------------------------------------------

/// Opens the store the settings configure (`<data_dir>/secrets.json`, key from
/// `DC_SECRETS_KEY` or `<data_dir>/secrets.key`) to read it; see [`open_store`].
pub fn open_configured_store(settings: &Settings) -> Result<SecretStore> {
    let env_key = std::env::var(KEY_ENV_VAR).ok();
    open_store(&settings.secrets_file(), &settings.secrets_key_file(), env_key.as_deref())
}

/// Opens the store the settings configure to change it, holding the
/// exclusive lock until the store is dropped; see [`open_store_for_update`].
pub fn open_configured_store_for_update(settings: &Settings) -> Result<SecretStore> {
    let env_key = std::env::var(KEY_ENV_VAR).ok();
    open_store_for_update(&settings.secrets_file(), &settings.secrets_key_file(), env_key.as_deref())
}

/// Replaces `${secret:NAME}` references in the settings that may hold secrets
/// (`database.url`, `logging.splunk_token`, `broker.url`, `proxy.password`, and each
/// notification channel's `url`, `secret`, `username` and `password`) with the
/// secrets' values. The store
/// is opened only when one of them holds a reference, so a host without
/// references never needs a key.
pub fn resolve_setting_references(settings: &mut Settings) -> Result<()> {
    let env_key = std::env::var(KEY_ENV_VAR).ok();
    resolve_setting_references_with(settings, env_key.as_deref())
}

fn resolve_setting_references_with(settings: &mut Settings, env_key: Option<&str>) -> Result<()> {
    let needs = |v: &Option<String>| v.as_deref().is_some_and(|s| s.contains(REFERENCE_PREFIX));
    let channel_needs = settings
        .notify
        .channels
        .iter()
        .any(|c| c.url.contains(REFERENCE_PREFIX) || needs(&c.secret) || needs(&c.username) || needs(&c.password));
    if !needs(&settings.database.url)
        && !needs(&settings.logging.splunk_token)
        && !needs(&settings.broker.url)
        && !needs(&settings.proxy.password)
        && !channel_needs
    {
        return Ok(());
    }
    let store = open_store(&settings.secrets_file(), &settings.secrets_key_file(), env_key)?;
    for v in [
        &mut settings.database.url,
        &mut settings.logging.splunk_token,
        &mut settings.broker.url,
        &mut settings.proxy.password,
    ] {
        if let Some(text) = v.as_mut() {
            *text = resolve_references(text, &store)?;
        }
    }
    for c in &mut settings.notify.channels {
        c.url = resolve_references(&c.url, &store)?;
        for v in [&mut c.secret, &mut c.username, &mut c.password] {
            if let Some(text) = v.as_mut() {
                *text = resolve_references(text, &store)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tempfile::TempDir;

    fn setup() -> (TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("data").join("secrets.json");
        let key = dir.path().join("keys").join("secrets.key");
        (dir, store, key)
    }

    fn raw(path: &Path) -> serde_json::Value {
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
    }

    fn write_raw(path: &Path, v: &serde_json::Value) {
        fs::write(path, serde_json::to_vec(v).unwrap()).unwrap()
    }

    #[test]
    fn roundtrip_across_reopen() {
        let (_d, store_path, key_file) = setup();
        let key = load_or_create_key(&key_file, None).unwrap();
        let mut store = SecretStore::open(&store_path, key).unwrap();
        assert!(store.names().is_empty());
        store.set("db_url", "postgres://u:p@h/db").unwrap();
        store.set("API.token-2", "tok").unwrap();
        store.set("A", "").unwrap();
        drop(store);

        let key = load_or_create_key(&key_file, None).unwrap();
        let store = SecretStore::open(&store_path, key).unwrap();
        assert_eq!(store.get("db_url").unwrap(), "postgres://u:p@h/db");
        assert_eq!(store.get("API.token-2").unwrap(), "tok");
        assert_eq!(store.get("A").unwrap(), "");
        assert_eq!(store.names(), vec!["A", "API.token-2", "db_url"]);
        assert!(store.updated_at("db_url").is_some());

        let v = raw(&store_path);
        assert_eq!(v["version"], 1);
        assert_eq!(v["key_id"], store.key_id().as_str());
        let entry = &v["secrets"]["db_url"];
        assert!(entry["nonce"].is_string() && entry["ciphertext"].is_string());
        DateTime::parse_from_rfc3339(entry["updated_at"].as_str().unwrap()).unwrap();
        assert!(!fs::read_to_string(&store_path).unwrap().contains("postgres"));
    }

    #[test]
    fn remove_and_overwrite() {
        let (_d, store_path, _) = setup();
        let mut store = SecretStore::open(&store_path, SecretKey::generate().unwrap()).unwrap();
        store.set("x", "1").unwrap();
        store.set("x", "2").unwrap();
        assert_eq!(store.get("x").unwrap(), "2");
        assert!(store.remove("x").unwrap());
        assert!(!store.remove("x").unwrap());
        assert!(matches!(store.get("x"), Err(SecretsError::NotFound { .. })));
        assert!(raw(&store_path)["secrets"].as_object().unwrap().is_empty());
    }

    #[test]
    fn same_value_gets_fresh_nonce_and_ciphertext() {
        let (_d, store_path, _) = setup();
        let mut store = SecretStore::open(&store_path, SecretKey::generate().unwrap()).unwrap();
        store.set("a", "same value").unwrap();
        store.set("b", "same value").unwrap();
        let first = raw(&store_path)["secrets"]["a"].clone();
        store.set("a", "same value").unwrap();
        let again = raw(&store_path)["secrets"]["a"].clone();
        let b = raw(&store_path)["secrets"]["b"].clone();
        assert_ne!(first["nonce"], again["nonce"]);
        assert_ne!(first["ciphertext"], again["ciphertext"]);
        assert_ne!(first["nonce"], b["nonce"]);
        assert_ne!(first["ciphertext"], b["ciphertext"]);
        assert_eq!(BASE64.decode(first["nonce"].as_str().unwrap()).unwrap().len(), 12);
    }

    #[test]
    fn wrong_key_is_refused() {
        let (_d, store_path, _) = setup();
        let key = SecretKey::generate().unwrap();
        let mut store = SecretStore::open(&store_path, key).unwrap();
        store.set("pw", "hunter2").unwrap();

        let other = SecretKey::generate().unwrap();
        let other_id = other.key_id();
        let err = SecretStore::open(&store_path, other.clone()).unwrap_err();
        assert!(matches!(err, SecretsError::WrongKey { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("DC_SECRETS_KEY") && msg.contains("key file"), "{msg}");

        // Forge the key id: opening works but decryption must fail.
        let mut v = raw(&store_path);
        v["key_id"] = serde_json::Value::String(other_id);
        write_raw(&store_path, &v);
        let store = SecretStore::open(&store_path, other).unwrap();
        let err = store.get("pw").unwrap_err();
        assert!(matches!(&err, SecretsError::Decrypt { name } if name == "pw"), "{err:?}");
    }

    #[test]
    fn tampering_gives_decrypt_error_without_plaintext() {
        let (_d, store_path, _) = setup();
        let key = SecretKey::generate().unwrap();
        let plaintext = "very-secret-password";
        let mut store = SecretStore::open(&store_path, key.clone()).unwrap();
        store.set("pw", plaintext).unwrap();
        let original = raw(&store_path);

        // One flipped ciphertext byte.
        let mut v = original.clone();
        let mut ct = BASE64.decode(v["secrets"]["pw"]["ciphertext"].as_str().unwrap()).unwrap();
        ct[0] ^= 0x01;
        v["secrets"]["pw"]["ciphertext"] = BASE64.encode(&ct).into();
        write_raw(&store_path, &v);
        let err = SecretStore::open(&store_path, key.clone()).unwrap().get("pw").unwrap_err();
        assert!(matches!(err, SecretsError::Decrypt { .. }), "{err:?}");
        let msg = err.to_string();
        assert_eq!(msg, "secret pw could not be decrypted: the key is wrong or the store was tampered with");
        assert!(!msg.contains(plaintext) && !format!("{err:?}").contains(plaintext));

        // One flipped nonce byte, and a nonce of the wrong length.
        let mut v = original.clone();
        let mut nonce = BASE64.decode(v["secrets"]["pw"]["nonce"].as_str().unwrap()).unwrap();
        nonce[11] ^= 0x80;
        v["secrets"]["pw"]["nonce"] = BASE64.encode(&nonce).into();
        write_raw(&store_path, &v);
        let store = SecretStore::open(&store_path, key.clone()).unwrap();
        assert!(matches!(store.get("pw"), Err(SecretsError::Decrypt { .. })));
        v["secrets"]["pw"]["nonce"] = BASE64.encode(&nonce[..5]).into();
        write_raw(&store_path, &v);
        let store = SecretStore::open(&store_path, key.clone()).unwrap();
        assert!(matches!(store.get("pw"), Err(SecretsError::Decrypt { .. })));
        v["secrets"]["pw"]["ciphertext"] = "!!not base64!!".into();
        write_raw(&store_path, &v);
        let store = SecretStore::open(&store_path, key.clone()).unwrap();
        assert!(matches!(store.get("pw"), Err(SecretsError::Decrypt { .. })));

        // Untouched file still decrypts.
        write_raw(&store_path, &original);
        let store = SecretStore::open(&store_path, key).unwrap();
        assert_eq!(store.get("pw").unwrap(), plaintext);
    }

    #[test]
    fn ciphertext_moved_to_another_name_fails() {
        let (_d, store_path, _) = setup();
        let key = SecretKey::generate().unwrap();
        let mut store = SecretStore::open(&store_path, key.clone()).unwrap();
        store.set("admin_pw", "root-pass").unwrap();
        store.set("guest_pw", "guest-pass").unwrap();
        let mut v = raw(&store_path);
        v["secrets"]["guest_pw"] = v["secrets"]["admin_pw"].clone();
        write_raw(&store_path, &v);
        let store = SecretStore::open(&store_path, key).unwrap();
        assert_eq!(store.get("admin_pw").unwrap(), "root-pass");
        let err = store.get("guest_pw").unwrap_err();
        assert!(matches!(&err, SecretsError::Decrypt { name } if name == "guest_pw"));
    }

    #[test]
    fn rotate_key_reencrypts_and_old_key_no_longer_opens() {
        let (_d, store_path, _) = setup();
        let old = SecretKey::generate().unwrap();
        let mut store = SecretStore::open(&store_path, old.clone()).unwrap();
        store.set("a", "alpha").unwrap();
        store.set("b", "beta").unwrap();
        let before = raw(&store_path);

        let new = SecretKey::generate().unwrap();
        store.rotate_key(new.clone()).unwrap();
        assert_eq!(store.key_id(), new.key_id());
        assert_eq!(store.get("a").unwrap(), "alpha");
        let after = raw(&store_path);
        assert_eq!(after["key_id"], new.key_id().as_str());
        assert_ne!(before["secrets"]["a"]["ciphertext"], after["secrets"]["a"]["ciphertext"]);
        assert_eq!(before["secrets"]["a"]["updated_at"], after["secrets"]["a"]["updated_at"]);

        assert!(matches!(SecretStore::open(&store_path, old), Err(SecretsError::WrongKey { .. })));
        let store = SecretStore::open(&store_path, new).unwrap();
        assert_eq!(store.get("b").unwrap(), "beta");
    }

    #[test]
    fn rotate_key_is_all_or_nothing() {
        let (_d, store_path, _) = setup();
        let key = SecretKey::generate().unwrap();
        let mut store = SecretStore::open(&store_path, key.clone()).unwrap();
        store.set("good", "1").unwrap();
        store.set("bad", "2").unwrap();
        // Corrupt one entry on disk and in memory (reopen).
        let mut v = raw(&store_path);
        v["secrets"]["bad"]["ciphertext"] = BASE64.encode([0u8; 20]).into();
        write_raw(&store_path, &v);
        let before = fs::read(&store_path).unwrap();
        let mut store = SecretStore::open(&store_path, key.clone()).unwrap();
        let err = store.rotate_key(SecretKey::generate().unwrap()).unwrap_err();
        assert!(matches!(&err, SecretsError::Decrypt { name } if name == "bad"));
        assert_eq!(fs::read(&store_path).unwrap(), before);
        assert_eq!(store.key_id(), key.key_id());
        assert_eq!(store.get("good").unwrap(), "1");
    }

    #[test]
    fn rotate_key_files_full() {
        let (_d, store_path, key_file) = setup();
        let mut store = open_store(&store_path, &key_file, None).unwrap();
        store.set("s", "value").unwrap();
        let old_b64 = fs::read_to_string(&key_file).unwrap();

        let new = rotate_key_files(&store_path, &key_file).unwrap();
        assert!(!pending_key_path(&key_file).exists());
        assert_eq!(fs::read_to_string(&key_file).unwrap().trim(), new.to_base64());
        assert_ne!(fs::read_to_string(&key_file).unwrap(), old_b64);
        let store = open_store(&store_path, &key_file, None).unwrap();
        assert_eq!(store.key_id(), new.key_id());
        assert_eq!(store.get("s").unwrap(), "value");
        let old = SecretKey::from_base64(&old_b64).unwrap();
        assert!(matches!(SecretStore::open(&store_path, old), Err(SecretsError::WrongKey { .. })));
    }

    #[test]
    fn crash_after_store_rewrite_recovers_with_new_key() {
        let (_d, store_path, key_file) = setup();
        let mut store = open_store(&store_path, &key_file, None).unwrap();
        store.set("s", "value").unwrap();
        let old_id = store.key_id();

        // Steps 1 and 2 of rotate_key_files, then "crash".
        let new = SecretKey::generate().unwrap();
        write_key_file(&pending_key_path(&key_file), &new).unwrap();
        store.rotate_key(new.clone()).unwrap();
        drop(store);
        assert_eq!(load_or_create_key(&key_file, None).unwrap().key_id(), old_id);

        let store = open_store(&store_path, &key_file, None).unwrap();
        assert_eq!(store.key_id(), new.key_id());
        assert_eq!(store.get("s").unwrap(), "value");
        assert!(!pending_key_path(&key_file).exists());
        assert_eq!(load_or_create_key(&key_file, None).unwrap().key_id(), new.key_id());
    }

    #[test]
    fn crash_after_pending_key_write_keeps_old_key() {
        let (_d, store_path, key_file) = setup();
        let mut store = open_store(&store_path, &key_file, None).unwrap();
        store.set("s", "value").unwrap();
        let old_id = store.key_id();
        drop(store);

        // Only step 1, then "crash".
        write_key_file(&pending_key_path(&key_file), &SecretKey::generate().unwrap()).unwrap();
        let store = open_store(&store_path, &key_file, None).unwrap();
        assert_eq!(store.key_id(), old_id);
        assert_eq!(store.get("s").unwrap(), "value");
        assert!(!pending_key_path(&key_file).exists());

        // A later rotation still works.
        rotate_key_files(&store_path, &key_file).unwrap();
        let store = open_store(&store_path, &key_file, None).unwrap();
        assert_eq!(store.get("s").unwrap(), "value");
        assert_ne!(store.key_id(), old_id);
    }

    #[test]
    fn invalid_names_are_refused() {
        let (_d, store_path, _) = setup();
        let mut store = SecretStore::open(&store_path, SecretKey::generate().unwrap()).unwrap();
        let long = "a".repeat(65);
        for bad in ["", "has space", "slash/x", "ümlaut", "a:b", "${x}", long.as_str()] {
            let err = store.set(bad, "v").unwrap_err();
            assert!(matches!(err, SecretsError::InvalidName { .. }), "{bad:?}: {err:?}");
            assert!(err.to_string().contains("1-64 characters"), "{err}");
            assert!(matches!(store.get(bad), Err(SecretsError::InvalidName { .. })));
        }
        assert!(!store_path.exists(), "refused names must not write");
        store.set(&"a".repeat(64), "v").unwrap();
        store.set("Az09_.-", "v").unwrap();
    }

    #[test]
    fn resolve_references_replaces_and_errors_on_unknown() {
        let (_d, store_path, _) = setup();
        let mut store = SecretStore::open(&store_path, SecretKey::generate().unwrap()).unwrap();
        store.set("DB_PASS", "p@ss").unwrap();
        store.set("HOST", "${secret:DB_PASS}").unwrap();
        assert_eq!(
            resolve_references("postgres://app:${secret:DB_PASS}@db/x?a=${secret:DB_PASS}", &store).unwrap(),
            "postgres://app:p@ss@db/x?a=p@ss"
        );
        // Not re-expanded; other ${...} untouched; no references = unchanged.
        assert_eq!(resolve_references("h=${secret:HOST}", &store).unwrap(), "h=${secret:DB_PASS}");
        assert_eq!(resolve_references("${HOME} ${x}", &store).unwrap(), "${HOME} ${x}");
        assert_eq!(resolve_references("", &store).unwrap(), "");

        let err = resolve_references("x ${secret:MISSING} y", &store).unwrap_err();
        assert!(matches!(&err, SecretsError::NotFound { name } if name == "MISSING"));
        assert!(err.to_string().contains("dc-host secrets set MISSING"), "{err}");
        assert!(matches!(
            resolve_references("ab ${secret:DB_PASS", &store),
            Err(SecretsError::UnterminatedReference { offset: 3 })
        ));
        assert!(matches!(resolve_references("${secret:bad name}", &store), Err(SecretsError::InvalidName { .. })));
    }

    #[cfg(unix)]
    #[test]
    fn key_and_store_files_are_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let (_d, store_path, key_file) = setup();
        let mut store = open_store(&store_path, &key_file, None).unwrap();
        store.set("x", "y").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key_file), 0o600);
        assert_eq!(mode(&store_path), 0o600);
        rotate_key_files(&store_path, &key_file).unwrap();
        assert_eq!(mode(&key_file), 0o600);
        assert_eq!(mode(&store_path), 0o600);
        assert_eq!(mode(&lock_path(&store_path)), 0o600);
        // No temp files left behind (the lock file stays beside the store).
        for dir in [store_path.parent().unwrap(), key_file.parent().unwrap()] {
            let names: Vec<_> = fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|n| n.as_os_str() != lock_path(&store_path).file_name().unwrap())
                .collect();
            assert_eq!(names.len(), 1, "{names:?}");
        }
    }

    #[test]
    fn key_file_is_created_once_and_reused() {
        let (_d, _, key_file) = setup();
        let a = load_or_create_key(&key_file, None).unwrap();
        let b = load_or_create_key(&key_file, None).unwrap();
        assert_eq!(a.to_base64(), b.to_base64());
        assert_eq!(a.key_id().len(), 12);
        assert_ne!(a.key_id(), SecretKey::generate().unwrap().key_id());
        assert!(!format!("{a:?}").contains(&a.to_base64()));

        fs::write(&key_file, "garbage").unwrap();
        let err = load_or_create_key(&key_file, None).unwrap_err();
        assert!(matches!(err, SecretsError::InvalidKeyFile { .. }), "{err:?}");
    }

    #[test]
    fn env_key_overrides_file_and_bad_values_name_the_variable() {
        let (_d, store_path, key_file) = setup();
        let key = SecretKey::generate().unwrap();
        let from_env = load_or_create_key(&key_file, Some(&key.to_base64())).unwrap();
        assert_eq!(from_env.key_id(), key.key_id());
        assert!(!key_file.exists(), "env key must not create a key file");

        let short = BASE64.encode([7u8; 16]);
        for bad in ["not base64 at all!", short.as_str(), "", "   "] {
            let err = load_or_create_key(&key_file, Some(bad)).unwrap_err();
            assert!(matches!(err, SecretsError::InvalidEnvKey { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains("DC_SECRETS_KEY"), "{msg}");
            if !bad.trim().is_empty() {
                assert!(!msg.contains(bad), "message must not echo the value: {msg}");
            }
        }

        // WrongKey names DC_SECRETS_KEY as the key's source.
        let mut store = SecretStore::open(&store_path, key).unwrap();
        store.set("x", "y").unwrap();
        let other = SecretKey::generate().unwrap().to_base64();
        let err = open_store(&store_path, &key_file, Some(&other)).unwrap_err();
        assert!(err.to_string().contains("from DC_SECRETS_KEY"), "{err}");
    }

    #[test]
    fn bad_store_files_are_reported() {
        let (_d, store_path, _) = setup();
        fs::create_dir_all(store_path.parent().unwrap()).unwrap();
        let key = SecretKey::generate().unwrap();
        fs::write(&store_path, "{not json").unwrap();
        assert!(matches!(SecretStore::open(&store_path, key.clone()), Err(SecretsError::CorruptStore { .. })));
        fs::write(&store_path, r#"{"version":2,"key_id":"x","secrets":{}}"#).unwrap();
        assert!(matches!(SecretStore::open(&store_path, key), Err(SecretsError::UnsupportedVersion { found: 2, .. })));
    }

    /// Files in `dir` that an interrupted write or rotation leaves behind.
    fn leftovers(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp") || n.ends_with(".new"))
            .collect();
        names.sort();
        names
    }

    /// Temp files as a crash inside [`write_file`] leaves them, for the store,
    /// the key file and the pending key file.
    fn plant_temp_files(store_path: &Path, key_file: &Path) -> Vec<PathBuf> {
        let planted: Vec<PathBuf> = [store_path.to_path_buf(), key_file.to_path_buf(), pending_key_path(key_file)]
            .iter()
            .map(|target| parent_dir(target).join(format!("{}4242-0123456789ab", temp_prefix(target))))
            .collect();
        for p in &planted {
            fs::write(p, "partial").unwrap();
        }
        planted
    }

    #[test]
    fn writers_in_parallel_lose_nothing() {
        let (_d, store_path, key_file) = setup();
        let key = load_or_create_key(&key_file, None).unwrap();
        // Every store is opened (and has read the empty store) before any
        // writes: each `set` must still keep the others' secrets.
        let stores: Vec<SecretStore> = (0..8).map(|_| SecretStore::open(&store_path, key.clone()).unwrap()).collect();
        let barrier = std::sync::Barrier::new(stores.len());
        std::thread::scope(|scope| {
            for (i, mut store) in stores.into_iter().enumerate() {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    store.set(&format!("s{i}"), &format!("v{i}")).unwrap();
                });
            }
        });
        // The same through open_store_for_update (lock held from the read on).
        std::thread::scope(|scope| {
            for i in 8..16 {
                let (store_path, key_file) = (&store_path, &key_file);
                scope.spawn(move || {
                    let mut store = open_store_for_update(store_path, key_file, None).unwrap();
                    store.set(&format!("s{i}"), &format!("v{i}")).unwrap();
                });
            }
        });
        let store = open_store(&store_path, &key_file, None).unwrap();
        assert_eq!(store.names().len(), 16, "{:?}", store.names());
        for i in 0..16 {
            assert_eq!(store.get(&format!("s{i}")).unwrap(), format!("v{i}"));
        }
    }

    #[test]
    fn stale_store_keeps_changes_made_since_it_was_opened() {
        let (_d, store_path, key_file) = setup();
        let mut early = open_store(&store_path, &key_file, None).unwrap();
        let mut other = open_store(&store_path, &key_file, None).unwrap();
        other.set("a", "1").unwrap();
        other.set("b", "2").unwrap();
        early.set("c", "3").unwrap();
        assert_eq!(early.names(), vec!["a", "b", "c"]);
        assert!(early.remove("a").unwrap());
        assert!(!other.remove("a").unwrap());
        assert_eq!(open_store(&store_path, &key_file, None).unwrap().names(), vec!["b", "c"]);

        // After a rotation elsewhere the stale store's key is outdated: refused, file untouched.
        rotate_key_files(&store_path, &key_file).unwrap();
        let before = fs::read(&store_path).unwrap();
        let err = early.set("d", "4").unwrap_err();
        assert!(matches!(err, SecretsError::KeyChanged { .. }), "{err:?}");
        assert!(err.to_string().contains("open the store again"), "{err}");
        assert_eq!(fs::read(&store_path).unwrap(), before);
    }

    #[test]
    fn update_lock_is_held_until_the_store_is_dropped() {
        let (_d, store_path, key_file) = setup();
        let lock_file = || fs::OpenOptions::new().read(true).write(true).open(lock_path(&store_path)).unwrap();

        let store = open_store_for_update(&store_path, &key_file, None).unwrap();
        assert!(matches!(lock_file().try_lock(), Err(fs::TryLockError::WouldBlock)));
        assert!(matches!(lock_file().try_lock_shared(), Err(fs::TryLockError::WouldBlock)));
        drop(store);
        lock_file().try_lock().unwrap();

        // A reader does not keep the lock.
        let _reader = open_store(&store_path, &key_file, None).unwrap();
        lock_file().try_lock().unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn key_file_accessible_to_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let (_d, store_path, key_file) = setup();
        let mut store = open_store(&store_path, &key_file, None).unwrap();
        store.set("x", "y").unwrap();
        drop(store);
        assert_eq!(fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);

        for bad in [0o644, 0o640, 0o604, 0o620, 0o602, 0o610, 0o601, 0o777] {
            fs::set_permissions(&key_file, fs::Permissions::from_mode(bad)).unwrap();
            let fix = format!("run `chmod 600 {}`", key_file.display());
            let checks = [
                load_or_create_key(&key_file, None).map(|_| ()),
                open_store(&store_path, &key_file, None).map(|_| ()),
                open_store_for_update(&store_path, &key_file, None).map(|_| ()),
                rotate_key_files(&store_path, &key_file).map(|_| ()),
            ];
            for result in checks {
                let err = result.unwrap_err();
                assert!(
                    matches!(&err, SecretsError::KeyFilePermissions { path, mode } if *path == key_file && *mode == bad),
                    "{bad:o}: {err:?}"
                );
                let msg = err.to_string();
                assert!(msg.contains(&fix) && msg.contains(&format!("mode {bad:04o}")), "{msg}");
            }
        }
        // The key bits are not echoed and nothing was changed.
        assert!(!pending_key_path(&key_file).exists());
        for ok in [0o600, 0o400] {
            fs::set_permissions(&key_file, fs::Permissions::from_mode(ok)).unwrap();
            assert_eq!(open_store(&store_path, &key_file, None).unwrap().get("x").unwrap(), "y");
        }
        // DC_SECRETS_KEY users never read the key file.
        fs::set_permissions(&key_file, fs::Permissions::from_mode(0o644)).unwrap();
        let key = SecretKey::generate().unwrap();
        load_or_create_key(&key_file, Some(&key.to_base64())).unwrap();
    }

    #[test]
    fn missing_key_file_beside_a_store_is_refused() {
        let (_d, store_path, key_file) = setup();
        let mut store = open_store(&store_path, &key_file, None).unwrap();
        store.set("a", "1").unwrap();
        store.set("b", "2").unwrap();
        drop(store);
        let saved = fs::read(&key_file).unwrap();
        let before = fs::read(&store_path).unwrap();
        fs::remove_file(&key_file).unwrap();

        let checks = [
            open_store(&store_path, &key_file, None).map(|_| ()),
            open_store_for_update(&store_path, &key_file, None).map(|_| ()),
            rotate_key_files(&store_path, &key_file).map(|_| ()),
        ];
        for result in checks {
            let err = result.unwrap_err();
            assert!(matches!(&err, SecretsError::MissingKeyFile { count: 2, .. }), "{err:?}");
            let msg = err.to_string();
            for needle in [
                store_path.display().to_string(),
                key_file.display().to_string(),
                "restore the key file".to_string(),
                "DC_SECRETS_KEY".to_string(),
                format!("remove {} to start over", store_path.display()),
            ] {
                assert!(msg.contains(&needle), "{needle}: {msg}");
            }
        }
        assert!(!key_file.exists(), "no key was generated");
        assert!(!pending_key_path(&key_file).exists());
        assert_eq!(fs::read(&store_path).unwrap(), before);

        // With the key restored (or given by DC_SECRETS_KEY) everything works again.
        let b64 = String::from_utf8(saved.clone()).unwrap();
        let store = open_store(&store_path, &key_file, Some(b64.trim())).unwrap();
        assert_eq!(store.get("a").unwrap(), "1");
        write_key_file(&key_file, &SecretKey::from_base64(&b64).unwrap()).unwrap();
        assert_eq!(open_store(&store_path, &key_file, None).unwrap().get("b").unwrap(), "2");

        // Removing the store starts over with a new key.
        fs::remove_file(&key_file).unwrap();
        fs::remove_file(&store_path).unwrap();
        let mut store = open_store_for_update(&store_path, &key_file, None).unwrap();
        store.set("c", "3").unwrap();
        assert!(key_file.exists());
        assert_ne!(fs::read(&key_file).unwrap(), saved);
    }

    #[test]
    fn missing_key_file_with_pending_key_of_the_store_completes_rotation() {
        let (_d, store_path, key_file) = setup();
        let mut store = open_store(&store_path, &key_file, None).unwrap();
        store.set("s", "value").unwrap();
        // Steps 1 and 2, then the old key file is lost as well.
        let new = SecretKey::generate().unwrap();
        write_key_file(&pending_key_path(&key_file), &new).unwrap();
        store.rotate_key(new.clone()).unwrap();
        drop(store);
        fs::remove_file(&key_file).unwrap();

        let store = open_store(&store_path, &key_file, None).unwrap();
        assert_eq!(store.get("s").unwrap(), "value");
        assert_eq!(load_or_create_key(&key_file, None).unwrap().key_id(), new.key_id());
        assert!(!pending_key_path(&key_file).exists());
    }

    #[test]
    fn interrupted_rotation_and_writes_leave_no_files_behind() {
        let (_d, store_path, key_file) = setup();
        let dirs = [store_path.parent().unwrap().to_path_buf(), key_file.parent().unwrap().to_path_buf()];
        let mut store = open_store(&store_path, &key_file, None).unwrap();
        store.set("s", "value").unwrap();
        let old_id = store.key_id();

        // Crash after step 2 (plus temp files): a reader completes the rotation.
        let new = SecretKey::generate().unwrap();
        write_key_file(&pending_key_path(&key_file), &new).unwrap();
        store.rotate_key(new.clone()).unwrap();
        drop(store);
        let planted = plant_temp_files(&store_path, &key_file);
        assert_eq!(planted.len(), 3);
        let store = open_store(&store_path, &key_file, None).unwrap();
        assert_eq!(store.get("s").unwrap(), "value");
        assert_eq!(load_or_create_key(&key_file, None).unwrap().key_id(), new.key_id());
        for dir in &dirs {
            assert_eq!(leftovers(dir), Vec::<String>::new());
        }

        // Crash after step 1 (plus temp files): a writer rolls it back.
        write_key_file(&pending_key_path(&key_file), &SecretKey::generate().unwrap()).unwrap();
        plant_temp_files(&store_path, &key_file);
        let mut store = open_store_for_update(&store_path, &key_file, None).unwrap();
        store.set("t", "other").unwrap();
        drop(store);
        let store = open_store(&store_path, &key_file, None).unwrap();
        assert_eq!(store.key_id(), new.key_id());
        assert_ne!(store.key_id(), old_id);
        assert_eq!(store.get("t").unwrap(), "other");
        for dir in &dirs {
            assert_eq!(leftovers(dir), Vec::<String>::new());
        }

        // Temp files are cleaned up before a rotation, which then succeeds.
        plant_temp_files(&store_path, &key_file);
        rotate_key_files(&store_path, &key_file).unwrap();
        for dir in &dirs {
            assert_eq!(leftovers(dir), Vec::<String>::new());
        }

        // With DC_SECRETS_KEY set, only the store's temp files are touched.
        let env = SecretKey::generate().unwrap().to_base64();
        let env_store = store_path.with_file_name("env.json");
        let planted = plant_temp_files(&env_store, &key_file);
        let mut store = open_store_for_update(&env_store, &key_file, Some(&env)).unwrap();
        store.set("e", "env").unwrap();
        assert!(!planted[0].exists());
        assert!(planted[1].exists() && planted[2].exists(), "key files untouched with DC_SECRETS_KEY");
    }

    #[test]
    fn failed_rotation_removes_its_pending_key() {
        let (_d, store_path, key_file) = setup();
        let mut store = open_store(&store_path, &key_file, None).unwrap();
        store.set("bad", "1").unwrap();
        drop(store);
        let mut v = raw(&store_path);
        v["secrets"]["bad"]["ciphertext"] = BASE64.encode([0u8; 20]).into();
        write_raw(&store_path, &v);
        let key_before = fs::read(&key_file).unwrap();
        let err = rotate_key_files(&store_path, &key_file).unwrap_err();
        assert!(matches!(&err, SecretsError::Decrypt { name } if name == "bad"), "{err:?}");
        assert_eq!(fs::read(&key_file).unwrap(), key_before);
        assert_eq!(leftovers(key_file.parent().unwrap()), Vec::<String>::new());
    }

    #[test]
    fn setting_references_resolve_from_the_configured_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::default();
        settings.general.data_dir = dir.path().join("data");

        // no reference: the store is not opened, so no key file appears
        settings.database.url = Some("sqlite://plain.db".into());
        resolve_setting_references_with(&mut settings, None).unwrap();
        assert_eq!(settings.database.url.as_deref(), Some("sqlite://plain.db"));
        assert!(!settings.secrets_key_file().exists());

        let mut store = open_store(&settings.secrets_file(), &settings.secrets_key_file(), None).unwrap();
        store.set("pg_password", "p@ss").unwrap();
        store.set("splunk", "tok").unwrap();
        drop(store);
        settings.database.url = Some("postgres://dc:${secret:pg_password}@db/dc".into());
        settings.logging.splunk_token = Some("${secret:splunk}".into());
        resolve_setting_references_with(&mut settings, None).unwrap();
        assert_eq!(settings.database.url.as_deref(), Some("postgres://dc:p@ss@db/dc"));
        assert_eq!(settings.logging.splunk_token.as_deref(), Some("tok"));

        settings.database.url = Some("postgres://dc:${secret:missing}@db/dc".into());
        assert!(resolve_setting_references_with(&mut settings, None).is_err());
    }

    #[test]
    fn email_channel_credentials_resolve_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::default();
        settings.general.data_dir = dir.path().join("data");
        let mut store = open_store(&settings.secrets_file(), &settings.secrets_key_file(), None).unwrap();
        store.set("smtp_password", "pw 1").unwrap();
        store.set("smtp_user", "alerts").unwrap();
        drop(store);
        settings.notify.channels = vec![
            toml::from_str(
                "kind = \"email\"\nurl = \"smtp://mail.example.org\"\nfrom = \"a@example.org\"\nto = [\"b@example.org\"]\n\
                 username = \"${secret:smtp_user}\"\npassword = \"${secret:smtp_password}\"\n",
            )
            .unwrap(),
        ];
        resolve_setting_references_with(&mut settings, None).unwrap();
        let c = &settings.notify.channels[0];
        assert_eq!((c.username.as_deref(), c.password.as_deref()), (Some("alerts"), Some("pw 1")));
    }
}
