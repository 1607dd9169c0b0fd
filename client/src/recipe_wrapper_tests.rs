//! The typed recipe wrappers (recipes.rs) against a real in-process server with the
//! built-in recipes (scripts/build-recipes.sh; `WAZOO_RECIPES_DIR` or
//! `~/.cache/wazoo/recipes`). One server for the whole test binary, on its own
//! runtime thread: installing the four recipes compiles them, which takes seconds, so
//! each test uses its own resource names instead of its own server. Tests wait on
//! replies and notifications, GUARD only turns a hang into a failure.

use crate::{
    Client, ConnState, ConnectOptions, Failover, LeaderInfo, LockMode, RecipeError, Standing,
};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use wazoo_proto::{CheckVersionRequest, OpResult, WriteOp};

const GUARD: Duration = Duration::from_secs(60);

async fn g<F: std::future::Future>(f: F) -> F::Output {
    timeout(GUARD, f).await.expect("within the guard time")
}

fn recipes_dir() -> PathBuf {
    match std::env::var_os("WAZOO_RECIPES_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/wazoo/recipes"),
    }
}

/// The shared server's address, started on first use.
fn server() -> &'static str {
    static ADDR: OnceLock<String> = OnceLock::new();
    ADDR.get_or_init(|| {
        for r in wazoo::config::BUILTIN_RECIPES {
            let p = recipes_dir().join(format!("{r}.wasm"));
            assert!(
                p.exists(),
                "{} missing: build the recipes with scripts/build-recipes.sh",
                p.display()
            );
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("server runtime");
            rt.block_on(async move {
                // Kept for the life of the test process (statics are not dropped).
                let dir = tempfile::tempdir().expect("tempdir").keep();
                let mut c = wazoo::config::Config {
                    client_port: 0,
                    data_dir: dir,
                    tick_time_ms: 100,
                    admin_enable_server: false,
                    ..Default::default()
                };
                c.min_session_timeout_ms = 200;
                c.max_session_timeout_ms = 20_000;
                c.recipe_builtin_dir = Some(recipes_dir());
                let s = wazoo::server::Server::start(c).await.expect("server start");
                tx.send(s.client_addr.to_string()).expect("send addr");
                std::future::pending::<()>().await;
            });
        });
        rx.recv_timeout(GUARD).expect("server started")
    })
}

async fn connect() -> Client {
    connect_to(server(), Failover::default()).await
}

async fn connect_to(addr: &str, f: Failover) -> Client {
    let opts = ConnectOptions {
        timeout_ms: 10_000,
        ..Default::default()
    };
    g(Client::connect_with(addr, opts, f))
        .await
        .expect("connect")
}

