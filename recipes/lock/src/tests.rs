//! Native tests against `wazoo_sdk::testing::Harness`.

use std::collections::{BTreeMap, VecDeque};

use super::*;
use wazoo_sdk::testing::{CallResult, Harness};
use wazoo_sdk::Rng;

fn name(n: &str) -> NameArgs {
    NameArgs { name: n.into() }
}

fn acq(n: &str) -> AcquireArgs {
    AcquireArgs {
        name: n.into(),
        ..Default::default()
    }
}

fn acq_timeout(n: &str, timeout_ms: i64) -> AcquireArgs {
    AcquireArgs {
        name: n.into(),
        timeout_ms: Some(timeout_ms),
        ..Default::default()
    }
}

fn sem(n: &str, permits: u32) -> AcquireArgs {
    AcquireArgs {
        name: n.into(),
        permits: Some(permits),
        ..Default::default()
    }
}

fn resume(mut a: AcquireArgs) -> AcquireArgs {
    a.resume = Some(true);
    a
}

fn rel(n: &str) -> ReleaseArgs {
    ReleaseArgs {
        name: n.into(),
        token: None,
    }
}

fn holder_of(h: &mut Harness, s: i64, n: &str) -> Option<Holder> {
    h.call(s, "holder", &name(n)).reply()
}

fn waiter_calls(h: &mut Harness, s: i64, n: &str) -> Vec<i64> {
    h.call(s, "waiters", &name(n))
        .reply::<Vec<Waiter>>()
        .into_iter()
        .map(|w| w.call_id)
        .collect()
}

fn granted_of(h: &Harness, call: &CallResult) -> Option<Granted> {
    h.completion_as::<Granted>(call.call_id)
        .map(|r| r.expect("granted"))
}

fn seed(test: &str) -> u64 {
    wazoo_sdk::testing::test_seed(test, "LOCK_SEED")
}

#[test]
fn free_lock_is_granted_at_once_with_its_holder_node() {
    let mut h = Harness::new::<Lock>();
    let s = h.open_session();
    let r = h.call(s, "acquire", &acq("a"));
    let g: Granted = r.reply();
    assert!(g.granted);
    assert_eq!(g.token, r.call_id);
    assert_eq!(g.path, holder_path("a", g.token, s, Mode::Exclusive));
    assert_eq!(g.since, h.now_ms());
    // The holder znode: ephemeral of the holder, czxid = token.
    let stat = h.stat(&g.path).expect("holder node");
    assert_eq!(stat.ephemeral_owner, s);
    assert_eq!(stat.czxid, g.token);
    let info: LockInfo = h.get_as(&lock_path("a")).unwrap();
    assert_eq!(info.kind, Kind::Mutex);
    let holder = holder_of(&mut h, s, "a").unwrap();
    assert_eq!(
        holder,
        Holder {
            session_id: s,
            token: g.token,
            since: g.since,
            mode: Mode::Exclusive,
            path: g.path.clone(),
        }
    );
    assert_eq!(h.get_as::<Holder>(&g.path), Some(holder));
    assert_eq!(
        h.get_as::<Vec<String>>(&index_path(s)),
        Some(vec!["a".to_string()])
    );
    assert!(h.watched_sessions().contains(&s));

    assert_eq!(
        h.call(s, "acquire", &acq("a")).failure(),
        Some(ALREADY_HELD)
    );
    h.call(s, "release", &rel("a")).reply::<()>();
    assert_eq!(holder_of(&mut h, s, "a"), None);
    // Tidy: nothing left of the lock once free; the session's index stays until
    // the session ends (a re-grant then costs no index write).
    assert!(h.stat(&lock_path("a")).is_none());
    assert_eq!(
        h.get_as::<Vec<String>>(&index_path(s)),
        Some(vec!["a".to_string()])
    );
    let index_version = h.stat(&index_path(s)).unwrap().version;
    h.call(s, "acquire", &acq("a")).reply::<Granted>();
    h.call(s, "release", &rel("a")).reply::<()>();
    assert_eq!(h.stat(&index_path(s)).unwrap().version, index_version);
    assert!(h.watched_sessions().contains(&s));
    assert_eq!(
        h.call(s, "release", &rel("a")).failure(),
        Some(NOT_THE_HOLDER)
    );
    for bad in ["x/y", "", ".sessions"] {
        assert!(h
            .call(s, "acquire", &acq(bad))
            .failure()
            .unwrap()
            .contains("bad lock name"));
    }
}

#[test]
fn waiters_are_served_in_fifo_order_with_increasing_tokens() {
    let mut h = Harness::new::<Lock>();
    let sessions: Vec<i64> = (0..4).map(|_| h.open_session()).collect();
    let first: Granted = h.call(sessions[0], "acquire", &acq("a")).reply();
    let waits: Vec<_> = sessions[1..]
        .iter()
        .map(|s| h.call(*s, "acquire", &acq("a")))
        .collect();
    assert!(waits.iter().all(|w| w.is_parked()));
    assert_eq!(
        waiter_calls(&mut h, sessions[0], "a"),
        waits.iter().map(|w| w.call_id).collect::<Vec<_>>()
    );
    // Another lock is independent.
    h.call(sessions[3], "acquire", &acq("b")).reply::<Granted>();

    let mut last = first.token;
    let mut holder = sessions[0];
    for (i, w) in waits.iter().enumerate() {
        h.call(holder, "release", &rel("a")).reply::<()>();
        let g = granted_of(&h, w).expect("granted");
        assert!(g.token > last);
        assert_eq!(g.token, h.last_zxid());
        last = g.token;
        holder = sessions[i + 1];
        assert_eq!(holder_of(&mut h, holder, "a").unwrap().session_id, holder);
        assert_eq!(h.stat(&g.path).unwrap().ephemeral_owner, holder);
        // Only the next waiter was woken.
        for later in &waits[i + 1..] {
            assert_eq!(h.completion(later.call_id), None);
        }
    }
    h.call(holder, "release", &rel("a")).reply::<()>();
    assert_eq!(holder_of(&mut h, holder, "a"), None);
    assert!(h.parked().is_empty());
}

