//! Recipes inside the state machine: hostile modules (WAT) get a typed error, leave no
//! write behind and leave the state machine serving; the same log gives the same tree
//! and replies on independent replicas (each with its own runtime and compile cache).

use std::sync::Arc;
use wazoo::command::{Command, CommandOp, CommandOutput, WriteRequest};
use wazoo::recipe::{abi, Runtime, RuntimeLimits};
use wazoo::state_machine::StateMachine;
use wazoo_proto::{CreateKind, CreateOp, ErrorCode, Response, WriteOp};

/// One replica: a state machine with its own runtime, fed log entries by index.
struct Replica {
    sm: StateMachine,
    index: u64,
    profile: String,
}

impl Replica {
    fn new() -> Replica {
        let rt = Arc::new(Runtime::new(RuntimeLimits::default()).expect("runtime"));
        let profile = rt.profile().id();
        let mut sm = StateMachine::new();
        sm.set_recipe_runtime(rt);
        Replica {
            sm,
            index: 0,
            profile,
        }
    }

    fn apply(&mut self, op: CommandOp) -> CommandOutput {
        self.index += 1;
        let cmd = Command {
            time_ms: 1_700_000_000_000 + self.index as i64,
            ops: vec![op],
        };
        let mut out = self.sm.apply(self.index, &cmd);
        assert!(self.sm.take_fatal().is_none(), "replica refused the entry");
        out.remove(0)
    }

    fn session(&mut self) -> i64 {
        self.apply(CommandOp::CreateSession {
            timeout_ms: 10_000,
            passwd: vec![0; 16],
        })
        .session_id
    }

    fn upload(&mut self, session: i64, name: &str, wasm: &[u8]) -> Result<Response, ErrorCode> {
        let profile = self.profile.clone();
        self.apply(CommandOp::RecipeUpload {
            session_id: session,
            auth: vec![],
            name: name.into(),
            module: wasm.to_vec(),
            profile,
        })
        .result
    }

    fn call(&mut self, session: i64, name: &str, function: &str) -> Result<Response, ErrorCode> {
        let profile = self.profile.clone();
        self.apply(CommandOp::RecipeCall {
            session_id: session,
            auth: vec![],
            name: name.into(),
            version: -1,
            function: function.into(),
            args: vec![],
            profile,
        })
        .result
    }

    fn create(&mut self, session: i64, path: &str) -> Result<Response, ErrorCode> {
        self.apply(CommandOp::Write {
            session_id: session,
            auth: vec![],
            request: WriteRequest::Op(WriteOp::Create(CreateOp {
                kind: CreateKind::Create,
                path: path.into(),
                data: Some(b"x".to_vec()),
                acl: wazoo::acl::open_acl_unsafe(),
                flags: 0,
                ttl: -1,
            })),
        })
        .result
    }

    /// The tree only (not the last-zxid row, which every entry moves).
    fn nodes(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.sm
            .dump()
            .into_iter()
            .filter(|(k, _)| k.first() == Some(&b'n'))
            .collect()
    }
}

/// Escapes bytes for a WAT data string.
fn wat_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("\\{x:02x}")).collect()
}

fn request(r: &abi::HostRequest) -> Vec<u8> {
    rmp_serde::to_vec_named(r).expect("encode")
}

