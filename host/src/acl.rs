//! ACL checks and fix-ups with ZooKeeper's rules (`ZooKeeperServer.checkACL`,
//! `PrepRequestProcessor.fixupACL`), for the schemes world, auth, digest and ip,
//! plus the super identity.
//!
//! The caller's identities travel inside each log entry, so the state machine checks
//! ACLs deterministically on every replica.

use base64::Engine;
use sha1::{Digest, Sha1};
use std::net::IpAddr;
use wazoo_proto::consts::perms;
use wazoo_proto::{Acl, ErrorCode, Id};

/// `world:anyone` with all permissions (ZooDefs.Ids.OPEN_ACL_UNSAFE).
pub fn open_acl_unsafe() -> Vec<Acl> {
    vec![Acl {
        perms: perms::ALL,
        id: Id {
            scheme: "world".into(),
            id: "anyone".into(),
        },
    }]
}

/// `world:anyone` read-only (ZooDefs.Ids.READ_ACL_UNSAFE).
pub fn read_acl_unsafe() -> Vec<Acl> {
    vec![Acl {
        perms: perms::READ,
        id: Id {
            scheme: "world".into(),
            id: "anyone".into(),
        },
    }]
}

/// The identity a super user carries after authenticating with the configured super digest.
pub fn super_id() -> Id {
    Id {
        scheme: "super".into(),
        id: String::new(),
    }
}

/// `digest` scheme: `user:base64(sha1("user:password"))`.
pub fn digest_id(user_password: &str) -> String {
    let user = user_password.split(':').next().unwrap_or_default();
    let hash = Sha1::digest(user_password.as_bytes());
    format!(
        "{user}:{}",
        base64::engine::general_purpose::STANDARD.encode(hash)
    )
}

/// Whether `auth` (the caller's identities) grants `perm` on a node with `acl`.
pub fn check(acl: &[Acl], perm: i32, auth: &[Id]) -> Result<(), ErrorCode> {
    if auth.iter().any(|id| id.scheme == "super") || acl.is_empty() {
        return Ok(());
    }
    for entry in acl.iter().filter(|a| a.perms & perm != 0) {
        if entry.id.scheme == "world" && entry.id.id == "anyone" {
            return Ok(());
        }
        for id in auth.iter().filter(|id| id.scheme == entry.id.scheme) {
            let matched = match id.scheme.as_str() {
                "ip" => ip_matches(&id.id, &entry.id.id),
                _ => id.id == entry.id.id,
            };
            if matched {
                return Ok(());
            }
        }
    }
    Err(ErrorCode::NoAuth)
}

/// Validates a requested ACL, expands `auth` entries into the caller's authenticated
/// identities and removes duplicates; `InvalidAcl` when nothing valid remains.
pub fn fixup(acl: &[Acl], auth: &[Id]) -> Result<Vec<Acl>, ErrorCode> {
    if acl.is_empty() {
        return Err(ErrorCode::InvalidAcl);
    }
    let mut out: Vec<Acl> = Vec::with_capacity(acl.len());
    let mut push = |a: Acl| {
        if !out.contains(&a) {
            out.push(a);
        }
    };
    for a in acl {
        if a.perms & !perms::ALL != 0 {
            // ZooKeeper accepts any bits; keep them as given, as it does.
        }
        match a.id.scheme.as_str() {
            "world" if a.id.id == "anyone" => push(a.clone()),
            "auth" => {
                let mut any = false;
                for id in auth.iter().filter(|id| id.scheme == "digest") {
                    push(Acl {
                        perms: a.perms,
                        id: id.clone(),
                    });
                    any = true;
                }
                if !any {
                    return Err(ErrorCode::InvalidAcl);
                }
            }
            "digest" if a.id.id.split(':').count() == 2 => push(a.clone()),
            "ip" if valid_ip_acl(&a.id.id) => push(a.clone()),
            _ => return Err(ErrorCode::InvalidAcl),
        }
    }
    Ok(out)
}

/// The ACL as a reader without ADMIN permission sees it: digest hashes redacted.
pub fn redact(acl: &[Acl]) -> Vec<Acl> {
    acl.iter()
        .map(|a| {
            if a.id.scheme == "digest" {
                let user = a.id.id.split(':').next().unwrap_or_default();
                Acl {
                    perms: a.perms,
                    id: Id {
                        scheme: "digest".into(),
                        id: format!("{user}:x"),
                    },
                }
            } else {
                a.clone()
            }
        })
        .collect()
}

