//! Backups a company can count on: `ocsuite backup`, `ocsuite restore`, and the
//! server's own schedule (`OCSUITE_BACKUP_DIR`).
//!
//! A backup is a folder `ocsuite-<UTC time>/` holding the database copy (`ocsuite.db`
//! on SQLite, a `pg_dump` custom-format `ocsuite.dump` on PostgreSQL) and
//! `manifest.json`: the copy's size and SHA-256, the rows of every table in the
//! snapshot, and a check value of the master key (an HKDF output of it, which reveals
//! nothing about the key). The folder appears only once complete (it is written under a
//! `.partial` name and renamed), so a crash mid-backup never leaves a folder that looks
//! whole.
//!
//! A restore refuses a copy whose hash differs, a master key that is not the one the
//! backup was made with, and (unless forced) a database that already holds data. It
//! loads the copy, checks every table's rows against the manifest, applies newer
//! migrations, and decrypts every stored secret before it reports success, so "restored"
//! means the company can sign in and its connections still work.
//!
//! The master key is not in the backup unless asked for (`--with-master-key`): a stolen
//! backup without it keeps every secret sealed. See docs/operations.md#backups.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::crypto::{Crypto, MasterKey};
use crate::error::{AppError, Result};
use crate::store::cross_tenant::backup as db;
use crate::store::{Backend, Store};

/// The manifest's `format`; a restore refuses any other.
pub const FORMAT: &str = "ocsuite-backup/1";
const MANIFEST: &str = "manifest.json";
const KEY_FILE: &str = "master.key";

/// What `manifest.json` says about a backup.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    /// The ocsuite version that made it.
    pub version: String,
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// The database copy, beside the manifest.
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    /// When the snapshot was taken: nothing written after it is in the backup.
    pub snapshot_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Identifies the master key the data is encrypted with (not the key).
    pub master_key_check: String,
    /// Rows per table in the snapshot.
    pub tables: db::Counts,
}

/// A finished backup.
#[derive(Debug, Serialize)]
pub struct Taken {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub seconds: f64,
}

/// What a restore did.
#[derive(Debug, Serialize)]
pub struct Restored {
    pub tables: usize,
    pub rows: i64,
    pub secrets: u64,
    /// From the start of the restore to a database ready to serve.
    pub seconds: f64,
}

fn backend(config: &Config) -> Backend {
    if config.database_url.starts_with("sqlite:") {
        Backend::Sqlite
    } else {
        Backend::Postgres
    }
}

fn owner_url(config: &Config) -> &str {
    config.owner_database_url()
}

/// The check value a manifest stores for `key`.
fn key_check(key: &MasterKey) -> String {
    Crypto::new(key.clone()).derive_token("backup-key-check", FORMAT)
}

fn io(what: &str, path: &Path, e: std::io::Error) -> AppError {
    AppError::Internal(format!("{what} {}: {e}", path.display()))
}

/// SHA-256 and size of a file, read in blocks.
fn digest(path: &Path) -> Result<(String, u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| io("cannot read", path, e))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| io("cannot read", path, e))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((hex::encode(hash.finalize()), bytes))
}

/// Takes a backup into a new folder under `out`, while the server keeps running.
/// `with_key` also writes the master key into it (mode 0600).
pub async fn take(config: &Config, out: &Path, with_key: bool) -> Result<Taken> {
    let began = Instant::now();
    let key = crate::master_key(config).map_err(AppError::internal)?;
    let snapshot_at = Utc::now();
    let name = format!("ocsuite-{}", snapshot_at.format("%Y%m%dT%H%M%S%.3fZ"));
    let partial = out.join(format!(".{name}.partial"));
    let dir = out.join(&name);
    std::fs::create_dir_all(&partial).map_err(|e| io("cannot create", &partial, e))?;
    let result = async {
        let (file, tables) = match backend(config) {
            Backend::Sqlite => {
                let file = "ocsuite.db";
                let counts = db::sqlite_snapshot(&config.database_url, &partial.join(file)).await?;
                (file, counts)
            }
            Backend::Postgres => {
                let file = "ocsuite.dump";
                let counts = db::pg_snapshot(owner_url(config), &partial.join(file)).await?;
                (file, counts)
            }
        };
        let (sha256, bytes) = digest(&partial.join(file))?;
        let manifest = Manifest {
            format: FORMAT.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            backend: match backend(config) {
                Backend::Sqlite => "sqlite".into(),
                Backend::Postgres => "postgres".into(),
            },
            file: file.into(),
            bytes,
            sha256,
            snapshot_at,
            finished_at: Utc::now(),
            master_key_check: key_check(&key),
            tables,
        };
        let json = serde_json::to_vec_pretty(&manifest).map_err(AppError::internal)?;
        let path = partial.join(MANIFEST);
        std::fs::write(&path, json).map_err(|e| io("cannot write", &path, e))?;
        if with_key {
            write_key(&partial.join(KEY_FILE), &key)?;
        }
        std::fs::rename(&partial, &dir).map_err(|e| io("cannot finish", &dir, e))?;
        Ok(manifest)
    }
    .await;
    match result {
        Ok(manifest) => Ok(Taken {
            dir,
            manifest,
            seconds: began.elapsed().as_secs_f64(),
        }),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            Err(e)
        }
    }
}

