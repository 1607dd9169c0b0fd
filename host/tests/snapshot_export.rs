//! `wazoo snapshot export` / `import` on data dirs written by real in-process servers:
//! the imported dir serves the same tree (data, ACL, Stat), keeps sequence counters,
//! sessions and container/TTL kinds, and export → import → export is byte-identical.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;
use wazoo::config::Config;
use wazoo::server::Server;
use wazoo::tools::export;
use wazoo_client::{creator_all_acl, open_acl_unsafe, read_acl_unsafe, Client, ConnectOptions};
use wazoo_proto::{Acl, PathRequest, Request, Response, Stat};

const EPHEMERAL: i32 = 1;
const SEQUENTIAL: i32 = 2;
const CONTAINER: i32 = 4;
const TTL: i32 = 5;

fn config(dir: &Path) -> Config {
    Config {
        client_port: 0,
        data_dir: dir.to_path_buf(),
        container_check_interval_ms: 50,
        ..Default::default()
    }
}

async fn connect(server: &Server) -> Client {
    Client::connect(&server.client_addr.to_string(), ConnectOptions::default())
        .await
        .expect("connect")
}

async fn authed(server: &Server) -> Client {
    let c = connect(server).await;
    c.add_auth("digest", b"user:pw").await.unwrap();
    c
}

type NodeView = (Option<Vec<u8>>, Stat, Vec<Acl>, Stat);

/// Every node reachable from `/` with its data, Stat, ACL and the Stat of getACL.
async fn snapshot_view(c: &Client) -> BTreeMap<String, NodeView> {
    let mut out = BTreeMap::new();
    let mut todo = vec!["/".to_string()];
    while let Some(p) = todo.pop() {
        let (data, stat) = c.get_data(&p, false).await.unwrap();
        let (_, r) = c
            .request(Request::GetAcl(PathRequest { path: p.clone() }))
            .await
            .unwrap();
        let Ok(Response::GetAcl {
            acl,
            stat: acl_stat,
        }) = r
        else {
            panic!("getACL {p}: {r:?}");
        };
        for child in c.get_children(&p, false).await.unwrap() {
            todo.push(if p == "/" {
                format!("/{child}")
            } else {
                format!("{p}/{child}")
            });
        }
        out.insert(p, (data, stat, acl, acl_stat));
    }
    out
}

