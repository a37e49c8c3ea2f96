//! The one guard for paths built from names that come from outside quantbench — a hub's answers
//! (file listings, `X-Repo-Commit`, ETags) and a config's templates and revisions: a name is
//! accepted only as a relative path of plain segments, so joining it under a cache root can never
//! reach outside that root. Every place that writes under a cache root joins through
//! [`join_under`]. Plain data and checks only: no I/O, never prints.

use std::path::{Path, PathBuf};

/// Why a name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unsafe {what} {name:?}: {why}")]
pub struct UnsafeName {
    /// What the name is, e.g. `file name in the repository listing`.
    pub what: String,
    pub name: String,
    pub why: &'static str,
}

/// Checks that `name` is a relative path of plain segments: not empty, not absolute, no `.` or
/// `..` segment, no empty segment, no backslash, no NUL or other control character.
pub fn check_relative(name: &str, what: &str) -> Result<(), UnsafeName> {
    let refuse = |why| {
        Err(UnsafeName {
            what: what.to_string(),
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() {
        return refuse("it is empty");
    }
    if name.starts_with('/') {
        return refuse("absolute paths are refused");
    }
    if name.contains('\\') {
        return refuse("backslashes are refused");
    }
    if name.chars().any(char::is_control) {
        return refuse("control characters are refused");
    }
    for seg in name.split('/') {
        match seg {
            "" => return refuse("empty path segments are refused"),
            "." | ".." => return refuse("`.` and `..` segments are refused"),
            _ => {}
        }
    }
    Ok(())
}

/// Checks that `name` is a single plain path segment (no `/` at all).
pub fn check_segment(name: &str, what: &str) -> Result<(), UnsafeName> {
    check_relative(name, what)?;
    if name.contains('/') {
        return Err(UnsafeName {
            what: what.to_string(),
            name: name.to_string(),
            why: "it must be a single name without `/`",
        });
    }
    Ok(())
}

/// `root/name`, after [`check_relative`]; the result is lexically inside `root`.
pub fn join_under(root: &Path, name: &str, what: &str) -> Result<PathBuf, UnsafeName> {
    check_relative(name, what)?;
    let p = root.join(name);
    debug_assert!(p.starts_with(root));
    Ok(p)
}

/// A full git commit id: 40 hexadecimal digits.
pub fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks a commit id that a server answered (`X-Repo-Commit`, a listing's `sha`): it becomes a
/// folder name, so anything but 40 hex digits is refused, naming where it came from.
pub fn check_commit(s: &str, source: &str) -> Result<(), UnsafeName> {
    if is_commit(s) {
        Ok(())
    } else {
        Err(UnsafeName {
            what: source.to_string(),
            name: s.to_string(),
            why: "a commit must be 40 hexadecimal digits",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_relative_names_pass_and_escapes_do_not() {
        for ok in [
            "a.gguf",
            "Q4_K_M/model-00001-of-00002.gguf",
            "refs/pr/1",
            "a..b.gguf",
        ] {
            assert_eq!(check_relative(ok, "name"), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("/etc/passwd", "absolute"),
            ("../../x/evil-F16.gguf", "`..`"),
            ("a/../../b", "`..`"),
            ("a/./b", "`..`"),
            ("..", "`..`"),
            ("a//b", "empty path segments"),
            ("a/", "empty path segments"),
            ("..\\..\\x.gguf", "backslashes"),
            ("a\nb", "control"),
            ("a\0b", "control"),
        ] {
            let e = check_relative(bad, "file name").unwrap_err();
            assert!(e.to_string().contains(why), "{bad:?}: {e}");
            assert!(e.to_string().contains("file name"), "{e}");
        }
        assert!(check_segment("a/b", "etag").is_err());
        assert!(check_segment("abc", "etag").is_ok());
    }

    #[test]
    fn joined_paths_stay_under_the_root() {
        let root = Path::new("/cache/models--a--b/snapshots");
        assert_eq!(
            join_under(root, "c/d.gguf", "f").unwrap(),
            root.join("c/d.gguf")
        );
        assert!(join_under(root, "../../../../some/dir", "commit").is_err());
    }

    #[test]
    fn commits_are_40_hex_digits() {
        assert!(is_commit(&"a".repeat(40)));
        assert!(!is_commit(&"a".repeat(39)));
        assert!(!is_commit("../../../../some/dir"));
        let e = check_commit("../../../../some/dir", "X-Repo-Commit").unwrap_err();
        assert!(e.to_string().contains("X-Repo-Commit"), "{e}");
    }
}