/// A TCP proxy to the shared server whose connections can be cut, and new ones
/// refused while `blocked`: a client behind it loses its connection on demand.
struct Proxy {
    addr: String,
    blocked: Arc<AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    async fn start() -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let blocked = Arc::new(AtomicBool::new(false));
        let (cut, cut_rx) = tokio::sync::watch::channel(0u64);
        let b = blocked.clone();
        tokio::spawn(async move {
            while let Ok((mut down, _)) = l.accept().await {
                if b.load(Ordering::SeqCst) {
                    let _ = down.shutdown().await;
                    continue;
                }
                let Ok(mut up) = TcpStream::connect(server()).await else {
                    continue;
                };
                let mut cut_rx = cut_rx.clone();
                cut_rx.borrow_and_update();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Proxy { addr, blocked, cut }
    }

    /// Closes every connection and refuses new ones until `unblock`.
    fn cut_and_block(&self) {
        self.blocked.store(true, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn unblock(&self) {
        self.blocked.store(false, Ordering::SeqCst);
    }
}

async fn wait_state(c: &Client, want: ConnState) {
    let mut s = c.state();
    g(s.wait_for(|s| *s == want)).await.expect("state channel");
}

// --- locks ---

#[tokio::test]
async fn lock_handoff_tokens_increase_fifo() {
    let (a, b, c) = (connect().await, connect().await, connect().await);
    let la = a.lock("handoff");
    let ga = g(la.acquire()).await.unwrap();
    assert_eq!(ga.mode(), LockMode::Exclusive);
    assert!(ga
        .path()
        .starts_with("/wazoo/recipes/lock/handoff/holders/"));
    let holders = g(la.holders()).await.unwrap();
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].session_id, a.session_id());
    assert_eq!(holders[0].token, ga.fencing_token());

    // b then c queue, in that order.
    let (lb, lc) = (b.lock("handoff"), c.lock("handoff"));
    let wb = submitted(&b, lb.acquire()).await;
    let mut wc = submitted(&c, lc.acquire()).await;
    let w = g(la.waiters()).await.unwrap();
    assert_eq!(
        (w[0].session_id, w[1].session_id),
        (b.session_id(), c.session_id())
    );

    let t1 = ga.fencing_token();
    g(ga.release()).await.unwrap();
    let gb = g(wb).await.unwrap();
    assert!(gb.fencing_token() > t1, "{} > {t1}", gb.fencing_token());
    // c still waits: its call was not completed by that release.
    tokio::select! {
        biased;
        r = &mut wc => panic!("c got the lock while b holds it: {r:?}"),
        _ = std::future::ready(()) => {}
    }
    let t2 = gb.fencing_token();
    // Dropping a guard releases it (a spawned release): c gets the lock next.
    drop(gb);
    let gc = g(wc).await.unwrap();
    assert!(gc.fencing_token() > t2);
    // The fencing path works in a multi only while the grant holds.
    let path = gc.path().to_string();
    let ok = g(c.multi(vec![WriteOp::Check(CheckVersionRequest {
        path: path.clone(),
        version: -1,
    })]))
    .await
    .unwrap();
    assert!(matches!(ok[0], OpResult::Check), "{ok:?}");
    g(gc.release()).await.unwrap();
    assert!(g(c.exists(&path, false)).await.unwrap().is_none());
}

/// Sends the call `f` makes (its first poll submits the request) and waits until the
/// server has processed it: a later request of the same session replied, and a
/// session's requests are applied in order. Returns `f` to await later (a parked call
/// completes then). No polling of the recipe's state.
async fn submitted<F: std::future::Future>(c: &Client, f: F) -> Pin<Box<F>> {
    let mut f = Box::pin(f);
    tokio::select! {
        biased;
        _ = &mut f => panic!("the call completed at once; expected it to park"),
        _ = std::future::ready(()) => {}
    }
    g(c.exists("/", false)).await.unwrap();
    f
}

#[tokio::test]
async fn lock_try_acquire_contention_and_errors() {
    let (a, b) = (connect().await, connect().await);
    let ga = g(a.lock("try").try_acquire()).await.unwrap().expect("free");
    assert!(g(b.lock("try").try_acquire()).await.unwrap().is_none());
    // Not reentrant.
    assert!(matches!(
        g(a.lock("try").try_acquire()).await,
        Err(RecipeError::AlreadyHeld)
    ));
    // Another kind under the same name.
    assert!(matches!(
        g(b.rw_lock("try").try_read()).await,
        Err(RecipeError::WrongKind(_))
    ));
    assert!(matches!(
        g(b.lock("bad/name").try_acquire()).await,
        Err(RecipeError::BadName(_))
    ));
    let t = ga.fencing_token();
    g(ga.release()).await.unwrap();
    let gb = g(b.lock("try").try_acquire())
        .await
        .unwrap()
        .expect("free now");
    assert!(gb.fencing_token() > t);
    g(gb.release()).await.unwrap();
}

#[tokio::test]
async fn lock_timeout() {
    let (a, b) = (connect().await, connect().await);
    let ga = g(a.lock("timeout").acquire()).await.unwrap();
    let e = g(b
        .lock("timeout")
        .acquire_timeout(Duration::from_millis(200)))
    .await
    .unwrap_err();
    assert!(matches!(e, RecipeError::Timeout), "{e:?}");
    assert_eq!(e.name(), "Timeout");
    let e = g(b.lock("timeout").acquire_timeout(Duration::ZERO))
        .await
        .unwrap_err();
    assert!(matches!(e, RecipeError::Timeout), "{e:?}");
    // The timed-out request left the queue.
    assert!(g(a.lock("timeout").waiters()).await.unwrap().is_empty());
    g(ga.release()).await.unwrap();
    let gb = g(b.lock("timeout").acquire_timeout(Duration::from_secs(5)))
        .await
        .unwrap();
    g(gb.release()).await.unwrap();
}

#[tokio::test]
async fn lock_session_end_hands_over_and_revoke_notifies() {
    let (a, b) = (connect().await, connect().await);
    let ga = g(a.lock("sessend").acquire()).await.unwrap();
    ga.forget();
    let lb = b.lock("sessend");
    let wb = submitted(&b, lb.acquire()).await;
    g(a.close()).await.unwrap();
    let mut gb = g(wb).await.unwrap();
    // An administrator revokes b's grant: its guard hears it, a release then fails.
    let c = connect().await;
    let revoked = g(c.lock("sessend").revoke(None)).await.unwrap();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].session_id, b.session_id());
    g(gb.revoked()).await.unwrap();
    assert!(matches!(g(gb.release()).await, Err(RecipeError::NotHolder)));
}

