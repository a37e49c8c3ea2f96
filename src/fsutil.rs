//! Writing files so that a crash, a kill or a full disk never leaves a half-written file under
//! its final name: atomic replacement (temporary file, `fsync`, rename, `fsync` of the folder),
//! whole-line appends, and the cleaning of partial files that a killed process left behind.
//! Every I/O error names its path. Plain helpers at the bottom of the crate; never prints.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

/// Whether `e` (or anything in its chain) is "no space left on device" or "disk quota exceeded".
pub fn is_disk_full(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .is_some_and(|code| code == libc::ENOSPC || code == libc::EDQUOT)
    })
}

/// Opens (creating, never truncating) a file to take a lock on: a lock file's content, if any,
/// belongs to whoever holds the lock.
pub fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening the lock file {}", path.display()))
}

/// The most quantbench reads of a report, log or config file it is given (a results.json of
/// 10,000 cells is about 100 MB).
pub const MAX_INPUT_BYTES: u64 = 1 << 30;

/// The one reader of files a user or another run hands quantbench (results.json, results.jsonl,
/// a CSV or JSON to compare, comparison.json, models.toml): only a regular file, opened without
/// waiting (a FIFO is refused, never waited on), of at most `MAX_INPUT_BYTES` (a link to
/// `/dev/zero` or a huge file is refused before it fills the memory). The errors are plain
/// `io::Error`s that say which rule the file broke, for the caller's context.
pub fn read_input(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    use std::os::unix::fs::OpenOptionsExt;
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let md = f.metadata()?;
    if !md.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "not a regular file (a FIFO, a device or a folder)",
        ));
    }
    if md.len() > MAX_INPUT_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{} bytes, more than the {MAX_INPUT_BYTES} quantbench reads",
                md.len()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(md.len() as usize);
    f.take(MAX_INPUT_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("grew past the {MAX_INPUT_BYTES} bytes quantbench reads"),
        ));
    }
    Ok(bytes)
}

/// [`read_input`] as text (UTF-8).
pub fn read_input_text(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read_input(path)?)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Flushes a file's data to the disk.
pub fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", path.display()))
}

/// Flushes a folder's entries (a rename into it) to the disk. Best effort: some file systems
/// refuse to sync folders.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The one temporary-name scheme: `STEM.partial-PID-RANDOM.EXT` beside `path` (`EXT` kept last,
/// for writers that tell the format by it, as the chart library does), unique to this
/// process and this call (the random part also tells apart processes of two containers that
/// share a cache and a pid). Whoever writes a file under its final name by renaming (atomic
/// writes, cache memos, synthetic and derived models) writes it under such a name first, so two
/// processes never write the same temporary file, and [`clean_stale_partials`] can tell a dead
/// writer's leftovers by the pid.
pub fn temp_name(path: &Path) -> PathBuf {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded from the operating system's randomness, per process
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    let mut name = path.file_stem().unwrap_or_default().to_os_string();
    name.push(format!(
        ".partial-{}-{:016x}",
        std::process::id(),
        h.finish()
    ));
    if let Some(ext) = path.extension() {
        name.push(".");
        name.push(ext);
    }
    path.with_file_name(name)
}

/// The environment variable that makes writes fail with ENOSPC, for tests: file names,
/// `,`-separated; a [`write_atomic`] of a file of that name fails as on a full disk.
pub const DISK_FULL_FAULT_ENV: &str = "QUANTBENCH_FAULT_DISK_FULL";

/// Whether [`DISK_FULL_FAULT_ENV`] names `path`'s file.
pub fn disk_full_injected(path: &Path) -> bool {
    let Some(names) = std::env::var_os(DISK_FULL_FAULT_ENV) else {
        return false;
    };
    let name = path.file_name().unwrap_or_default();
    names
        .to_string_lossy()
        .split(',')
        .any(|n| !n.is_empty() && std::ffi::OsStr::new(n) == name)
}

/// Puts a finished temporary file ([`temp_name`]) in place of `path`: synced, renamed over it,
/// the folder synced. On an error (or a disk-full fault injected for `path`) the temporary file
/// is removed and `path` keeps its old content.
pub fn replace_with(tmp: &Path, path: &Path) -> Result<()> {
    let synced = if disk_full_injected(path) {
        Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
    } else {
        File::open(tmp).and_then(|f| f.sync_all())
    };
    if let Err(e) = synced {
        let _ = std::fs::remove_file(tmp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    if let Err(e) = std::fs::rename(tmp, path) {
        let _ = std::fs::remove_file(tmp);
        return Err(e).with_context(|| format!("replacing {}", path.display()));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        sync_dir(dir);
    }
    Ok(())
}

/// Replaces `path` with `content` atomically: written to a temporary file beside it
/// ([`temp_name`]), synced, and renamed over it, so `path` always holds either the old or the new
/// content. On an error the temporary file is removed.
pub fn write_atomic(path: &Path, content: &[u8]) -> Result<()> {
    let tmp = temp_name(path);
    let written = (|| -> std::io::Result<()> {
        let mut f = File::options().write(true).create_new(true).open(&tmp)?;
        if disk_full_injected(path) {
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        f.write_all(content)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("replacing {}", path.display()));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        sync_dir(dir);
    }
    Ok(())
}

/// Appends `line` (which must not contain a newline) and a newline to `file` in one write, then
/// flushes it to the disk. A write that fails part-way (disk full) is cut back to where the file
/// ended before, so the file never ends in a torn line.
pub fn append_line(file: &mut File, path: &Path, line: &str) -> Result<()> {
    debug_assert!(!line.contains('\n'));
    append_lines(file, path, &[line])
}

/// [`append_line`] for several lines at once: all of them or none.
pub fn append_lines(file: &mut File, path: &Path, lines: &[&str]) -> Result<()> {
    let before = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    let mut buf = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
    }
    let result = file.write_all(&buf).and_then(|()| file.sync_data());
    if let Err(e) = result {
        let _ = file.set_len(before);
        return Err(e).with_context(|| format!("appending to {}", path.display()));
    }
    Ok(())
}

/// Cuts a torn last line (one without its newline, left by a crash mid-write) off `path`, so that
/// the next append starts on a line of its own. Returns whether it cut anything.
pub fn repair_torn_tail(path: &Path) -> Result<bool> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if text.is_empty() || text.ends_with(b"\n") {
        return Ok(false);
    }
    let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(keep as u64))
        .with_context(|| format!("repairing {}", path.display()))?;
    Ok(true)
}

