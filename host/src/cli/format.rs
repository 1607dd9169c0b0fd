//! Text formats of the shell, as zkCli.sh prints them: Stat, ACLs, watch events,
//! error messages; and its line tokenizer and ACL syntax.

use wazoo_client::proto::consts::{event, perms, state};
use wazoo_client::proto::{Acl, ErrorCode, Id, Stat};
use wazoo_client::{ClientError, WatchedEvent};

use crate::recipe_cli::{client_error_text, format_ms_utc};

/// Splits a command line into words. A word that starts with `'` or `"` runs to the
/// matching quote (spaces included); quotes inside a word are kept, so JSON such as
/// `{"a":1}` passes through unchanged.
pub fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return Ok(out);
        };
        let mut word = String::new();
        if first == '\'' || first == '"' {
            chars.next();
            let mut closed = false;
            for c in chars.by_ref() {
                if c == first {
                    closed = true;
                    break;
                }
                word.push(c);
            }
            if !closed {
                return Err(format!("unterminated {first} quote"));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        out.push(word);
    }
}

/// Milliseconds since the epoch as Java's `Date.toString()` in UTC:
/// `Mon Nov 23 21:00:00 UTC 2026`.
pub fn java_date(ms: i64) -> String {
    // format_ms_utc: YYYY-MM-DDTHH:MM:SSZ
    let iso = format_ms_utc(ms);
    let (year, month, day, time) = (&iso[0..4], &iso[5..7], &iso[8..10], &iso[11..19]);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let m: usize = month.parse().unwrap_or(1);
    let weekday = DAYS[ms.div_euclid(86_400_000).rem_euclid(7) as usize];
    format!(
        "{weekday} {} {day} {time} UTC {year}",
        MONTHS[m.clamp(1, 12) - 1]
    )
}

/// zkCli's Stat block (one `name = value` per line, ending with a newline).
pub fn format_stat(s: &Stat) -> String {
    format!(
        "cZxid = {:#x}\nctime = {}\nmZxid = {:#x}\nmtime = {}\npZxid = {:#x}\n\
         cversion = {}\ndataVersion = {}\naclVersion = {}\nephemeralOwner = {:#x}\n\
         dataLength = {}\nnumChildren = {}\n",
        s.czxid,
        java_date(s.ctime),
        s.mzxid,
        java_date(s.mtime),
        s.pzxid,
        s.cversion,
        s.version,
        s.aversion,
        s.ephemeral_owner,
        s.data_length,
        s.num_children
    )
}

/// Permission bits as zkCli's letters, in its order: `cdrwa`.
pub fn perms_text(p: i32) -> String {
    let mut s = String::new();
    for (bit, c) in [
        (perms::CREATE, 'c'),
        (perms::DELETE, 'd'),
        (perms::READ, 'r'),
        (perms::WRITE, 'w'),
        (perms::ADMIN, 'a'),
    ] {
        if p & bit != 0 {
            s.push(c);
        }
    }
    s
}

/// `getAcl` output: per entry `'scheme,'id` then `: perms`.
pub fn format_acl(acl: &[Acl]) -> String {
    let mut out = String::new();
    for a in acl {
        out.push_str(&format!(
            "'{},'{}\n: {}\n",
            a.id.scheme,
            a.id.id,
            perms_text(a.perms)
        ));
    }
    out
}

/// zkCli's ACL syntax: `scheme:id:perms[,scheme:id:perms...]`, the id may contain
/// colons (`digest:user:hash:r`, `ip:10.0.0.1:r`), perms are letters of `cdrwa`.
pub fn parse_acl(s: &str) -> Result<Vec<Acl>, String> {
    let mut out = Vec::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (scheme, rest) = entry
            .split_once(':')
            .ok_or_else(|| format!("{entry} does not have the form scheme:id:perm"))?;
        let (id, p) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("{entry} does not have the form scheme:id:perm"))?;
        if scheme.is_empty() {
            return Err(format!("{entry} does not have the form scheme:id:perm"));
        }
        let mut bits = 0;
        for c in p.chars() {
            bits |= match c.to_ascii_lowercase() {
                'c' => perms::CREATE,
                'd' => perms::DELETE,
                'r' => perms::READ,
                'w' => perms::WRITE,
                'a' => perms::ADMIN,
                _ => return Err(format!("unknown perm type: {c}")),
            };
        }
        out.push(Acl {
            perms: bits,
            id: Id {
                scheme: scheme.to_string(),
                id: id.to_string(),
            },
        });
    }
    if out.is_empty() {
        return Err(format!("{s:?} is not an ACL (scheme:id:perm[,...])"));
    }
    Ok(out)
}

