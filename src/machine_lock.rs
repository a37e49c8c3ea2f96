//! The machine-wide measurement lock: two runs measuring on one machine at once (a nightly cron
//! job and a person) ruin each other's numbers without either noticing. A run holds an
//! exclusive `flock` on `<cache>/measure.lock` while its cells run; a second run finds it held,
//! reads who holds it (pid, command, since when — written into the file by the holder) and waits.
//! Preparing files (fetch, synthesis, quantization) does not take it. The lock is released when
//! the holding process exits, however it exits. Never prints: waiting is reported through a
//! callback.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Who holds the lock, as the holder wrote it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub command: String,
    /// RFC 3339, UTC.
    pub since: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} (`{}`), measuring since {}",
            self.pid, self.command, self.since
        )
    }
}

/// The held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct MachineLock {
    file: File,
    pub path: PathBuf,
}

impl Drop for MachineLock {
    fn drop(&mut self) {
        // leave no stale holder behind (the flock itself goes with the descriptor)
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// The lock file under a cache folder.
pub fn path(cache_dir: &Path) -> PathBuf {
    cache_dir.join("measure.lock")
}

fn read_holder(f: &mut File) -> Option<Holder> {
    let mut s = String::new();
    f.seek(SeekFrom::Start(0)).ok()?;
    f.read_to_string(&mut s).ok()?;
    serde_json::from_str(&s).ok()
}

/// Takes the lock, waiting while another process holds it: `on_wait` is called once with the
/// holder (`None` when it wrote nothing readable) when waiting begins; `stop()` is polled while
/// waiting and ends the wait with `Ok(None)` (Ctrl-C or SIGTERM).
pub fn acquire(
    cache_dir: &Path,
    me: &Holder,
    on_wait: &mut dyn FnMut(Option<&Holder>),
    stop: &dyn Fn() -> bool,
) -> Result<Option<MachineLock>> {
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("creating {}", cache_dir.display()))?;
    let path = path(cache_dir);
    let mut file = crate::fsutil::open_lock_file(&path)?;
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                if !told {
                    on_wait(read_holder(&mut file).as_ref());
                    told = true;
                }
                if stop() {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }
    let text = serde_json::to_string(me)?;
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
        .and_then(|()| file.write_all(text.as_bytes()))
        .and_then(|()| file.flush())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(Some(MachineLock { file, path }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn me(pid: u32) -> Holder {
        Holder {
            pid,
            command: "quantbench run".into(),
            since: "2026-12-01T20:00:00Z".into(),
        }
    }

    #[test]
    fn a_second_taker_waits_and_learns_who_holds_it() {
        let d = tempfile::tempdir().unwrap();
        let first = acquire(d.path(), &me(1), &mut |_| panic!("free"), &|| false)
            .unwrap()
            .unwrap();
        // flock locks belong to the open file: a second open in this process conflicts too
        let mut seen = None;
        let polls = Cell::new(0);
        let second = acquire(d.path(), &me(2), &mut |h| seen = h.cloned(), &|| {
            polls.set(polls.get() + 1);
            polls.get() > 2
        })
        .unwrap();
        assert!(second.is_none(), "stopped while waiting");
        assert_eq!(seen, Some(me(1)));
        drop(first);
        let again = acquire(d.path(), &me(3), &mut |_| panic!("released"), &|| false).unwrap();
        assert!(again.is_some());
    }
}
