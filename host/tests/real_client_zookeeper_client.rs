//! Real-client test: the third-party async Rust client `zookeeper-client` (crates.io, by
//! kezhuw) against a Wazoo server started in-process.
//!
//! Every scenario runs on its own server (`tickTime` 100 ms, so the minimum session
//! timeout is 2 × tickTime = 200 ms) under its own base path.
//!
//! The same scenarios run against any other ZooKeeper-compatible server when
//! `WAZOO_REAL_CLIENT_CONNECT=host:port` is set (e.g. Apache ZooKeeper 3.8 started with
//! `tickTime=100`, `minSessionTimeout=200`, `maxSessionTimeout=20000`, so that the
//! session-timeout assertions hold there too); the in-process server is then not started.
//!
//! Watches are awaited; [`GUARD`] only turns a missing event into a failure instead of a
//! hang. Nothing sleeps. `RUST_LOG=debug` shows the client's and the server's traces.

use std::future::Future;
use std::time::{Duration, Instant};

use base64::Engine;
use sha1::{Digest, Sha1};
use tempfile::TempDir;
use zookeeper_client as zk;

/// How long any single awaited step may take before the test fails (a failure guard
/// only: every step normally completes in milliseconds).
const GUARD: Duration = Duration::from_secs(30);

/// Session timeout asked for by the ordinary clients of these tests.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Environment variable naming an external server to run against instead of Wazoo.
const CONNECT_ENV: &str = "WAZOO_REAL_CLIENT_CONNECT";

async fn guard<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(GUARD, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {GUARD:?} waiting for {what}"),
    }
}

/// The server under test plus a base path private to one scenario.
struct Target {
    connect: String,
    base: String,
    wazoo: Option<(wazoo::server::Server, TempDir)>,
}

impl Target {
    async fn start(scenario: &str) -> Target {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let base = format!("/zkc-{scenario}-{}-{nonce}", std::process::id());
        if let Ok(connect) = std::env::var(CONNECT_ENV) {
            let t = Target {
                connect,
                base,
                wazoo: None,
            };
            let c = t.client().await;
            create(&c, &t.base, b"", zk::CreateMode::Persistent)
                .await
                .expect("create base path");
            return t;
        }
        let dir = TempDir::new().expect("temp dir");
        let config = wazoo::config::Config {
            client_port: 0,
            data_dir: dir.path().to_path_buf(),
            tick_time_ms: 100,
            min_session_timeout_ms: 200,
            max_session_timeout_ms: 20_000,
            ..Default::default()
        };
        let server = wazoo::server::Server::start(config)
            .await
            .expect("start wazoo");
        let t = Target {
            connect: server.client_addr.to_string(),
            base,
            wazoo: Some((server, dir)),
        };
        let c = t.client().await;
        create(&c, &t.base, b"", zk::CreateMode::Persistent)
            .await
            .expect("create base path");
        t
    }

    fn path(&self, rel: &str) -> String {
        format!("{}/{}", self.base, rel)
    }

    fn connector(&self) -> zk::Connector {
        zk::Client::connector().with_session_timeout(SESSION_TIMEOUT)
    }

    async fn client(&self) -> zk::Client {
        self.connect_with(self.connector()).await
    }

    async fn connect_with(&self, connector: zk::Connector) -> zk::Client {
        guard("connect", connector.connect(&self.connect))
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.connect))
    }

    async fn stop(self) {
        if let Some((server, _dir)) = self.wazoo {
            server.shutdown().await;
        }
    }
}

async fn create(
    c: &zk::Client,
    path: &str,
    data: &[u8],
    mode: zk::CreateMode,
) -> Result<(zk::Stat, zk::CreateSequence), zk::Error> {
    guard(
        &format!("create {path}"),
        c.create(path, data, &mode.with_acls(zk::Acls::anyone_all())),
    )
    .await
}

/// ZooKeeper's digest id for `user:password`: `user:base64(sha1("user:password"))`.
fn digest_id(user: &str, password: &str) -> String {
    let hash = Sha1::digest(format!("{user}:{password}").as_bytes());
    format!(
        "{user}:{}",
        base64::engine::general_purpose::STANDARD.encode(hash)
    )
}

/// `prefix` followed by exactly ten decimal digits, as ZooKeeper's `%010d`.
fn assert_sequential_name(name: &str, prefix: &str) -> i64 {
    let suffix = name
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{name:?} does not start with {prefix:?}"));
    assert_eq!(
        suffix.len(),
        10,
        "sequence suffix of {name:?} is not 10 digits"
    );
    assert!(
        suffix.bytes().all(|b| b.is_ascii_digit()),
        "sequence suffix of {name:?} is not decimal"
    );
    suffix.parse().unwrap()
}