#[test]
fn release_checks_the_holder_and_the_token() {
    let mut h = Harness::new::<Lock>();
    let a = h.open_session();
    let b = h.open_session();
    let g: Granted = h.call(a, "acquire", &acq("l")).reply();
    assert_eq!(
        h.call(b, "release", &rel("l")).failure(),
        Some(NOT_THE_HOLDER)
    );
    let stale = ReleaseArgs {
        name: "l".into(),
        token: Some(g.token - 1),
    };
    assert_eq!(h.call(a, "release", &stale).failure(), Some(NOT_THE_HOLDER));
    // The wrong kind of release.
    assert!(h
        .call(a, "read_release", &rel("l"))
        .failure()
        .unwrap()
        .contains("wrong kind"));
    let good = ReleaseArgs {
        name: "l".into(),
        token: Some(g.token),
    };
    h.call(a, "release", &good).reply::<()>();
    assert_eq!(h.call(a, "release", &good).failure(), Some(NOT_THE_HOLDER));
}

#[test]
fn try_acquire_never_parks() {
    let mut h = Harness::new::<Lock>();
    let a = h.open_session();
    let b = h.open_session();
    let r = h.call(a, "try_acquire", &name("t"));
    let g: TryGrant = r.reply();
    assert!(g.granted);
    assert_eq!(g.token, Some(r.call_id));
    assert_eq!(
        g.path,
        Some(holder_path("t", r.call_id, a, Mode::Exclusive))
    );
    // The same map decodes as Granted too.
    assert_eq!(r.reply::<Granted>().token, r.call_id);

    let r = h.call(b, "try_acquire", &name("t"));
    assert_eq!(
        r.reply::<TryGrant>(),
        TryGrant {
            granted: false,
            name: "t".into(),
            token: None,
            path: None,
            since: None
        }
    );
    assert!(h.parked().is_empty());
    // A try does not jump the queue either.
    let c = h.open_session();
    let wait = h.call(c, "acquire", &acq("t"));
    assert!(wait.is_parked());
    assert!(
        !h.call(b, "try_acquire", &name("t"))
            .reply::<TryGrant>()
            .granted
    );
    h.call(a, "release", &rel("t")).reply::<()>();
    assert!(granted_of(&h, &wait).is_some());
    assert!(
        !h.call(b, "try_acquire", &name("t"))
            .reply::<TryGrant>()
            .granted
    );
    h.call(c, "release", &rel("t")).reply::<()>();
    assert!(
        h.call(b, "try_acquire", &name("t"))
            .reply::<TryGrant>()
            .granted
    );
}

#[test]
fn holder_session_closing_wakes_exactly_one_waiter() {
    let mut h = Harness::new::<Lock>();
    let owner = h.open_session();
    let w1 = h.open_session();
    let w2 = h.open_session();
    let g0: Granted = h.call(owner, "acquire", &acq("a")).reply();
    let c1 = h.call(w1, "acquire", &acq("a"));
    let c2 = h.call(w2, "acquire", &acq("a"));
    h.close_session(owner);
    // The ephemeral holder node went with the session.
    assert!(h.stat(&g0.path).is_none());
    assert!(h.stat(&index_path(owner)).is_none());
    let g1 = granted_of(&h, &c1).expect("w1 granted");
    assert!(g1.token > g0.token);
    assert_eq!(h.completion(c2.call_id), None);
    assert_eq!(h.completions().len(), 1);
    assert_eq!(h.parked().len(), 1);
    assert_eq!(holder_of(&mut h, w2, "a").unwrap().session_id, w1);
    assert!(h.event_failures().is_empty());
}

#[test]
fn cancelled_waiters_are_skipped() {
    let mut h = Harness::new::<Lock>();
    let owner = h.open_session();
    let gone = h.open_session();
    let next = h.open_session();
    h.call(owner, "acquire", &acq("a")).reply::<Granted>();
    let c_gone = h.call(gone, "acquire", &acq("a"));
    let c_next = h.call(next, "acquire", &acq("a"));
    h.close_session(gone);
    assert_eq!(waiter_calls(&mut h, owner, "a"), vec![c_next.call_id]);
    h.call(owner, "release", &rel("a")).reply::<()>();
    assert_eq!(h.completion(c_gone.call_id), None);
    assert!(granted_of(&h, &c_next).is_some());
    // The last holder leaving frees the lock.
    h.close_session(next);
    assert!(h.stat(&lock_path("a")).is_none());
    let s = h.open_session();
    h.call(s, "acquire", &acq("a")).reply::<Granted>();
    assert!(h.event_failures().is_empty());
}

