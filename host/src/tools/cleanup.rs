//! `wazoo data cleanup DIR --keep N`: Wazoo's `zkCleanup.sh`.
//!
//! ZooKeeper's cleanup deletes old snapshots and transaction logs. Wazoo has neither as
//! files: the raft log is purged automatically behind snapshots, and only the current
//! snapshot is kept. What does accumulate is RocksDB's own garbage: deleted and
//! overwritten rows (purged log entries, old snapshots) until compaction reclaims them,
//! and one info `LOG.old.*` file per database open. A running server already bounds
//! both itself (`raft::db::StorageOptions`: the WAL cap, info logs rolled and limited to
//! `autopurge.snapRetainCount` files, a compaction of every column family every
//! `autopurge.purgeInterval` hours; docs/OPERATIONS.md, "Disk usage"), so this command
//! is for a stopped server's directory, a copy, or right after a large deletion. It
//!
//! * compacts every column family (`compact_range` over the whole key space), only when
//!   it can open the database itself, i.e. the server is stopped;
//! * deletes the oldest `LOG.old.*` info log files beyond the newest `keep` ones: safe
//!   even while the server runs (RocksDB never reopens them).
//!
//! When the database lock is held (a server is running), it does only the second part
//! and says so.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use rocksdb::{Options, DB};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct CleanupReport {
    pub dir: String,
    /// Total size of the database directory before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// The part of those that is RocksDB's info logs (`LOG`, `LOG.old.*`); the rest is
    /// data (SST files, WAL, MANIFEST, OPTIONS).
    pub info_log_bytes_before: u64,
    pub info_log_bytes_after: u64,
    /// Whether the column families were compacted (false when the server holds the lock).
    pub compacted: bool,
    /// Old info LOG files deleted.
    pub deleted_log_files: Vec<String>,
    pub notes: Vec<String>,
}

impl fmt::Display for CleanupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "database:      {}", self.dir)?;
        writeln!(
            f,
            "bytes before:  {} ({} data, {} info logs)",
            self.bytes_before,
            self.bytes_before - self.info_log_bytes_before,
            self.info_log_bytes_before
        )?;
        writeln!(
            f,
            "bytes after:   {} ({} data, {} info logs)",
            self.bytes_after,
            self.bytes_after - self.info_log_bytes_after,
            self.info_log_bytes_after
        )?;
        writeln!(
            f,
            "compacted:     {}",
            if self.compacted { "yes" } else { "no" }
        )?;
        writeln!(
            f,
            "deleted {} old info LOG files",
            self.deleted_log_files.len()
        )?;
        for d in &self.deleted_log_files {
            writeln!(f, "  {d}")?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

/// Total size of the regular files directly in `dir`, and of its info logs among them.
pub fn dir_bytes(dir: &Path) -> anyhow::Result<(u64, u64)> {
    let (mut total, mut info) = (0, 0);
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let md = e.metadata()?;
        if md.is_file() {
            total += md.len();
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name == "LOG" || name.starts_with("LOG.old.") {
                info += md.len();
            }
        }
    }
    Ok((total, info))
}

/// The `LOG.old.*` files of `dir`, oldest first (their suffix is a microsecond
/// timestamp of the same width, so name order is age order).
fn old_info_logs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("LOG.old."))
        .map(|e| e.path())
        .collect();
    v.sort_by_key(|p| {
        let mtime = std::fs::metadata(p).and_then(|m| m.modified()).ok();
        (mtime, p.clone())
    });
    Ok(v)
}

fn is_lock_error(e: &rocksdb::Error) -> bool {
    let s = e.to_string().to_ascii_lowercase();
    s.contains("lock")
}

/// `wazoo data cleanup DIR --keep N`.
pub fn cleanup(dir: &Path, keep: usize) -> anyhow::Result<CleanupReport> {
    let path = super::raft_dir(dir)?;
    let (bytes_before, info_log_bytes_before) = dir_bytes(&path)?;
    let mut notes = Vec::new();
    notes.push(
        "the raft log is purged automatically after each snapshot; no log or snapshot files to delete"
            .to_string(),
    );
    let mut compacted = false;
    let mut opts = Options::default();
    opts.create_if_missing(false);
    let cfs = DB::list_cf(&opts, &path)
        .with_context(|| format!("listing column families of {}", path.display()))?;
    // Our own open writes its info log to a scratch directory, so it neither rotates the
    // server's `LOG` into one more `LOG.old.*` nor adds to the directory it cleans.
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let scratch = std::env::temp_dir().join(format!(
        "wazoo-cleanup-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    opts.set_db_log_dir(&scratch);
    let opened = DB::open_cf(&opts, &path, &cfs);
    match opened {
        Ok(db) => {
            for name in &cfs {
                if let Some(cf) = db.cf_handle(name) {
                    db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
                }
            }
            drop(db);
            compacted = true;
        }
        Err(e) if is_lock_error(&e) => {
            notes.push(format!(
                "the database is in use (a server is running: {e}); compaction skipped, only old info LOG files removed"
            ));
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&scratch);
            return Err(anyhow::anyhow!("opening {}: {e}", path.display()));
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let old = old_info_logs(&path)?;
    let excess = old.len().saturating_sub(keep);
    let mut deleted = Vec::new();
    for p in old.into_iter().take(excess) {
        std::fs::remove_file(&p).with_context(|| format!("deleting {}", p.display()))?;
        deleted.push(p.display().to_string());
    }
    let (bytes_after, info_log_bytes_after) = dir_bytes(&path)?;
    Ok(CleanupReport {
        dir: path.display().to_string(),
        bytes_before,
        bytes_after,
        info_log_bytes_before,
        info_log_bytes_after,
        compacted,
        deleted_log_files: deleted,
        notes,
    })
}