#[tokio::test]
async fn create_persistent_ephemeral_and_sequential() {
    let t = Target::start("create").await;
    let c = t.client().await;

    // Persistent.
    let p = t.path("persistent");
    let (stat, seq) = create(&c, &p, b"hello", zk::CreateMode::Persistent)
        .await
        .unwrap();
    assert_eq!(
        seq.into_i64(),
        -1,
        "non-sequential create reports no sequence"
    );
    assert_eq!((stat.version, stat.cversion, stat.aversion), (0, 0, 0));
    assert_eq!(stat.ephemeral_owner, 0);
    assert_eq!(stat.data_length, 5);
    assert_eq!(stat.num_children, 0);
    assert_eq!(stat.czxid, stat.mzxid);
    let (data, got) = c.get_data(&p).await.unwrap();
    assert_eq!((data.as_slice(), got), (&b"hello"[..], stat));
    assert_eq!(
        create(&c, &p, b"again", zk::CreateMode::Persistent)
            .await
            .unwrap_err(),
        zk::Error::NodeExists
    );
    assert_eq!(
        create(
            &c,
            &t.path("missing/child"),
            b"",
            zk::CreateMode::Persistent
        )
        .await
        .unwrap_err(),
        zk::Error::NoNode
    );

    // Ephemeral: owned by this session, cannot have children.
    let e = t.path("ephemeral");
    let (stat, _) = create(&c, &e, b"", zk::CreateMode::Ephemeral)
        .await
        .unwrap();
    assert_eq!(stat.ephemeral_owner, c.session_id().0);
    assert_eq!(
        c.check_stat(&e).await.unwrap().unwrap().ephemeral_owner,
        c.session_id().0
    );
    assert_eq!(
        create(&c, &format!("{e}/child"), b"", zk::CreateMode::Persistent)
            .await
            .unwrap_err(),
        zk::Error::NoChildrenForEphemerals
    );

    // Sequential (persistent and ephemeral share the parent's counter).
    let dir = t.path("seq");
    create(&c, &dir, b"", zk::CreateMode::Persistent)
        .await
        .unwrap();
    let prefix = format!("{dir}/n-");
    let (_, s0) = create(&c, &prefix, b"a", zk::CreateMode::PersistentSequential)
        .await
        .unwrap();
    let (_, s1) = create(&c, &prefix, b"b", zk::CreateMode::EphemeralSequential)
        .await
        .unwrap();
    let (_, s2) = create(&c, &prefix, b"c", zk::CreateMode::PersistentSequential)
        .await
        .unwrap();
    assert_eq!((s0.into_i64(), s1.into_i64(), s2.into_i64()), (0, 1, 2));
    assert_eq!(s1.to_string(), "0000000001");
    let mut children = c.list_children(&dir).await.unwrap();
    children.sort();
    assert_eq!(children, ["n-0000000000", "n-0000000001", "n-0000000002"]);
    for (i, name) in children.iter().enumerate() {
        assert_eq!(assert_sequential_name(name, "n-"), i as i64);
    }
    let (data, stat) = c.get_data(&format!("{dir}/n-0000000001")).await.unwrap();
    assert_eq!(data, b"b");
    assert_eq!(stat.ephemeral_owner, c.session_id().0);

    // A sequential node directly under the parent, with an empty prefix.
    let (_, s3) = create(
        &c,
        &format!("{dir}/"),
        b"",
        zk::CreateMode::PersistentSequential,
    )
    .await
    .unwrap();
    assert_eq!(s3.into_i64(), 3);
    assert!(c
        .list_children(&dir)
        .await
        .unwrap()
        .contains(&"0000000003".to_string()));

    // Closing the session removes its ephemerals right away.
    let other = t.client().await;
    drop(c);
    assert_eq!(
        guard("ephemeral gone after close", wait_gone(&other, &e)).await,
        None
    );
    let mut children = other.list_children(&dir).await.unwrap();
    children.sort();
    assert_eq!(children, ["0000000003", "n-0000000000", "n-0000000002"]);
    drop(other);
    t.stop().await;
}

/// Returns `None` once `path` no longer exists, watching for its deletion (no polling
/// sleeps: an existing node is watched and the watch awaited).
async fn wait_gone(c: &zk::Client, path: &str) -> Option<zk::Stat> {
    loop {
        match c.check_and_watch_stat(path).await.unwrap() {
            (None, _) => return None,
            (Some(_), w) => {
                let ev = w.changed().await;
                if ev.event_type == zk::EventType::NodeDeleted {
                    return c.check_stat(path).await.unwrap();
                }
            }
        }
    }
}