/// A guest whose handler runs `body`. Data segment `i` (from `data`) is at offset
/// 1024 * (i + 1); `$call_i` helpers are not generated, the body uses offsets.
fn guest(data: &[Vec<u8>], body: &str, extra: &str) -> Vec<u8> {
    let mut segments = String::new();
    for (i, d) in data.iter().enumerate() {
        segments.push_str(&format!(
            "(data (i32.const {}) \"{}\")\n",
            1024 * (i + 1),
            wat_bytes(d)
        ));
    }
    let text = format!(
        r#"(module
  (import "wazoo" "host_call" (func $hc (param i32 i32) (result i64)))
  (import "wazoo" "host_read" (func $hr (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $bump (mut i32) (i32.const 65536))
  (func (export "wazoo_abi_version_1"))
  (func (export "wazoo_alloc") (param $n i32) (result i32) (local $p i32)
    global.get $bump
    local.set $p
    global.get $bump
    local.get $n
    i32.add
    global.set $bump
    ;; grow memory when the input does not fit
    (block $ok
      (br_if $ok (i32.le_u (global.get $bump) (i32.mul (memory.size) (i32.const 65536))))
      (drop (memory.grow (i32.add (i32.div_u (i32.sub (global.get $bump) (i32.mul (memory.size) (i32.const 65536))) (i32.const 65536)) (i32.const 1)))))
    local.get $p)
  {segments}
  {extra}
  (func (export "wazoo_handle") (param $ptr i32) (param $len i32) (result i32)
    {body})
)"#
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("bad test WAT: {e}\n{text}"))
}

/// Calls host request number `i` (offset 1024 * (i + 1)).
fn host_call(i: usize, data: &[Vec<u8>]) -> String {
    format!(
        "(drop (call $hc (i32.const {}) (i32.const {})))",
        1024 * (i + 1),
        data[i].len()
    )
}

fn create_req(path: &str) -> Vec<u8> {
    request(&abi::HostRequest::Create {
        path: path.into(),
        data: b"recipe".to_vec(),
        mode: abi::CreateMode::default(),
    })
}

fn reply_req(b: &[u8]) -> Vec<u8> {
    request(&abi::HostRequest::Reply(b.to_vec()))
}

fn expect_failure(r: Result<Response, ErrorCode>, code: ErrorCode) -> String {
    match r {
        Ok(Response::RecipeFailure { code: c, message }) => {
            assert_eq!(c, code, "wrong error: {message}");
            message
        }
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

#[test]
fn a_well_behaved_call_commits_its_writes_and_replies() {
    let mut r = Replica::new();
    let s = r.session();
    let data = vec![create_req("/made"), reply_req(b"\xc0")];
    let wasm = guest(
        &data,
        &format!(
            "{} {} i32.const 0",
            host_call(0, &data),
            host_call(1, &data)
        ),
        "",
    );
    assert!(matches!(
        r.upload(s, "ok", &wasm),
        Ok(Response::RecipeUploaded { version: 1, .. })
    ));
    match r.call(s, "ok", "anything") {
        Ok(Response::RecipeCall {
            state: 0, reply, ..
        }) => assert_eq!(reply, b"\xc0"),
        other => panic!("unexpected {other:?}"),
    }
    let n =
        r.sm.tree()
            .get("/made")
            .expect("the recipe's write is applied");
    assert_eq!(n.data.as_deref(), Some(&b"recipe"[..]));
}

/// Each hostile guest writes /hostile first, then misbehaves: the call gets the typed
/// error, the write is discarded, and the state machine goes on serving.
#[test]
fn hostile_modules_get_typed_errors_and_leave_no_writes() {
    let write_first = vec![create_req("/hostile"), reply_req(b"\xc0")];
    let w = host_call(0, &write_first);
    let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        (
            "infinite-loop",
            guest(&write_first, &format!("{w} (loop $l (br $l)) i32.const 0"), ""),
            ErrorCode::RecipeFuelExhausted,
        ),
        (
            "memory-bomb",
            guest(
                &write_first,
                &format!("{w} (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) i32.const 0"),
                "",
            ),
            ErrorCode::RecipeLimitExceeded,
        ),
        (
            "table-bomb",
            guest(
                &write_first,
                &format!("{w} (loop $l (br_if $l (i32.ne (table.grow $t (ref.null func) (i32.const 1000)) (i32.const -1)))) i32.const 0"),
                "(table $t 1 funcref)",
            ),
            ErrorCode::RecipeLimitExceeded,
        ),
        (
            "deep-recursion",
            guest(
                &write_first,
                &format!("{w} (call $rec (i32.const 0)) i32.const 0"),
                "(func $rec (param i32) (call $rec (i32.add (local.get 0) (i32.const 1))))",
            ),
            ErrorCode::RecipeTrap,
        ),
        (
            "trap-halfway",
            guest(&write_first, &format!("{w} unreachable"), ""),
            ErrorCode::RecipeTrap,
        ),
        (
            "bad-pointer",
            guest(
                &write_first,
                &format!("{w} (drop (call $hc (i32.const -16) (i32.const 64))) i32.const 0"),
                "",
            ),
            ErrorCode::RecipeTrap,
        ),
        (
            // 0xc1 is never valid MessagePack.
            "garbage-request",
            guest(
                &[write_first[0].clone(), vec![0xc1; 16]],
                &format!("{w} {} i32.const 0", host_call(1, &[write_first[0].clone(), vec![0xc1; 16]])),
                "",
            ),
            ErrorCode::RecipeTrap,
        ),
        (
            "nonzero-status",
            guest(&write_first, &format!("{w} i32.const 7"), ""),
            ErrorCode::RecipeFailed,
        ),
        (
            "no-reply",
            guest(&write_first, &format!("{w} i32.const 0"), ""),
            ErrorCode::RecipeFailed,
        ),
    ];
    let mut r = Replica::new();
    let s = r.session();
    for (name, wasm, code) in cases {
        assert!(
            matches!(
                r.upload(s, name, &wasm),
                Ok(Response::RecipeUploaded { .. })
            ),
            "{name} uploads"
        );
        let before = r.nodes();
        let msg = expect_failure(r.call(s, name, "go"), code);
        println!("{name}: {code:?}: {msg}");
        assert!(
            r.sm.tree().get("/hostile").is_none(),
            "{name}: write discarded"
        );
        assert_eq!(before, r.nodes(), "{name}: the tree is unchanged");
        // Still serving: a plain write and a well-behaved call both work.
        assert!(r.create(s, &format!("/after-{name}")).is_ok());
    }
}

#[test]
fn a_huge_number_of_writes_is_a_limit_and_none_is_applied() {
    let data = vec![request(&abi::HostRequest::Create {
        path: "/many-".into(),
        data: vec![],
        mode: abi::CreateMode {
            sequential: true,
            ephemeral_owner: None,
        },
    })];
    let body = format!(
        "(local $i i32) (loop $l {} (local.set $i (i32.add (local.get $i) (i32.const 1))) (br_if $l (i32.lt_u (local.get $i) (i32.const 100000)))) i32.const 0",
        host_call(0, &data)
    );
    let wasm = guest(&data, &body, "");
    let mut r = Replica::new();
    let s = r.session();
    r.upload(s, "many", &wasm).expect("upload");
    let before = r.nodes();
    expect_failure(r.call(s, "many", "go"), ErrorCode::RecipeLimitExceeded);
    assert_eq!(before, r.nodes());
}

#[test]
fn a_huge_reply_is_a_limit() {
    // Reply(bin32 of 2 MiB): the header is written by the test, the bytes are zeros.
    let len: u32 = 2 << 20;
    let mut header = vec![0x81, 0xa5];
    header.extend_from_slice(b"Reply");
    header.push(0xc6);
    header.extend_from_slice(&len.to_be_bytes());
    let data = vec![create_req("/hostile"), header.clone()];
    let total = header.len() as u32 + len;
    let body = format!(
        "{} (drop (memory.grow (i32.const 40))) (drop (call $hc (i32.const 2048) (i32.const {total}))) i32.const 0",
        host_call(0, &data)
    );
    let wasm = guest(&data, &body, "");
    let mut r = Replica::new();
    let s = r.session();
    r.upload(s, "huge", &wasm).expect("upload");
    expect_failure(r.call(s, "huge", "go"), ErrorCode::RecipeLimitExceeded);
    assert!(r.sm.tree().get("/hostile").is_none());
}

#[test]
fn invalid_modules_are_refused_at_upload_without_a_trace() {
    let mut r = Replica::new();
    let s = r.session();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\0asm but not really".to_vec()),
        (
            "foreign-import",
            wat::parse_str(
                r#"(module (import "env" "abort" (func)) (memory (export "memory") 1)
                (func (export "wazoo_abi_version_1"))
                (func (export "wazoo_alloc") (param i32) (result i32) i32.const 0)
                (func (export "wazoo_handle") (param i32 i32) (result i32) i32.const 0))"#,
            )
            .expect("wat"),
        ),
        (
            "no-marker",
            wat::parse_str(
                r#"(module (memory (export "memory") 1)
                (func (export "wazoo_alloc") (param i32) (result i32) i32.const 0)
                (func (export "wazoo_handle") (param i32 i32) (result i32) i32.const 0))"#,
            )
            .expect("wat"),
        ),
    ];
    for (name, wasm) in cases {
        let before = r.nodes();
        let msg = expect_failure(r.upload(s, name, &wasm), ErrorCode::RecipeInvalid);
        println!("{name}: {msg}");
        assert_eq!(before, r.nodes(), "{name}: nothing stored");
    }
    assert!(r.sm.recipe_list("").is_empty());
}

