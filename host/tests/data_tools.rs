//! The offline data-dir tools (`wazoo::tools`) on data dirs written by real in-process
//! servers: snapshot summary and diff, log dump (and `--check` on a damaged log), cleanup.

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;
use wazoo::config::Config;
use wazoo::server::Server;
use wazoo::tools::{cleanup, log, snapshot};
use wazoo_client::{open_acl_unsafe, read_acl_unsafe, Client, ConnectOptions};
use wazoo_proto::{Request, SetAclRequest};

const EPHEMERAL: i32 = 1;

fn config(dir: &Path) -> Config {
    Config {
        client_port: 0,
        data_dir: dir.to_path_buf(),
        ..Default::default()
    }
}

async fn connect(server: &Server) -> Client {
    Client::connect(&server.client_addr.to_string(), ConnectOptions::default())
        .await
        .expect("connect")
}

/// Left: /app{,/a,/b}, /common = "c", /left-only (100 B) with x, y (50 B each),
/// /small-left (1 B), and an ephemeral /eph-left whose session is still open at shutdown.
async fn build_left(dir: &Path) {
    let server = Server::start(config(dir)).await.unwrap();
    let c = connect(&server).await;
    let acl = open_acl_unsafe;
    c.create("/app", b"app", acl(), 0).await.unwrap();
    c.create("/app/a", &[1u8; 10], acl(), 0).await.unwrap();
    c.create("/app/b", &[2u8; 5], acl(), 0).await.unwrap();
    c.create("/common", b"c", acl(), 0).await.unwrap();
    c.create("/left-only", &[3u8; 100], acl(), 0).await.unwrap();
    c.create("/left-only/x", &[4u8; 50], acl(), 0)
        .await
        .unwrap();
    c.create("/left-only/y", &[5u8; 50], acl(), 0)
        .await
        .unwrap();
    c.create("/small-left", b"s", acl(), 0).await.unwrap();
    let e = connect(&server).await;
    e.create("/eph-left", b"", acl(), EPHEMERAL).await.unwrap();
    c.close().await.unwrap();
    // `e` stays open: its session and ephemeral are in the data dir at shutdown.
    server.shutdown().await;
    drop(e);
}

/// Right: /app{,/a,/b} with a different ACL on /app/b, /common set to "rr",
/// /right-only (2 B).
async fn build_right(dir: &Path) {
    let server = Server::start(config(dir)).await.unwrap();
    let c = connect(&server).await;
    let acl = open_acl_unsafe;
    c.create("/app", b"app", acl(), 0).await.unwrap();
    c.create("/app/a", &[1u8; 10], acl(), 0).await.unwrap();
    c.create("/app/b", &[2u8; 5], acl(), 0).await.unwrap();
    c.create("/common", b"c", acl(), 0).await.unwrap();
    c.set_data("/common", b"rr", -1).await.unwrap();
    c.create("/right-only", b"ro", acl(), 0).await.unwrap();
    let (_, r) = c
        .request(Request::SetAcl(SetAclRequest {
            path: "/app/b".into(),
            acl: read_acl_unsafe(),
            version: -1,
        }))
        .await
        .unwrap();
    r.expect("setACL");
    c.close().await.unwrap();
    server.shutdown().await;
}