#[tokio::test]
async fn reported_cversion_counts_child_deletes() {
    // ZooKeeper keeps a count of child creates (which names sequential nodes) and reports
    // cversion as creates + deletes: DataNode.copyStat sets 2 × creates − numChildren
    // (zkCli on 3.8: create /p, create /p/a -> cversion 1; delete /p/a -> cversion 2).
    let t = Target::start("cversion").await;
    let c = t.client().await;
    let dir = t.path("dir");
    let (stat, _) = create(&c, &dir, b"", zk::CreateMode::Persistent)
        .await
        .unwrap();
    assert_eq!(stat.cversion, 0);
    let (_, s0) = create(
        &c,
        &format!("{dir}/q-"),
        b"",
        zk::CreateMode::PersistentSequential,
    )
    .await
    .unwrap();
    assert_eq!(s0.into_i64(), 0);
    assert_eq!(c.check_stat(&dir).await.unwrap().unwrap().cversion, 1);

    c.delete(&format!("{dir}/q-0000000000"), None)
        .await
        .unwrap();
    let stat = c.check_stat(&dir).await.unwrap().unwrap();
    assert_eq!(
        (stat.num_children, stat.cversion),
        (0, 2),
        "parent cversion after a child delete"
    );

    // Sequence numbers count creates only: the delete does not advance them.
    let (_, s1) = create(
        &c,
        &format!("{dir}/q-"),
        b"",
        zk::CreateMode::PersistentSequential,
    )
    .await
    .unwrap();
    assert_eq!(s1.into_i64(), 1);
    assert_eq!(c.list_children(&dir).await.unwrap(), ["q-0000000001"]);
    let (_, stat) = c.get_children(&dir).await.unwrap();
    assert_eq!((stat.num_children, stat.cversion), (1, 3));

    create(&c, &format!("{dir}/plain"), b"", zk::CreateMode::Persistent)
        .await
        .unwrap();
    c.delete(&format!("{dir}/plain"), None).await.unwrap();
    let (_, s2) = create(
        &c,
        &format!("{dir}/q-"),
        b"",
        zk::CreateMode::PersistentSequential,
    )
    .await
    .unwrap();
    assert_eq!(s2.into_i64(), 3);
    let (data, stat) = c.get_data(&dir).await.unwrap();
    assert!(data.is_empty());
    assert_eq!((stat.num_children, stat.cversion), (2, 6));
    drop(c);
    t.stop().await;
}

#[tokio::test]
async fn get_set_delete_with_versions() {
    let t = Target::start("versions").await;
    let c = t.client().await;
    let p = t.path("node");
    create(&c, &p, b"v0", zk::CreateMode::Persistent)
        .await
        .unwrap();

    let s1 = c.set_data(&p, b"v1", Some(0)).await.unwrap();
    assert_eq!(s1.version, 1);
    assert_eq!(s1.data_length, 2);
    assert_eq!(
        c.set_data(&p, b"stale", Some(0)).await.unwrap_err(),
        zk::Error::BadVersion
    );
    let (data, stat) = c.get_data(&p).await.unwrap();
    assert_eq!(
        (data.as_slice(), stat.version),
        (&b"v1"[..], 1),
        "a BadVersion set_data changed nothing"
    );
    assert_eq!(stat, s1);

    let s2 = c.set_data(&p, b"", None).await.unwrap();
    assert_eq!((s2.version, s2.data_length), (2, 0));
    assert!(s2.mzxid > s1.mzxid);
    assert_eq!(s2.czxid, s1.czxid);
    assert_eq!(c.get_data(&p).await.unwrap().0, b"");

    assert_eq!(
        c.set_data(&t.path("absent"), b"x", None).await.unwrap_err(),
        zk::Error::NoNode
    );
    assert_eq!(
        c.get_data(&t.path("absent")).await.unwrap_err(),
        zk::Error::NoNode
    );

    // delete: NotEmpty, BadVersion, then success.
    create(&c, &format!("{p}/kid"), b"", zk::CreateMode::Persistent)
        .await
        .unwrap();
    assert_eq!(c.delete(&p, None).await.unwrap_err(), zk::Error::NotEmpty);
    c.delete(&format!("{p}/kid"), Some(0)).await.unwrap();
    assert_eq!(
        c.delete(&p, Some(1)).await.unwrap_err(),
        zk::Error::BadVersion
    );
    assert!(c.check_stat(&p).await.unwrap().is_some());
    c.delete(&p, Some(2)).await.unwrap();
    assert_eq!(c.check_stat(&p).await.unwrap(), None);
    assert_eq!(c.delete(&p, None).await.unwrap_err(), zk::Error::NoNode);
    drop(c);
    t.stop().await;
}

