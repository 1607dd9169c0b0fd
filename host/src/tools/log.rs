//! `wazoo log dump` and `wazoo log dump --check`: the raft log (`raft_log` column
//! family: key = log index u64 big-endian, value = CRC32 (4 bytes, big-endian) ++
//! rmp-serde `openraft::Entry`; see `raft::db::encode_log_entry`).
//!
//! Integrity: every entry carries a CRC32 of its encoding, verified before decoding, so
//! any changed byte of a value is caught, including inside a string (e.g. a path) that
//! would still decode. On-disk corruption of the SST/WAL files is also caught by
//! RocksDB's own block and record CRC32C checks (reads verify them; a failure is
//! reported as a read error). `--check` adds what neither can know: every value decodes
//! as an entry, carries the index it is stored under, indexes are contiguous from the
//! last purged one, terms never decrease, and no entry exceeds the zxid position space.

use std::fmt;
use std::path::Path;

use anyhow::Context;
use openraft::{EntryPayload, LogId};
use rocksdb::{Direction, IteratorMode};
use serde::Serialize;
use wazoo_proto::WriteOp;

use crate::app::TypeConfig;
use crate::command::{zxid_of, CommandOp, WriteRequest, MAX_OPS_PER_ENTRY, ZXID_POSITION_BITS};
use crate::raft::db::{verify_log_value, CF_LOG, CF_LOG_META};
use crate::state_machine::SESSION_ID_BASE;

type Entry = openraft::Entry<TypeConfig>;

/// One operation of the log (or one blank/membership entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DumpRecord {
    pub zxid: i64,
    pub index: u64,
    pub term: u64,
    /// The proposer's clock (ms since the epoch); none for blank/membership entries.
    pub time_ms: Option<i64>,
    /// The session the operation is for (the new one for createSession).
    pub session: Option<i64>,
    /// create, delete, setData, setACL, check, multi, createSession, closeSession,
    /// expireSessions, removeStale, blank, membership.
    pub op: String,
    /// Paths touched (for createSession/expireSessions: none; see `detail`).
    pub paths: Vec<String>,
    /// Extra: sub-operations of a multi, expired session ids, the membership.
    pub detail: Option<String>,
}

impl fmt::Display for DumpRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:#018x} index={} term={}",
            self.zxid, self.index, self.term
        )?;
        match self.time_ms {
            Some(t) => write!(f, " time={}", super::rfc3339_ms(t))?,
            None => write!(f, " time=-")?,
        }
        match self.session {
            Some(s) => write!(f, " session={s:#x}")?,
            None => write!(f, " session=-")?,
        }
        write!(f, " {}", self.op)?;
        for p in &self.paths {
            write!(f, " {p}")?;
        }
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

fn write_op_name(op: &WriteOp) -> (&'static str, &str) {
    match op {
        WriteOp::Create(c) => ("create", c.path.as_str()),
        WriteOp::Delete(d) => ("delete", d.path.as_str()),
        WriteOp::SetData(s) => ("setData", s.path.as_str()),
        WriteOp::Check(c) => ("check", c.path.as_str()),
    }
}

