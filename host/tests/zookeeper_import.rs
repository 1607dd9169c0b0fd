//! `wazoo import zookeeper`: a real Apache ZooKeeper 3.8 (Debian's, run with `java`)
//! writes a tree across several snapshots (snapCount=20) and is killed with SIGKILL;
//! the import of its dataDir, served by Wazoo, must show the same tree: paths, data,
//! ACLs and every Stat field as ZooKeeper reported them.
//!
//! Needs `java` and `/usr/share/java/zookeeper.jar`: the test fails (never skips)
//! without them.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use wazoo::config::Config;
use wazoo::server::Server;
use wazoo::tools::zookeeper_import;
use wazoo_client::{open_acl_unsafe, read_acl_unsafe, Client, ConnectOptions};
use wazoo_proto::consts::perms;
use wazoo_proto::{
    Acl, CheckVersionRequest, CreateKind, CreateOp, DeleteRequest, Id, PathRequest, Request,
    Response, SetAclRequest, SetDataRequest, Stat, WriteOp,
};

const ZK_JAR: &str = "/usr/share/java/zookeeper.jar";
const SLF4J_SIMPLE: &str = "/usr/share/java/slf4j-simple.jar";
const EPHEMERAL: i32 = 1;
const SEQUENTIAL: i32 = 2;

/// Kills the ZooKeeper JVM (SIGKILL) when dropped, so a failing test leaves no server.
struct ZkProcess {
    child: Child,
    port: u16,
    data_dir: PathBuf,
    log: PathBuf,
}