#[tokio::test]
async fn list_children_and_exists() {
    let t = Target::start("children").await;
    let c = t.client().await;
    let dir = t.path("dir");
    assert_eq!(c.check_stat(&dir).await.unwrap(), None);
    let (created, _) = create(&c, &dir, b"", zk::CreateMode::Persistent)
        .await
        .unwrap();
    assert_eq!(c.check_stat(&dir).await.unwrap(), Some(created));
    assert!(c.list_children(&dir).await.unwrap().is_empty());

    for name in ["b", "a", "c"] {
        create(
            &c,
            &format!("{dir}/{name}"),
            name.as_bytes(),
            zk::CreateMode::Persistent,
        )
        .await
        .unwrap();
    }
    create(
        &c,
        &format!("{dir}/a/deep"),
        b"",
        zk::CreateMode::Persistent,
    )
    .await
    .unwrap();
    let mut names = c.list_children(&dir).await.unwrap();
    names.sort();
    assert_eq!(names, ["a", "b", "c"], "only direct children are listed");
    let (mut names2, stat) = c.get_children(&dir).await.unwrap();
    names2.sort();
    assert_eq!(names2, names);
    assert_eq!((stat.num_children, stat.cversion), (3, 3));
    assert_eq!(c.check_stat(&dir).await.unwrap().unwrap().num_children, 3);
    assert_eq!(
        c.list_children(&t.path("absent")).await.unwrap_err(),
        zk::Error::NoNode
    );

    c.delete(&format!("{dir}/b"), None).await.unwrap();
    let stat = c.check_stat(&dir).await.unwrap().unwrap();
    assert_eq!(stat.num_children, 2);
    let mut names = c.list_children(&dir).await.unwrap();
    names.sort();
    assert_eq!(names, ["a", "c"]);

    // Root lists our base path.
    let base_name = t.base.trim_start_matches('/').to_string();
    assert!(c.list_children("/").await.unwrap().contains(&base_name));
    drop(c);
    t.stop().await;
}

#[tokio::test]
async fn data_watches_fire_with_the_right_event_type() {
    let t = Target::start("datawatch").await;
    let watcher = t.client().await;
    let writer = t.client().await;
    let p = t.path("watched");

    // exists-watch on a missing node: NodeCreated.
    let (stat, w) = watcher.check_and_watch_stat(&p).await.unwrap();
    assert_eq!(stat, None);
    create(&writer, &p, b"one", zk::CreateMode::Persistent)
        .await
        .unwrap();
    let ev = guard("NodeCreated", w.changed()).await;
    assert_eq!(
        (ev.event_type, ev.path.as_str()),
        (zk::EventType::NodeCreated, p.as_str())
    );
    assert_eq!(ev.session_state, zk::SessionState::SyncConnected);

    // data watch: NodeDataChanged, fired once.
    let (data, _, w) = watcher.get_and_watch_data(&p).await.unwrap();
    assert_eq!(data, b"one");
    writer.set_data(&p, b"two", None).await.unwrap();
    let ev = guard("NodeDataChanged", w.changed()).await;
    assert_eq!(
        (ev.event_type, ev.path.as_str()),
        (zk::EventType::NodeDataChanged, p.as_str())
    );

    // exists-watch on an existing node: NodeDataChanged too.
    let (stat, w) = watcher.check_and_watch_stat(&p).await.unwrap();
    assert_eq!(stat.unwrap().version, 1);
    writer.set_data(&p, b"three", None).await.unwrap();
    let ev = guard("NodeDataChanged (exists watch)", w.changed()).await;
    assert_eq!(
        (ev.event_type, ev.path.as_str()),
        (zk::EventType::NodeDataChanged, p.as_str())
    );

    // data watch: NodeDeleted.
    let (data, _, w) = watcher.get_and_watch_data(&p).await.unwrap();
    assert_eq!(data, b"three");
    writer.delete(&p, None).await.unwrap();
    let ev = guard("NodeDeleted", w.changed()).await;
    assert_eq!(
        (ev.event_type, ev.path.as_str()),
        (zk::EventType::NodeDeleted, p.as_str())
    );

    // A watch set on a missing node by get_data is not left behind (NoNode).
    assert_eq!(
        watcher.get_and_watch_data(&p).await.unwrap_err(),
        zk::Error::NoNode
    );

    drop((watcher, writer));
    t.stop().await;
}

