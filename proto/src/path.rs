//! Znode path validation, with ZooKeeper's rules (`PathUtils.validatePath`): absolute,
//! no empty segment, no `.`/`..` segment, no trailing `/`, no control or
//! surrogate/private-use characters. A violation is `BadArguments` on the wire.

use crate::error::ErrorCode;

/// Validates `path`. A sequential create may end in `/` because the server appends the
/// sequence number to it (ZooKeeper validates `path + "1"` in that case).
pub fn validate_path(path: &str, sequential: bool) -> Result<(), ErrorCode> {
    if sequential {
        return validate(&format!("{path}1"));
    }
    validate(path)
}

fn validate(path: &str) -> Result<(), ErrorCode> {
    let bad = Err(ErrorCode::BadArguments);
    if !path.starts_with('/') {
        return bad;
    }
    if path.len() == 1 {
        return Ok(());
    }
    if path.ends_with('/') {
        return bad;
    }
    for segment in path[1..].split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return bad;
        }
        if segment.chars().any(invalid_char) {
            return bad;
        }
    }
    Ok(())
}

fn invalid_char(c: char) -> bool {
    let c = c as u32;
    c <= 0x1f
        || (0x7f..=0x9f).contains(&c)
        || (0xd800..=0xf8ff).contains(&c)
        || (0xfff0..=0xffff).contains(&c)
}

/// Parent of a valid, non-root path (`/a/b` → `/a`, `/a` → `/`).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Last segment of a valid path (`/a/b` → `b`, `/` → ``).
pub fn basename(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// Joins a parent and a child name.
pub fn join(parent: &str, child: &str) -> String {
    if parent == "/" {
        format!("/{child}")
    } else {
        format!("{parent}/{child}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_paths() {
        for p in [
            "/",
            "/a",
            "/a/b",
            "/a.b",
            "/...",
            "/zookeeper/quota",
            "/héllo",
        ] {
            assert_eq!(validate_path(p, false), Ok(()), "{p}");
        }
        assert_eq!(validate_path("/a/", true), Ok(()));
    }

    #[test]
    fn rejects_invalid_paths() {
        for p in [
            "",
            "a",
            "//",
            "/a//b",
            "/a/",
            "/.",
            "/a/..",
            "/a/./b",
            "/a\u{0}b",
            "/a\u{1e}",
            "/\u{7f}",
            "/\u{fff5}",
            "/\u{e000}",
        ] {
            assert_eq!(
                validate_path(p, false),
                Err(ErrorCode::BadArguments),
                "{p:?}"
            );
        }
        assert_eq!(validate_path("/a//", true), Err(ErrorCode::BadArguments));
    }

    #[test]
    fn parent_and_basename() {
        assert_eq!(parent("/a/b/c"), "/a/b");
        assert_eq!(parent("/a"), "/");
        assert_eq!(basename("/a/b"), "b");
        assert_eq!(join("/", "x"), "/x");
        assert_eq!(join("/a", "x"), "/a/x");
    }
}