#[tokio::test]
async fn rw_lock_and_semaphore() {
    let (a, b, c) = (connect().await, connect().await, connect().await);
    let ra = g(a.rw_lock("rw").read()).await.unwrap();
    let rb = g(b.rw_lock("rw").read()).await.unwrap();
    assert_eq!(ra.mode(), LockMode::Read);
    assert!(g(c.rw_lock("rw").try_write()).await.unwrap().is_none());
    let lc = c.rw_lock("rw");
    let mut wc = submitted(&c, lc.write()).await;
    let waiters = g(a.rw_lock("rw").waiters()).await.unwrap();
    assert_eq!(waiters.len(), 1);
    assert_eq!(waiters[0].mode, LockMode::Write);
    g(ra.release()).await.unwrap();
    // A reader still holds it: the writer waits (its acquire completes after b).
    g(c.exists("/", false)).await.unwrap();
    tokio::select! {
        biased;
        r = &mut wc => panic!("writer granted next to a reader: {r:?}"),
        _ = std::future::ready(()) => {}
    }
    let t = rb.fencing_token();
    g(rb.release()).await.unwrap();
    let w = g(wc).await.unwrap();
    assert_eq!(w.mode(), LockMode::Write);
    assert!(w.fencing_token() > t);
    g(w.release()).await.unwrap();

    let s = |cl: &Client| cl.semaphore("sem", 2);
    g(s(&a).init()).await.unwrap();
    let pa = g(s(&a).acquire()).await.unwrap();
    let pb = g(s(&b).acquire()).await.unwrap();
    assert_eq!(pb.mode(), LockMode::Permit);
    assert!(g(s(&c).try_acquire()).await.unwrap().is_none());
    g(pa.release()).await.unwrap();
    let pc = g(s(&c).try_acquire())
        .await
        .unwrap()
        .expect("a permit is free");
    g(pb.release()).await.unwrap();
    g(pc.release()).await.unwrap();
}

// --- election ---

#[tokio::test]
async fn election_leader_changes_on_resign_and_session_close() {
    let (a, b, c, o) = (
        connect().await,
        connect().await,
        connect().await,
        connect().await,
    );
    let mut watch = g(o.election("e1").observe()).await.unwrap();
    assert_eq!(g(watch.next()).await.unwrap(), None);

    let mut ca = g(a.election("e1").join(b"a")).await.unwrap();
    let Standing::Leader { epoch: e1 } = ca.standing() else {
        panic!("first candidate leads: {:?}", ca.standing())
    };
    assert_eq!(g(ca.leadership()).await.unwrap(), e1);
    let seen = g(watch.next()).await.unwrap().expect("a leads");
    assert_eq!(
        seen,
        LeaderInfo {
            session: a.session_id(),
            epoch: e1,
            data: b"a".to_vec()
        }
    );

    let mut cb = g(b.election("e1").join(b"b")).await.unwrap();
    assert_eq!(cb.standing(), Standing::Waiting { position: 1 });
    let mut cc = g(c.election("e1").join(b"c")).await.unwrap();
    assert_eq!(cc.standing(), Standing::Waiting { position: 2 });

    // a resigns: b is promoted and told, with a larger epoch.
    assert!(g(ca.resign()).await.unwrap());
    let e2 = g(cb.leadership()).await.unwrap();
    assert!(e2 > e1);
    let seen = g(watch.next()).await.unwrap().expect("b leads");
    assert_eq!((seen.session, seen.epoch), (b.session_id(), e2));
    assert_eq!(seen.data, b"b");
    let l = g(c.election("e1").leader()).await.unwrap().unwrap();
    assert_eq!((l.session, l.epoch), (b.session_id(), e2));

    // b's session ends: c is promoted.
    g(b.close()).await.unwrap();
    let e3 = g(cc.leadership()).await.unwrap();
    assert!(e3 > e2);
    let seen = g(watch.next()).await.unwrap().expect("c leads");
    assert_eq!((seen.session, seen.epoch), (c.session_id(), e3));

    // Nobody left: the observer sees no leader.
    assert!(g(cc.resign()).await.unwrap());
    assert_eq!(g(watch.next()).await.unwrap(), None);
    assert!(matches!(
        g(c.election("e1").resign()).await,
        Err(RecipeError::NotCandidate(_))
    ));
}