#[test]
fn three_replicas_applying_the_same_log_agree() {
    let data = vec![
        request(&abi::HostRequest::Create {
            path: "/seq-".into(),
            data: b"v".to_vec(),
            mode: abi::CreateMode {
                sequential: true,
                ephemeral_owner: None,
            },
        }),
        reply_req(b"\x01"),
    ];
    let ok = guest(
        &data,
        &format!(
            "{} {} i32.const 0",
            host_call(0, &data),
            host_call(1, &data)
        ),
        "",
    );
    let spin = guest(
        &data,
        &format!("{} (loop $l (br $l)) i32.const 0", host_call(0, &data)),
        "",
    );
    let mut replicas = [Replica::new(), Replica::new(), Replica::new()];
    let mut outputs: Vec<Vec<String>> = vec![Vec::new(); 3];
    for (i, r) in replicas.iter_mut().enumerate() {
        let s = r.session();
        let mut log = |o: Result<Response, ErrorCode>| outputs[i].push(format!("{o:?}"));
        log(r.upload(s, "ok", &ok));
        log(r.upload(s, "spin", &spin));
        for n in 0..20 {
            log(r.call(s, if n % 3 == 0 { "spin" } else { "ok" }, "go"));
        }
        log(r.create(s, "/plain"));
    }
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(outputs[0], outputs[2]);
    let d0 = replicas[0].sm.dump();
    assert_eq!(d0, replicas[1].sm.dump());
    assert_eq!(d0, replicas[2].sm.dump());
    // A fresh replica restored from a dump serves the same recipes.
    let mut restored = Replica::new();
    restored.sm.restore(d0).expect("restore");
    restored.index = replicas[0].index;
    let s = restored.session();
    let a = restored.call(s, "ok", "go");
    let s0 = replicas[0].session();
    let b = replicas[0].call(s0, "ok", "go");
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    assert_eq!(restored.sm.dump(), replicas[0].sm.dump());
}

