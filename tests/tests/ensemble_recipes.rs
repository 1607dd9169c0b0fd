//! The built-in recipes on a 3-server ensemble (issue "Built-in recipes"): sessions
//! that end by *expiring* (their client vanishes without closeSession, and the leader
//! expires them through the log) release what they held, and a lock waiter whose
//! server dies reconnects to another server and keeps its place in the queue.
//!
//! One ensemble for the whole file (starting members that compile the built-in
//! recipes costs seconds), phases in sequence. Needs `WAZOO_BIN` and the recipes
//! (`WAZOO_RECIPES_DIR`, scripts/build-recipes.sh).

use std::time::Duration;

use wazoo_client::{Client, ConnState, ConnectOptions, Failover, Standing};
use wazoo_tests::Ensemble;

const GUARD: Duration = Duration::from_secs(60);

async fn g<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(GUARD, f)
        .await
        .expect("within the guard time")
}

/// A client of `addr` first and the ensemble's other servers after it, reconnecting
/// (a server closes a connection whose write failed, e.g. across a leader change; the
/// recipe calls are retried), with session timeout `timeout_ms`. A handshake that
/// times out (a member still busy compiling the built-in recipes) is tried again.
async fn connect_with_timeout(e: &Ensemble, addr: &str, timeout_ms: i32) -> Client {
    let opts = ConnectOptions {
        timeout_ms,
        ..ConnectOptions::default()
    };
    let others: Vec<String> = e
        .connect_string()
        .split(',')
        .filter(|a| *a != addr)
        .map(str::to_string)
        .collect();
    let list = std::iter::once(addr.to_string())
        .chain(others)
        .collect::<Vec<_>>()
        .join(",");
    g(async {
        loop {
            match Client::connect_with(&list, opts.clone(), Failover::reconnecting()).await {
                Ok(c) => return c,
                Err(err) => eprintln!("connect to {addr}: {err:?}; again"),
            }
        }
    })
    .await
}

/// A client whose session may be left to expire: a short timeout (2 s), so that the
/// phases waiting for an expiry take about that long.
async fn connect(e: &Ensemble, addr: &str) -> Client {
    connect_with_timeout(e, addr, 2000).await
}

