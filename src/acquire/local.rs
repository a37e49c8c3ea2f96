//! Model files at a local path (`path = "..."`): what is there, without ever blocking, and the
//! file's origin.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use anyhow::{bail, Result};

use super::identity::file_identity;
use super::{Options, Origin, Planned, Progress};
use crate::gguf;

/// What is at a local path, looked at without ever blocking: only regular files are opened (a
/// FIFO or a device would hang the reader), and their header is checked.
pub(super) struct Local {
    pub(super) size: Option<u64>,
    pub(super) shape: Option<crate::capacity::Shape>,
    pub(super) problem: Option<String>,
}

pub(super) fn inspect(path: &Path) -> Local {
    let none = |problem: Option<String>| Local {
        size: None,
        shape: None,
        problem,
    };
    let md = match std::fs::metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return none(None),
        Err(e) => return none(Some(format!("cannot read it: {e}"))),
    };
    if !md.is_file() {
        return none(Some("not a regular file".into()));
    }
    let size = Some(md.len());
    let with = |problem: String| Local {
        size,
        shape: None,
        problem: Some(problem),
    };
    if md.len() == 0 {
        return with("an empty file, not a GGUF file".into());
    }
    let mut f = match File::open(path) {
        Ok(f) => BufReader::new(f),
        Err(e) => return with(format!("cannot open it: {e}")),
    };
    match gguf::sniff(&mut f) {
        Ok(gguf::Sniff::Gguf { .. }) => {}
        Ok(gguf::Sniff::NotGguf { first_bytes }) => {
            return with(format!(
                "not a GGUF file (it starts with {:?}, not \"GGUF\")",
                String::from_utf8_lossy(&first_bytes)
            ))
        }
        Err(e) => return with(format!("cannot read it: {e}")),
    }
    let shape = File::open(path)
        .ok()
        .and_then(|f| gguf::read_metadata(&mut BufReader::new(f)).ok())
        .and_then(|m| crate::capacity::Shape::from_metadata(&m));
    Local {
        size,
        shape,
        problem: None,
    }
}

/// `list`'s view of a local file.
pub(super) fn describe(path: &Path) -> Planned {
    let local = inspect(path);
    Planned {
        cached: local.size.is_some() && local.problem.is_none(),
        size_is_estimate: false,
        size_bytes: local.size,
        source: "local file".into(),
        path: Some(path.to_path_buf()),
        shape: local.shape,
        problem: local.problem,
    }
}

/// The origin of a local file, refusing one that is missing or not a GGUF file.
pub(super) fn acquire(path: &Path, opts: &Options, progress: &dyn Progress) -> Result<Origin> {
    let local = inspect(path);
    if let Some(problem) = local.problem {
        bail!("{}: {problem}", path.display());
    }
    if local.size.is_none() {
        bail!(
            "model file not found: {} (check `path` in the config)",
            path.display()
        );
    }
    let identity = file_identity(path, opts, progress)?;
    Ok(Origin::of_file("path", path.to_path_buf(), identity))
}