#[test]
fn timeout_fails_the_waiter_and_it_leaves_the_queue() {
    let mut h = Harness::new::<Lock>();
    let a = h.open_session();
    let b = h.open_session();
    let c = h.open_session();
    h.call(a, "acquire", &acq("a")).reply::<Granted>();
    let cb = h.call(b, "acquire", &acq_timeout("a", 1_000));
    let cc = h.call(c, "acquire", &acq("a"));
    assert!(cb.is_parked() && cc.is_parked());
    let timer = format!("timeout/{}/a", cb.call_id);
    // The queue: one znode per waiting call, named after it, oldest first.
    let queue: Vec<String> = h.children(&queue_path("a")).unwrap();
    assert_eq!(queue.len(), 2);
    assert_eq!(
        QueueEntry::parse(&queue[0]).map(|e| (e.call_id, e.session_id, e.timeout)),
        Some((cb.call_id, b, true))
    );
    assert_eq!(h.timers().get(&timer), Some(&(h.now_ms() + 1_000)));
    assert!(h.fire_timers(h.now_ms() + 999).is_empty());
    assert_eq!(h.fire_timers(h.now_ms() + 1), vec![timer]);
    assert_eq!(h.completion(cb.call_id), Some(Err(TIMEOUT.to_string())));
    assert_eq!(waiter_calls(&mut h, a, "a"), vec![cc.call_id]);
    // The timed-out caller may try again; the next release goes to c.
    h.call(a, "release", &rel("a")).reply::<()>();
    assert!(granted_of(&h, &cc).is_some());
    // timeout_ms 0 fails at once instead of parking.
    assert_eq!(
        h.call(b, "acquire", &acq_timeout("a", 0)).failure(),
        Some(TIMEOUT)
    );
    assert!(h
        .call(b, "acquire", &acq_timeout("a", -1))
        .failure()
        .unwrap()
        .contains("bad arguments"));
    // A waiter granted before its timeout: the timer is cancelled.
    let cb = h.call(b, "acquire", &acq_timeout("a", 5_000));
    assert!(cb.is_parked());
    h.call(c, "release", &rel("a")).reply::<()>();
    assert!(granted_of(&h, &cb).is_some());
    assert!(h.timers().is_empty());
    // A waiter whose session ends: its timer goes too.
    let cc = h.call(c, "acquire", &acq_timeout("a", 5_000));
    assert!(cc.is_parked());
    h.close_session(c);
    assert!(h.timers().is_empty());
    assert!(h.event_failures().is_empty());
}

#[test]
fn timed_out_writer_lets_the_readers_behind_it_in() {
    let mut h = Harness::new::<Lock>();
    let r1 = h.open_session();
    let w = h.open_session();
    let r2 = h.open_session();
    h.call(r1, "read_acquire", &acq("rw")).reply::<Granted>();
    let cw = h.call(w, "write_acquire", &acq_timeout("rw", 100));
    let cr = h.call(r2, "read_acquire", &acq("rw"));
    assert!(
        cw.is_parked() && cr.is_parked(),
        "a waiting writer blocks later readers"
    );
    h.fire_timers(h.now_ms() + 100);
    assert_eq!(h.completion(cw.call_id), Some(Err(TIMEOUT.to_string())));
    let g = granted_of(&h, &cr).expect("reader granted");
    assert_eq!(g.token, h.last_zxid());
    let holders: Vec<Holder> = h.call(r1, "holders", &name("rw")).reply();
    assert_eq!(
        holders.iter().map(|h| h.session_id).collect::<Vec<_>>(),
        vec![r1, r2]
    );
    // The same with the writer's session ending.
    let cw = h.call(w, "write_acquire", &acq("rw"));
    let r3 = h.open_session();
    let cr3 = h.call(r3, "read_acquire", &acq("rw"));
    assert!(cw.is_parked() && cr3.is_parked());
    h.close_session(w);
    assert!(granted_of(&h, &cr3).is_some());
    assert!(h.event_failures().is_empty());
}

#[test]
fn revoke_takes_the_lock_and_wakes_the_next() {
    let mut h = Harness::new::<Lock>();
    let a = h.open_session();
    let b = h.open_session();
    let admin = h.open_session();
    let ga: Granted = h.call(a, "acquire", &acq("r")).reply();
    let cb = h.call(b, "acquire", &acq("r"));
    let revoked: Vec<Holder> = h.call(admin, "revoke", &name("r")).reply();
    assert_eq!(revoked.len(), 1);
    assert_eq!((revoked[0].session_id, revoked[0].token), (a, ga.token));
    assert_eq!(
        h.notifications_for::<Notice>(a),
        vec![Notice {
            event: "revoked".into(),
            name: "r".into(),
            token: ga.token,
            path: ga.path.clone(),
        }]
    );
    assert!(h.stat(&ga.path).is_none());
    let gb = granted_of(&h, &cb).expect("b granted");
    assert!(gb.token > ga.token);
    assert_eq!(holder_of(&mut h, a, "r").unwrap().session_id, b);
    // The revoked holder cannot release any more.
    assert_eq!(
        h.call(a, "release", &rel("r")).failure(),
        Some(NOT_THE_HOLDER)
    );
    // Revoking a free lock, or another session's holding: nothing.
    assert!(h
        .call(admin, "revoke", &name("free"))
        .reply::<Vec<Holder>>()
        .is_empty());
    let only_a = RevokeArgs {
        name: "r".into(),
        session_id: Some(a),
    };
    assert!(h
        .call(admin, "revoke", &only_a)
        .reply::<Vec<Holder>>()
        .is_empty());
    // A holder whose session is gone gets no notification (and the lock is free).
    h.close_session(b);
    assert!(h
        .call(admin, "revoke", &name("r"))
        .reply::<Vec<Holder>>()
        .is_empty());
    assert!(h.stat(&lock_path("r")).is_none());
}