fn write_key(path: &Path, key: &MasterKey) -> Result<()> {
    use std::io::Write;
    let text = key.to_base64();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(|e| io("cannot write", path, e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| io("cannot write", path, e))
}

/// Reads and checks a backup folder's manifest and its copy's hash.
pub fn inspect(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read(&path).map_err(|e| {
        AppError::bad_request(
            "not_a_backup",
            format!("{} is not a backup folder: {e}", path.display()),
        )
    })?;
    let m: Manifest = serde_json::from_slice(&text).map_err(|e| {
        AppError::bad_request(
            "not_a_backup",
            format!("{} is not a backup manifest: {e}", path.display()),
        )
    })?;
    if m.format != FORMAT {
        return Err(AppError::bad_request(
            "not_a_backup",
            format!(
                "{} has format {:?}; this ocsuite reads {FORMAT}",
                path.display(),
                m.format
            ),
        ));
    }
    if m.file.contains('/') || m.file.contains('\\') || m.file.starts_with('.') {
        return Err(AppError::bad_request(
            "not_a_backup",
            format!(
                "{}: the copy must be a file beside the manifest",
                path.display()
            ),
        ));
    }
    let (sha256, bytes) = digest(&dir.join(&m.file))?;
    if sha256 != m.sha256 || bytes != m.bytes {
        return Err(AppError::bad_request(
            "backup_damaged",
            format!(
                "{} does not match its manifest (SHA-256 or size differ): the copy is damaged",
                dir.join(&m.file).display()
            ),
        ));
    }
    Ok(m)
}

/// The master key a restore uses: the configured one, or the data folder's, or the one
/// saved in the backup (copied into the data folder, as the server would look for it).
fn restore_key(config: &Config, dir: &Path) -> Result<MasterKey> {
    let in_data = config.data_dir.join(KEY_FILE);
    let in_backup = dir.join(KEY_FILE);
    if config.master_key.is_none() && !in_data.exists() {
        if !in_backup.exists() {
            return Err(AppError::bad_request(
                "master_key_missing",
                "no master key: set OCSUITE_MASTER_KEY to the key the backup was made with",
            ));
        }
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| io("cannot create", &config.data_dir, e))?;
        let text =
            std::fs::read_to_string(&in_backup).map_err(|e| io("cannot read", &in_backup, e))?;
        let key = crate::config::decode_master_key(&text)
            .map(MasterKey::from_bytes)
            .map_err(|m| {
                AppError::bad_request(
                    "master_key_invalid",
                    format!("{}: {m}", in_backup.display()),
                )
            })?;
        write_key(&in_data, &key)?;
    }
    crate::master_key(config).map_err(AppError::internal)
}