#[tokio::test]
async fn child_watches_fire_with_the_right_event_type() {
    let t = Target::start("childwatch").await;
    let watcher = t.client().await;
    let writer = t.client().await;
    let dir = t.path("parent");
    create(&writer, &dir, b"", zk::CreateMode::Persistent)
        .await
        .unwrap();

    // A child created: NodeChildrenChanged on the parent.
    let (children, w) = watcher.list_and_watch_children(&dir).await.unwrap();
    assert!(children.is_empty());
    create(
        &writer,
        &format!("{dir}/kid"),
        b"",
        zk::CreateMode::Ephemeral,
    )
    .await
    .unwrap();
    let ev = guard("NodeChildrenChanged (create)", w.changed()).await;
    assert_eq!(
        (ev.event_type, ev.path.as_str()),
        (zk::EventType::NodeChildrenChanged, dir.as_str())
    );

    // A child's data changing does not fire the parent's child watch; its deletion does.
    let (children, stat, w) = watcher.get_and_watch_children(&dir).await.unwrap();
    assert_eq!((children, stat.num_children), (vec!["kid".to_string()], 1));
    writer
        .set_data(&format!("{dir}/kid"), b"data", None)
        .await
        .unwrap();
    writer.delete(&format!("{dir}/kid"), None).await.unwrap();
    let ev = guard("NodeChildrenChanged (delete)", w.changed()).await;
    assert_eq!(
        (ev.event_type, ev.path.as_str()),
        (zk::EventType::NodeChildrenChanged, dir.as_str())
    );

    // The parent itself deleted: NodeDeleted on the child watch.
    let (_, w) = watcher.list_and_watch_children(&dir).await.unwrap();
    writer.delete(&dir, None).await.unwrap();
    let ev = guard("NodeDeleted (child watch)", w.changed()).await;
    assert_eq!(
        (ev.event_type, ev.path.as_str()),
        (zk::EventType::NodeDeleted, dir.as_str())
    );

    drop((watcher, writer));
    t.stop().await;
}

#[tokio::test]
async fn multi_applies_all_or_nothing() {
    let t = Target::start("multi").await;
    let c = t.client().await;
    let a = t.path("a");
    let b = t.path("b");
    create(&c, &a, b"a0", zk::CreateMode::Persistent)
        .await
        .unwrap();

    // Successful transaction: check, create, set, sequential create, delete.
    let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let seq_opts = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all());
    let mut w = c.new_multi_writer();
    w.add_check_version(&a, 0).unwrap();
    w.add_create(&b, b"b0", &opts).unwrap();
    w.add_set_data(&a, b"a1", Some(0)).unwrap();
    w.add_create(&format!("{b}/s-"), b"", &seq_opts).unwrap();
    w.add_create(&t.path("tmp"), b"", &opts).unwrap();
    w.add_delete(&t.path("tmp"), Some(0)).unwrap();
    let results = guard("multi commit", w.commit()).await.unwrap();
    assert_eq!(results.len(), 6);
    assert!(matches!(results[0], zk::MultiWriteResult::Check));
    assert!(matches!(&results[1], zk::MultiWriteResult::Create { path, .. } if *path == b));
    assert!(matches!(&results[2], zk::MultiWriteResult::SetData { stat } if stat.version == 1));
    match &results[3] {
        zk::MultiWriteResult::Create { path, .. } => {
            let name = path.strip_prefix(&format!("{b}/")).unwrap();
            assert_eq!(assert_sequential_name(name, "s-"), 0);
        }
        other => panic!("expected a Create result, got {other:?}"),
    }
    assert!(matches!(results[4], zk::MultiWriteResult::Create { .. }));
    assert!(matches!(results[5], zk::MultiWriteResult::Delete));
    assert_eq!(c.get_data(&a).await.unwrap().0, b"a1");
    assert_eq!(c.get_data(&b).await.unwrap().0, b"b0");
    assert_eq!(c.check_stat(&t.path("tmp")).await.unwrap(), None);

    // Failing transaction: the check at index 2 fails, nothing before it is applied.
    let mut w = c.new_multi_writer();
    w.add_create(&t.path("c"), b"c0", &opts).unwrap();
    w.add_set_data(&a, b"a2", None).unwrap();
    w.add_check_version(&b, 7).unwrap();
    w.add_delete(&b, None).unwrap();
    let err = guard("failing multi commit", w.commit()).await.unwrap_err();
    assert_eq!(
        err,
        zk::MultiWriteError::OperationFailed {
            index: 2,
            source: zk::Error::BadVersion
        }
    );
    assert_eq!(
        c.check_stat(&t.path("c")).await.unwrap(),
        None,
        "create in a failed multi was applied"
    );
    let (data, stat) = c.get_data(&a).await.unwrap();
    assert_eq!(
        (data.as_slice(), stat.version),
        (&b"a1"[..], 1),
        "set_data in a failed multi was applied"
    );
    assert!(c.check_stat(&b).await.unwrap().is_some());

    // Failing on a later op (NoNode on delete): earlier ops rolled back too.
    let mut w = c.new_multi_writer();
    w.add_set_data(&a, b"a3", Some(1)).unwrap();
    w.add_delete(&t.path("absent"), None).unwrap();
    let err = guard("failing multi commit (delete)", w.commit())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        zk::MultiWriteError::OperationFailed {
            index: 1,
            source: zk::Error::NoNode
        }
    );
    assert_eq!(c.get_data(&a).await.unwrap().1.version, 1);

    // CheckWriter: failed guard check surfaces as CheckFailed.
    let mut cw = c.new_check_writer(&a, Some(0)).unwrap();
    cw.add_set_data(&a, b"never", None).unwrap();
    let err = guard("check writer", cw.commit()).await.unwrap_err();
    assert_eq!(
        err,
        zk::CheckWriteError::CheckFailed {
            source: zk::Error::BadVersion
        }
    );
    assert_eq!(c.get_data(&a).await.unwrap().0, b"a1");

    // Multi-read: results per op, errors inline.
    let mut r = c.new_multi_reader();
    r.add_get_data(&a).unwrap();
    r.add_get_children(&b).unwrap();
    r.add_get_data(&t.path("absent")).unwrap();
    let results = guard("multi read", r.commit()).await.unwrap();
    assert_eq!(results.len(), 3);
    assert!(
        matches!(&results[0], zk::MultiReadResult::Data { data, stat } if data == b"a1" && stat.version == 1)
    );
    assert!(
        matches!(&results[1], zk::MultiReadResult::Children { children } if children.len() == 1)
    );
    assert!(matches!(
        &results[2],
        zk::MultiReadResult::Error {
            err: zk::Error::NoNode
        }
    ));
    drop(c);
    t.stop().await;
}

