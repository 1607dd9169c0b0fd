//! Session liveness, kept by the leader with its own clock (ZooKeeper's
//! `SessionTrackerImpl`). Expiry is only *decided* here: the decision is proposed as
//! an `ExpireSessions` log entry, and the state machine applies it on every replica.

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct SessionTracker {
    sessions: Mutex<HashMap<i64, Tracked>>,
    /// Sessions with traffic on this server since the last liveness report to the
    /// leader (`super::cluster::liveness_loop`).
    activity: Mutex<HashSet<i64>>,
}

struct Tracked {
    timeout: Duration,
    deadline: Instant,
    /// Set once an expiry has been proposed, so it is not proposed again every tick.
    expiring: bool,
}

impl SessionTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts tracking a session (new, or restored after a restart: a fresh timeout).
    pub fn add(&self, id: i64, timeout_ms: i32) {
        let timeout = Duration::from_millis(timeout_ms.max(0) as u64);
        self.sessions.lock().insert(
            id,
            Tracked {
                timeout,
                deadline: Instant::now() + timeout,
                expiring: false,
            },
        );
    }

    /// Traffic from the session: push its deadline out. False if it is not tracked
    /// (expired or closed).
    pub fn touch(&self, id: i64) -> bool {
        match self.sessions.lock().get_mut(&id) {
            Some(t) if !t.expiring => {
                t.deadline = Instant::now() + t.timeout;
                true
            }
            _ => false,
        }
    }

    /// Tracks `id` with a fresh timeout unless it is tracked already. False if it is
    /// tracked and being expired.
    pub fn add_if_absent(&self, id: i64, timeout_ms: i32) -> bool {
        let timeout = Duration::from_millis(timeout_ms.max(0) as u64);
        let mut g = self.sessions.lock();
        let t = g.entry(id).or_insert_with(|| Tracked {
            timeout,
            deadline: Instant::now() + timeout,
            expiring: false,
        });
        !t.expiring
    }

    /// A new leader's view: exactly these sessions, each with a fresh timeout (nothing
    /// this server knew as a follower says when their clients were last heard).
    pub fn reset(&self, sessions: &[(i64, i32)]) {
        let now = Instant::now();
        let mut g = self.sessions.lock();
        g.clear();
        for (id, timeout_ms) in sessions {
            let timeout = Duration::from_millis((*timeout_ms).max(0) as u64);
            g.insert(
                *id,
                Tracked {
                    timeout,
                    deadline: now + timeout,
                    expiring: false,
                },
            );
        }
    }

    /// Drops tracked sessions the replicated table no longer has (closed or expired
    /// through another server's proposal), so they are not proposed for expiry.
    pub fn retain(&self, live: impl Fn(i64) -> bool) {
        self.sessions.lock().retain(|id, _| live(*id));
    }

    /// Notes traffic from `id` for the next liveness report.
    pub fn note_activity(&self, id: i64) {
        self.activity.lock().insert(id);
    }

    /// The sessions with traffic since the previous call.
    pub fn take_activity(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = std::mem::take(&mut *self.activity.lock())
            .into_iter()
            .collect();
        ids.sort_unstable();
        ids
    }

    pub fn remove(&self, id: i64) {
        self.sessions.lock().remove(&id);
    }

    /// Sessions past their deadline that have not been proposed for expiry yet.
    pub fn take_expired(&self, now: Instant) -> Vec<i64> {
        let mut g = self.sessions.lock();
        let mut ids: Vec<i64> = g
            .iter_mut()
            .filter(|(_, t)| !t.expiring && t.deadline <= now)
            .map(|(id, t)| {
                t.expiring = true;
                *id
            })
            .collect();
        ids.sort();
        ids
    }

    /// An expiry proposal failed (e.g. lost leadership): consider them again later.
    pub fn retry(&self, ids: &[i64]) {
        let mut g = self.sessions.lock();
        for id in ids {
            if let Some(t) = g.get_mut(id) {
                t.expiring = false;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_once_and_touch_extends() {
        let t = SessionTracker::new();
        t.add(1, 0);
        t.add(2, 60_000);
        let later = Instant::now() + Duration::from_millis(1);
        assert_eq!(t.take_expired(later), vec![1]);
        assert_eq!(t.take_expired(later), Vec::<i64>::new(), "proposed once");
        assert!(!t.touch(1), "an expiring session is not revived by traffic");
        assert!(t.touch(2));
        t.retry(&[1]);
        assert_eq!(t.take_expired(later), vec![1]);
    }

    #[test]
    fn reset_gives_fresh_timeouts_and_activity_is_drained_once() {
        let t = SessionTracker::new();
        t.add(1, 0);
        let later = Instant::now() + Duration::from_millis(1);
        assert_eq!(t.take_expired(later), vec![1]);
        // A new leader: session 1 is not expiring any more, session 2 is now tracked.
        t.reset(&[(1, 60_000), (2, 60_000)]);
        assert_eq!(t.take_expired(later), Vec::<i64>::new());
        assert!(t.touch(1) && t.touch(2));
        assert!(t.add_if_absent(3, 60_000));
        t.retain(|id| id != 2);
        assert_eq!(t.len(), 2);
        t.note_activity(5);
        t.note_activity(4);
        t.note_activity(5);
        assert_eq!(t.take_activity(), vec![4, 5]);
        assert!(t.take_activity().is_empty());
    }
}