#[tokio::test]
async fn election_catches_up_after_reconnect() {
    let proxy = Proxy::start().await;
    let a = connect().await;
    let b = connect_to(&proxy.addr, Failover::reconnecting()).await;
    let _ca = g(a.election("e2").join(b"")).await.unwrap();
    let mut cb = g(b.election("e2").join(b"")).await.unwrap();
    assert_eq!(cb.standing(), Standing::Waiting { position: 1 });
    // b is promoted while disconnected: the "elected" message is lost.
    proxy.cut_and_block();
    wait_state(&b, ConnState::Disconnected).await;
    assert!(g(a.election("e2").resign()).await.unwrap());
    proxy.unblock();
    let epoch = g(cb.leadership()).await.unwrap();
    assert!(b.reconnects() >= 1);
    let l = g(a.election("e2").leader()).await.unwrap().unwrap();
    assert_eq!((l.session, l.epoch), (b.session_id(), epoch));
}

// --- barrier ---

#[tokio::test]
async fn barrier_releases_n_parties_together() {
    let clients = [connect().await, connect().await, connect().await];
    let mut tasks = Vec::new();
    for c in &clients {
        let b = c.barrier("b3");
        tasks.push(tokio::spawn(async move { b.enter(3).await }));
    }
    let mut gens = Vec::new();
    for t in tasks {
        let r = g(t).await.unwrap().unwrap();
        assert_eq!(r.parties, 3);
        gens.push(r.generation);
    }
    assert!(gens.iter().all(|g| *g == gens[0]), "{gens:?}");

    // Double barrier: nobody is inside before all entered, nobody out before all left.
    let mut tasks = Vec::new();
    for c in &clients {
        let b = c.barrier("d3");
        tasks.push(tokio::spawn(async move {
            let inn = b.double_enter(3).await?;
            let out = b.double_leave().await?;
            Ok::<_, RecipeError>((inn, out))
        }));
    }
    for t in tasks {
        let (inn, out) = g(t).await.unwrap().unwrap();
        assert_eq!((inn.parties, out.parties), (3, 3));
        assert!(out.generation > inn.generation);
    }

    // Set/remove: wait returns at once when unset, else when removed.
    let b0 = clients[0].barrier("sr");
    g(b0.wait()).await.unwrap();
    g(b0.set()).await.unwrap();
    let (b1, b2) = (clients[1].barrier("sr"), clients[2].barrier("sr"));
    let w1 = submitted(&clients[1], b1.wait()).await;
    let w2 = submitted(&clients[2], b2.wait()).await;
    assert_eq!(g(b0.remove()).await.unwrap(), 2);
    g(w1).await.unwrap();
    g(w2).await.unwrap();
    // Unset again: wait returns at once.
    g(b0.wait()).await.unwrap();
}

// --- config ---

