//! Offline data-directory tools (`wazoo snapshot …`, `wazoo log …`, `wazoo data …`):
//! the counterparts of ZooKeeper's `zkSnapshotComparer.sh`, `zkTxnLogToolkit.sh` and
//! `zkCleanup.sh`.
//!
//! They work on a *stopped* server's data directory (or a copy of it): the RocksDB
//! database in `<dataDir>/raft` (see [`crate::raft::db`] for its column families). Every
//! tool but `data cleanup` opens it read-only, so it never changes the data; a directory
//! argument may be either the data directory or its `raft` subdirectory.
//!
//! * [`snapshot`]: `summary` (sizes, depths, largest subtrees, sessions) and `diff`
//!   (summary of both sides plus the znodes only on one side or changed).
//! * [`log`]: `dump` (one line per operation in the raft log) and `--check`.
//! * [`cleanup`]: RocksDB compaction and old info-LOG file removal.
//!
//! Every tool is a library function returning a report (`Serialize`, and `Display` for
//! the human form), so tests call them directly; the `Cli*` types below are what
//! `wazoo` (main.rs) parses.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rocksdb::{Options, DB};

pub mod cleanup;
pub mod export;
pub mod log;
pub mod snapshot;
pub mod zookeeper_import;

use crate::raft::db::ALL_CFS;

/// The RocksDB directory for `dir`: `dir/raft` when `dir` is a data directory, `dir`
/// itself when it already is the database directory (has a `CURRENT` file).
pub fn raft_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    if dir.join("raft").join("CURRENT").is_file() {
        return Ok(dir.join("raft"));
    }
    if dir.join("CURRENT").is_file() {
        return Ok(dir.to_path_buf());
    }
    bail!(
        "{} is not a Wazoo data directory (no raft/CURRENT or CURRENT file)",
        dir.display()
    )
}

/// Opens the database of data directory `dir` read-only. Read-only opens take no lock
/// and write nothing (no WAL replay into SST files, no new files).
pub fn open_read_only(dir: &Path) -> anyhow::Result<DB> {
    let path = raft_dir(dir)?;
    let opts = Options::default();
    let existing = DB::list_cf(&opts, &path)
        .with_context(|| format!("listing column families of {}", path.display()))?;
    for cf in ALL_CFS {
        if !existing.iter().any(|e| e == cf) {
            bail!("{}: column family {cf} is missing", path.display());
        }
    }
    DB::open_cf_for_read_only(&opts, &path, &existing, false)
        .with_context(|| format!("opening {} read-only", path.display()))
}

/// Parses a zxid given as `0x…` hex or decimal.
pub fn parse_zxid(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let parsed = if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).map(|v| v as i64)
    } else {
        t.parse::<i64>()
    };
    parsed.map_err(|e| format!("bad zxid {s:?}: {e}"))
}

/// Civil UTC date and time of milliseconds since the Unix epoch:
/// (year, month, day, hour, minute, second, millisecond).
pub fn civil_utc(ms: i64) -> (i64, i64, i64, i64, i64, i64, i64) {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, sod / 3600, sod % 3600 / 60, sod % 60, millis)
}

/// RFC 3339 (UTC, milliseconds) for milliseconds since the Unix epoch.
pub fn rfc3339_ms(ms: i64) -> String {
    let (y, m, d, h, mi, s, millis) = civil_utc(ms);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{millis:03}Z")
}

// ---- command line (parsed by main.rs) ----

/// `wazoo snapshot …`
#[derive(clap::Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Node count, data bytes, depths, largest subtrees, sessions of a data dir.
    Summary {
        /// The data directory (or its `raft` subdirectory) of a stopped server.
        dir: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Compares two data dirs: both summaries, then znodes only on one side or changed.
    Diff {
        /// The first data directory (or its `raft` subdirectory).
        left: PathBuf,
        /// The second data directory.
        right: PathBuf,
        /// Only report differences covering at least this many data bytes.
        #[arg(long, default_value_t = 0)]
        min_bytes: u64,
        /// Only report differences covering at least this many znodes.
        #[arg(long, default_value_t = 0)]
        min_count: u64,
        #[arg(long)]
        json: bool,
    },
    /// Writes a data dir's full state (znodes with data, ACL and internal stat, sessions,
    /// last zxid) as JSON Lines; FILE `-` is stdout.
    Export {
        /// The data directory (or its `raft` subdirectory) of a stopped server.
        dir: PathBuf,
        /// The export file to write.
        file: PathBuf,
    },
    /// Creates a data dir holding exactly the state of an export file (FILE `-` is
    /// stdin); DIR must be empty or not exist.
    Import {
        /// The export file to read.
        file: PathBuf,
        /// The new data directory.
        dir: PathBuf,
    },
}