fn paths<T>(v: &[T], f: impl Fn(&T) -> &str) -> Vec<String> {
    v.iter().map(|x| f(x).to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_and_diff_report_the_known_differences() {
    let (l, r) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    build_left(l.path()).await;
    build_right(r.path()).await;

    let s = snapshot::summary(l.path()).unwrap();
    // 4 system nodes (/, /zookeeper, /zookeeper/quota, /zookeeper/config) + 9.
    assert_eq!(s.node_count, 13);
    assert_eq!(s.data_bytes, 3 + 10 + 5 + 1 + 100 + 50 + 50 + 1);
    assert_eq!(s.max_depth, 2);
    assert_eq!(s.nodes_per_depth, vec![1, 6, 6]);
    assert_eq!(s.sessions, 1);
    assert_eq!(s.ephemerals, 1);
    assert!(s.last_zxid > 0);
    let top = &s.largest_by_bytes[0];
    assert_eq!(
        (top.path.as_str(), top.bytes, top.count),
        ("/left-only", 200, 3)
    );
    // Three subtrees of 3 znodes; ties are listed by path.
    assert_eq!(
        paths(&s.largest_by_count[..3], |t| &t.path),
        ["/app", "/left-only", "/zookeeper"]
    );
    assert!(s.largest_by_count.iter().all(|t| t.count <= 3));
    // The same through the raft subdirectory, and as JSON.
    let s2 = snapshot::summary(&l.path().join("raft")).unwrap();
    assert_eq!(s2.node_count, 13);
    let json: serde_json::Value = serde_json::to_value(&s).unwrap();
    assert_eq!(json["node_count"], 13);
    assert!(s.to_string().contains("znodes:          13"));

    let rs = snapshot::summary(r.path()).unwrap();
    assert_eq!(rs.node_count, 9);
    assert_eq!(rs.data_bytes, 3 + 10 + 5 + 2 + 2);
    assert_eq!(rs.sessions, 0);
    assert_eq!(rs.ephemerals, 0);

    // Everything.
    let d = snapshot::diff(l.path(), r.path(), 0, 0).unwrap();
    assert_eq!(d.left.node_count, 13);
    assert_eq!(d.right.node_count, 9);
    assert_eq!(
        paths(&d.only_left, |o| &o.path),
        ["/eph-left", "/left-only", "/small-left"]
    );
    let lo = d.only_left.iter().find(|o| o.path == "/left-only").unwrap();
    assert_eq!((lo.bytes, lo.count), (200, 3));
    assert_eq!(paths(&d.only_right, |o| &o.path), ["/right-only"]);
    assert_eq!(paths(&d.changed, |c| &c.path), ["/app/b", "/common"]);
    assert_eq!(d.changed[0].fields, ["acl"]);
    assert_eq!(d.changed[1].fields, ["data", "version"]);
    assert_eq!(
        (d.changed[1].left_version, d.changed[1].right_version),
        (0, 1)
    );
    assert_eq!(d.total_differences, 6);
    let text = d.to_string();
    assert!(
        text.contains("/left-only") && text.contains("/right-only"),
        "{text}"
    );

    // Thresholds: at least 100 bytes leaves only the big one-sided subtree.
    let d = snapshot::diff(l.path(), r.path(), 100, 0).unwrap();
    assert_eq!(paths(&d.only_left, |o| &o.path), ["/left-only"]);
    assert!(d.only_right.is_empty() && d.changed.is_empty());
    assert_eq!(d.total_differences, 6);
    // At least 2 znodes: same, and changed nodes (one znode each) go.
    let d = snapshot::diff(l.path(), r.path(), 0, 2).unwrap();
    assert_eq!(paths(&d.only_left, |o| &o.path), ["/left-only"]);
    assert!(d.only_right.is_empty() && d.changed.is_empty());
    // At least 2 bytes: /common (1 → 2 bytes) and /right-only stay, /small-left goes.
    let d = snapshot::diff(l.path(), r.path(), 2, 0).unwrap();
    assert_eq!(paths(&d.only_left, |o| &o.path), ["/left-only"]);
    assert_eq!(paths(&d.only_right, |o| &o.path), ["/right-only"]);
    assert_eq!(paths(&d.changed, |c| &c.path), ["/app/b", "/common"]);

    // A dir against itself: no differences.
    assert!(snapshot::diff(l.path(), l.path(), 0, 0).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_dump_lists_the_creates_in_order() {
    let dir = TempDir::new().unwrap();
    build_left(dir.path()).await;
    let records = log::dump(dir.path(), None, None).unwrap();
    let creates: Vec<&log::DumpRecord> = records.iter().filter(|r| r.op == "create").collect();
    assert_eq!(
        paths(&creates, |r| &r.paths[0]),
        [
            "/app",
            "/app/a",
            "/app/b",
            "/common",
            "/left-only",
            "/left-only/x",
            "/left-only/y",
            "/small-left",
            "/eph-left"
        ]
    );
    // zxids and indexes strictly in log order; creates carry a time and a session.
    assert!(records.windows(2).all(|w| w[0].zxid < w[1].zxid));
    assert!(records.windows(2).all(|w| w[0].index <= w[1].index));
    assert!(creates
        .iter()
        .all(|r| r.time_ms.is_some() && r.session.is_some()));
    assert_eq!(
        records.iter().filter(|r| r.op == "createSession").count(),
        2
    );
    assert_eq!(records.iter().filter(|r| r.op == "closeSession").count(), 1);
    assert!(records
        .iter()
        .any(|r| r.op == "blank" || r.op == "membership"));
    // The create's session is the one createSession made.
    let first_session = records.iter().find(|r| r.op == "createSession").unwrap();
    assert_eq!(creates[0].session, first_session.session);
    let line = creates[0].to_string();
    assert!(
        line.contains(" create /app") && line.contains("time=20"),
        "{line}"
    );

    // --from/--to select by zxid, inclusive.
    let (from, to) = (creates[1].zxid, creates[3].zxid);
    let some = log::dump(dir.path(), Some(from), Some(to)).unwrap();
    assert_eq!(some.first().unwrap().zxid, from);
    assert_eq!(some.last().unwrap().zxid, to);
    let some_creates: Vec<_> = some.iter().filter(|r| r.op == "create").collect();
    assert_eq!(
        paths(&some_creates, |r| &r.paths[0]),
        ["/app/a", "/app/b", "/common"]
    );

    let ok = log::check(dir.path()).unwrap();
    assert!(ok.ok(), "{ok}");
    assert_eq!(
        ok.entries,
        ok.last_index.unwrap() - ok.first_index.unwrap() + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_check_reports_a_damaged_entry() {
    let dir = TempDir::new().unwrap();
    build_left(dir.path()).await;
    let records = log::dump(dir.path(), None, None).unwrap();
    let damaged = records
        .iter()
        .find(|r| r.op == "create" && r.paths[0] == "/left-only")
        .unwrap()
        .index;

    // Flip one byte at a random position of that entry's stored value (checksum, field
    // names, numbers or the path string alike: the entry CRC32 must catch every one).
    // The seed is printed; WAZOO_FLIP_SEED=<seed> replays a failure.
    let seed: u64 = match std::env::var("WAZOO_FLIP_SEED") {
        Ok(s) => s.trim().parse().expect("WAZOO_FLIP_SEED must be a u64"),
        Err(_) => rand::random(),
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let (pos, mask);
    {
        let raft = dir.path().join("raft");
        let opts = rocksdb::Options::default();
        let cfs = rocksdb::DB::list_cf(&opts, &raft).unwrap();
        let db = rocksdb::DB::open_cf(&opts, &raft, &cfs).unwrap();
        let cf = db.cf_handle("raft_log").unwrap();
        let key = damaged.to_be_bytes();
        let mut value = db.get_cf(cf, key).unwrap().expect("entry present");
        pos = rng.gen_range(0..value.len());
        mask = rng.gen_range(1..=u8::MAX);
        println!(
            "log_check_reports_a_damaged_entry: WAZOO_FLIP_SEED={seed} flips byte {pos} of \
             {} (mask {mask:#04x}) in entry {damaged}",
            value.len()
        );
        value[pos] ^= mask;
        db.put_cf(cf, key, value).unwrap();
    }
    let replay = format!("replay with WAZOO_FLIP_SEED={seed} (byte {pos}, mask {mask:#04x})");

    let report = log::check(dir.path()).unwrap();
    assert!(report.checksums);
    assert!(!report.ok(), "not detected; {replay}");
    assert_eq!(report.problems[0].index, damaged, "{report}{replay}");
    assert_eq!(report.problems.len(), 1, "{report}{replay}");
    assert!(
        report.problems[0].message.contains("checksum mismatch"),
        "{report}{replay}"
    );
    assert!(report.to_string().contains("DAMAGED"));
    // The CLI form fails (non-zero exit) on damage.
    let cli = wazoo::tools::run_log(wazoo::tools::LogCommand::Dump {
        dir: dir.path().to_path_buf(),
        from: None,
        to: None,
        check: true,
        json: false,
    });
    assert!(cli.is_err());
    // A plain dump stops at the damaged entry and names it.
    let err = log::dump(dir.path(), None, None).unwrap_err();
    assert!(
        format!("{err:#}").contains(&format!("index {damaged}")),
        "{err:#}; {replay}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_compacts_a_stopped_dir_and_only_trims_logs_of_a_running_one() {
    let dir = TempDir::new().unwrap();
    build_right(dir.path()).await;
    let raft = dir.path().join("raft");
    // Old info logs as RocksDB names them (one per open).
    for i in 0..5 {
        std::fs::write(raft.join(format!("LOG.old.100000000000000{i}")), b"old log").unwrap();
    }
    let before = snapshot::summary(dir.path()).unwrap();
    let r = cleanup::cleanup(dir.path(), 2).unwrap();
    assert!(r.compacted, "{r}");
    assert!(r.bytes_before > 0 && r.bytes_after > 0);
    let left: Vec<_> = std::fs::read_dir(&raft)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("LOG.old."))
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    // Data unchanged.
    let after = snapshot::summary(dir.path()).unwrap();
    assert_eq!(after.node_count, before.node_count);
    assert_eq!(after.data_bytes, before.data_bytes);
    assert_eq!(after.last_zxid, before.last_zxid);
    assert!(log::check(dir.path()).unwrap().ok());

    // While a server runs: no compaction, old info logs still trimmed.
    let server = Server::start(config(dir.path())).await.unwrap();
    let r = cleanup::cleanup(dir.path(), 0).unwrap();
    assert!(!r.compacted, "{r}");
    assert!(r.notes.iter().any(|n| n.contains("in use")), "{r}");
    let old = std::fs::read_dir(&raft)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("LOG.old.")
        })
        .count();
    assert_eq!(old, 0);
    // The server still works.
    let c = connect(&server).await;
    assert!(c.exists("/right-only", false).await.unwrap().is_some());
    c.close().await.unwrap();
    server.shutdown().await;
}