#[tokio::test]
async fn config_subscribe_current_then_every_version_across_reconnect() {
    let proxy = Proxy::start().await;
    let publisher = connect().await;
    let cfg = publisher.config();
    assert_eq!(g(cfg.publish("c.k", b"v1", Some(0))).await.unwrap(), 1);
    match g(cfg.publish("c.k", b"x", Some(0))).await {
        Err(RecipeError::VersionMismatch {
            key,
            current,
            expected,
        }) => assert_eq!((key.as_str(), current, expected), ("c.k", 1, 0)),
        other => panic!("{other:?}"),
    }

    let sc = connect_to(&proxy.addr, Failover::reconnecting()).await;
    let mut sub = g(sc.config().subscribe("c.k")).await.unwrap();
    // A second handle on the same client, on a prefix: each gets its own copy.
    let mut all = g(sc.config().subscribe_prefix("c.")).await.unwrap();
    let u = g(sub.next()).await.unwrap();
    assert_eq!(
        (u.key.as_str(), u.value.as_slice(), u.version, u.coalesced),
        ("c.k", &b"v1"[..], 1, false)
    );
    assert_eq!(g(all.next()).await.unwrap(), u);

    for v in 2..=4 {
        let val = format!("v{v}");
        assert_eq!(
            g(cfg.publish("c.k", val.as_bytes(), None)).await.unwrap(),
            v
        );
    }
    g(cfg.publish("c.other", b"o1", None)).await.unwrap();
    for v in 2..=4 {
        let u = g(sub.next()).await.unwrap();
        assert_eq!((u.version, u.coalesced), (v, false));
        assert_eq!(u.value, format!("v{v}").into_bytes());
        assert_eq!(g(all.next()).await.unwrap(), u);
    }
    let o = g(all.next()).await.unwrap();
    assert_eq!((o.key.as_str(), o.version), ("c.other", 1));

    // Disconnected while two versions are published: after the reconnect the
    // subscription catches up with the latest, flagged coalesced, then goes on.
    proxy.cut_and_block();
    wait_state(&sc, ConnState::Disconnected).await;
    g(cfg.publish("c.k", b"v5", None)).await.unwrap();
    g(cfg.publish("c.k", b"v6", None)).await.unwrap();
    proxy.unblock();
    let u = g(sub.next()).await.unwrap();
    assert_eq!(
        (u.value.as_slice(), u.version, u.coalesced),
        (&b"v6"[..], 6, true)
    );
    assert!(sc.reconnects() >= 1);
    assert_eq!(g(all.next()).await.unwrap(), u);
    g(cfg.publish("c.k", b"v7", None)).await.unwrap();
    let u = g(sub.next()).await.unwrap();
    assert_eq!((u.version, u.coalesced), (7, false));
    assert_eq!(g(all.next()).await.unwrap(), u);

    // Unsubscribing one handle keeps the other's subscription (same session).
    assert!(g(sub.unsubscribe()).await.unwrap());
    g(cfg.publish("c.k", b"v8", None)).await.unwrap();
    assert_eq!(g(all.next()).await.unwrap().version, 8);
    let e = g(cfg.get("c.k")).await.unwrap().unwrap();
    assert_eq!((e.value.as_slice(), e.version), (&b"v8"[..], 8));
    assert!(g(cfg.get("c.none")).await.unwrap().is_none());

    // The session ends: the subscription says so.
    g(sc.close()).await.unwrap();
    assert!(matches!(
        g(all.next()).await,
        Err(RecipeError::SessionEnded)
    ));
}

#[tokio::test]
async fn messages_taken_by_the_user() {
    let c = connect().await;
    let _rx = c.take_recipe_messages().unwrap();
    assert!(matches!(
        g(c.config().subscribe("t.k")).await,
        Err(RecipeError::MessagesTaken)
    ));
    // Locks still work, without revocation notices.
    let mut gl = g(c.lock("taken").acquire()).await.unwrap();
    assert!(matches!(
        g(gl.revoked()).await,
        Err(RecipeError::MessagesTaken)
    ));
    g(gl.release()).await.unwrap();
}

