//! `election`: leader election as a FIFO queue of candidates, with fencing epochs and
//! observers. The full reference (layout, errors) is the "## election" section of
//! docs/RECIPES.md.
//!
//! | function | arguments | reply |
//! | --- | --- | --- |
//! | `join` | `{name, data?: bin}` | `{leader: true, epoch}` if the caller leads at once, else `{leader: false, position}` (candidates ahead of it, the leader included: 1 = next in line). Later promotion arrives as the notification `{event: "elected", name, epoch}`. A session is a candidate once per election: joining again replies its current standing (its first `data` stays) |
//! | `resign` | `{name}` | `{was_leader: bool}`; the caller leaves the queue. If it led, the next candidate in join order is promoted. Fails if the session is not a candidate |
//! | `observe` | `{name}` | the current leader `{session, epoch, data, candidate}` or nil; from then on the session gets `{event: "leader", name, session, epoch, data}` at every change of leader (`session`, `epoch` and `data` nil when nobody leads) |
//! | `unobserve` | `{name}` | `bool`: whether the session was observing |
//! | `leader` | `{name}` | the current leader `{session, epoch, data, candidate}` or nil |
//!
//! State, all under `/wazoo/recipes/election/<name>/`:
//! - `candidates/c-<10 digits>`: one ephemeral sequential znode per candidate, owned by
//!   its session, data `{session_id, data}`; the leader is always the first one;
//! - `leader`: `{session, epoch, data, candidate}` while somebody leads;
//! - `observers/<session as 16 hex digits>`: one ephemeral znode per observer;
//!
//! and `/wazoo/recipes/election/.sessions/<session>/<name>`: the elections a session
//! joined or observed (until it ends), so that its end visits only those (names cannot
//! start with '.').
//!
//! Candidates and observers are ephemerals of their own sessions, so the server removes
//! them when a session ends; the recipe watches those sessions and, when one ends,
//! promotes the next candidate if the leader went away and removes empty znodes.
//!
//! The epoch of a promotion is the zxid of the operation that promoted (and, should two
//! promotions share a zxid, one more than the previous epoch), so the epochs of an
//! election strictly increase: use it as a fencing token.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use wazoo_sdk::{children_or_empty as list, delete_if_empty};
use wazoo_sdk::{Call, CreateMode, Error, ErrorCode, Event, Recipe, Result};

/// Where the elections live.
pub const ROOT: &str = "/wazoo/recipes/election";

/// The elections each session took part in (`.sessions/<session>/<name>`), so that the
/// session's end visits only those. Election names cannot start with '.'.
pub const SESSIONS: &str = "/wazoo/recipes/election/.sessions";

#[derive(Debug, Serialize, Deserialize)]
pub struct NameArgs {
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JoinArgs {
    pub name: String,
    #[serde(default)]
    pub data: Option<ByteBuf>,
}

/// The reply of `join`.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct JoinReply {
    pub leader: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct ResignReply {
    pub was_leader: bool,
}

/// The data of a `.sessions/<session>/<name>` entry: the session's candidate znode in
/// that election, if it is a candidate, so that finding it costs one read however many
/// candidates there are. Entries written before this existed are empty: then the
/// candidates are searched (as before).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionEntry {
    #[serde(default)]
    pub candidate: Option<String>,
}

/// A candidate znode's data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub session_id: i64,
    pub data: ByteBuf,
}

/// The leader znode's data, and the reply of `leader` and `observe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leader {
    pub session: i64,
    pub epoch: i64,
    pub data: ByteBuf,
    /// The leader's candidate znode (`c-<10 digits>`).
    pub candidate: String,
}

/// Sent to a candidate promoted after its `join` returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Elected {
    pub event: String,
    pub name: String,
    pub epoch: i64,
}

/// Sent to the observers at every change of leader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaderChanged {
    pub event: String,
    pub name: String,
    pub session: Option<i64>,
    pub epoch: Option<i64>,
    pub data: Option<ByteBuf>,
}

pub struct Election;