/// The records of one decoded entry.
pub fn records_of(entry: &Entry) -> Vec<DumpRecord> {
    let index = entry.log_id.index;
    let term = entry.log_id.leader_id.term;
    let rec = |pos: usize, time_ms, session, op: &str, paths, detail| DumpRecord {
        zxid: zxid_of(index, pos),
        index,
        term,
        time_ms,
        session,
        op: op.to_string(),
        paths,
        detail,
    };
    match &entry.payload {
        EntryPayload::Blank => vec![rec(0, None, None, "blank", vec![], None)],
        EntryPayload::Membership(m) => {
            vec![rec(
                0,
                None,
                None,
                "membership",
                vec![],
                Some(m.to_string()),
            )]
        }
        EntryPayload::Normal(cmd) => cmd
            .ops
            .iter()
            .enumerate()
            .map(|(pos, op)| {
                let t = Some(cmd.time_ms);
                match op {
                    CommandOp::CreateSession { timeout_ms, .. } => rec(
                        pos,
                        t,
                        Some(SESSION_ID_BASE | zxid_of(index, pos)),
                        "createSession",
                        vec![],
                        Some(format!("timeout={timeout_ms}ms")),
                    ),
                    CommandOp::CloseSession { session_id } => {
                        rec(pos, t, Some(*session_id), "closeSession", vec![], None)
                    }
                    CommandOp::ExpireSessions { session_ids } => rec(
                        pos,
                        t,
                        None,
                        "expireSessions",
                        vec![],
                        Some(
                            session_ids
                                .iter()
                                .map(|s| format!("{s:#x}"))
                                .collect::<Vec<_>>()
                                .join(","),
                        ),
                    ),
                    CommandOp::RemoveStale { paths } => {
                        rec(pos, t, None, "removeStale", paths.clone(), None)
                    }
                    CommandOp::RecipeUpload {
                        session_id,
                        name,
                        module,
                        ..
                    } => rec(
                        pos,
                        t,
                        Some(*session_id),
                        "recipeUpload",
                        vec![],
                        Some(format!("name={name} bytes={}", module.len())),
                    ),
                    CommandOp::RecipeInstall { name, module, .. } => rec(
                        pos,
                        t,
                        None,
                        "recipeInstall",
                        vec![],
                        Some(format!("name={name} bytes={}", module.len())),
                    ),
                    CommandOp::RecipeDelete {
                        session_id,
                        name,
                        version,
                        ..
                    } => rec(
                        pos,
                        t,
                        Some(*session_id),
                        "recipeDelete",
                        vec![],
                        Some(format!("name={name} version={version}")),
                    ),
                    CommandOp::RecipeCall {
                        session_id,
                        name,
                        version,
                        function,
                        args,
                        ..
                    } => rec(
                        pos,
                        t,
                        Some(*session_id),
                        "recipeCall",
                        vec![],
                        Some(format!(
                            "name={name} version={version} function={function} args={}B",
                            args.len()
                        )),
                    ),
                    CommandOp::RecipeTimers => rec(pos, t, None, "recipeTimers", vec![], None),
                    CommandOp::RecipeAdoptRuntime { session_id, .. } => rec(
                        pos,
                        t,
                        Some(*session_id),
                        "recipeAdoptRuntime",
                        vec![],
                        None,
                    ),
                    CommandOp::Write {
                        session_id,
                        request,
                        ..
                    } => {
                        let s = Some(*session_id);
                        match request {
                            WriteRequest::Op(op) => {
                                let (name, path) = write_op_name(op);
                                rec(pos, t, s, name, vec![path.to_string()], None)
                            }
                            WriteRequest::SetAcl(r) => {
                                rec(pos, t, s, "setACL", vec![r.path.clone()], None)
                            }
                            WriteRequest::Multi(ops) => {
                                let named: Vec<_> = ops.iter().map(write_op_name).collect();
                                rec(
                                    pos,
                                    t,
                                    s,
                                    "multi",
                                    named.iter().map(|(_, p)| p.to_string()).collect(),
                                    Some(
                                        named.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(","),
                                    ),
                                )
                            }
                        }
                    }
                }
            })
            .collect(),
    }
}

/// `wazoo log dump DIR [--from ZXID] [--to ZXID]`: every operation with `from <= zxid
/// <= to`, in log order. Fails on the first entry that cannot be read or decoded (use
/// [`check`] to diagnose).
pub fn dump(dir: &Path, from: Option<i64>, to: Option<i64>) -> anyhow::Result<Vec<DumpRecord>> {
    let db = super::open_read_only(dir)?;
    let cf = db
        .cf_handle(CF_LOG)
        .context("column family raft_log missing")?;
    let from_zxid = from.unwrap_or(0).max(0);
    let to_zxid = to.unwrap_or(i64::MAX);
    let start = (from_zxid as u64) >> ZXID_POSITION_BITS;
    let mut out = Vec::new();
    for item in db.iterator_cf(
        cf,
        IteratorMode::From(&start.to_be_bytes(), Direction::Forward),
    ) {
        let (k, v) = item.context("reading raft_log")?;
        let key: [u8; 8] = k
            .as_ref()
            .try_into()
            .map_err(|_| anyhow::anyhow!("log key of {} bytes", k.len()))?;
        let index = u64::from_be_bytes(key);
        if zxid_of(index, 0) > to_zxid {
            break;
        }
        let payload =
            verify_log_value(&v).map_err(|e| anyhow::anyhow!("log entry at index {index}: {e}"))?;
        let entry: Entry = rmp_serde::from_slice(payload)
            .with_context(|| format!("log entry at index {index} does not decode"))?;
        out.extend(
            records_of(&entry)
                .into_iter()
                .filter(|r| r.zxid >= from_zxid && r.zxid <= to_zxid),
        );
    }
    Ok(out)
}