fn valid_ip_acl(spec: &str) -> bool {
    let (addr, bits) = match spec.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (spec, None),
    };
    let Ok(ip) = addr.parse::<IpAddr>() else {
        return false;
    };
    match bits {
        None => true,
        Some(b) => match b.parse::<u32>() {
            Ok(n) => n <= if ip.is_ipv4() { 32 } else { 128 },
            Err(_) => false,
        },
    }
}

/// Whether the client address `client` falls in the ACL's `ip[/bits]`.
fn ip_matches(client: &str, spec: &str) -> bool {
    let (addr, bits) = match spec.split_once('/') {
        Some((a, b)) => (a, b.parse::<u32>().ok()),
        None => (spec, None),
    };
    let (Ok(c), Ok(a)) = (client.parse::<IpAddr>(), addr.parse::<IpAddr>()) else {
        return false;
    };
    let (c, a, width): (u128, u128, u32) = match (c, a) {
        (IpAddr::V4(c), IpAddr::V4(a)) => (u32::from(c) as u128, u32::from(a) as u128, 32),
        (IpAddr::V6(c), IpAddr::V6(a)) => (u128::from(c), u128::from(a), 128),
        _ => return false,
    };
    let bits = bits.unwrap_or(width).min(width);
    if bits == 0 {
        return true;
    }
    let shift = width - bits;
    (c >> shift) == (a >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str, i: &str) -> Id {
        Id {
            scheme: s.into(),
            id: i.into(),
        }
    }

    #[test]
    fn digest_matches_zookeeper() {
        // Value from ZooKeeper's DigestAuthenticationProvider for "super:test".
        assert_eq!(
            digest_id("super:test"),
            "super:D/InIHSb7yEEbrWz8b9l71RjZJU="
        );
    }

    #[test]
    fn checks_world_digest_ip_and_super() {
        let acl = vec![
            Acl {
                perms: perms::READ,
                id: id("world", "anyone"),
            },
            Acl {
                perms: perms::ALL,
                id: id("digest", "u:h"),
            },
            Acl {
                perms: perms::WRITE,
                id: id("ip", "10.0.0.0/8"),
            },
        ];
        assert_eq!(check(&acl, perms::READ, &[]), Ok(()));
        assert_eq!(check(&acl, perms::DELETE, &[]), Err(ErrorCode::NoAuth));
        assert_eq!(check(&acl, perms::DELETE, &[id("digest", "u:h")]), Ok(()));
        assert_eq!(check(&acl, perms::WRITE, &[id("ip", "10.1.2.3")]), Ok(()));
        assert_eq!(
            check(&acl, perms::WRITE, &[id("ip", "11.1.2.3")]),
            Err(ErrorCode::NoAuth)
        );
        assert_eq!(check(&acl, perms::ADMIN, &[super_id()]), Ok(()));
    }

    #[test]
    fn fixup_expands_auth_and_dedups() {
        let world = Acl {
            perms: perms::ALL,
            id: id("world", "anyone"),
        };
        assert_eq!(
            fixup(&[world.clone(), world.clone()], &[]).unwrap(),
            vec![world.clone()]
        );
        assert_eq!(fixup(&[], &[]), Err(ErrorCode::InvalidAcl));
        assert_eq!(
            fixup(
                &[Acl {
                    perms: 31,
                    id: id("auth", "")
                }],
                &[id("ip", "1.2.3.4")]
            ),
            Err(ErrorCode::InvalidAcl)
        );
        let got = fixup(
            &[Acl {
                perms: 31,
                id: id("auth", ""),
            }],
            &[id("ip", "1.2.3.4"), id("digest", "u:h")],
        )
        .unwrap();
        assert_eq!(
            got,
            vec![Acl {
                perms: 31,
                id: id("digest", "u:h")
            }]
        );
        assert_eq!(
            fixup(
                &[Acl {
                    perms: 31,
                    id: id("world", "nobody")
                }],
                &[]
            ),
            Err(ErrorCode::InvalidAcl)
        );
        assert_eq!(
            fixup(
                &[Acl {
                    perms: 31,
                    id: id("ip", "300.1.1.1")
                }],
                &[]
            ),
            Err(ErrorCode::InvalidAcl)
        );
        assert_eq!(
            fixup(
                &[Acl {
                    perms: 31,
                    id: id("bogus", "x")
                }],
                &[]
            ),
            Err(ErrorCode::InvalidAcl)
        );
    }
}