impl ZkProcess {
    fn start(dir: &Path) -> ZkProcess {
        assert!(
            Path::new(ZK_JAR).is_file(),
            "{ZK_JAR} is missing: install Debian's zookeeper package to run this test"
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data_dir = dir.join("zkdata");
        std::fs::create_dir_all(&data_dir).unwrap();
        let cfg = dir.join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!(
                "tickTime=2000\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
                 snapCount=20\nextendedTypesEnabled=true\nadmin.enableServer=false\n",
                data_dir.display()
            ),
        )
        .unwrap();
        let mut cp = ZK_JAR.to_string(); // its manifest's Class-Path names its dependencies
        if Path::new(SLF4J_SIMPLE).is_file() {
            cp.push(':');
            cp.push_str(SLF4J_SIMPLE);
        }
        let log = dir.join("zk.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("java")
            .args(["-Xmx256m", "-cp", &cp])
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("cannot run `java`: a JRE must be on PATH to run this test");
        ZkProcess {
            child,
            port,
            data_dir,
            log,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Connects once the server accepts sessions (polls its port; fails after 60 s or
    /// if the JVM exits).
    async fn connect(&mut self, timeout_ms: i32) -> Client {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let opts = ConnectOptions {
                timeout_ms,
                ..Default::default()
            };
            match Client::connect(&self.addr(), opts).await {
                Ok(c) => return c,
                Err(e) => {
                    if let Some(status) = self.child.try_wait().unwrap() {
                        panic!(
                            "ZooKeeper exited ({status}):\n{}",
                            std::fs::read_to_string(&self.log).unwrap_or_default()
                        );
                    }
                    assert!(
                        Instant::now() < deadline,
                        "ZooKeeper did not accept a session within 60 s: {e}\n{}",
                        std::fs::read_to_string(&self.log).unwrap_or_default()
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ZkProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Seen {
    data: Option<Vec<u8>>,
    acl: Vec<Acl>,
    stat: Stat,
}

/// Every node under `/` as the server reports it: getData, getACL and getChildren2.
async fn walk(c: &Client) -> BTreeMap<String, Seen> {
    let mut out = BTreeMap::new();
    let mut todo = vec!["/".to_string()];
    while let Some(path) = todo.pop() {
        let (data, stat) = c.get_data(&path, false).await.unwrap();
        let (_, acl) = c
            .request(Request::GetAcl(PathRequest { path: path.clone() }))
            .await
            .unwrap();
        let (acl, acl_stat) = match acl.unwrap() {
            Response::GetAcl { acl, stat } => (acl, stat),
            other => panic!("getACL {path}: {other:?}"),
        };
        let (children, child_stat) = c.get_children2(&path, false).await.unwrap();
        assert_eq!(stat, acl_stat, "{path}: getData and getACL stats differ");
        assert_eq!(
            stat, child_stat,
            "{path}: getData and getChildren2 stats differ"
        );
        for ch in children {
            todo.push(if path == "/" {
                format!("/{ch}")
            } else {
                format!("{path}/{ch}")
            });
        }
        out.insert(path, Seen { data, acl, stat });
    }
    out
}

fn create_op(kind: CreateKind, path: &str, data: &[u8], flags: i32, ttl: i64) -> CreateOp {
    CreateOp {
        kind,
        path: path.into(),
        data: Some(data.to_vec()),
        acl: open_acl_unsafe(),
        flags,
        ttl,
    }
}

/// The newest `snapshot.<zxid>` zxid in ZooKeeper's data dir.
fn newest_snapshot_zxid(data_dir: &Path) -> i64 {
    std::fs::read_dir(data_dir.join("version-2"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            let hex = name.strip_prefix("snapshot.")?;
            i64::from_str_radix(hex, 16).ok()
        })
        .max()
        .unwrap_or(0)
}

/// Writes persistent, sequential, ephemeral, container and TTL nodes, ACLs, setData,
/// deletes, a multi and a failed multi, with enough writes for several snapshots.
async fn write_tree(zk: &mut ZkProcess) -> (Client, Client) {
    let a = zk.connect(30_000).await;
    let acl = open_acl_unsafe;
    a.create("/app", b"v0", acl(), 0).await.unwrap();
    a.create("/app/counter", b"0", acl(), 0).await.unwrap();
    for i in 0..6 {
        a.create("/app/seq-", format!("s{i}").as_bytes(), acl(), SEQUENTIAL)
            .await
            .unwrap();
    }
    a.delete("/app/seq-0000000001", -1).await.unwrap();
    a.delete("/app/seq-0000000004", 0).await.unwrap();
    // An IP ACL (the client connects from 127.0.0.1, so it keeps ADMIN) and world read.
    let mixed = vec![
        Acl {
            perms: perms::ALL,
            id: Id {
                scheme: "ip".into(),
                id: "127.0.0.1".into(),
            },
        },
        read_acl_unsafe()[0].clone(),
    ];
    a.create("/secure", b"secret", mixed.clone(), 0)
        .await
        .unwrap();
    let (_, r) = a
        .request(Request::SetAcl(SetAclRequest {
            path: "/app".into(),
            acl: mixed.clone(),
            version: 0,
        }))
        .await
        .unwrap();
    r.expect("setACL /app");
    // Container with a child (so it is not reaped), TTL node (one hour).
    let (_, r) = a
        .request(Request::Create(create_op(
            CreateKind::Container,
            "/cont",
            b"c",
            4,
            -1,
        )))
        .await
        .unwrap();
    r.expect("createContainer");
    a.create("/cont/child", b"x", acl(), 0).await.unwrap();
    a.create_ttl("/ttl", b"t", acl(), 5, 3_600_000)
        .await
        .unwrap();
    a.create_ttl("/ttl-seq-", b"t", acl(), 6, 3_600_000)
        .await
        .unwrap();
    // Ephemerals: `b` closes its session (its ephemeral goes away), `e` stays open.
    let mut b = Some(zk.connect(30_000).await);
    b.as_ref()
        .unwrap()
        .create("/app/gone", b"", acl(), EPHEMERAL)
        .await
        .unwrap();
    let e = zk.connect(30_000).await;
    e.create("/app/eph", b"ephemeral", acl(), EPHEMERAL)
        .await
        .unwrap();
    e.create("/app/eph-seq-", b"", acl(), EPHEMERAL | SEQUENTIAL)
        .await
        .unwrap();
    for i in 1..=40 {
        a.set_data("/app/counter", format!("{i}").as_bytes(), -1)
            .await
            .unwrap();
        if i % 10 == 0 {
            a.create(&format!("/app/n{i}"), b"", acl(), 0)
                .await
                .unwrap();
        }
        if i == 25 {
            b.take().unwrap().close().await.unwrap();
        }
    }
    a.delete("/app/n20", -1).await.unwrap();
    // A multi, and a failed multi (logged as an error txn, changing nothing).
    a.multi(vec![
        WriteOp::Create(create_op(CreateKind::Create, "/multi", b"m", 0, -1)),
        WriteOp::SetData(SetDataRequest {
            path: "/app".into(),
            data: b"v1".to_vec().into(),
            version: 0,
        }),
        WriteOp::Delete(DeleteRequest {
            path: "/app/n30".into(),
            version: -1,
        }),
        WriteOp::Create(create_op(
            CreateKind::Create,
            "/multi/s-",
            b"",
            SEQUENTIAL,
            -1,
        )),
    ])
    .await
    .unwrap();
    let failed = a
        .multi(vec![
            WriteOp::Create(create_op(CreateKind::Create, "/never", b"", 0, -1)),
            WriteOp::Check(CheckVersionRequest {
                path: "/app".into(),
                version: 99,
            }),
        ])
        .await;
    assert!(
        format!("{failed:?}").contains("BadVersion"),
        "the failing multi should fail: {failed:?}"
    );
    // Make sure some txns come after the newest snapshot (a log tail to replay).
    for i in 0..30 {
        if newest_snapshot_zxid(&zk.data_dir) < a.last_zxid() {
            break;
        }
        a.set_data("/multi", format!("tail{i}").as_bytes(), -1)
            .await
            .unwrap();
    }
    (a, e)
}

/// Copies the files of `from/version-2` whose name passes `keep` to `to/version-2`.
fn copy_version2(from: &Path, to: &Path, keep: impl Fn(&str) -> bool) -> PathBuf {
    std::fs::create_dir_all(to.join("version-2")).unwrap();
    for e in std::fs::read_dir(from.join("version-2")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        if keep(&name) {
            std::fs::copy(e.path(), to.join("version-2").join(&name)).unwrap();
        }
    }
    to.to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_data_dir_imports_with_identical_tree() {
    let tmp = TempDir::new().unwrap();
    let mut zk = ZkProcess::start(tmp.path());
    let (a, e) = write_tree(&mut zk).await;
    let expected = walk(&a).await;
    // Sanity: the tree has what we wrote.
    for p in [
        "/app/eph",
        "/cont/child",
        "/ttl",
        "/multi/s-0000000000",
        "/secure",
        "/app/seq-0000000005",
    ] {
        assert!(
            expected.contains_key(p),
            "{p} missing in ZooKeeper: {expected:#?}"
        );
    }
    assert!(!expected.contains_key("/app/gone"));
    assert!(!expected.contains_key("/never"));
    let eph_owner = expected["/app/eph"].stat.ephemeral_owner;
    assert_eq!(eph_owner, e.session_id());

    // The realistic case: the server dies without a clean shutdown.
    zk.kill();
    drop((a, e));

    let target = tmp.path().join("wazoo");
    let report = zookeeper_import::import(&zk.data_dir, &target)
        .await
        .unwrap_or_else(|err| panic!("import failed: {err:#}"));
    println!("{report}");
    assert!(
        report.snapshot_zxid > 0,
        "expected a snapshot beyond snapshot.0: {report:?}"
    );
    assert!(report.txns_replayed > 0, "expected a log tail: {report:?}");
    assert_eq!(report.nodes, expected.len());
    assert!(report.sessions >= 2, "{report:?}");
    assert_eq!(report.orphan_ephemerals_dropped, 0);

    // The same state from the logs alone (only the empty snapshot.0, so every txn type
    // written above is replayed), and with the newest snapshot truncated (the import
    // falls back to an older one): the znode rows must equal those of the import above.
    let node_rows = |dir: &Path| {
        let (rows, report) = zookeeper_import::read_zookeeper(dir)
            .unwrap_or_else(|err| panic!("reading {}: {err:#}", dir.display()));
        let nodes: Vec<_> = rows.into_iter().filter(|(k, _)| k[0] == b'n').collect();
        (nodes, report)
    };
    let (reference, _) = node_rows(&zk.data_dir);
    let logs_only = copy_version2(&zk.data_dir, &tmp.path().join("logs-only"), |name| {
        !name.starts_with("snapshot.") || name == "snapshot.0"
    });
    let (rows, r) = node_rows(&logs_only);
    assert_eq!(r.snapshot_zxid, 0);
    assert!(r.txns_replayed > 50, "{r:?}");
    assert!(
        rows == reference,
        "replaying every log differs from the snapshot import"
    );
    let torn = copy_version2(&zk.data_dir, &tmp.path().join("torn"), |_| true);
    let newest = torn
        .join("version-2")
        .join(format!("snapshot.{:x}", report.snapshot_zxid));
    let len = std::fs::metadata(&newest).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let (rows, r) = node_rows(&torn);
    assert!(r.snapshot_zxid < report.snapshot_zxid, "{r:?}");
    assert!(rows == reference, "import from the older snapshot differs");

    // A second import into the now non-empty target is refused.
    let again = zookeeper_import::import(&zk.data_dir, &target).await;
    assert!(again.is_err());

    let server = Server::start(Config {
        client_port: 0,
        data_dir: target.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let w = Client::connect(&server.client_addr.to_string(), ConnectOptions::default())
        .await
        .unwrap();
    let got = walk(&w).await;
    let only_zk: Vec<_> = expected.keys().filter(|k| !got.contains_key(*k)).collect();
    let only_wazoo: Vec<_> = got.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(
        only_zk.is_empty() && only_wazoo.is_empty(),
        "paths differ: only in ZooKeeper {only_zk:?}, only in Wazoo {only_wazoo:?}"
    );
    for (path, z) in &expected {
        assert_eq!(
            &got[path], z,
            "{path} differs (left: Wazoo, right: ZooKeeper)"
        );
    }
    // The imported session of `e` owns its ephemerals on Wazoo too.
    let eph: Vec<&str> = got
        .iter()
        .filter(|(_, s)| s.stat.ephemeral_owner == eph_owner)
        .map(|(p, _)| p.as_str())
        .collect();
    assert_eq!(eph.len(), 2, "{eph:?}");
    assert!(eph.contains(&"/app/eph"), "{eph:?}");
    // Zxids keep rising after the import: a new write is newer than every imported one,
    // and a client that has seen ZooKeeper's last zxid is not refused.
    let after = w
        .create("/after-import", b"", wazoo_client::open_acl_unsafe(), 0)
        .await
        .unwrap();
    let (_, stat) = w.get_data(&after, false).await.unwrap();
    assert!(
        stat.czxid > report.last_zxid,
        "new czxid {:#x} <= imported last zxid {:#x}",
        stat.czxid,
        report.last_zxid
    );
    let seen = Client::connect(
        &server.client_addr.to_string(),
        ConnectOptions {
            last_zxid_seen: report.last_zxid,
            ..Default::default()
        },
    )
    .await;
    assert!(
        seen.is_ok(),
        "a client that saw ZooKeeper's last zxid must be able to connect"
    );
    w.close().await.unwrap();
    server.shutdown().await;
}