/// Waits (one round trip per check) until lock `name` has `n` queued calls.
async fn wait_waiters(c: &Client, name: &str, n: usize) {
    let l = c.lock(name);
    g(async {
        loop {
            // An error (a connection lost while the client reconnects) checks again.
            if l.waiters().await.is_ok_and(|w| w.len() == n) {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipes_survive_expiry_and_server_loss() {
    // Slower elections than the other ensemble tests: every member of this debug
    // build compiles the built-in recipes at start on a small machine, and a leader
    // change the test did not cause would only blur what it checks (a later line of
    // zoo.cfg overrides an earlier one).
    let mut e = Ensemble::start_with_recipes(
        3,
        0,
        &["raft.electionTimeoutMs=2000", "raft.heartbeatMs=250"],
    )
    .expect("ensemble");
    let leader = e.wait_leader(GUARD).expect("leader");
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let (f, h) = (followers[0], followers[1]);
    let addr = |e: &Ensemble, i: usize| e.members[i].client_addr().unwrap();
    let (on_leader, on_f, on_h) = (addr(&e, leader), addr(&e, f), addr(&e, h));

    // Every member has compiled the three recipes (they answer a call only once they
    // applied it themselves) before the phases start.
    for i in 0..3 {
        let w = connect_with_timeout(&e, &addr(&e, i), 10_000).await;
        g(async {
            loop {
                let lock = w.lock(&format!("warm-{i}")).try_acquire().await;
                let election = w.election("warm").leader().await;
                let barrier = w.barrier("warm").wait().await;
                match (lock, election, barrier) {
                    (Ok(Some(guard)), Ok(_), Ok(())) => {
                        guard.release().await.expect("release");
                        return;
                    }
                    other => eprintln!("warming up server {i}: {other:?}"),
                }
            }
        })
        .await;
        let _ = w.close().await;
    }

    // --- A lock waiter loses its server and keeps its place. ---
    eprintln!("phase: lock waiter loses its server (leader {leader}, killing {f})");
    let a = connect(&e, &on_leader).await;
    let ga = g(a.lock("ens").acquire()).await.expect("free");
    // b waits through follower f, with h as the next server to try.
    let b = g(Client::connect_with(
        &format!("{on_f},{on_h}"),
        ConnectOptions {
            timeout_ms: 4000,
            ..ConnectOptions::default()
        },
        Failover::reconnecting(),
    ))
    .await
    .expect("connect b");
    let lb = b.lock("ens");
    let wb = tokio::spawn(async move { lb.acquire().await });
    wait_waiters(&a, "ens", 1).await;
    let c = connect(&e, &on_h).await;
    let lc = c.lock("ens");
    let wc = tokio::spawn(async move { lc.acquire().await });
    wait_waiters(&a, "ens", 2).await;
    e.kill9(f).expect("kill f");
    // b reconnects to h and resumes its acquire: its first call keeps its place.
    g(async {
        let mut st = b.state();
        st.wait_for(|s| *s == ConnState::Connected && b.reconnects() >= 1)
            .await
            .expect("b reconnects");
    })
    .await;
    assert_eq!(b.current_server(), on_h);
    wait_waiters(&a, "ens", 3).await;
    let ta = ga.fencing_token();
    g(ga.release()).await.expect("release");
    let gb = g(wb).await.unwrap().expect("b is next, ahead of c");
    assert!(gb.fencing_token() > ta);
    wait_waiters(&a, "ens", 1).await;
    assert!(!wc.is_finished(), "c still waits behind b");
    let tb = gb.fencing_token();
    g(gb.release()).await.expect("release");
    let gc = g(wc).await.unwrap().expect("then c");
    assert!(gc.fencing_token() > tb);
    g(gc.release()).await.expect("release");
    e.restart(f).expect("restart f");
    // A restarted member listens on a new client port.
    let on_f = addr(&e, f);

    // --- The holder's session expires: exactly the next waiter gets the lock. ---
    eprintln!("phase: lock holder expires");
    let holder = connect(&e, &on_h).await;
    let gh = g(holder.lock("exp").acquire()).await.expect("free");
    let th = gh.fencing_token();
    gh.forget();
    let w1 = connect(&e, &on_leader).await;
    let l1 = w1.lock("exp");
    let t1 = tokio::spawn(async move { l1.acquire().await });
    wait_waiters(&a, "exp", 1).await;
    let w2 = connect(&e, &on_leader).await;
    let l2 = w2.lock("exp");
    let t2 = tokio::spawn(async move { l2.acquire().await });
    wait_waiters(&a, "exp", 2).await;
    let holder_session = holder.session_id();
    drop(holder); // no closeSession: the leader expires it after its timeout
    let g1 = g(t1)
        .await
        .unwrap()
        .expect("the first waiter after the expiry");
    assert!(g1.fencing_token() > th);
    let held = g(a.lock("exp").holders()).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].session_id, w1.session_id());
    assert_ne!(held[0].session_id, holder_session);
    assert!(!t2.is_finished(), "exactly one waiter is woken");
    g(g1.release()).await.unwrap();
    let g2 = g(t2).await.unwrap().expect("then the second");
    g(g2.release()).await.unwrap();

    // --- The election leader's session expires: the next candidate leads. ---
    eprintln!("phase: election leader expires");
    let l = connect(&e, &on_f).await;
    let cl = g(l.election("el").join(b"first")).await.expect("join");
    let Standing::Leader { epoch: e1 } = cl.standing() else {
        panic!("the first candidate leads: {:?}", cl.standing());
    };
    let n = connect(&e, &on_h).await;
    let mut cn = g(n.election("el").join(b"second")).await.expect("join");
    assert_eq!(cn.standing(), Standing::Waiting { position: 1 });
    drop(cl); // the candidacy holds a handle on the client too
    drop(l);
    let e2 = g(cn.leadership()).await.expect("promoted after the expiry");
    assert!(e2 > e1, "epochs increase: {e1} then {e2}");
    let info = g(a.election("el").leader())
        .await
        .unwrap()
        .expect("a leader");
    assert_eq!((info.session, info.epoch), (n.session_id(), e2));
    assert_eq!(info.data, b"second");

    // --- A double-barrier member's session expires while the others leave. ---
    eprintln!("phase: double-barrier member expires");
    let members = [
        connect(&e, &on_leader).await,
        connect(&e, &on_f).await,
        connect(&e, &on_h).await,
    ];
    let mut entering = Vec::new();
    for m in &members {
        let b = m.barrier("db");
        entering.push(tokio::spawn(async move { b.double_enter(3).await }));
    }
    for t in entering {
        let r = g(t).await.unwrap().expect("all three entered");
        assert_eq!(r.parties, 3);
    }
    let [m0, m1, m2] = members;
    let (b0, b1) = (m0.barrier("db"), m1.barrier("db"));
    let l0 = tokio::spawn(async move { b0.double_leave().await });
    let l1 = tokio::spawn(async move { b1.double_leave().await });
    drop(m2); // expires while inside: it counts as left
    let r0 = g(l0).await.unwrap().expect("released after the expiry");
    let r1 = g(l1).await.unwrap().expect("released after the expiry");
    assert_eq!(r0.generation, r1.generation);
    assert_eq!(r0.parties, 2, "two left by double_leave, one by expiring");

    for x in [a, b, c, w1, w2, n, m0, m1] {
        let _ = x.close().await;
    }
    e.assert_converged(GUARD).expect("converged");
}