#[test]
fn kinds_do_not_mix_and_semaphores_need_permits() {
    let mut h = Harness::new::<Lock>();
    let s = h.open_session();
    h.call(s, "acquire", &acq("m")).reply::<Granted>();
    let f = h
        .call(s, "read_acquire", &acq("m"))
        .failure()
        .unwrap()
        .to_string();
    assert!(f.contains("wrong kind") && f.contains("mutex"), "{f}");
    assert!(h
        .call(s, "sem_acquire", &acq("s"))
        .failure()
        .unwrap()
        .contains("permits required"));
    assert!(h
        .call(s, "sem_acquire", &sem("s", 0))
        .failure()
        .unwrap()
        .contains("permits must be"));
    h.call(s, "sem_acquire", &sem("s", 2)).reply::<Granted>();
    let t = h.open_session();
    assert!(h
        .call(t, "sem_acquire", &sem("s", 3))
        .failure()
        .unwrap()
        .contains("wrong permits"));
    h.call(t, "sem_acquire", &acq("s")).reply::<Granted>();
    assert_eq!(
        h.get_as::<Vec<String>>(&index_path(s)),
        Some(vec!["m".to_string(), "s".to_string()])
    );
}

#[test]
fn sem_init_declares_and_resizes() {
    let mut h = Harness::new::<Lock>();
    let s: Vec<i64> = (0..4).map(|_| h.open_session()).collect();
    let init = SemInitArgs {
        name: "pool".into(),
        permits: 1,
    };
    h.call(s[0], "sem_init", &init).reply::<()>();
    assert_eq!(
        h.get_as::<LockInfo>(&lock_path("pool")),
        Some(LockInfo {
            kind: Kind::Semaphore,
            permits: Some(1),
            declared: true
        })
    );
    h.call(s[0], "sem_acquire", &acq("pool")).reply::<Granted>();
    let c1 = h.call(s[1], "sem_acquire", &acq("pool"));
    let c2 = h.call(s[2], "sem_acquire", &acq("pool"));
    let c3 = h.call(s[3], "sem_acquire", &acq("pool"));
    // Two more permits: the two oldest waiters get in, in one operation.
    let grow = SemInitArgs {
        name: "pool".into(),
        permits: 3,
    };
    h.call(s[0], "sem_init", &grow).reply::<()>();
    let (g1, g2) = (granted_of(&h, &c1).unwrap(), granted_of(&h, &c2).unwrap());
    assert_eq!(g1.token, g2.token);
    assert!(c3.is_parked() && h.completion(c3.call_id).is_none());
    for x in &s[..3] {
        h.call(*x, "sem_release", &rel("pool")).reply::<()>();
    }
    assert!(granted_of(&h, &c3).is_some());
    h.call(s[3], "sem_release", &rel("pool")).reply::<()>();
    // Declared: kept while unused.
    assert!(h.stat(&lock_path("pool")).is_some());
    assert!(
        h.call(s[0], "sem_try_acquire", &acq("pool"))
            .reply::<TryGrant>()
            .granted
    );
}

// --- the model-checked stress test ---

/// The lock's expected behaviour, to check the recipe against: strict FIFO, grants in
/// queue order while the head fits.
struct Model {
    permits: usize,
    holders: BTreeMap<i64, Mode>,
    /// (call id, session, mode, timeout deadline)
    queue: VecDeque<(i64, i64, Mode, Option<i64>)>,
}

impl Model {
    fn fits(&self, mode: Mode) -> bool {
        match mode {
            Mode::Exclusive | Mode::Write => self.holders.is_empty(),
            Mode::Read => self.holders.values().all(|m| *m == Mode::Read),
            Mode::Permit => self.holders.len() < self.permits,
        }
    }

    /// Grants from the head of the queue; returns the call ids granted, in order.
    fn wake(&mut self) -> Vec<(i64, bool)> {
        let mut out = Vec::new();
        while let Some(&(call, session, mode, _)) = self.queue.front() {
            if !self.fits(mode) {
                break;
            }
            self.queue.pop_front();
            self.holders.insert(session, mode);
            out.push((call, true));
        }
        out
    }
}

/// What the sessions know from their replies: checked for mutual exclusion.
#[derive(Default)]
struct Observed {
    holders: BTreeMap<i64, (Mode, i64)>, // session -> (mode, token)
    max_token: i64,
    max_readers: usize,
    max_permits: usize,
}

struct Stress {
    h: Harness,
    rng: Rng,
    lock: &'static str,
    modes: Vec<Mode>,
    model: Model,
    seen: Observed,
    idle: Vec<i64>,
    admin: i64,
    waiting: BTreeMap<i64, i64>, // session -> call id
    call_owner: BTreeMap<i64, (i64, Mode)>,
    completions_seen: usize,
    requests: usize,
    grants: usize,
    cancelled: usize,
    timeouts: usize,
    revoked: usize,
    last_op_zxid: i64,
}