#[tokio::test]
async fn digest_acl_denies_unauthenticated_sessions() {
    let t = Target::start("acldeny").await;
    // Creating a node with a digest ACL needs no authentication (the id is just data).
    let creator = t.client().await;
    let p = t.path("secret");
    let alice = [zk::Acl::new(
        zk::Permission::ALL,
        zk::AuthId::new("digest", &digest_id("alice", "secret")),
    )];
    guard(
        "create with digest acl",
        creator.create(
            &p,
            b"hidden",
            &zk::CreateMode::Persistent.with_acls(zk::Acls::new(&alice)),
        ),
    )
    .await
    .unwrap();

    // Unauthenticated: NoAuth for reads, writes, children, ACL read; exists still works.
    let anon = t.client().await;
    for c in [&creator, &anon] {
        assert_eq!(c.get_data(&p).await.unwrap_err(), zk::Error::NoAuth);
        assert_eq!(
            c.set_data(&p, b"x", None).await.unwrap_err(),
            zk::Error::NoAuth
        );
        assert_eq!(c.list_children(&p).await.unwrap_err(), zk::Error::NoAuth);
        assert_eq!(
            c.get_and_watch_data(&p).await.unwrap_err(),
            zk::Error::NoAuth
        );
        assert_eq!(
            create(c, &format!("{p}/kid"), b"", zk::CreateMode::Persistent)
                .await
                .unwrap_err(),
            zk::Error::NoAuth
        );
        assert_eq!(c.get_acl(&p).await.unwrap_err(), zk::Error::NoAuth);
        assert_eq!(
            c.set_acl(&p, &zk::Acls::anyone_all(), None)
                .await
                .unwrap_err(),
            zk::Error::NoAuth
        );
        let stat = c
            .check_stat(&p)
            .await
            .unwrap()
            .expect("exists needs no permission");
        assert_eq!((stat.version, stat.aversion, stat.data_length), (0, 0, 6));
    }
    // Delete is checked against the parent's ACL (anyone), so it is allowed.
    let mut r = anon.new_multi_reader();
    r.add_get_data(&p).unwrap();
    let results = guard("multi read", r.commit()).await.unwrap();
    assert!(matches!(
        &results[0],
        zk::MultiReadResult::Error {
            err: zk::Error::NoAuth
        }
    ));

    // world:anyone READ plus digest ALL: anyone reads, nobody unauthenticated writes.
    let ro = [
        zk::Acl::new(zk::Permission::READ, zk::AuthId::anyone()),
        zk::Acl::new(
            zk::Permission::ALL,
            zk::AuthId::new("digest", &digest_id("alice", "secret")),
        ),
    ];
    let p2 = t.path("readonly");
    guard(
        "create read-only",
        creator.create(
            &p2,
            b"r",
            &zk::CreateMode::Persistent.with_acls(zk::Acls::new(&ro)),
        ),
    )
    .await
    .unwrap();
    assert_eq!(anon.get_data(&p2).await.unwrap().0, b"r");
    // getACL with READ but not ADMIN: digest hashes are redacted to "x" (ZOOKEEPER-1392).
    let (acls, _) = anon.get_acl(&p2).await.unwrap();
    let redacted = [
        ro[0].clone(),
        zk::Acl::new(zk::Permission::ALL, zk::AuthId::new("digest", "alice:x")),
    ];
    assert_eq!(acls, redacted);
    assert_eq!(
        anon.set_data(&p2, b"w", None).await.unwrap_err(),
        zk::Error::NoAuth
    );
    assert_eq!(
        create(&anon, &format!("{p2}/kid"), b"", zk::CreateMode::Persistent)
            .await
            .unwrap_err(),
        zk::Error::NoAuth
    );

    // Delete permission comes from the parent (world:anyone ALL here).
    anon.delete(&p, None).await.unwrap();
    assert_eq!(anon.check_stat(&p).await.unwrap(), None);
    drop((creator, anon));
    t.stop().await;
}

