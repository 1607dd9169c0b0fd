//! `config`: configuration broadcast. Keys hold versioned values; subscribers get every
//! new value pushed to their session, in order, without re-reading. The full reference
//! (layout, errors, limits) is the "## config" section of docs/RECIPES.md.
//!
//! | function | arguments | reply |
//! | --- | --- | --- |
//! | `publish` | `{key, value: bin, expected_version?}` | `{version}`. With `expected_version`, only if the key is at that version (0: the key does not exist yet), else fails "version mismatch: ..." |
//! | `get` | `{key}` | `{key, value, version}` or nil |
//! | `subscribe` | `{key, prefix?: bool}` | `{entries: [{key, value, version}]}`: the current value of `key` (or of every key starting with `key` when `prefix`), sorted by key; from then on every `publish` to a matching key is pushed as `{event: "config", key, value, version}` |
//! | `unsubscribe` | `{key, prefix?: bool}` | `bool`: whether the session had that subscription |
//!
//! Versions count the publishes of a key: 1 for the first, then 2, 3, ... (the key
//! znode's dataVersion + 1), so a subscriber that sees version n+2 after n knows it
//! missed one. There is no coalescing: every publish notifies every matching subscriber
//! (once, even when several of its subscriptions match).
//!
//! State, under `/wazoo/recipes/config/`:
//! - `keys/<key>`: the value, as published (bytes);
//! - `subs/key/<key>/<session as 16 hex digits>` and
//!   `subs/prefix/=<prefix>/<session>`: the subscriptions, ephemerals of the subscriber;
//! - `sessions/<session>/key=<key>` and `sessions/<session>/prefix=<prefix>`: the same
//!   subscriptions by session (persistent), so that they are dropped when it ends.

use std::collections::BTreeSet;
use wazoo_sdk::{children_or_empty as list, delete_if_empty};

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use wazoo_sdk::{Call, CreateMode, Error, ErrorCode, Event, Recipe, Result};

/// Where the configuration lives.
pub const ROOT: &str = "/wazoo/recipes/config";
pub const KEYS: &str = "/wazoo/recipes/config/keys";
pub const KEY_SUBS: &str = "/wazoo/recipes/config/subs/key";
pub const PREFIX_SUBS: &str = "/wazoo/recipes/config/subs/prefix";
pub const SESSIONS: &str = "/wazoo/recipes/config/sessions";

/// The most sessions subscribed to one key or one prefix: a publish notifies each
/// matching session within the server's 1,000 notifications per invocation.
pub const MAX_SUBSCRIBERS: usize = 900;

/// The longest key (or prefix), in bytes.
pub const MAX_KEY_LEN: usize = 200;