impl Stress {
    fn new(seed: u64, modes: Vec<Mode>, permits: usize) -> Stress {
        let mut h = Harness::new::<Lock>();
        let idle = (0..64).map(|_| h.open_session()).collect();
        let admin = h.open_session();
        Stress {
            h,
            rng: Rng::new(seed),
            lock: "L",
            modes,
            model: Model {
                permits,
                holders: BTreeMap::new(),
                queue: VecDeque::new(),
            },
            seen: Observed::default(),
            idle,
            admin,
            waiting: BTreeMap::new(),
            call_owner: BTreeMap::new(),
            completions_seen: 0,
            requests: 0,
            grants: 0,
            cancelled: 0,
            timeouts: 0,
            revoked: 0,
            last_op_zxid: 0,
        }
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.below(items.len() as u64) as usize]
    }

    /// Records a grant the recipe made (reply or completion) and checks the invariants.
    fn observe_grant(&mut self, session: i64, mode: Mode, g: &Granted) {
        let zxid = self.h.last_zxid();
        assert_eq!(
            g.token, zxid,
            "the token is the zxid of the granting operation"
        );
        // Strictly increasing across operations; grants of one operation share it.
        assert!(
            g.token > self.seen.max_token
                || (g.token == self.seen.max_token && g.token == self.last_op_zxid),
            "token {} after {}",
            g.token,
            self.seen.max_token
        );
        if matches!(mode, Mode::Exclusive | Mode::Write) {
            assert!(
                g.token > self.seen.max_token,
                "an exclusive grant shares no token"
            );
        }
        self.seen.max_token = g.token;
        self.last_op_zxid = zxid;
        assert!(self.seen.holders.insert(session, (mode, g.token)).is_none());
        self.grants += 1;
        let holders = &self.seen.holders;
        let writers = holders
            .values()
            .filter(|(m, _)| matches!(m, Mode::Exclusive | Mode::Write))
            .count();
        let readers = holders.values().filter(|(m, _)| *m == Mode::Read).count();
        let permits = holders.values().filter(|(m, _)| *m == Mode::Permit).count();
        assert!(writers <= 1, "two exclusive holders: {holders:?}");
        assert!(
            writers == 0 || holders.len() == 1,
            "a writer with others: {holders:?}"
        );
        assert!(
            permits <= self.model.permits,
            "more than {} permits: {holders:?}",
            self.model.permits
        );
        self.seen.max_readers = self.seen.max_readers.max(readers);
        self.seen.max_permits = self.seen.max_permits.max(permits);
        let stat = self.h.stat(&g.path).expect("holder node");
        assert_eq!((stat.czxid, stat.ephemeral_owner), (g.token, session));
    }

    /// Checks the completions of the last operation against the model's: (call id,
    /// granted or timed out), in order.
    fn check_wake(&mut self, expected: Vec<(i64, bool)>) {
        let all = self.h.completions();
        let new = all[self.completions_seen..].to_vec();
        self.completions_seen = all.len();
        let got: Vec<(i64, bool)> = new.iter().map(|(id, r)| (*id, r.is_ok())).collect();
        assert_eq!(
            got, expected,
            "FIFO: the recipe completed {got:?}, the model {expected:?}"
        );
        for (call_id, result) in new {
            let (session, mode) = self.call_owner[&call_id];
            assert_eq!(self.waiting.remove(&session), Some(call_id));
            match result {
                Ok(bytes) => {
                    let g: Granted = wazoo_sdk::decode(&bytes).unwrap();
                    self.observe_grant(session, mode, &g);
                }
                Err(e) => {
                    assert_eq!(e, TIMEOUT);
                    self.timeouts += 1;
                    self.idle.push(session);
                }
            }
        }
    }

    fn request(&mut self, session: i64) {
        let mode = if self.modes.len() == 2 && self.rng.below(10) < 3 {
            Mode::Write
        } else {
            self.modes[0]
        };
        let timeout_ms = (self.rng.below(4) == 0).then(|| 1 + self.rng.below(100) as i64);
        let args = AcquireArgs {
            name: self.lock.into(),
            timeout_ms,
            permits: (mode == Mode::Permit).then_some(self.model.permits as u32),
            resume: None,
        };
        self.idle.retain(|s| *s != session);
        let r = self.h.call(session, mode.acquire_function(), &args);
        self.requests += 1;
        self.call_owner.insert(r.call_id, (session, mode));
        let at_once = self.model.queue.is_empty() && self.model.fits(mode);
        if at_once {
            assert!(
                r.is_replied(),
                "free lock not granted at once: {:?}",
                r.outcome
            );
            self.model.holders.insert(session, mode);
            let g: Granted = r.reply();
            self.observe_grant(session, mode, &g);
        } else {
            assert!(r.is_parked(), "busy lock did not park: {:?}", r.outcome);
            let deadline = timeout_ms.map(|t| self.h.now_ms() + t);
            self.model
                .queue
                .push_back((r.call_id, session, mode, deadline));
            self.waiting.insert(session, r.call_id);
        }
        self.check_wake(Vec::new());
    }

    fn release(&mut self, session: i64) {
        let (mode, token) = self.seen.holders.remove(&session).expect("holder");
        let args = ReleaseArgs {
            name: self.lock.into(),
            token: Some(token),
        };
        self.h
            .call(session, mode.release_function(), &args)
            .reply::<()>();
        self.model.holders.remove(&session);
        let expected = self.model.wake();
        self.check_wake(expected);
        self.idle.push(session);
    }

    fn close(&mut self, session: i64) {
        self.h.close_session(session);
        self.seen.holders.remove(&session);
        self.model.holders.remove(&session);
        if let Some(call) = self.waiting.remove(&session) {
            self.model.queue.retain(|q| q.0 != call);
            self.cancelled += 1;
        }
        self.idle.retain(|s| *s != session);
        let expected = self.model.wake();
        self.check_wake(expected);
        // Keep 64 sessions.
        let fresh = self.h.open_session();
        self.idle.push(fresh);
    }

    /// Time passes: the waiters whose timeout is due fail, earliest first (then by
    /// timer name, as the host fires them), each one waking what fits behind it.
    fn tick(&mut self) {
        let now = self.h.now_ms() + self.rng.below(40) as i64;
        let mut due: Vec<(i64, String, i64)> = self
            .model
            .queue
            .iter()
            .filter_map(|q| {
                q.3.filter(|d| *d <= now)
                    .map(|d| (d, format!("timeout/{}/{}", q.0, self.lock), q.0))
            })
            .collect();
        due.sort();
        self.h.fire_timers(now);
        let mut expected = Vec::new();
        for (_, _, call) in due {
            // Granted by an earlier timer of this tick: its timer was cancelled.
            if !self.model.queue.iter().any(|q| q.0 == call) {
                continue;
            }
            self.model.queue.retain(|q| q.0 != call);
            expected.push((call, false));
            expected.extend(self.model.wake());
        }
        self.check_wake(expected);
    }

    fn revoke(&mut self) {
        let before = self.h.notifications().len();
        let revoked: Vec<Holder> = self.h.call(self.admin, "revoke", &name(self.lock)).reply();
        let revoked: BTreeMap<i64, i64> = revoked.iter().map(|h| (h.session_id, h.token)).collect();
        let expected: BTreeMap<i64, i64> = self
            .seen
            .holders
            .iter()
            .map(|(s, (_, t))| (*s, *t))
            .collect();
        assert_eq!(revoked, expected);
        let notes = &self.h.notifications()[before..];
        assert_eq!(notes.len(), revoked.len());
        for (s, payload) in notes {
            let n: Notice = wazoo_sdk::decode(payload).unwrap();
            assert_eq!((n.event.as_str(), n.token), ("revoked", revoked[s]));
        }
        self.revoked += revoked.len();
        for s in revoked.keys() {
            self.idle.push(*s);
        }
        self.seen.holders.clear();
        self.model.holders.clear();
        let expected = self.model.wake();
        self.check_wake(expected);
    }

    /// Compares the recipe's view (holders, waiters) with the model's.
    fn compare_views(&mut self) {
        let probe = self.admin;
        let holders: Vec<Holder> = self.h.call(probe, "holders", &name(self.lock)).reply();
        let holders: BTreeMap<i64, Mode> = holders.iter().map(|h| (h.session_id, h.mode)).collect();
        assert_eq!(holders, self.model.holders);
        let waiters: Vec<Waiter> = self.h.call(probe, "waiters", &name(self.lock)).reply();
        let waiters: Vec<i64> = waiters.iter().map(|w| w.call_id).collect();
        let model: Vec<i64> = self.model.queue.iter().map(|q| q.0).collect();
        assert_eq!(waiters, model);
        // No lost wake-up: somebody waits only if somebody holds.
        assert!(
            waiters.is_empty() || !holders.is_empty(),
            "waiters but no holder"
        );
        self.check_wake(Vec::new());
    }

    fn run(&mut self, steps: usize) {
        // Everybody asks at once.
        for s in self.idle.clone() {
            self.request(s);
        }
        for step in 0..steps {
            let holders: Vec<i64> = self.seen.holders.keys().copied().collect();
            let waiters: Vec<i64> = self.waiting.keys().copied().collect();
            match self.rng.below(40) {
                0..=21 if !holders.is_empty() => {
                    let s = self.pick(&holders);
                    self.release(s);
                }
                22..=26 if !holders.is_empty() => {
                    let s = self.pick(&holders);
                    self.close(s);
                }
                27..=28 if !waiters.is_empty() => {
                    let s = self.pick(&waiters);
                    self.close(s);
                }
                29..=31 => self.tick(),
                32 => self.revoke(),
                _ if !self.idle.is_empty() => {
                    let idle = self.idle.clone();
                    let s = self.pick(&idle);
                    self.request(s);
                }
                _ => {}
            }
            if step % 16 == 0 {
                self.compare_views();
            }
        }
        // Drain: holders release (or go away) until nobody waits. Every waiter gets its
        // turn or times out.
        while let Some(&s) = self.seen.holders.keys().next() {
            if self.rng.below(4) == 0 {
                self.close(s);
            } else {
                self.release(s);
            }
        }
        self.compare_views();
        assert!(self.waiting.is_empty(), "lost wake-ups: {:?}", self.waiting);
        assert!(self.model.queue.is_empty());
        assert!(self.h.parked().is_empty());
        assert!(
            self.h.timers().is_empty(),
            "timers left: {:?}",
            self.h.timers()
        );
        assert_eq!(self.requests, self.grants + self.cancelled + self.timeouts);
        assert!(
            self.h.event_failures().is_empty(),
            "{:?}",
            self.h.event_failures()
        );
        // Tidy: the lock's znodes are gone, and only open sessions have an index.
        assert!(self.h.stat(&lock_path(self.lock)).is_none());
        for index in self.h.children(SESSIONS).unwrap_or_default() {
            let session = u64::from_str_radix(&index, 16).unwrap() as i64;
            assert!(
                self.h.session_alive(session),
                "index {index} of an ended session"
            );
        }
    }

    fn summary(&self, what: &str) {
        println!(
            "{what}: {} requests, {} grants ({} revoked), {} cancelled, {} timed out, \
             up to {} readers / {} permits at once",
            self.requests,
            self.grants,
            self.revoked,
            self.cancelled,
            self.timeouts,
            self.seen.max_readers,
            self.seen.max_permits
        );
    }
}