/// Restores the backup in `dir` into the configured database. The server must be
/// stopped. `force` replaces an SQLite database that holds data (the old file is kept
/// beside it as `<name>.replaced-<time>`); PostgreSQL is only restored into an empty
/// database.
pub async fn restore(config: &Config, dir: &Path, force: bool) -> Result<Restored> {
    let began = Instant::now();
    let m = inspect(dir)?;
    let key = restore_key(config, dir)?;
    if key_check(&key) != m.master_key_check {
        return Err(AppError::bad_request(
            "master_key_mismatch",
            "this backup was made with a different master key: set OCSUITE_MASTER_KEY to that key \
             (without it the stored secrets cannot be read)",
        ));
    }
    let wanted = match backend(config) {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    if m.backend != wanted {
        return Err(AppError::bad_request(
            "wrong_backend",
            format!(
                "this is a {} backup and OCSUITE_DATABASE_URL is {wanted}; restore it into a {} database",
                m.backend, m.backend
            ),
        ));
    }
    let copy = dir.join(&m.file);
    let found = match backend(config) {
        Backend::Sqlite => restore_sqlite(config, &copy, force).await?,
        Backend::Postgres => {
            if !db::pg_is_empty(owner_url(config)).await? {
                return Err(AppError::Conflict(
                    "the PostgreSQL database already has tables: restore into a new, empty database \
                     (createdb), then point OCSUITE_DATABASE_URL at it"
                        .into(),
                ));
            }
            db::pg_load(owner_url(config), &copy).await?;
            db::pg_counts(owner_url(config)).await?
        }
    };
    let differ: Vec<String> = m
        .tables
        .iter()
        .filter(|(t, n)| found.get(*t) != Some(n))
        .map(|(t, n)| {
            format!(
                "{t} (backup {n}, restored {})",
                found.get(t).copied().unwrap_or(0)
            )
        })
        .collect();
    if !differ.is_empty() {
        return Err(AppError::Internal(format!(
            "the restored rows differ from the backup's manifest: {}",
            differ.join(", ")
        )));
    }
    crate::store::migrate(config).await?;
    let owner = Store::connect(owner_url(config), 2).await?;
    let secrets = crate::crypto::secrets::verify_all(&owner, &Crypto::new(key)).await;
    owner.close().await;
    Ok(Restored {
        tables: m.tables.len(),
        rows: m.tables.values().sum(),
        secrets: secrets?,
        seconds: began.elapsed().as_secs_f64(),
    })
}

/// Puts an SQLite copy in place of the configured database file; returns its rows.
async fn restore_sqlite(config: &Config, copy: &Path, force: bool) -> Result<db::Counts> {
    let target = PathBuf::from(
        config
            .database_url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:")
            .split('?')
            .next()
            .unwrap_or_default(),
    );
    if target.as_os_str().is_empty() || target.to_string_lossy().contains(":memory:") {
        return Err(AppError::bad_request(
            "wrong_database",
            "OCSUITE_DATABASE_URL names no SQLite file to restore into",
        ));
    }
    let counts = db::sqlite_check(copy).await?;
    let holds_data = target.exists()
        && std::fs::metadata(&target)
            .map(|m| m.len() > 0)
            .unwrap_or(false);
    if holds_data && !force {
        return Err(AppError::Conflict(format!(
            "{} already exists: stop the server and pass --force to replace it (the old file is kept beside it)",
            target.display()
        )));
    }
    if let Some(parent) = target.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| io("cannot create", parent, e))?;
    }
    let staged = target.with_extension("db.restoring");
    std::fs::copy(copy, &staged).map_err(|e| io("cannot write", &staged, e))?;
    std::fs::File::open(&staged)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("cannot sync", &staged, e))?;
    if holds_data {
        let aside = PathBuf::from(format!(
            "{}.replaced-{}",
            target.display(),
            Utc::now().format("%Y%m%dT%H%M%SZ")
        ));
        std::fs::rename(&target, &aside).map_err(|e| io("cannot move aside", &target, e))?;
    }
    // A WAL left by the old file would be replayed into the new one.
    for ext in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{ext}", target.display()));
        if side.exists() {
            std::fs::remove_file(&side).map_err(|e| io("cannot remove", &side, e))?;
        }
    }
    std::fs::rename(&staged, &target).map_err(|e| io("cannot put in place", &target, e))?;
    Ok(counts)
}

/// Deletes all but the newest `keep` backups in `out` (folders this module named), and
/// any backup left unfinished. Returns how many backups went.
pub fn prune(out: &Path, keep: usize) -> Result<usize> {
    let entries: Vec<PathBuf> = std::fs::read_dir(out)
        .map_err(|e| io("cannot list", out, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    for p in &entries {
        let unfinished = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(".ocsuite-") && n.ends_with(".partial"));
        // Left by a backup that was cut short (an hour is longer than any backup runs:
        // one that is still being written, by `ocsuite backup` say, is left alone).
        let stale = std::fs::metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(3600));
        if unfinished && stale {
            let _ = std::fs::remove_dir_all(p);
        }
    }
    let mut found: Vec<PathBuf> = entries
        .into_iter()
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("ocsuite-") && p.join(MANIFEST).exists())
        })
        .collect();
    // The names sort by time.
    found.sort();
    let excess = found.len().saturating_sub(keep);
    for old in &found[..excess] {
        std::fs::remove_dir_all(old).map_err(|e| io("cannot remove", old, e))?;
    }
    Ok(excess)
}

/// The scheduled backups of `serve`: one every `backup_every_minutes` into
/// `backup_dir`, keeping `backup_keep`. A failure is logged and retried at the next
/// turn; it never stops the server. Runs until its task is aborted at shutdown (a
/// backup cut short leaves only its `.partial` folder, removed by the next prune).
pub async fn scheduled(config: Config) {
    let Some(out) = config.backup_dir.clone() else {
        return;
    };
    let every = Duration::from_secs(u64::from(config.backup_every_minutes) * 60);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match take(&config, &out, false).await {
            Ok(t) => {
                tracing::info!(dir = %t.dir.display(), bytes = t.manifest.bytes, seconds = t.seconds, "backup taken");
                if let Err(e) = prune(&out, config.backup_keep as usize) {
                    tracing::warn!(error = %e, "removing old backups failed");
                }
            }
            Err(e) => tracing::error!(error = %e, dir = %out.display(), "scheduled backup failed"),
        }
    }
}