/// Builds the source dir; returns the ephemeral owner's (session id, password).
async fn build_source(dir: &Path) -> (i64, Vec<u8>) {
    let server = Server::start(config(dir)).await.unwrap();
    let c = authed(&server).await;
    let acl = open_acl_unsafe;
    c.create("/app", b"app", acl(), 0).await.unwrap();
    c.create("/app/cfg", b"v1", acl(), 0).await.unwrap();
    c.set_data("/app/cfg", b"v2", -1).await.unwrap();
    c.set_data("/app/cfg", &[0u8, 255, 10, 13, 34], -1)
        .await
        .unwrap();
    c.create("/app/empty", b"", acl(), 0).await.unwrap();
    c.create("/ro", b"read only", read_acl_unsafe(), 0)
        .await
        .unwrap();
    c.create("/secret", b"digest", creator_all_acl(), 0)
        .await
        .unwrap();
    c.set_data("/secret", b"digest2", -1).await.unwrap();
    // Sequence counters: 3 creates, 1 delete.
    c.create("/seq", b"", acl(), 0).await.unwrap();
    for _ in 0..3 {
        c.create("/seq/n-", b"x", acl(), SEQUENTIAL).await.unwrap();
    }
    c.delete("/seq/n-0000000001", -1).await.unwrap();
    // A container and a TTL node, each with a child (so they are not removed yet).
    c.create("/box", b"", acl(), CONTAINER).await.unwrap();
    c.create("/box/item", b"", acl(), 0).await.unwrap();
    c.create_ttl("/ttl", b"t", acl(), TTL, 200).await.unwrap();
    c.create("/ttl/child", b"", acl(), 0).await.unwrap();
    let e = connect(&server).await;
    e.create("/eph", b"mine", acl(), EPHEMERAL).await.unwrap();
    e.create("/seq/e-", b"", acl(), EPHEMERAL | SEQUENTIAL)
        .await
        .unwrap();
    let owner = (e.session_id(), e.session_passwd().to_vec());
    c.close().await.unwrap();
    // `e` stays open: its session and ephemerals are in the data dir at shutdown.
    server.shutdown().await;
    drop(e);
    owner
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_import_round_trip_serves_the_same_tree() {
    let src = TempDir::new().unwrap();
    let (owner_id, owner_pw) = build_source(src.path()).await;
    let files = TempDir::new().unwrap();
    let f1 = files.path().join("one.jsonl");
    let f2 = files.path().join("two.jsonl");

    let r1 = export::export(src.path(), &f1).unwrap();
    assert!(r1.nodes >= 14, "{r1:?}");
    assert_eq!(r1.sessions, 1);

    // The file is readable JSON lines: header first, then sessions, then nodes by path.
    let text = std::fs::read_to_string(&f1).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["format"], "wazoo-export");
    assert_eq!(lines[0]["version"], 1);
    let node = |p: &str| {
        lines
            .iter()
            .find(|l| l["type"] == "node" && l["path"] == p)
            .unwrap_or_else(|| panic!("{p} not exported"))
            .clone()
    };
    assert_eq!(node("/box")["kind"], "container");
    assert_eq!(node("/ttl")["kind"], "ttl");
    assert_eq!(node("/ttl")["ttl_ms"], 200);
    assert_eq!(node("/eph")["kind"], "ephemeral");
    assert_eq!(node("/eph")["ephemeral_owner"], owner_id);
    assert_eq!(node("/app")["kind"], "persistent");
    assert_eq!(
        node("/seq")["cversion"],
        4,
        "internal cversion = child creates"
    );
    let paths: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "node")
        .map(|l| l["path"].as_str().unwrap())
        .collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);

    // Import into a non-existent dir; export again: byte-identical.
    let dst_parent = TempDir::new().unwrap();
    let dst = dst_parent.path().join("imported");
    let ri = export::import(&f1, &dst).unwrap();
    assert_eq!(ri, r1);
    export::export(&dst, &f2).unwrap();
    assert_eq!(std::fs::read(&f1).unwrap(), std::fs::read(&f2).unwrap());

    // Importing again into the now non-empty dir is refused.
    let err = export::import(&f1, &dst).unwrap_err();
    assert!(format!("{err:#}").contains("not empty"), "{err:#}");

    // Both servers serve the same tree, ACLs and Stats.
    let a = Server::start(config(src.path())).await.unwrap();
    let ca = authed(&a).await;
    let view_a = snapshot_view(&ca).await;
    // The next sequential child the original would create.
    let next_a = ca
        .create("/seq/n-", b"", open_acl_unsafe(), SEQUENTIAL)
        .await
        .unwrap();
    ca.close().await.unwrap();
    a.shutdown().await;

    let b = Server::start(config(&dst)).await.unwrap();
    let cb = authed(&b).await;
    let view_b = snapshot_view(&cb).await;
    assert_eq!(
        view_a.keys().collect::<Vec<_>>(),
        view_b.keys().collect::<Vec<_>>()
    );
    for (p, va) in &view_a {
        assert_eq!(va, &view_b[p], "{p} differs");
    }
    assert!(view_b.contains_key("/eph"));
    // Zxids keep increasing across the import: a new write's zxid (and so every new
    // mzxid/czxid, and new session ids) is above the imported last zxid, and a client
    // that saw the old server's last zxid may connect.
    let (zxid, r) = cb
        .request(Request::SetData(wazoo_proto::SetDataRequest {
            path: "/app/empty".into(),
            data: Some(b"after".to_vec()),
            version: -1,
        }))
        .await
        .unwrap();
    r.unwrap();
    assert!(zxid > r1.last_zxid, "{zxid:#x} <= {:#x}", r1.last_zxid);
    let seen = Client::connect(
        &b.client_addr.to_string(),
        ConnectOptions {
            last_zxid_seen: r1.last_zxid,
            ..Default::default()
        },
    )
    .await
    .expect("a client that saw the source's last zxid connects");
    assert!(
        seen.session_id() > owner_id,
        "new session ids do not reuse old ones"
    );
    seen.close().await.unwrap();
    let next_b = cb
        .create("/seq/n-", b"", open_acl_unsafe(), SEQUENTIAL)
        .await
        .unwrap();
    assert_eq!(next_a, next_b, "sequence counter kept");
    assert_eq!(
        next_b, "/seq/n-0000000004",
        "internal cversion 4 = 4 child creates"
    );

    // The ephemeral's session still exists: reconnecting with its id and password works.
    let owner = Client::connect(
        &b.client_addr.to_string(),
        ConnectOptions {
            session_id: owner_id,
            passwd: owner_pw.clone(),
            ..Default::default()
        },
    )
    .await
    .expect("reconnect to the imported session");
    assert_eq!(owner.session_id(), owner_id);
    assert!(owner.exists("/eph", false).await.unwrap().is_some());

    // Container and TTL nodes are still cleaned up once empty.
    cb.delete("/box/item", -1).await.unwrap();
    cb.delete("/ttl/child", -1).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let gone_box = cb.exists("/box", false).await.unwrap().is_none();
        let gone_ttl = cb.exists("/ttl", false).await.unwrap().is_none();
        if gone_box && gone_ttl {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "container/TTL not cleaned up (box gone {gone_box}, ttl gone {gone_ttl})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Closing the imported session removes its ephemerals.
    owner.close().await.unwrap();
    assert!(cb.exists("/eph", false).await.unwrap().is_none());
    cb.close().await.unwrap();
    b.shutdown().await;

    // The imported dir restarts like any other.
    let b = Server::start(config(&dst)).await.unwrap();
    let cb = authed(&b).await;
    assert_eq!(
        cb.get_data("/app/empty", false).await.unwrap().0.unwrap(),
        b"after"
    );
    assert!(cb
        .exists("/seq/n-0000000004", false)
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        cb.get_data("/secret", false).await.unwrap(),
        (view_a["/secret"].0.clone(), view_a["/secret"].1.clone())
    );
    cb.close().await.unwrap();
    b.shutdown().await;
}