#[tokio::test]
async fn unrouted_messages_reach_the_user() {
    let (a, admin) = (connect().await, connect().await);
    let mut rest = a.unrouted_recipe_messages().unwrap();
    assert!(matches!(
        a.unrouted_recipe_messages(),
        Err(RecipeError::MessagesTaken)
    ));
    // A lock taken with a raw call: no wrapper registered for its notices.
    #[derive(serde::Serialize)]
    struct N<'a> {
        name: &'a str,
    }
    g(a.recipe_call_typed::<_, serde::de::IgnoredAny>(
        "lock",
        -1,
        "acquire",
        &N { name: "unrouted" },
    ))
    .await
    .unwrap();
    // A wrapper handle on another name does not take it.
    let _other = g(a.config().subscribe("u.k")).await.unwrap();
    let revoked = g(admin.lock("unrouted").revoke(None)).await.unwrap();
    assert_eq!(revoked.len(), 1);
    let m = g(rest.recv()).await.expect("an unrouted message");
    assert_eq!(m.module, "lock");
    #[derive(serde::Deserialize)]
    struct Notice {
        event: String,
        name: String,
        token: i64,
    }
    let n: Notice = rmp_serde::from_slice(&m.payload).unwrap();
    assert_eq!(
        (n.event.as_str(), n.name.as_str(), n.token),
        ("revoked", "unrouted", revoked[0].token)
    );
}

/// Waits (one round trip per check) until lock `name` has `n` queued calls.
async fn wait_waiters(c: &Client, name: &str, n: usize) {
    let l = c.lock(name);
    g(async {
        loop {
            if l.waiters().await.expect("waiters").len() == n {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
}

/// A waiter on a reconnecting client keeps its place when its connection drops: the
/// acquire is resumed after the reconnect. Once the grant comes while it is back
/// (completing the resumed call), once while it is away (the retry finds it held).
#[tokio::test]
async fn lock_waiter_keeps_its_place_across_reconnects() {
    let proxy = Proxy::start().await;
    let (a, c) = (connect().await, connect().await);
    let b = connect_to(&proxy.addr, Failover::reconnecting()).await;
    let name = "resume-place";
    let ga = g(a.lock(name).acquire()).await.unwrap();
    let lb = b.lock(name);
    let wb = tokio::spawn(async move { lb.acquire().await });
    wait_waiters(&a, name, 1).await;
    let lc = c.lock(name);
    let wc = tokio::spawn(async move { lc.acquire().await });
    wait_waiters(&a, name, 2).await;

    // b's connection drops and comes back before its turn: the resumed call waits
    // with the first one (three parked calls, two places).
    proxy.cut_and_block();
    wait_state(&b, ConnState::Disconnected).await;
    proxy.unblock();
    wait_waiters(&a, name, 3).await;
    assert!(b.reconnects() >= 1);
    let ta = ga.fencing_token();
    g(ga.release()).await.unwrap();
    let gb = g(wb).await.unwrap().expect("b keeps its place ahead of c");
    assert!(gb.fencing_token() > ta);
    wait_waiters(&a, name, 1).await;
    assert!(!wc.is_finished(), "c waits behind b");

    // b queues again behind c, and is granted while its connection is down: the
    // completion is lost with the connection, the resumed acquire finds the grant.
    let tb = gb.fencing_token();
    g(gb.release()).await.unwrap();
    let gc = g(wc).await.unwrap().expect("then c");
    assert!(gc.fencing_token() > tb);
    let lb = b.lock(name);
    let wb = tokio::spawn(async move { lb.acquire().await });
    wait_waiters(&a, name, 1).await;
    let reconnects = b.reconnects();
    proxy.cut_and_block();
    wait_state(&b, ConnState::Disconnected).await;
    let tc = gc.fencing_token();
    g(gc.release()).await.unwrap();
    // Granted to b's session while b is away.
    let held = g(a.lock(name).holders()).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].session_id, b.session_id());
    proxy.unblock();
    let gb = g(wb).await.unwrap().expect("the grant made while away");
    assert!(b.reconnects() > reconnects);
    assert_eq!(gb.fencing_token(), held[0].token);
    assert!(gb.fencing_token() > tc);
    // A second acquire of the same lock through the same client is refused locally.
    assert!(matches!(
        g(b.lock(name).acquire()).await,
        Err(RecipeError::AlreadyHeld)
    ));
    g(gb.release()).await.unwrap();
    assert!(g(a.lock(name).holders()).await.unwrap().is_empty());
}
