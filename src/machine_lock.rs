//! The machine-wide measurement lock: two runs measuring on one machine at once (a nightly cron
//! job and a person, two users, two CI jobs with caches of their own) ruin each other's numbers
//! without either noticing. A run holds an exclusive `flock` on one file per machine —
//! `quantbench-measure.lock` in `$QUANTBENCH_LOCK_DIR`, else `/run/lock`, else the system's
//! temporary folder, whatever the cache — from its CPU self-test to its last cell; quantizing
//! takes it too. A second taker finds it held, reads who holds it (pid, command, since when —
//! written into the file by the holder) and waits. The lock is released when the holding
//! process exits, however it exits; within one process it is reentrant (a run that holds it
//! quantizes without waiting for itself). Never prints: waiting is reported through a callback.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The environment variable naming the lock's folder (tests point it at a folder of their own,
/// so parallel tests and other people's test runs do not wait for each other).
pub const DIR_ENV: &str = "QUANTBENCH_LOCK_DIR";

/// The lock file's name in its folder.
pub const FILE_NAME: &str = "quantbench-measure.lock";

/// The lock files this process holds, with how many guards of each are alive (the lock is
/// reentrant within a process: the file is released with the last guard, in any order).
static HELD: Mutex<BTreeMap<PathBuf, (usize, File)>> = Mutex::new(BTreeMap::new());

fn held() -> std::sync::MutexGuard<'static, BTreeMap<PathBuf, (usize, File)>> {
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

/// Who holds the lock, as the holder wrote it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub command: String,
    /// RFC 3339, UTC.
    pub since: String,
}