const HEADER: &str =
    r#"{"format":"wazoo-export","version":1,"last_zxid":65536,"sessions":0,"nodes":2}"#;
const ROOT: &str = r#"{"type":"node","path":"/","data":"","acl":[{"perms":31,"scheme":"world","id":"anyone"}],"czxid":0,"mzxid":0,"pzxid":0,"ctime":0,"mtime":0,"version":0,"cversion":1,"aversion":0,"ephemeral_owner":0,"kind":"persistent"}"#;
const CHILD: &str = r#"{"type":"node","path":"/a","data":"aGk=","acl":[{"perms":31,"scheme":"world","id":"anyone"}],"czxid":1,"mzxid":1,"pzxid":1,"ctime":0,"mtime":0,"version":0,"cversion":0,"aversion":0,"ephemeral_owner":0,"kind":"persistent"}"#;

fn read(lines: &[&str]) -> Result<wazoo::state_machine::StateMachine, String> {
    export::read_export(lines.join("\n").as_bytes()).map_err(|e| format!("{e:#}"))
}

trait ErrText {
    fn err_text(self) -> String;
}

impl ErrText for Result<wazoo::state_machine::StateMachine, String> {
    fn err_text(self) -> String {
        match self {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }
}

#[test]
fn import_validates_the_file_strictly() {
    let Ok(sm) = read(&[HEADER, ROOT, CHILD]) else {
        panic!("valid file rejected")
    };
    assert_eq!(
        sm.tree().get("/a").unwrap().data.as_deref(),
        Some(&b"hi"[..])
    );
    assert_eq!(sm.last_zxid(), 65536);

    let err = read(&[HEADER, ROOT, "{not json"]).err_text();
    assert!(err.contains("line 3") && err.contains("JSON"), "{err}");

    let err = read(&[&HEADER.replace("\"nodes\":2", "\"nodes\":1"), CHILD]).err_text();
    assert!(err.contains("root"), "{err}");

    let orphan = CHILD.replace("\"/a\"", "\"/x/y\"");
    let err = read(&[HEADER, ROOT, &orphan]).err_text();
    assert!(err.contains("line 3") && err.contains("parent /x"), "{err}");

    let bad64 = CHILD.replace("aGk=", "***");
    let err = read(&[HEADER, ROOT, &bad64]).err_text();
    assert!(err.contains("line 3") && err.contains("base64"), "{err}");

    let err = read(&[r#"{"format":"other","version":1,"last_zxid":0,"sessions":0,"nodes":0}"#])
        .err_text();
    assert!(err.contains("line 1"), "{err}");

    let err = read(&[HEADER, ROOT, CHILD, CHILD]).err_text();
    assert!(err.contains("line 4") && err.contains("duplicate"), "{err}");

    let wrong_kind = CHILD.replace("\"persistent\"", "\"container\"");
    let err = read(&[HEADER, ROOT, &wrong_kind]).err_text();
    assert!(err.contains("line 3") && err.contains("kind"), "{err}");

    let eph = CHILD.replace(
        "\"ephemeral_owner\":0,\"kind\":\"persistent\"",
        "\"ephemeral_owner\":7,\"kind\":\"ephemeral\"",
    );
    let err = read(&[HEADER, ROOT, &eph]).err_text();
    assert!(err.contains("line 3") && err.contains("session"), "{err}");

    let err = read(&[HEADER, ROOT]).err_text();
    assert!(err.contains("truncated"), "{err}");

    // A non-empty target directory is refused before anything is written.
    let files = TempDir::new().unwrap();
    let f = files.path().join("ok.jsonl");
    std::fs::write(&f, [HEADER, ROOT, CHILD].join("\n") + "\n").unwrap();
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("keep.txt"), b"x").unwrap();
    let err = format!("{:#}", export::import(&f, dir.path()).unwrap_err());
    assert!(err.contains("not empty"), "{err}");
    assert!(!dir.path().join("raft").exists());
    // An empty existing directory is fine.
    let empty = TempDir::new().unwrap();
    let r = export::import(&f, empty.path()).unwrap();
    assert_eq!(r.nodes, 2);
}