#[test]
fn stress_64_sessions_exclusive_lock() {
    let seed = seed("exclusive");
    let mut st = Stress::new(seed, vec![Mode::Exclusive], 1);
    st.run(2_000);
    st.summary("exclusive");
    assert!(st.grants > 200 && st.timeouts > 0 && st.cancelled > 0);
}

#[test]
fn stress_64_sessions_rwlock() {
    let seed = seed("rwlock");
    let mut st = Stress::new(seed, vec![Mode::Read, Mode::Write], usize::MAX);
    st.run(2_000);
    st.summary("rwlock");
    assert!(st.seen.max_readers > 1, "readers never shared");
}

#[test]
fn stress_64_sessions_semaphore_of_3() {
    let seed = seed("semaphore");
    let mut st = Stress::new(seed, vec![Mode::Permit], 3);
    st.run(2_000);
    st.summary("semaphore");
    assert_eq!(st.seen.max_permits, 3);
}

#[test]
fn stress_fixed_seeds() {
    // A few fixed seeds always run, whatever $LOCK_SEED says.
    for seed in [1, 2, 0xdead_beef] {
        Stress::new(seed, vec![Mode::Exclusive], 1).run(400);
        Stress::new(seed, vec![Mode::Read, Mode::Write], usize::MAX).run(400);
        Stress::new(seed, vec![Mode::Permit], 3).run(400);
    }
}

