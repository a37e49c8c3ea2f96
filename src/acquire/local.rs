//! Model files at a local path (`path = "..."`): what is there, without ever blocking, and the
//! file's origin.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::derive::clean_partials;
use super::identity::file_identity;
use super::{Options, Origin, Planned, Progress};
use crate::config::fill_template;
use crate::gguf;
use crate::quant::Quant;

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
    // the whole header, against the file's size: a crafted or damaged header, or a file cut
    // short (an interrupted copy), is not a usable model
    let layout = File::open(path).and_then(|f| gguf::read_layout(&mut BufReader::new(f), md.len()));
    let layout = match layout {
        Ok(l) => l,
        Err(e) => return with(format!("a damaged GGUF header ({e})")),
    };
    if let Some(needed) = layout.needed_bytes.filter(|&n| n > md.len()) {
        return with(format!(
            "truncated: its header describes {needed} bytes, the file has {} (an interrupted \
             copy or download?)",
            md.len()
        ));
    }
    Local {
        size,
        shape: crate::capacity::Shape::from_metadata(&layout.metadata),
        problem: None,
    }
}

/// `list`'s view of a local file (or, with `derive`, of the file it would be made from).
pub(super) fn describe(template: &str, quant: Quant, derive: bool) -> Planned {
    let path = PathBuf::from(fill_template(template, quant));
    let local = inspect(&path);
    let source = match (
        local.size,
        derive.then(|| derive_source(template, quant)).flatten(),
    ) {
        (None, Some((from, _))) => format!("local file, to be derived from {from}"),
        _ => "local file".into(),
    };
    Planned {
        cached: local.size.is_some() && local.problem.is_none(),
        size_is_estimate: false,
        size_bytes: local.size,
        source,
        path: Some(path),
        shape: local.shape,
        problem: local.problem,
    }
}

/// The origin of a local file, refusing one that is missing (unless `derive` can make it) or
/// not a GGUF file.
pub(super) fn acquire(
    template: &str,
    quant: Quant,
    derive: bool,
    opts: &Options,
    progress: &dyn Progress,
) -> Result<Origin> {
    let path = PathBuf::from(fill_template(template, quant));
    let local = inspect(&path);
    if let Some(problem) = local.problem {
        bail!("{}: {problem}", path.display());
    }
    if local.size.is_none() {
        if !derive {
            bail!(
                "model file not found: {} (check `path` in the config, or set `derive = true` \
                 to make it from the most precise file present)",
                path.display()
            );
        }
        let Some((from, source)) = derive_source(template, quant) else {
            bail!(
                "model file not found: {}, and no other quant of `{template}` is present to \
                 derive it from",
                path.display()
            );
        };
        clean_partials(path.parent().unwrap_or(Path::new(".")));
        super::derive::derive(&source, &path, quant, opts, progress)?;
        let identity = file_identity(&path, opts, progress)?;
        return Ok(Origin {
            derived_from: Some(from),
            ..Origin::of_file("derived", path, identity)
        });
    }
    let identity = file_identity(&path, opts, progress)?;
    Ok(Origin::of_file("path", path, identity))
}

/// The most precise quant of `template` present on disk, other than `quant`, and its path.
fn derive_source(template: &str, quant: Quant) -> Option<(Quant, PathBuf)> {
    let present: Vec<Quant> = Quant::all_names()
        .iter()
        .filter_map(|n| Quant::parse(n))
        .filter(|q| *q != quant)
        .filter(|q| {
            let l = inspect(Path::new(&fill_template(template, *q)));
            l.size.is_some() && l.problem.is_none()
        })
        .collect();
    let best = Quant::most_precise(&present)?;
    Some((best, PathBuf::from(fill_template(template, best))))
}