impl Recipe for Election {
    fn call(call: &Call) -> Result<()> {
        let me = call.session_id();
        match call.function() {
            "join" => {
                let JoinArgs { name, data } = call.args()?;
                check_name(&name)?;
                reconcile(&name)?;
                if let Some((node, _)) = find_candidate(&name, me)? {
                    // Already a candidate (a retry whose reply was lost?): its standing.
                    return call.reply(&standing(&name, &node)?);
                }
                let dir = candidates_dir(&name);
                wazoo_sdk::create_all(&dir)?;
                let candidate = Candidate {
                    session_id: me,
                    data: data.unwrap_or_default(),
                };
                let path = wazoo_sdk::create(
                    &format!("{dir}/c-"),
                    &wazoo_sdk::encode(&candidate)?,
                    CreateMode::ephemeral_sequential(me),
                )?;
                let node = leaf(&path).to_string();
                track_session(me, &name)?;
                wazoo_sdk::set(
                    &session_entry(me, &name),
                    &wazoo_sdk::encode(&SessionEntry {
                        candidate: Some(node.clone()),
                    })?,
                    -1,
                )?;
                if leader(&name)?.is_none() {
                    // reconcile() left no leader: the queue was empty, this is the first.
                    promote(&name, &node, candidate, false)?;
                }
                call.reply(&standing(&name, &node)?)
            }
            "resign" => {
                let NameArgs { name } = call.args()?;
                check_name(&name)?;
                reconcile(&name)?;
                let Some((node, _)) = find_candidate(&name, me)? else {
                    return Err(Error::msg(format!(
                        "session is not a candidate in election {name}"
                    )));
                };
                let was_leader = leader(&name)?.is_some_and(|l| l.candidate == node);
                wazoo_sdk::delete(&format!("{}/{node}", candidates_dir(&name)), -1)?;
                if was_leader {
                    reconcile(&name)?;
                }
                tidy(&name)?;
                call.reply(&ResignReply { was_leader })
            }
            "observe" => {
                let NameArgs { name } = call.args()?;
                check_name(&name)?;
                reconcile(&name)?;
                let path = observer_path(&name, me);
                if wazoo_sdk::exists(&path)?.is_none() {
                    wazoo_sdk::create_all(&observers_dir(&name))?;
                    wazoo_sdk::create(&path, &[], CreateMode::ephemeral(me))?;
                    track_session(me, &name)?;
                }
                call.reply(&leader(&name)?)
            }
            "unobserve" => {
                let NameArgs { name } = call.args()?;
                check_name(&name)?;
                let path = observer_path(&name, me);
                let was = wazoo_sdk::exists(&path)?.is_some();
                if was {
                    wazoo_sdk::delete(&path, -1)?;
                    tidy(&name)?;
                }
                call.reply(&was)
            }
            "leader" => {
                let NameArgs { name } = call.args()?;
                check_name(&name)?;
                reconcile(&name)?;
                call.reply(&leader(&name)?)
            }
            other => Err(Error::UnknownFunction(other.to_string())),
        }
    }

    fn event(event: &Event) -> Result<()> {
        let Event::SessionClosed { session_id, .. } = event else {
            return Ok(());
        };
        // The server already deleted the session's candidates and observers (they are
        // its ephemerals): in the elections it took part in, promote where it led and
        // drop what became empty.
        let index = format!("{SESSIONS}/{session_id:016x}");
        for name in list(&index)? {
            if leader(&name)?.is_some_and(|l| l.session == *session_id) {
                wazoo_sdk::log(format!(
                    "election {name}: leader session {session_id:#x} ended"
                ));
            }
            reconcile(&name)?;
            tidy(&name)?;
            wazoo_sdk::delete(&format!("{index}/{name}"), -1)?;
        }
        delete_if_empty(&index)?;
        delete_if_empty(SESSIONS)
    }
}

wazoo_sdk::recipe!(Election);

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(Error::msg(format!("bad election name {name:?}")));
    }
    Ok(())
}

/// Watches the session and notes that it takes part in election `name` (the entry stays
/// until the session ends).
fn track_session(session: i64, name: &str) -> Result<()> {
    let index = format!("{SESSIONS}/{session:016x}");
    let entry = session_entry(session, name);
    if wazoo_sdk::exists(&entry)?.is_none() {
        wazoo_sdk::create_all(&index)?;
        let data = wazoo_sdk::encode(&SessionEntry::default())?;
        wazoo_sdk::create(&entry, &data, CreateMode::PERSISTENT)?;
    }
    wazoo_sdk::watch_session(session)
}

/// `.sessions/<session>/<name>`.
fn session_entry(session: i64, name: &str) -> String {
    format!("{SESSIONS}/{session:016x}/{name}")
}

fn election_dir(name: &str) -> String {
    format!("{ROOT}/{name}")
}

fn candidates_dir(name: &str) -> String {
    format!("{ROOT}/{name}/candidates")
}

fn observers_dir(name: &str) -> String {
    format!("{ROOT}/{name}/observers")
}

fn leader_path(name: &str) -> String {
    format!("{ROOT}/{name}/leader")
}

fn observer_path(name: &str, session: i64) -> String {
    format!("{ROOT}/{name}/observers/{session:016x}")
}