impl Holder {
    /// This process, now: its pid and command line (URLs without their userinfo: the file is
    /// readable by every user of the machine).
    pub fn me() -> Holder {
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        Holder {
            pid: std::process::id(),
            command: crate::redact::strip_userinfo(&command).into_owned(),
            since: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        }
    }
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

/// A guard of the held lock; dropping the process's last guard releases the lock.
#[derive(Debug)]
pub struct MachineLock {
    pub path: PathBuf,
}

impl Drop for MachineLock {
    fn drop(&mut self) {
        let mut held = held();
        let last = held.get_mut(&self.path).is_some_and(|(n, _)| {
            *n -= 1;
            *n == 0
        });
        if last {
            if let Some((_, f)) = held.remove(&self.path) {
                // leave no stale holder behind (the flock itself goes with the descriptor)
                let _ = f.set_len(0);
                let _ = f.unlock();
            }
        }
    }
}

/// The lock's folder: `$QUANTBENCH_LOCK_DIR`, else `/run/lock` when it is a folder this user
/// can write, else the system's temporary folder.
pub fn dir() -> PathBuf {
    if let Some(d) = std::env::var_os(DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let run_lock = Path::new("/run/lock");
    if writable_dir(run_lock) {
        return run_lock.to_path_buf();
    }
    std::env::temp_dir()
}

fn writable_dir(d: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(d.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access only reads the NUL-terminated path.
    d.is_dir() && unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// The lock file in a lock folder.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

fn read_holder(f: &mut File) -> Option<Holder> {
    let mut s = String::new();
    f.seek(SeekFrom::Start(0)).ok()?;
    // another user's file: read a holder's worth, no more
    f.take(4096).read_to_string(&mut s).ok()?;
    serde_json::from_str(&s).ok()
}

/// Opens the lock file for every user of the machine: created readable and writable by all (a
/// second user's run must be able to lock it), never through a symbolic link (the folder is
/// shared), and read-only where another user's file does not let us write (a read-only
/// descriptor locks as well; the holder is then not written).
fn open(path: &Path) -> std::io::Result<(File, bool)> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut o = std::fs::OpenOptions::new();
    o.read(true).custom_flags(libc::O_NOFOLLOW);
    match o
        .clone()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o666)
        .open(path)
    {
        Ok(f) => {
            // the umask narrowed the mode; widen it on a file we own (others' stay as they are)
            let _ = f.set_permissions(std::fs::Permissions::from_mode(0o666));
            Ok((f, true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok((o.open(path)?, false)),
        Err(e) => Err(e),
    }
}

/// Takes the lock in the folder `dir` ([`dir`] for the machine's), waiting while another process
/// holds it: `on_wait` is called once with the holder (`None` when it wrote nothing readable)
/// when waiting begins; `stop()` is polled while waiting and ends the wait with `Ok(None)`
/// (Ctrl-C or SIGTERM). A process that holds the lock gets a nested guard at once.
pub fn acquire(
    dir: &Path,
    me: &Holder,
    on_wait: &mut dyn FnMut(Option<&Holder>),
    stop: &dyn Fn() -> bool,
) -> Result<Option<MachineLock>> {
    let path = path(dir);
    if let Some((n, _)) = held().get_mut(&path) {
        *n += 1;
        return Ok(Some(MachineLock { path }));
    }
    let unusable = |what: &str| {
        format!(
            "{what} the machine-wide measurement lock {}; set {DIR_ENV} to a folder every \
             quantbench user of this machine can write, or measure without the lock with \
             --no-lock",
            path.display()
        )
    };
    std::fs::create_dir_all(dir).with_context(|| unusable("creating the folder of"))?;
    let (mut file, writable) = open(&path).with_context(|| unusable("opening"))?;
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
                return Err(e).with_context(|| unusable("locking"))
            }
        }
    }
    if writable {
        let text = serde_json::to_string(me)?;
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
            .and_then(|()| file.write_all(text.as_bytes()))
            .and_then(|()| file.flush())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    held().insert(path.clone(), (1, file));
    Ok(Some(MachineLock { path }))
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
        // another process holds it (flock locks belong to the open file: a file opened here
        // conflicts as another process's would)
        let first = std::fs::File::create(path(d.path())).unwrap();
        first.lock().unwrap();
        std::fs::write(path(d.path()), serde_json::to_string(&me(1)).unwrap()).unwrap();
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
        // released: a child another test forks may hold a copy of the descriptor for the
        // moment until its exec closes it, so wait (boundedly) rather than demand it at once
        let t = std::time::Instant::now();
        let again = acquire(d.path(), &me(3), &mut |_| {}, &|| {
            t.elapsed() > Duration::from_secs(30)
        })
        .unwrap();
        assert!(again.is_some(), "released");
        assert!(again.is_some());
        // reentrant: the holder quantizes without waiting for itself, and keeps the lock until
        // its last guard goes
        let nested = acquire(d.path(), &me(3), &mut |_| panic!("mine"), &|| false).unwrap();
        drop(again);
        let other = std::fs::File::open(path(d.path())).unwrap();
        assert!(other.try_lock().is_err(), "still held by the nested guard");
        drop(nested);
        assert!(other.try_lock().is_ok(), "released with the last guard");
    }

    #[test]
    fn the_lock_is_machine_wide_unless_pointed_elsewhere() {
        // QUANTBENCH_LOCK_DIR is not set for unit tests: /run/lock or the temporary folder,
        // never a cache folder
        if std::env::var_os(DIR_ENV).is_none() {
            let d = dir();
            assert!(
                d == Path::new("/run/lock") || d == std::env::temp_dir(),
                "{}",
                d.display()
            );
        }
        assert!(path(Path::new("/x")).ends_with(FILE_NAME));
    }

    #[test]
    fn a_lock_file_that_cannot_be_opened_says_to_use_another_folder_or_no_lock() {
        let d = tempfile::tempdir().unwrap();
        // a folder where the lock file should be: it cannot be opened as a file
        std::fs::create_dir(path(d.path())).unwrap();
        let e = acquire(d.path(), &me(1), &mut |_| {}, &|| false).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains(DIR_ENV) && msg.contains("--no-lock") && !msg.contains("--resume"),
            "{msg}"
        );
    }
}
