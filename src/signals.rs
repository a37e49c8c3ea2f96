//! SIGINT (Ctrl-C), SIGTERM (what cron, systemd, CI runners and Kubernetes send) and SIGHUP (a
//! closed terminal) all mean the same: the first one asks the run to stop after writing its
//! reports, marked `interrupted`; a second one leaves at once. The exit status is 128 + the
//! signal's number (130, 143, 129).
//!
//! The signals are blocked in every thread and taken by one thread that waits for them
//! (`sigwait`), so no code runs inside a signal handler. Child processes start with an empty
//! signal mask (the standard library resets it on spawn), so workers can still be signalled.
//!
//! A run blocked where it does not look at the flag (a read that waits, a hung mount) would
//! never stop: after the first signal, the code that sees the flag says so through [`stopping`];
//! when nothing has within [`GRACE`], the process ends with 128 + the signal anyway, after a
//! last note (the caller's). Never prints.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};

/// The signal that interrupted the run (0: none yet).
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// Whether the stop asked for by a signal was seen by code that stops cleanly.
static SEEN: AtomicBool = AtomicBool::new(false);

/// How long after the first signal the process may go without any code seeing the stop before
/// it ends anyway.
pub const GRACE: Duration = Duration::from_secs(10);

/// Whether a stop was asked for (`flag` is the one given to [`install`]); `true` also tells the
/// signal thread that a clean stop is under way, so it does not end the process after [`GRACE`].
/// Every check of the stop flag goes through here.
pub fn stopping(flag: &AtomicBool) -> bool {
    let stop = flag.load(Ordering::SeqCst);
    if stop {
        SEEN.store(true, Ordering::SeqCst);
    }
    stop
}

/// Ends the process with 128 + `sig` unless something calls [`stopping`] within `grace`;
/// `note` is called first with a line to show.
fn watchdog(sig: i32, grace: Duration, note: fn(&str)) {
    let start = Instant::now();
    while start.elapsed() < grace {
        if SEEN.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !SEEN.load(Ordering::SeqCst) {
        note(&format!(
            "{} received, but the run is blocked where it cannot stop cleanly (after {} s); \
             leaving now. Reports already written stay valid; `--resume` continues a run",
            name(sig),
            grace.as_secs()
        ));
        std::process::exit(128 + sig);
    }
}

/// The signals to take: SIGINT, SIGTERM and SIGHUP, less those this process was started with
/// ignored (`nohup`, or `&` in a non-interactive shell, ignore SIGHUP and SIGINT: a blocked
/// signal is still queued, so taking it would stop a run that was meant to survive them).
fn set() -> SigSet {
    let mut s = SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        if !ignored(sig) {
            s.add(sig);
        }
    }
    s
}

fn ignored(sig: Signal) -> bool {
    // SAFETY: sigaction with a null new action only reads the current disposition.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig as libc::c_int, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Starts taking SIGINT, SIGTERM and SIGHUP: the first sets `flag`, a second ends the process
/// with 128 + its number, and so does the first when no code sees it within [`GRACE`] (`note`
/// gets the line that says so). Call first thing in `main`, before any other thread exists
/// (threads inherit the mask).
pub fn install(flag: Arc<AtomicBool>, note: fn(&str)) -> std::io::Result<()> {
    let s = set();
    s.thread_block().map_err(std::io::Error::from)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let Ok(sig) = s.wait() else { continue };
            let first = RECEIVED
                .compare_exchange(0, sig as i32, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok();
            flag.store(true, Ordering::SeqCst);
            if !first {
                std::process::exit(128 + sig as i32);
            }
            let sig = sig as i32;
            // the watchdog waits on its own thread: this one keeps taking a second signal
            let _ = std::thread::Builder::new()
                .name("signals-grace".into())
                .spawn(move || watchdog(sig, GRACE, note));
        })?;
    Ok(())
}

/// The signal that interrupted the run, if one did.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// The exit status of an interrupted run: 128 + the signal (130 when the stop came some other
/// way, as Ctrl-C's).
pub fn exit_code() -> u8 {
    u8::try_from(128 + received().unwrap_or(libc::SIGINT)).unwrap_or(130)
}

/// The signal's name, for messages: `SIGTERM`.
pub fn name(sig: i32) -> String {
    Signal::try_from(sig).map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_string())
}
