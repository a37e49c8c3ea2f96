//! Sends one load point's requests: open loop (each request at its own time, however many are
//! still unanswered) or closed loop (a fixed number of users, each sending its next request
//! when the last one is answered). One thread per request in flight; every request ends in a
//! record (answered, failed or timed out), so a point always finishes.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::client::{self, Endpoint, Request};
use crate::serving_stats::RequestRecord;
use crate::traffic::MAX_CONCURRENCY;

/// How one point's requests are sent.
#[derive(Clone, Debug)]
pub enum Pacing {
    /// Request `i` is due `offsets_s[i]` seconds after the start.
    Open { offsets_s: Vec<f64> },
    /// This many users.
    Closed { users: u32 },
}

/// One load point.
pub struct Point<'a> {
    pub requests: &'a [Request],
    pub pacing: Pacing,
    /// Stop sending new requests after this long.
    pub duration: Option<Duration>,
    /// Per request.
    pub timeout: Duration,
    /// Probe number recorded on each request (saturation search).
    pub probe: u32,
}

/// Sends the point's requests and returns one record per request sent, in request order.
/// `stop` ends the sending early (a signal); requests in flight still finish or time out.
pub fn run(
    agent: &ureq::Agent,
    ep: &Endpoint,
    point: &Point<'_>,
    stop: &AtomicBool,
) -> Vec<RequestRecord> {
    let records = Arc::new(Mutex::new(Vec::with_capacity(point.requests.len())));
    let start = Instant::now();
    let out_of_time = |at: f64| point.duration.is_some_and(|d| at > d.as_secs_f64());
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| match &point.pacing {
        Pacing::Open { offsets_s } => {
            let in_flight = Arc::new((Mutex::new(0usize), Condvar::new()));
            for (i, (req, &due)) in point.requests.iter().zip(offsets_s).enumerate() {
                if stop.load(Ordering::Relaxed) || out_of_time(due) {
                    break;
                }
                let wait = due - start.elapsed().as_secs_f64();
                if wait > 0.0 {
                    sleep_unless_stopped(Duration::from_secs_f64(wait), stop);
                }
                // a bound on threads, not on the load: a request over it waits (and its
                // record shows it was sent late)
                {
                    let (m, cv) = &*in_flight;
                    let mut n = m.lock().unwrap_or_else(|e| e.into_inner());
                    while *n >= MAX_CONCURRENCY as usize {
                        n = cv.wait(n).unwrap_or_else(|e| e.into_inner());
                    }
                    *n += 1;
                }
                let (records, in_flight) = (records.clone(), in_flight.clone());
                scope.spawn(move || {
                    let rec = one(agent, ep, req, i as u32, due, start, point);
                    records.lock().unwrap_or_else(|e| e.into_inner()).push(rec);
                    let (m, cv) = &*in_flight;
                    *m.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
                    cv.notify_one();
                });
            }
        }
        Pacing::Closed { users } => {
            for _ in 0..*users {
                let (records, next) = (records.clone(), &next);
                scope.spawn(move || loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let now = start.elapsed().as_secs_f64();
                    if i >= point.requests.len() || stop.load(Ordering::Relaxed) || out_of_time(now)
                    {
                        break;
                    }
                    let rec = one(agent, ep, &point.requests[i], i as u32, now, start, point);
                    records.lock().unwrap_or_else(|e| e.into_inner()).push(rec);
                });
            }
        }
    });
    let mut v = std::mem::take(&mut *records.lock().unwrap_or_else(|e| e.into_inner()));
    v.sort_by_key(|r| r.i);
    v
}

fn one(
    agent: &ureq::Agent,
    ep: &Endpoint,
    req: &Request,
    i: u32,
    due_s: f64,
    start: Instant,
    point: &Point<'_>,
) -> RequestRecord {
    let sent_s = start.elapsed().as_secs_f64();
    let mut rec = client::send(agent, ep, req, point.timeout);
    rec.i = i;
    rec.probe = point.probe;
    rec.scheduled_s = due_s;
    rec.sent_s = sent_s;
    rec
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let end = Instant::now() + d;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() || stop.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}