pub fn event_type_name(t: i32) -> String {
    match t {
        event::NONE => "None".into(),
        event::NODE_CREATED => "NodeCreated".into(),
        event::NODE_DELETED => "NodeDeleted".into(),
        event::NODE_DATA_CHANGED => "NodeDataChanged".into(),
        event::NODE_CHILDREN_CHANGED => "NodeChildrenChanged".into(),
        event::DATA_WATCH_REMOVED => "DataWatchRemoved".into(),
        event::CHILD_WATCH_REMOVED => "ChildWatchRemoved".into(),
        event::PERSISTENT_WATCH_REMOVED => "PersistentWatchRemoved".into(),
        other => format!("Unknown({other})"),
    }
}

pub fn state_name(s: i32) -> String {
    match s {
        state::DISCONNECTED => "Disconnected".into(),
        state::SYNC_CONNECTED => "SyncConnected".into(),
        state::AUTH_FAILED => "AuthFailed".into(),
        state::CONNECTED_READ_ONLY => "ConnectedReadOnly".into(),
        state::SASL_AUTHENTICATED => "SaslAuthenticated".into(),
        state::EXPIRED => "Expired".into(),
        state::CLOSED => "Closed".into(),
        other => format!("Unknown({other})"),
    }
}

/// `WATCHER:: WatchedEvent state:SyncConnected type:NodeDataChanged path:/x`.
pub fn format_event(e: &WatchedEvent) -> String {
    let path = if e.path.is_empty() { "null" } else { &e.path };
    format!(
        "WATCHER:: WatchedEvent state:{} type:{} path:{}",
        state_name(e.state),
        event_type_name(e.event_type),
        path
    )
}

/// A failed znode operation on `path`, worded as zkCli does for the common codes.
pub fn zk_error_text(e: &ClientError, path: &str) -> String {
    match e {
        ClientError::Zk(code) => match code {
            ErrorCode::NoNode => format!("Node does not exist: {path}"),
            ErrorCode::NodeExists => format!("Node already exists: {path}"),
            ErrorCode::NotEmpty => format!("Node not empty: {path}"),
            ErrorCode::BadVersion => format!("version No is not valid : {path}"),
            ErrorCode::NoAuth => format!("Insufficient permission : {path}"),
            other => other.name().to_string(),
        },
        other => client_error_text(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert_eq!(
            tokenize(r#"  set /a 'hello world'  "x y" {"k":1} "#).unwrap(),
            vec!["set", "/a", "hello world", "x y", r#"{"k":1}"#]
        );
        assert!(tokenize("set /a 'oops").is_err());
        assert!(tokenize("   ").unwrap().is_empty());
    }

    #[test]
    fn acls() {
        let a = parse_acl("world:anyone:cdrwa,digest:user:hash:r").unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].perms, perms::ALL);
        assert_eq!(
            (a[1].id.scheme.as_str(), a[1].id.id.as_str()),
            ("digest", "user:hash")
        );
        assert_eq!(a[1].perms, perms::READ);
        assert_eq!(
            format_acl(&a),
            "'world,'anyone\n: cdrwa\n'digest,'user:hash\n: r\n"
        );
        assert!(parse_acl("world:anyone:x").is_err());
        assert!(parse_acl("nope").is_err());
        assert!(parse_acl("").is_err());
    }

    #[test]
    fn dates_and_stats() {
        assert_eq!(java_date(0), "Thu Jan 01 00:00:00 UTC 1970");
        assert_eq!(java_date(1_795_461_972_999), "Mon Nov 23 19:26:12 UTC 2026");
        let s = Stat {
            czxid: 2,
            mzxid: 3,
            ctime: 0,
            mtime: 0,
            version: 1,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: 0x1234,
            data_length: 5,
            num_children: 0,
            pzxid: 2,
        };
        let t = format_stat(&s);
        assert!(t.starts_with("cZxid = 0x2\nctime = Thu Jan 01"), "{t}");
        assert!(t.contains("ephemeralOwner = 0x1234\n") && t.ends_with("numChildren = 0\n"));
    }
}