#[tokio::test]
async fn digest_auth_grants_access_to_a_digest_acl() {
    let t = Target::start("aclauth").await;
    // Auth given at connect time (sent right after the connect request).
    let owner = t
        .connect_with(t.connector().with_auth("digest", b"alice:secret"))
        .await;
    let p = t.path("secret");
    let acl = [zk::Acl::new(
        zk::Permission::ALL,
        zk::AuthId::new("digest", &digest_id("alice", "secret")),
    )];
    guard(
        "create with digest acl",
        owner.create(
            &p,
            b"hidden",
            &zk::CreateMode::Persistent.with_acls(zk::Acls::new(&acl)),
        ),
    )
    .await
    .unwrap();
    assert_eq!(owner.get_data(&p).await.unwrap().0, b"hidden");
    let (acls, stat) = owner.get_acl(&p).await.unwrap();
    assert_eq!(acls, acl);
    assert_eq!(stat.aversion, 0);

    // Denied before auth, allowed after auth on the same session.
    let anon = t.client().await;
    assert_eq!(anon.get_data(&p).await.unwrap_err(), zk::Error::NoAuth);
    guard("auth", anon.auth("digest", b"alice:secret"))
        .await
        .unwrap();
    assert_eq!(anon.get_data(&p).await.unwrap().0, b"hidden");
    anon.set_data(&p, b"seen", Some(0)).await.unwrap();
    create(&anon, &format!("{p}/kid"), b"", zk::CreateMode::Persistent)
        .await
        .unwrap();
    assert_eq!(owner.get_data(&p).await.unwrap().0, b"seen");

    // A wrong password is accepted as an identity but grants nothing.
    let wrong = t.client().await;
    guard(
        "auth with wrong password",
        wrong.auth("digest", b"alice:wrong"),
    )
    .await
    .unwrap();
    assert_eq!(wrong.get_data(&p).await.unwrap_err(), zk::Error::NoAuth);

    // The "auth" scheme ACL (creator_all) expands to the creator's digest identity.
    let p2 = t.path("creator");
    guard(
        "create creator_all",
        owner.create(
            &p2,
            b"c",
            &zk::CreateMode::Persistent.with_acls(zk::Acls::creator_all()),
        ),
    )
    .await
    .unwrap();
    let (acls, _) = owner.get_acl(&p2).await.unwrap();
    assert_eq!(
        acls, acl,
        "creator_all is stored as the creator's digest id"
    );
    assert_eq!(wrong.get_data(&p2).await.unwrap_err(), zk::Error::NoAuth);
    assert_eq!(anon.get_data(&p2).await.unwrap().0, b"c");
    // An unauthenticated session cannot use creator_all (InvalidAcl).
    let plain = t.client().await;
    assert_eq!(
        guard(
            "creator_all without auth",
            plain.create(
                &t.path("x"),
                b"",
                &zk::CreateMode::Persistent.with_acls(zk::Acls::creator_all())
            )
        )
        .await
        .unwrap_err(),
        zk::Error::InvalidAcl
    );

    // set_acl (ADMIN) with a version: aversion moves, stale version is BadVersion.
    assert_eq!(
        wrong
            .set_acl(&p, &zk::Acls::anyone_all(), None)
            .await
            .unwrap_err(),
        zk::Error::NoAuth
    );
    let stat = owner
        .set_acl(&p, &zk::Acls::anyone_all(), Some(0))
        .await
        .unwrap();
    assert_eq!(stat.aversion, 1);
    assert_eq!(
        owner
            .set_acl(&p, &zk::Acls::anyone_all(), Some(0))
            .await
            .unwrap_err(),
        zk::Error::BadVersion
    );
    wrong.set_data(&p, b"open", None).await.unwrap();

    drop((owner, anon, wrong, plain));
    t.stop().await;
}

#[tokio::test]
async fn session_timeout_is_negotiated_within_bounds() {
    let t = Target::start("negotiate").await;
    // min = 2 × tickTime = 200 ms.
    let short = t
        .connect_with(zk::Client::connector().with_session_timeout(Duration::from_millis(50)))
        .await;
    assert_eq!(short.session_timeout(), Duration::from_millis(200));
    let mid = t
        .connect_with(zk::Client::connector().with_session_timeout(Duration::from_millis(1500)))
        .await;
    assert_eq!(mid.session_timeout(), Duration::from_millis(1500));
    let long = t
        .connect_with(zk::Client::connector().with_session_timeout(Duration::from_secs(600)))
        .await;
    assert_eq!(long.session_timeout(), Duration::from_millis(20_000));
    assert_ne!(short.session_id(), mid.session_id());
    drop((short, mid, long));
    t.stop().await;
}