#[test]
fn a_call_under_another_determinism_profile_is_refused_deterministically() {
    let data = vec![reply_req(b"\xc0")];
    let wasm = guest(&data, &format!("{} i32.const 0", host_call(0, &data)), "");
    let mut r = Replica::new();
    let s = r.session();
    r.upload(s, "p", &wasm).expect("upload");
    let before = r.nodes();
    let out = r
        .apply(CommandOp::RecipeCall {
            session_id: s,
            auth: vec![],
            name: "p".into(),
            version: -1,
            function: "go".into(),
            args: vec![],
            profile: "some-other-profile".into(),
        })
        .result;
    expect_failure(out, ErrorCode::RecipeRuntimeMismatch);
    assert_eq!(before, r.nodes());
}

#[test]
fn a_replica_with_other_runtime_settings_refuses_to_apply_instead_of_diverging() {
    let data = vec![reply_req(b"\xc0")];
    let wasm = guest(&data, &format!("{} i32.const 0", host_call(0, &data)), "");
    let mut leader = Replica::new();
    let s = leader.session();
    let upload = CommandOp::RecipeUpload {
        session_id: s,
        auth: vec![],
        name: "p".into(),
        module: wasm,
        profile: leader.profile.clone(),
    };
    // A replica whose runtime burns a different fuel budget: its results could differ.
    let limits = RuntimeLimits {
        fuel: RuntimeLimits::default().fuel + 1,
        ..RuntimeLimits::default()
    };
    let rt = Arc::new(Runtime::new(limits).expect("runtime"));
    assert_ne!(rt.profile().id(), leader.profile);
    let mut other = StateMachine::new();
    other.set_recipe_runtime(rt);
    let session = Command {
        time_ms: 1,
        ops: vec![CommandOp::CreateSession {
            timeout_ms: 10_000,
            passwd: vec![0; 16],
        }],
    };
    other.apply(1, &session);
    assert!(other.take_fatal().is_none());
    other.apply(
        2,
        &Command {
            time_ms: 2,
            ops: vec![upload],
        },
    );
    let why = other.take_fatal().expect("the replica must refuse");
    assert!(why.contains("profile"), "{why}");
}