/// `wazoo log …`
#[derive(clap::Subcommand, Debug)]
pub enum LogCommand {
    /// Prints the raft log, one line per operation; `--check` verifies it instead.
    Dump {
        /// The data directory (or its `raft` subdirectory) of a stopped server.
        dir: PathBuf,
        /// First zxid to print (hex `0x…` or decimal).
        #[arg(long, value_parser = parse_zxid)]
        from: Option<i64>,
        /// Last zxid to print (inclusive).
        #[arg(long, value_parser = parse_zxid)]
        to: Option<i64>,
        /// Verify every entry (decoding, index order, contiguity); exit non-zero on damage.
        #[arg(long)]
        check: bool,
        /// JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `wazoo data …`
#[derive(clap::Subcommand, Debug)]
pub enum DataCommand {
    /// Compacts the RocksDB database and deletes old RocksDB info LOG files.
    Cleanup {
        /// The data directory (or its `raft` subdirectory); the server may be running.
        dir: PathBuf,
        /// How many old info LOG files (LOG.old.*) to keep.
        #[arg(long, default_value_t = 3)]
        keep: usize,
        #[arg(long)]
        json: bool,
    },
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}

pub fn run_snapshot(cmd: SnapshotCommand) -> anyhow::Result<()> {
    match cmd {
        SnapshotCommand::Summary { dir, json } => {
            let s = snapshot::summary(&dir)?;
            if json {
                print_json(&s)
            } else {
                print!("{s}");
                Ok(())
            }
        }
        SnapshotCommand::Diff {
            left,
            right,
            min_bytes,
            min_count,
            json,
        } => {
            let d = snapshot::diff(&left, &right, min_bytes, min_count)?;
            if json {
                print_json(&d)
            } else {
                print!("{d}");
                Ok(())
            }
        }
        SnapshotCommand::Export { dir, file } => {
            let r = export::export(&dir, &file)?;
            eprint!("exported {r}");
            Ok(())
        }
        SnapshotCommand::Import { file, dir } => {
            let r = export::import(&file, &dir)?;
            eprint!("imported {r}");
            Ok(())
        }
    }
}

pub fn run_log(cmd: LogCommand) -> anyhow::Result<()> {
    match cmd {
        LogCommand::Dump {
            dir,
            from,
            to,
            check,
            json,
        } => {
            if check {
                let report = log::check(&dir)?;
                if json {
                    print_json(&report)?;
                } else {
                    print!("{report}");
                }
                if !report.ok() {
                    bail!(
                        "the raft log is damaged (first problem at index {})",
                        report
                            .problems
                            .first()
                            .map(|p| p.index.to_string())
                            .unwrap_or_default()
                    );
                }
                Ok(())
            } else {
                let records = log::dump(&dir, from, to)?;
                for r in &records {
                    if json {
                        print_json(r)?;
                    } else {
                        println!("{r}");
                    }
                }
                Ok(())
            }
        }
    }
}

pub fn run_data(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Cleanup { dir, keep, json } => {
            let r = cleanup::cleanup(&dir, keep)?;
            if json {
                print_json(&r)
            } else {
                print!("{r}");
                Ok(())
            }
        }
    }
}

/// `wazoo import …`
#[derive(clap::Subcommand, Debug)]
pub enum ImportCommand {
    /// Migrates an Apache ZooKeeper 3.x dataDir (newest snapshot + txn logs after it)
    /// into a new Wazoo data dir. Sessions get new passwords: clients must reconnect
    /// with new sessions; ephemerals of imported sessions expire with them.
    Zookeeper {
        /// ZooKeeper's dataDir (holding `version-2/`), or its `version-2` directory.
        zk_data_dir: PathBuf,
        /// The new Wazoo data directory (must not exist or be empty).
        target_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub fn run_import(cmd: ImportCommand) -> anyhow::Result<()> {
    match cmd {
        ImportCommand::Zookeeper {
            zk_data_dir,
            target_dir,
            json,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let r = rt.block_on(zookeeper_import::import(&zk_data_dir, &target_dir))?;
            if json {
                print_json(&r)
            } else {
                print!("{r}");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_795_000_000_000), "2026-11-18T11:06:40.000Z");
    }

    #[test]
    fn zxids_parse_as_hex_or_decimal() {
        assert_eq!(parse_zxid("0x10000"), Ok(65536));
        assert_eq!(parse_zxid("42"), Ok(42));
        assert!(parse_zxid("0xzz").is_err());
    }
}