#[tokio::test]
async fn ephemeral_expires_when_connection_is_dropped_without_close() {
    let t = Target::start("expiry").await;
    let observer = t.client().await;

    // A detached client does not send closeSession when the last handle is dropped: it
    // just closes its socket, leaving the session to expire on the server.
    let requested = Duration::from_millis(500);
    let owner = t
        .connect_with(
            zk::Client::connector()
                .with_session_timeout(requested)
                .with_detached(),
        )
        .await;
    let timeout = owner.session_timeout();
    assert_eq!(timeout, requested);
    let owner_session = owner.session().clone();
    let owner_id = owner.session_id();
    let eph = t.path("eph");
    let (stat, _) = create(&owner, &eph, b"mine", zk::CreateMode::Ephemeral)
        .await
        .unwrap();
    assert_eq!(stat.ephemeral_owner, owner_id.0);

    let (stat, w) = observer.check_and_watch_stat(&eph).await.unwrap();
    assert_eq!(stat.unwrap().ephemeral_owner, owner_id.0);

    let mut state = owner.state_watcher();
    drop(owner);
    let dropped = Instant::now();
    assert_eq!(
        guard("detached client to close", state.changed()).await,
        zk::SessionState::Closed
    );

    let ev = guard("NodeDeleted after session expiry", w.changed()).await;
    let elapsed = dropped.elapsed();
    eprintln!("ephemeral deleted {elapsed:?} after the connection was dropped (session timeout {timeout:?})");
    assert_eq!(
        (ev.event_type, ev.path.as_str()),
        (zk::EventType::NodeDeleted, eph.as_str())
    );
    // Lower bound only (safe under load): the last ping was at most 3/20 of the timeout
    // before the drop, so an expiry cannot come before about 85% of the timeout; a
    // deletion much earlier would mean the session was closed, not expired.
    assert!(
        elapsed >= timeout / 2,
        "ephemeral deleted {elapsed:?} after the drop, session timeout {timeout:?}"
    );
    assert_eq!(observer.check_stat(&eph).await.unwrap(), None);

    // The expired session cannot be resumed.
    let err = guard(
        "reconnect to expired session",
        zk::Client::connector()
            .with_session(owner_session)
            .with_session_timeout(requested)
            .connect(&t.connect),
    )
    .await
    .unwrap_err();
    assert_eq!(err, zk::Error::SessionExpired);

    // The observer's own session is unaffected.
    create(&observer, &t.path("after"), b"", zk::CreateMode::Ephemeral)
        .await
        .unwrap();
    drop(observer);
    t.stop().await;
}

#[tokio::test]
async fn closing_a_session_is_acknowledged_before_the_socket_closes() {
    let t = Target::start("close").await;
    let c = t.client().await;
    let mut state = c.state_watcher();
    // Dropping the last handle of a (non-detached) client sends closeSession and waits for
    // its reply; ZooKeeper answers it and then closes the socket, so the client ends in
    // Closed without a Disconnected in between. A reply lost before the socket closes
    // shows up as Disconnected, then a failed reconnect (Expired).
    drop(c);
    let mut seen = Vec::new();
    loop {
        let s = guard("session state after close", state.changed()).await;
        seen.push(s);
        if s.is_terminated() {
            break;
        }
    }
    assert_eq!(seen, [zk::SessionState::Closed]);
    t.stop().await;
}

#[tokio::test]
async fn detached_session_can_be_resumed_before_it_expires() {
    let t = Target::start("resume").await;
    let owner = t.connect_with(t.connector().with_detached()).await;
    let session = owner.session().clone();
    let id = owner.session_id();
    let eph = t.path("eph");
    create(&owner, &eph, b"", zk::CreateMode::Ephemeral)
        .await
        .unwrap();
    let mut state = owner.state_watcher();
    drop(owner);
    assert_eq!(
        guard("detached client to close", state.changed()).await,
        zk::SessionState::Closed
    );

    // Same session id, ephemeral still there and still owned by it.
    let resumed = t.connect_with(t.connector().with_session(session)).await;
    assert_eq!(resumed.session_id(), id);
    assert_eq!(
        resumed
            .check_stat(&eph)
            .await
            .unwrap()
            .unwrap()
            .ephemeral_owner,
        id.0
    );
    // Closing it (not detached) deletes the ephemeral.
    let observer = t.client().await;
    drop(resumed);
    assert_eq!(
        guard("ephemeral gone after close", wait_gone(&observer, &eph)).await,
        None
    );
    drop(observer);
    t.stop().await;
}