fn leaf(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Children of `path`, sorted; empty if it does not exist.
/// The candidate znodes in join order (their sequence numbers sort as strings).
fn candidates(name: &str) -> Result<Vec<String>> {
    list(&candidates_dir(name))
}

fn candidate(name: &str, node: &str) -> Result<Option<Candidate>> {
    match wazoo_sdk::get(&format!("{}/{node}", candidates_dir(name)))? {
        Some(n) => Ok(Some(n.decode()?)),
        None => Ok(None),
    }
}

/// The session's candidate znode in `name`, if any.
fn find_candidate(name: &str, session: i64) -> Result<Option<(String, Candidate)>> {
    match wazoo_sdk::get(&session_entry(session, name))? {
        // Not tracked: never joined nor observed.
        None => return Ok(None),
        Some(entry) if !entry.data.is_empty() => {
            let e: SessionEntry = entry.decode()?;
            // The pointer may be stale (resigned, or the election was emptied and its
            // sequence numbers started over): the znode must still be this session's.
            return Ok(match e.candidate {
                Some(node) => candidate(name, &node)?
                    .filter(|c| c.session_id == session)
                    .map(|c| (node, c)),
                None => None,
            });
        }
        // An entry from before the pointer existed: search.
        Some(_) => {}
    }
    for node in candidates(name)? {
        if let Some(c) = candidate(name, &node)? {
            if c.session_id == session {
                return Ok(Some((node, c)));
            }
        }
    }
    Ok(None)
}

/// What `join` replies to the candidate `node`: its epoch if it leads, else its place.
fn standing(name: &str, node: &str) -> Result<JoinReply> {
    if let Some(l) = leader(name)? {
        if l.candidate == node {
            return Ok(JoinReply {
                leader: true,
                epoch: Some(l.epoch),
                position: None,
            });
        }
    }
    let queue = candidates(name)?;
    let position = queue.iter().position(|c| c == node).unwrap_or(queue.len());
    Ok(JoinReply {
        leader: false,
        epoch: None,
        position: Some(position as u32),
    })
}

fn leader(name: &str) -> Result<Option<Leader>> {
    match wazoo_sdk::get(&leader_path(name))? {
        Some(node) => Ok(Some(node.decode()?)),
        None => Ok(None),
    }
}

/// Makes the leader the first candidate: promotes it if the leader's candidate is gone
/// (resigned, or its session ended), or clears the leader if nobody is left. Observers
/// hear of any change; a promoted candidate gets "elected".
fn reconcile(name: &str) -> Result<()> {
    let current = leader(name)?;
    let queue = candidates(name)?;
    if let Some(l) = &current {
        if queue.first() == Some(&l.candidate) {
            return Ok(());
        }
    }
    match queue.first() {
        Some(first) => {
            let c = candidate(name, first)?.ok_or_else(|| {
                Error::msg(format!("election {name}: candidate {first} vanished"))
            })?;
            promote(name, first, c, true)?;
        }
        None => {
            if current.is_some() {
                wazoo_sdk::delete(&leader_path(name), -1)?;
                notify_observers(
                    name,
                    &LeaderChanged {
                        event: "leader".into(),
                        name: name.to_string(),
                        session: None,
                        epoch: None,
                        data: None,
                    },
                )?;
            }
        }
    }
    Ok(())
}

/// Makes candidate `node` the leader with a fresh epoch; returns the epoch.
fn promote(name: &str, node: &str, c: Candidate, notify_elected: bool) -> Result<i64> {
    let path = leader_path(name);
    let previous = leader(name)?;
    let epoch = match &previous {
        Some(p) => wazoo_sdk::zxid().max(p.epoch + 1),
        None => wazoo_sdk::zxid(),
    };
    let new = Leader {
        session: c.session_id,
        epoch,
        data: c.data,
        candidate: node.to_string(),
    };
    let bytes = wazoo_sdk::encode(&new)?;
    if previous.is_some() {
        wazoo_sdk::set(&path, &bytes, -1)?;
    } else {
        wazoo_sdk::create(&path, &bytes, CreateMode::PERSISTENT)?;
    }
    wazoo_sdk::watch_session(new.session)?;
    if notify_elected {
        notify(
            new.session,
            &Elected {
                event: "elected".into(),
                name: name.to_string(),
                epoch,
            },
        )?;
    }
    notify_observers(
        name,
        &LeaderChanged {
            event: "leader".into(),
            name: name.to_string(),
            session: Some(new.session),
            epoch: Some(epoch),
            data: Some(new.data.clone()),
        },
    )?;
    Ok(epoch)
}

fn notify<T: Serialize>(session: i64, message: &T) -> Result<()> {
    match wazoo_sdk::notify(session, message) {
        // Gone in the meantime: its ephemerals go with it, nothing to tell.
        Err(e) if e.code() == Some(ErrorCode::SessionExpired) => Ok(()),
        other => other,
    }
}

fn notify_observers(name: &str, message: &LeaderChanged) -> Result<()> {
    let payload = wazoo_sdk::encode(message)?;
    for observer in list(&observers_dir(name))? {
        let Ok(session) = u64::from_str_radix(&observer, 16).map(|v| v as i64) else {
            continue;
        };
        match wazoo_sdk::notify_raw(session, payload.clone()) {
            Err(e) if e.code() == Some(ErrorCode::SessionExpired) => {}
            other => other?,
        }
    }
    Ok(())
}

/// Deletes `path` if it has no children (and exists).
/// Removes the election's empty znodes: nobody waiting and nobody watching, nothing left.
fn tidy(name: &str) -> Result<()> {
    delete_if_empty(&candidates_dir(name))?;
    delete_if_empty(&observers_dir(name))?;
    delete_if_empty(&election_dir(name))
}

#[cfg(test)]
mod tests;