/// The upgrade flow on one replica: pinned to profile A by an upload, upgraded to a
/// build with profile B; calls proposed under B fail until an admin adopts B, then work.
#[test]
fn an_upgraded_cluster_serves_calls_once_the_new_profile_is_adopted() {
    use wazoo_proto::{Acl, Id, SetAclRequest};
    let data = vec![create_req("/after-upgrade"), reply_req(b"\xc0")];
    let wasm = guest(
        &data,
        &format!(
            "{} {} i32.const 0",
            host_call(0, &data),
            host_call(1, &data)
        ),
        "",
    );
    let mut r = Replica::new();
    let profile_a = r.profile.clone();
    let s = r.session();
    r.upload(s, "up", &wasm).expect("upload");
    assert_eq!(r.sm.recipe_runtime_profile().as_deref(), Some(&*profile_a));

    // "Upgrade" the server: same state, a runtime whose profile differs.
    let limits = RuntimeLimits {
        fuel: RuntimeLimits::default().fuel + 1,
        ..RuntimeLimits::default()
    };
    let rt_b = Arc::new(Runtime::new(limits).expect("runtime"));
    let profile_b = rt_b.profile().id();
    assert_ne!(profile_a, profile_b);
    r.sm.set_recipe_runtime(rt_b);
    r.profile = profile_b.clone();

    // A call proposed under B while A is pinned: a deterministic refusal (Replica::apply
    // checks no fatal error was raised), with no effect on the tree.
    let before = r.nodes();
    let why = expect_failure(r.call(s, "up", "go"), ErrorCode::RecipeRuntimeMismatch);
    assert!(why.contains("adopt-runtime"), "{why}");
    assert_eq!(before, r.nodes());
    assert!(r.sm.tree().get("/after-upgrade").is_none());

    // The admin adopts B: the reply names it and /wazoo/runtime holds it.
    let out = r
        .apply(CommandOp::RecipeAdoptRuntime {
            session_id: s,
            auth: vec![],
            profile: profile_b.clone(),
        })
        .result;
    assert_eq!(
        out,
        Ok(Response::RecipeRuntime {
            profile: profile_b.clone()
        })
    );
    assert_eq!(r.sm.recipe_runtime_profile().as_deref(), Some(&*profile_b));
    let node = r.sm.tree().get("/wazoo/runtime").expect("/wazoo/runtime");
    assert_eq!(node.data.as_deref(), Some(profile_b.as_bytes()));

    // Calls under B now run (the module is recompiled by the new runtime from its blob).
    match r.call(s, "up", "go") {
        Ok(Response::RecipeCall {
            state: 0, reply, ..
        }) => assert_eq!(reply, b"\xc0"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(r.sm.tree().get("/after-upgrade").is_some());

    // Once an operator restricts /wazoo/modules, adopting needs ADMIN there.
    let admin = Id {
        scheme: "digest".into(),
        id: "admin:x1nq8J3Rw2a0mX0x0Yk2b1GkXUo=".into(),
    };
    let acl = vec![
        Acl {
            perms: wazoo_proto::consts::perms::READ,
            id: Id {
                scheme: "world".into(),
                id: "anyone".into(),
            },
        },
        Acl {
            perms: wazoo_proto::consts::perms::ALL,
            id: admin.clone(),
        },
    ];
    let set = r
        .apply(CommandOp::Write {
            session_id: s,
            auth: vec![],
            request: WriteRequest::SetAcl(SetAclRequest {
                path: "/wazoo/modules".into(),
                acl,
                version: -1,
            }),
        })
        .result;
    assert!(matches!(set, Ok(Response::Stat(_))), "{set:?}");
    let runtime_before = r.sm.tree().get("/wazoo/runtime").unwrap().stat();
    let out = r
        .apply(CommandOp::RecipeAdoptRuntime {
            session_id: s,
            auth: vec![],
            profile: profile_b.clone(),
        })
        .result;
    assert_eq!(out, Err(ErrorCode::NoAuth));
    assert_eq!(
        r.sm.tree().get("/wazoo/runtime").unwrap().stat(),
        runtime_before,
        "a refused adopt leaves /wazoo/runtime alone"
    );
    let out = r
        .apply(CommandOp::RecipeAdoptRuntime {
            session_id: s,
            auth: vec![admin],
            profile: profile_b.clone(),
        })
        .result;
    assert_eq!(out, Ok(Response::RecipeRuntime { profile: profile_b }));
}

/// Adopting a profile this replica does not run cannot be applied the same way
/// everywhere: the replica stops applying instead of pinning it.
#[test]
fn adopting_a_profile_this_replica_does_not_run_is_fatal() {
    let mut r = Replica::new();
    let s = r.session();
    let before = r.nodes();
    r.index += 1;
    let mut out = r.sm.apply(
        r.index,
        &Command {
            time_ms: 1_700_000_000_000 + r.index as i64,
            ops: vec![CommandOp::RecipeAdoptRuntime {
                session_id: s,
                auth: vec![],
                profile: "not-this-build".into(),
            }],
        },
    );
    expect_failure(out.remove(0).result, ErrorCode::RecipeRuntimeMismatch);
    let why = r.sm.take_fatal().expect("the replica must refuse");
    assert!(why.contains("not-this-build"), "{why}");
    assert_eq!(before, r.nodes());
}

/// The wire path end to end: recipeRuntimeInfo and recipeAdoptRuntime through a real
/// server and the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_info_and_adopt_over_the_wire() {
    use std::time::Duration;
    use wazoo::config::Config;
    use wazoo::server::Server;
    use wazoo_client::{Client, ConnectOptions};

    const GUARD: Duration = Duration::from_secs(60);
    let dir = tempfile::TempDir::new().unwrap();
    let config = Config {
        client_port: 0,
        data_dir: dir.path().to_path_buf(),
        tick_time_ms: 100,
        admin_enable_server: false,
        ..Default::default()
    };
    let server = Server::start(config).await.expect("server");
    let c = Client::connect(
        &server.client_addr.to_string(),
        ConnectOptions {
            timeout_ms: 10_000,
            ..Default::default()
        },
    )
    .await
    .expect("connect");

    let (pinned, local) = tokio::time::timeout(GUARD, c.recipe_runtime_info())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pinned, "", "nothing is pinned before the first upload");
    assert!(!local.is_empty());

    let data = vec![reply_req(b"\xc0")];
    let wasm = guest(&data, &format!("{} i32.const 0", host_call(0, &data)), "");
    tokio::time::timeout(GUARD, c.recipe_upload("tiny", &wasm))
        .await
        .unwrap()
        .expect("upload");
    let (pinned, local2) = tokio::time::timeout(GUARD, c.recipe_runtime_info())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(local2, local);
    assert_eq!(
        pinned, local,
        "the first upload pins the uploader's profile"
    );

    let adopted = tokio::time::timeout(GUARD, c.recipe_adopt_runtime())
        .await
        .unwrap()
        .expect("adopt");
    assert_eq!(adopted, local);
    let (pinned, _) = tokio::time::timeout(GUARD, c.recipe_runtime_info())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pinned, local);
    // The module still runs.
    let reply = tokio::time::timeout(GUARD, c.recipe_call("tiny", -1, "f", vec![0xc0]))
        .await
        .unwrap()
        .expect("call");
    assert_eq!(reply, b"\xc0");

    let _ = tokio::time::timeout(GUARD, c.close()).await;
    server.shutdown().await;
}