/// One problem `check` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The log index of the damaged (or first missing) entry.
    pub index: u64,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub dir: String,
    pub entries: u64,
    pub first_index: Option<u64>,
    pub last_index: Option<u64>,
    pub last_purged_index: Option<u64>,
    /// Whether entry checksums were verified (always, since entries carry a CRC32).
    pub checksums: bool,
    /// In log order; the first one is the first damage.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |o: Option<u64>| o.map_or("-".to_string(), |i| i.to_string());
        writeln!(f, "data dir:     {}", self.dir)?;
        writeln!(
            f,
            "entries:      {} (index {} to {}; last purged {})",
            self.entries,
            opt(self.first_index),
            opt(self.last_index),
            opt(self.last_purged_index)
        )?;
        writeln!(
            f,
            "verified:     RocksDB block checksums, decoding, index order and contiguity, terms{}",
            if self.checksums {
                ", entry CRC32"
            } else {
                " (entries carry no CRC32)"
            }
        )?;
        if self.ok() {
            writeln!(f, "result:       OK")?;
        } else {
            writeln!(
                f,
                "result:       DAMAGED ({} problems)",
                self.problems.len()
            )?;
            for p in &self.problems {
                writeln!(f, "  index {}: {}", p.index, p.message)?;
            }
        }
        Ok(())
    }
}

/// The most problems listed (the first one is what matters).
const MAX_PROBLEMS: usize = 100;

/// `wazoo log dump DIR --check`.
pub fn check(dir: &Path) -> anyhow::Result<CheckReport> {
    let db = super::open_read_only(dir)?;
    let cf = db
        .cf_handle(CF_LOG)
        .context("column family raft_log missing")?;
    let meta = db
        .cf_handle(CF_LOG_META)
        .context("column family raft_log_meta missing")?;
    let mut problems = Vec::new();
    let last_purged: Option<LogId<u64>> = match db.get_cf(meta, b"last_purged") {
        Ok(Some(b)) => match rmp_serde::from_slice(&b) {
            Ok(l) => Some(l),
            Err(e) => {
                problems.push(Problem {
                    index: 0,
                    message: format!("last purged log id does not decode: {e}"),
                });
                None
            }
        },
        Ok(None) => None,
        Err(e) => anyhow::bail!("reading raft_log_meta: {e}"),
    };
    let mut report = CheckReport {
        dir: dir.display().to_string(),
        entries: 0,
        first_index: None,
        last_index: None,
        last_purged_index: last_purged.map(|l| l.index),
        checksums: true,
        problems: Vec::new(),
    };
    let mut prev: Option<u64> = None;
    let mut prev_term: Option<u64> = None;
    for item in db.iterator_cf(cf, IteratorMode::Start) {
        if problems.len() >= MAX_PROBLEMS {
            break;
        }
        let (k, v) = match item {
            Ok(kv) => kv,
            Err(e) => {
                // RocksDB stops iterating at a read (e.g. checksum) error.
                problems.push(Problem {
                    index: prev.map_or(0, |p| p + 1),
                    message: format!("read error after the last good entry: {e}"),
                });
                break;
            }
        };
        let Ok(key) = <[u8; 8]>::try_from(k.as_ref()) else {
            problems.push(Problem {
                index: prev.map_or(0, |p| p + 1),
                message: format!("key of {} bytes (expected 8): {:02x?}", k.len(), &k[..]),
            });
            continue;
        };
        let index = u64::from_be_bytes(key);
        report.entries += 1;
        report.first_index.get_or_insert(index);
        report.last_index = Some(index);
        match prev {
            None => {
                if let Some(lp) = last_purged {
                    if index != lp.index + 1 {
                        problems.push(Problem {
                            index: lp.index + 1,
                            message: format!(
                                "first entry is {index} but the log was purged up to {}",
                                lp.index
                            ),
                        });
                    }
                }
            }
            Some(p) if index != p + 1 => problems.push(Problem {
                index: p + 1,
                message: format!("entries {} to {} are missing", p + 1, index - 1),
            }),
            _ => {}
        }
        prev = Some(index);
        let payload = match verify_log_value(&v) {
            Ok(p) => p,
            Err(e) => {
                problems.push(Problem {
                    index,
                    message: format!("entry {index}: {e}"),
                });
                continue;
            }
        };
        let entry: Entry = match rmp_serde::from_slice(payload) {
            Ok(e) => e,
            Err(e) => {
                problems.push(Problem {
                    index,
                    message: format!("entry does not decode ({} bytes): {e}", v.len()),
                });
                continue;
            }
        };
        if entry.log_id.index != index {
            problems.push(Problem {
                index,
                message: format!("entry stored at index {index} has log id {}", entry.log_id),
            });
        }
        let term = entry.log_id.leader_id.term;
        if let Some(pt) = prev_term {
            if term < pt {
                problems.push(Problem {
                    index,
                    message: format!("term {term} after term {pt}"),
                });
            }
        }
        prev_term = Some(term);
        if let EntryPayload::Normal(cmd) = &entry.payload {
            if cmd.ops.len() > MAX_OPS_PER_ENTRY {
                problems.push(Problem {
                    index,
                    message: format!("{} operations (at most {MAX_OPS_PER_ENTRY})", cmd.ops.len()),
                });
            }
        }
    }
    report.problems = problems;
    Ok(report)
}