#[test]
fn holder_names_round_trip() {
    for (token, session, mode) in [
        (42, 0x1000, Mode::Exclusive),
        (i64::MAX, -2, Mode::Read),
        (7, i64::MIN, Mode::Permit),
    ] {
        let path = holder_path("n", token, session, mode);
        let child = path.rsplit('/').next().unwrap();
        assert_eq!(parse_holder(child), Some((token, session, mode)), "{child}");
    }
    assert_eq!(parse_holder("junk"), None);
}

/// A waiter whose connection was lost retries with `resume`: while it still waits, the
/// retry waits with its earlier call (same place, completed together); once granted,
/// the retry replies the grant at once. Nobody behind it moves ahead.
#[test]
fn resume_keeps_the_place_and_finds_a_lost_grant() {
    let mut h = Harness::new::<Lock>();
    let (s1, s2, s3) = (h.open_session(), h.open_session(), h.open_session());
    let g1: Granted = h.call(s1, "acquire", &acq("r")).reply();
    let c2 = h.call(s2, "acquire", &acq("r"));
    assert!(c2.is_parked());
    let c3 = h.call(s3, "acquire", &acq("r"));
    assert!(c3.is_parked());
    // s2 lost its connection and retries: a shadow of c2, not a second place.
    let c2r = h.call(s2, "acquire", &resume(acq("r")));
    assert!(c2r.is_parked());
    assert!(h.completion(c2r.call_id).is_none());
    // A resume without an earlier call is a plain acquire (queued behind s3 here).
    h.call(s1, "release", &rel("r")).reply::<()>();
    let g2 = granted_of(&h, &c2).expect("s2 is next");
    assert_eq!(
        granted_of(&h, &c2r),
        Some(g2.clone()),
        "the shadow gets the same grant"
    );
    assert!(g2.token > g1.token);
    assert!(h.completion(c3.call_id).is_none(), "s3 stays behind s2");
    // The grant's completion was lost too: a second retry finds it held.
    let again: Granted = h.call(s2, "acquire", &resume(acq("r"))).reply();
    assert_eq!(again, g2);
    // A try that lost its reply resumes the same way (it never parks).
    let tried: TryGrant = h.call(s2, "try_acquire", &resume(acq("r"))).reply();
    assert_eq!((tried.granted, tried.token), (true, Some(g2.token)));
    // Without resume, asking again is still an error.
    assert_eq!(
        h.call(s2, "acquire", &acq("r")).failure(),
        Some(ALREADY_HELD)
    );
    h.call(s2, "release", &rel("r")).reply::<()>();
    let g3 = granted_of(&h, &c3).expect("then s3");
    assert!(g3.token > g2.token);
    // Resume with nothing to resume: a plain acquire (parks behind s3).
    let c1 = h.call(s1, "acquire", &resume(acq("r")));
    assert!(c1.is_parked());
    h.call(s3, "release", &rel("r")).reply::<()>();
    assert!(granted_of(&h, &c1).is_some());
}