/// Partial files that a killed process left in `dir`: names containing `.partial-PID` or
/// `.partial-PID-RANDOM` ([`temp_name`], older versions' `NAME.partial-PID`) whose process is
/// gone, and `*.tmp` files (the scheme of
/// older versions) older than `min_age`. Removes them; returns what was removed.
pub fn clean_stale_partials(dir: &Path, min_age: Duration) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let stale = if let Some((_, tag)) = name.rsplit_once(".partial-") {
            let pid = tag.split_once('-').map_or(tag, |(pid, _)| pid);
            pid.parse::<i32>().is_ok_and(|pid| !process_alive(pid))
        } else if name.ends_with(".tmp") {
            e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age >= min_age)
        } else {
            false
        };
        if stale && e.file_type().is_ok_and(|t| t.is_file()) && std::fs::remove_file(&path).is_ok()
        {
            removed.push(path);
        }
    }
    removed
}

/// Whether a process with this id exists (signal 0 probes without sending anything).
pub fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        // it exists but belongs to someone else
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_input_takes_regular_files_only() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.json");
        std::fs::write(&p, "{}").unwrap();
        assert_eq!(read_input_text(&p).unwrap(), "{}");
        let zero = d.path().join("zero.json");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let e = read_input(&zero).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let fifo = d.path().join("fifo.json");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_input(&fifo).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert!(read_input(d.path()).is_err());
    }

    #[test]
    fn atomic_writes_leave_no_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("results.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        // a folder that does not exist: the error names the path
        let e = write_atomic(&d.path().join("nope/x.json"), b"x").unwrap_err();
        assert!(format!("{e:#}").contains("nope/x.json"), "{e:#}");
    }

    #[test]
    fn temporary_names_are_unique_per_call_and_process() {
        let p = Path::new("/c/hashes/x.json");
        let (a, b) = (temp_name(p), temp_name(p));
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        let tag = name
            .strip_prefix("x.partial-")
            .and_then(|t| t.strip_suffix(".json"))
            .unwrap();
        let (pid, random) = tag.split_once('-').unwrap();
        assert_eq!(pid, std::process::id().to_string());
        assert_eq!(random.len(), 16);
        // the scheme clean_stale_partials knows: this process is alive, so it stays
        let d = tempfile::tempdir().unwrap();
        let mine = temp_name(&d.path().join("x.json"));
        std::fs::write(&mine, b"x").unwrap();
        let dead = d.path().join("x.partial-99999999-0123456789abcdef.json");
        std::fs::write(&dead, b"x").unwrap();
        assert_eq!(clean_stale_partials(d.path(), Duration::ZERO), vec![dead]);
        assert!(mine.exists());
    }

    #[test]
    fn writers_of_one_file_in_many_threads_never_collide() {
        // the hash record of two `fetch`es on one fresh cache: every write must succeed
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("memo.json");
        std::thread::scope(|s| {
            for i in 0..8 {
                let p = &p;
                s.spawn(move || {
                    for j in 0..50 {
                        write_atomic(p, format!("{i}-{j}").as_bytes()).unwrap();
                    }
                });
            }
        });
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_torn_last_line_is_cut_and_whole_lines_are_kept() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("results.jsonl");
        std::fs::write(&p, "{\"a\":1}\n{\"b\":").unwrap();
        assert!(repair_torn_tail(&p).unwrap());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"a\":1}\n");
        assert!(!repair_torn_tail(&p).unwrap());
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        append_line(&mut f, &p, "{\"c\":3}").unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"a\":1}\n{\"c\":3}\n"
        );
        assert!(!repair_torn_tail(&d.path().join("missing")).unwrap());
    }

    #[test]
    fn only_partials_of_dead_processes_are_cleaned() {
        let d = tempfile::tempdir().unwrap();
        // a pid that cannot exist (above the kernel's pid_max of 2^22)
        let dead = d.path().join("m-F16.gguf.partial-99999999");
        let mine = d
            .path()
            .join(format!("m-Q8_0.gguf.partial-{}", std::process::id()));
        let tmp = d.path().join("results.json.tmp");
        let keep = d.path().join("m-F16.gguf");
        for p in [&dead, &mine, &tmp, &keep] {
            std::fs::write(p, b"x").unwrap();
        }
        let removed = clean_stale_partials(d.path(), Duration::ZERO);
        assert!(
            removed.contains(&dead) && removed.contains(&tmp),
            "{removed:?}"
        );
        assert!(mine.exists() && keep.exists());
        // a fresh .tmp may belong to a writer at work
        std::fs::write(&tmp, b"x").unwrap();
        assert!(clean_stale_partials(d.path(), Duration::from_secs(3600)).is_empty());
    }

    #[test]
    fn disk_full_is_recognised_through_context() {
        let e = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::ENOSPC))
            .context("writing x");
        assert!(is_disk_full(&e));
        assert!(!is_disk_full(&anyhow::anyhow!("other")));
    }
}
