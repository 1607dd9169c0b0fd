//! Bounded disk (docs/OPERATIONS.md, "Disk usage"): a long write load over a fixed set of
//! znodes must keep the data directory within a bound computed from the live data, and
//! the directory must not keep growing once the load has reached its steady state.
//!
//! The load: `WRITES` setData of `VALUE_LEN`-byte incompressible values spread over
//! `ZNODES` znodes from `WRITERS` concurrent clients, with a small `snapCount` so that
//! over a hundred snapshots (and log purges) happen, and a small WAL cap so that the WAL
//! is flushed and deleted many times. The data dir is measured every `WRITES / SAMPLES`
//! writes; the bound must hold at every sample.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tempfile::TempDir;
use wazoo::config::Config;
use wazoo::server::Server;
use wazoo_client::{open_acl_unsafe, Client, ConnectOptions};

const ZNODES: usize = 100;
const VALUE_LEN: usize = 1024;
const WRITES: u64 = 30_000;
/// Concurrent writers. The server batches the writes that are outstanding together into
/// one raft entry, so an entry holds at most `WRITERS` writes.
const WRITERS: u64 = 16;
/// Data-dir size samples (one every `WRITES / SAMPLES` writes); every `SAMPLES /
/// CHECKPOINTS`-th is printed with the file listing.
const SAMPLES: u64 = 60;
const CHECKPOINTS: u64 = 6;
/// `snapCount`: small, so that the load takes over a hundred snapshots and log purges.
const SNAP_COUNT: u64 = 20;
/// `rocksdb.maxTotalWalSize`: small, so that the WAL cycles (flush, delete) many times.
const WAL_CAP: u64 = 4 << 20;
/// `autopurge.snapRetainCount` (the default).
const SNAP_RETAIN_COUNT: u64 = 3;
/// Upper bound on the bytes one write adds to a raft entry (1 KiB value, path, framing).
const WRITE_BYTES: u64 = VALUE_LEN as u64 + 256;

/// Total size of every regular file under `dir`.
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(md) if md.is_dir() => total += dir_size(&e.path()),
                Ok(md) => total += md.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Lists the files of the RocksDB directory with their sizes (printed on checkpoints).
fn listing(dir: &Path) -> String {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let md = e.metadata().ok()?;
                    Some((e.file_name().to_string_lossy().into_owned(), md.len()))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .map(|(n, s)| format!("{n}={s}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// An incompressible value that differs per write (xorshift of `seed`).
fn value(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..VALUE_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_stays_bounded_under_a_long_write_load() {
    let dir = TempDir::new().unwrap();
    let mut cfg = Config {
        client_port: 0,
        data_dir: dir.path().to_path_buf(),
        admin_enable_server: false,
        snap_count: SNAP_COUNT,
        ..Default::default()
    };
    cfg.max_total_wal_bytes = WAL_CAP;
    // The periodic compaction (`autopurge.purgeInterval`, hourly by default) would not
    // run during the test anyway; switched off so that the bound is shown to hold
    // without it.
    cfg.autopurge_purge_interval = None;
    let server = Server::start(cfg).await.unwrap();
    let addr = server.client_addr.to_string();
    let client = Arc::new(
        Client::connect(
            &addr,
            ConnectOptions {
                timeout_ms: 30_000,
                ..Default::default()
            },
        )
        .await
        .expect("connect"),
    );
    client
        .create("/load", b"", open_acl_unsafe(), 0)
        .await
        .unwrap();
    for i in 0..ZNODES {
        client
            .create(
                &format!("/load/n{i}"),
                &value(i as u64),
                open_acl_unsafe(),
                0,
            )
            .await
            .unwrap();
    }
    // What the tree holds: the values plus per-znode overhead (path, Stat, ACL), which
    // we count generously as 256 bytes.
    let live = (ZNODES * (VALUE_LEN + 256)) as u64;
    // The bound of docs/OPERATIONS.md ("Disk usage"), with this test's settings.
    let retained_log = 2 * (SNAP_COUNT + SNAP_COUNT.min(1000)) * WRITERS * WRITE_BYTES;
    let fixed = 6 * WAL_CAP + SNAP_RETAIN_COUNT * (1 << 20) + (5 << 20);
    let bound = fixed + retained_log + 12 * live;
    println!(
        "live data ≈ {live} bytes; bound = 6 × WAL cap + info logs + 5 MiB ({fixed}) \
         + retained log ({retained_log}) + 12 × live = {bound} bytes"
    );

    let raft_dir = dir.path().join("raft");
    let started = Instant::now();
    let per_sample = WRITES / SAMPLES;
    let mut sizes = Vec::new();
    for sample in 1..=SAMPLES {
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = w;
                while n < per_sample {
                    let seq = (sample - 1) * per_sample + n;
                    let path = format!("/load/n{}", seq % ZNODES as u64);
                    client.set_data(&path, &value(seq), -1).await.unwrap();
                    n += WRITERS;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let size = dir_size(dir.path());
        if sample % (SAMPLES / CHECKPOINTS) == 0 {
            println!(
                "after {} writes ({:.1} s): data dir {size} bytes ({:.1} × live; max so far {})\n  {}",
                sample * per_sample,
                started.elapsed().as_secs_f64(),
                size as f64 / live as f64,
                sizes.iter().copied().max().unwrap_or(size).max(size),
                listing(&raft_dir)
            );
        }
        assert!(
            size <= bound,
            "after {} writes: data dir {size} bytes exceeds the bound {bound}\n  {}",
            sample * per_sample,
            listing(&raft_dir)
        );
        sizes.push(size);
    }
    // Steady state: the second half of the load never goes meaningfully above what the
    // first half reached (a growing directory adds ~3 KiB per write: tens of MiB here).
    let (first, second) = sizes.split_at(sizes.len() / 2);
    let (max_first, max_second) = (
        first.iter().copied().max().unwrap(),
        second.iter().copied().max().unwrap(),
    );
    // A zxid is the raft log index << 16 | the position in its entry: how many entries
    // the load took.
    let entries = client.last_zxid() as u64 >> wazoo::command::ZXID_POSITION_BITS;
    println!(
        "max data dir: first half {max_first} bytes, second half {max_second} bytes; \
         {entries} log entries, ~{} snapshots",
        entries / SNAP_COUNT
    );
    assert!(entries / SNAP_COUNT >= 50, "only {entries} log entries");
    assert!(
        max_second <= max_first + 2 * WAL_CAP,
        "the data dir kept growing: max {max_first} bytes in the first half of the load, \
         {max_second} in the second"
    );
    server.shutdown().await;
}