/// A shadow times out with the call it waits with, and does not block the queue.
#[test]
fn resumed_waiter_times_out_with_its_first_call() {
    let mut h = Harness::new::<Lock>();
    let (s1, s2, s3) = (h.open_session(), h.open_session(), h.open_session());
    h.call(s1, "write_acquire", &acq("t")).reply::<Granted>();
    let c2 = h.call(s2, "write_acquire", &acq_timeout("t", 1000));
    let c2r = h.call(s2, "write_acquire", &resume(acq_timeout("t", 1000)));
    assert!(c2.is_parked() && c2r.is_parked());
    let c3 = h.call(s3, "read_acquire", &acq("t"));
    assert!(c3.is_parked());
    h.fire_timers(h.now_ms() + 1000);
    assert_eq!(h.completion(c2.call_id), Some(Err(TIMEOUT.to_string())));
    assert_eq!(h.completion(c2r.call_id), Some(Err(TIMEOUT.to_string())));
    h.call(s1, "write_release", &rel("t")).reply::<()>();
    assert!(granted_of(&h, &c3).is_some(), "the reader behind is let in");
}

/// A lock made by an earlier version of the recipe had no queue znodes (its queue was
/// the module's parked calls alone): the first operation builds the queue from them,
/// and the waiters keep their order.
#[test]
fn a_lock_without_queue_znodes_gets_its_queue_from_the_parked_calls() {
    let mut h = Harness::new::<Lock>();
    let (a, b, c) = (h.open_session(), h.open_session(), h.open_session());
    h.call(a, "acquire", &acq("a")).reply::<Granted>();
    let cb = h.call(b, "acquire", &acq("a"));
    let cc = h.call(c, "acquire", &acq("a"));
    // Back to the earlier layout.
    for child in h.children(&queue_path("a")).unwrap() {
        h.delete(&format!("{}/{child}", queue_path("a")), -1)
            .unwrap();
    }
    h.delete(&queue_path("a"), -1).unwrap();
    assert_eq!(waiter_calls(&mut h, a, "a"), vec![cb.call_id, cc.call_id]);
    assert_eq!(h.children(&queue_path("a")).unwrap().len(), 2);
    h.call(a, "release", &rel("a")).reply::<()>();
    assert!(granted_of(&h, &cb).is_some());
    assert_eq!(h.completion(cc.call_id), None);
    h.call(b, "release", &rel("a")).reply::<()>();
    assert!(granted_of(&h, &cc).is_some());
    h.call(c, "release", &rel("a")).reply::<()>();
    assert!(h.stat(&lock_path("a")).is_none());
}

/// The session index is kept after a release (no write per re-grant) but stays
/// bounded: past INDEX_PRUNE_AT names it keeps only the locks still held.
#[test]
fn session_index_stays_bounded() {
    let mut h = Harness::new::<Lock>();
    let s = h.open_session();
    h.call(s, "acquire", &acq("kept")).reply::<Granted>();
    for i in 0..(3 * INDEX_PRUNE_AT) {
        let n = format!("l{i}");
        h.call(s, "acquire", &acq(&n)).reply::<Granted>();
        h.call(s, "release", &rel(&n)).reply::<()>();
        let names: Vec<String> = h.get_as(&index_path(s)).unwrap();
        assert!(names.len() <= INDEX_PRUNE_AT, "{} names", names.len());
        assert!(names.contains(&"kept".to_string()) && names.contains(&n));
    }
    // A later session end still wakes the waiters of the lock it holds.
    let w = h.open_session();
    let cw = h.call(w, "acquire", &acq("kept"));
    h.close_session(s);
    assert!(granted_of(&h, &cw).is_some());
    assert!(h.stat(&index_path(s)).is_none());
}

/// A parked acquire with a timeout left by the earlier version of the recipe: no queue
/// znodes, and its timer named `timeout/<call id>` only. When the timer fires the call
/// fails with `timeout`, leaves the (migrated) queue, and the waiter behind it moves up.
#[test]
fn a_timer_of_the_earlier_version_still_times_the_waiter_out() {
    let mut h = Harness::new::<Lock>();
    let (a, b, c) = (h.open_session(), h.open_session(), h.open_session());
    h.call(a, "acquire", &acq("a")).reply::<Granted>();
    let cb = h.call(b, "acquire", &acq_timeout("a", 1_000));
    let cc = h.call(c, "acquire", &acq("a"));
    // Back to the earlier layout: no queue znodes, the timer under its old name.
    for child in h.children(&queue_path("a")).unwrap() {
        h.delete(&format!("{}/{child}", queue_path("a")), -1)
            .unwrap();
    }
    h.delete(&queue_path("a"), -1).unwrap();
    let due = h
        .set_timer(&format!("timeout/{}/a", cb.call_id), None)
        .expect("the new timer");
    h.set_timer(&format!("timeout/{}", cb.call_id), Some(due));
    assert_eq!(h.fire_timers(due), vec![format!("timeout/{}", cb.call_id)]);
    assert_eq!(h.completion(cb.call_id), Some(Err(TIMEOUT.to_string())));
    assert_eq!(waiter_calls(&mut h, a, "a"), vec![cc.call_id]);
    h.call(a, "release", &rel("a")).reply::<()>();
    assert!(granted_of(&h, &cc).is_some());
    assert!(h.timers().is_empty());
    assert!(h.event_failures().is_empty(), "{:?}", h.event_failures());
}