#[derive(Debug, Serialize, Deserialize)]
pub struct PublishArgs {
    pub key: String,
    pub value: ByteBuf,
    #[serde(default)]
    pub expected_version: Option<i64>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct PublishReply {
    pub version: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct KeyArgs {
    pub key: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SubscribeArgs {
    pub key: String,
    #[serde(default)]
    pub prefix: bool,
}

/// A key's value and version (`get`, and the entries of `subscribe`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub key: String,
    pub value: ByteBuf,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscribeReply {
    pub entries: Vec<Entry>,
}

/// What subscribers receive at each publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub event: String,
    pub key: String,
    pub value: ByteBuf,
    pub version: i64,
}

pub struct Config;

impl Recipe for Config {
    fn call(call: &Call) -> Result<()> {
        match call.function() {
            "publish" => {
                let PublishArgs {
                    key,
                    value,
                    expected_version,
                } = call.args()?;
                check_key(&key, false)?;
                let path = key_path(&key);
                let current = wazoo_sdk::exists(&path)?;
                let version = current.map_or(0, |s| s.version as i64 + 1);
                if let Some(expected) = expected_version {
                    if expected != version {
                        return Err(Error::msg(format!(
                            "version mismatch: key {key} is at version {version}, not {expected}"
                        )));
                    }
                }
                let new_version = match current {
                    Some(stat) => wazoo_sdk::set(&path, &value, stat.version)?.version as i64 + 1,
                    None => {
                        wazoo_sdk::create_all(KEYS)?;
                        wazoo_sdk::create_with_stat(&path, &value, CreateMode::PERSISTENT)?
                            .1
                            .version as i64
                            + 1
                    }
                };
                let change = wazoo_sdk::encode(&Change {
                    event: "config".into(),
                    key: key.clone(),
                    value,
                    version: new_version,
                })?;
                for session in subscribers(&key)? {
                    match wazoo_sdk::notify_raw(session, change.clone()) {
                        Err(e) if e.code() == Some(ErrorCode::SessionExpired) => {}
                        other => other?,
                    }
                }
                call.reply(&PublishReply {
                    version: new_version,
                })
            }
            "get" => {
                let KeyArgs { key } = call.args()?;
                check_key(&key, false)?;
                call.reply(&entry(&key)?)
            }
            "subscribe" => {
                let SubscribeArgs { key, prefix } = call.args()?;
                check_key(&key, prefix)?;
                let me = call.session_id();
                let dir = sub_dir(&key, prefix);
                let path = format!("{dir}/{}", session_name(me));
                if wazoo_sdk::exists(&path)?.is_none() {
                    if list(&dir)?.len() >= MAX_SUBSCRIBERS {
                        return Err(Error::msg(format!(
                            "too many subscribers of {} {key:?} ({MAX_SUBSCRIBERS})",
                            if prefix { "prefix" } else { "key" }
                        )));
                    }
                    wazoo_sdk::create_all(&dir)?;
                    wazoo_sdk::create(&path, &[], CreateMode::ephemeral(me))?;
                    let index = session_dir(me);
                    wazoo_sdk::create_all(&index)?;
                    let entry = format!("{index}/{}", index_name(&key, prefix));
                    if wazoo_sdk::exists(&entry)?.is_none() {
                        wazoo_sdk::create(&entry, &[], CreateMode::PERSISTENT)?;
                    }
                    wazoo_sdk::watch_session(me)?;
                }
                let entries = if prefix {
                    let mut entries = Vec::new();
                    for k in list(KEYS)? {
                        if k.starts_with(&key) {
                            entries.extend(entry(&k)?);
                        }
                    }
                    entries
                } else {
                    entry(&key)?.into_iter().collect()
                };
                call.reply(&SubscribeReply { entries })
            }
            "unsubscribe" => {
                let SubscribeArgs { key, prefix } = call.args()?;
                check_key(&key, prefix)?;
                let me = call.session_id();
                let dir = sub_dir(&key, prefix);
                let path = format!("{dir}/{}", session_name(me));
                let was = wazoo_sdk::exists(&path)?.is_some();
                if was {
                    wazoo_sdk::delete(&path, -1)?;
                    delete_if_empty(&dir)?;
                }
                let index = session_dir(me);
                delete_if_exists(&format!("{index}/{}", index_name(&key, prefix)))?;
                delete_if_empty(&index)?;
                call.reply(&was)
            }
            other => Err(Error::UnknownFunction(other.to_string())),
        }
    }

    fn event(event: &Event) -> Result<()> {
        let Event::SessionClosed { session_id, .. } = event else {
            return Ok(());
        };
        // The server already deleted the session's subscription znodes (its
        // ephemerals); drop its index and the subscription znodes left empty.
        let index = session_dir(*session_id);
        for name in list(&index)? {
            let dir = if let Some(key) = name.strip_prefix("key=") {
                Some(sub_dir(key, false))
            } else {
                name.strip_prefix("prefix=").map(|p| sub_dir(p, true))
            };
            if let Some(dir) = dir {
                // A subscription of this session that is somehow still there goes too.
                delete_if_exists(&format!("{dir}/{}", session_name(*session_id)))?;
                delete_if_empty(&dir)?;
            }
            delete_if_exists(&format!("{index}/{name}"))?;
        }
        delete_if_empty(&index)?;
        Ok(())
    }
}

wazoo_sdk::recipe!(Config);

/// Keys are one znode name: not empty (a prefix may be), no '/', not "." or "..".
fn check_key(key: &str, prefix: bool) -> Result<()> {
    let bad = (key.is_empty() && !prefix)
        || key.len() > MAX_KEY_LEN
        || key.contains('/')
        || key.contains('\0')
        || (!prefix && (key == "." || key == ".."));
    if bad {
        return Err(Error::msg(format!(
            "bad {} {key:?}",
            if prefix { "prefix" } else { "key" }
        )));
    }
    Ok(())
}

fn key_path(key: &str) -> String {
    format!("{KEYS}/{key}")
}

fn sub_dir(key: &str, prefix: bool) -> String {
    if prefix {
        format!("{PREFIX_SUBS}/={key}")
    } else {
        format!("{KEY_SUBS}/{key}")
    }
}

fn session_name(session: i64) -> String {
    format!("{session:016x}")
}

fn session_dir(session: i64) -> String {
    format!("{SESSIONS}/{}", session_name(session))
}

fn index_name(key: &str, prefix: bool) -> String {
    if prefix {
        format!("prefix={key}")
    } else {
        format!("key={key}")
    }
}

/// Children of `path`, sorted; empty if it does not exist.
fn delete_if_exists(path: &str) -> Result<()> {
    match wazoo_sdk::delete(path, -1) {
        Err(e) if e.is_no_node() => Ok(()),
        other => other,
    }
}

fn entry(key: &str) -> Result<Option<Entry>> {
    Ok(wazoo_sdk::get(&key_path(key))?.map(|node| Entry {
        key: key.to_string(),
        value: ByteBuf::from(node.data),
        version: node.stat.version as i64 + 1,
    }))
}

/// The sessions to notify of a change of `key`: its subscribers and those of every
/// prefix of it, each once, in session order.
fn subscribers(key: &str) -> Result<BTreeSet<i64>> {
    let mut sessions = BTreeSet::new();
    let mut add = |dir: &str| -> Result<()> {
        for s in list(dir)? {
            if let Ok(id) = u64::from_str_radix(&s, 16).map(|v| v as i64) {
                sessions.insert(id);
            }
        }
        Ok(())
    };
    add(&sub_dir(key, false))?;
    for p in list(PREFIX_SUBS)? {
        if let Some(prefix) = p.strip_prefix('=') {
            if key.starts_with(prefix) {
                add(&format!("{PREFIX_SUBS}/{p}"))?;
            }
        }
    }
    Ok(sessions)
}

#[cfg(test)]
mod tests;
