//! Serving cells end to end. Against a scripted streaming server on 127.0.0.1 (a test fixture
//! for exact timing and for faults: first token after 100 ms, then one every 20 ms; a fixed
//! number of slots; error statuses, broken and endless streams), and against a real
//! llama-server built from the pinned sources (`scripts/build-llama-server.sh`, named by
//! `QUANTBENCH_LLAMA_SERVER`, which `scripts/test` sets) on the tiny model.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, cells, json, stderr, Scratch};

/// How the scripted server answers.
#[derive(Clone, Copy, Debug)]
pub enum Script {
    /// `first_ms` to the first token, then one token every `gap_ms`, each in its own chunk.
    Tokens { first_ms: u64, gap_ms: u64 },
    /// An error status for every `every`-th completion request (the others as `Tokens`).
    Status { code: u16, every: usize },
    /// A chunk that is not JSON after the first token.
    Malformed,
    /// Tokens forever.
    Endless,
    /// One enormous line.
    Huge,
}

/// A streaming OpenAI-compatible server with `slots` requests served at once (the others wait
/// for a slot), answering every completion with exactly `max_tokens` tokens.
pub struct Scripted {
    pub port: u16,
    pub served: Arc<AtomicUsize>,
    pub max_in_flight: Arc<AtomicUsize>,
}

impl Scripted {
    pub fn start(script: Script, slots: usize) -> Scripted {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let served = Arc::new(AtomicUsize::new(0));
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let state = Arc::new((Mutex::new(0usize), Condvar::new()));
        let (s2, m2) = (served.clone(), max_in_flight.clone());
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let (state, served, maxf) = (state.clone(), s2.clone(), m2.clone());
                std::thread::spawn(move || {
                    let _ = handle(conn, script, slots, &state, &served, &maxf);
                });
            }
        });
        Scripted {
            port,
            served,
            max_in_flight,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }
}

fn handle(
    mut conn: TcpStream,
    script: Script,
    slots: usize,
    state: &(Mutex<usize>, Condvar),
    served: &AtomicUsize,
    max_in_flight: &AtomicUsize,
) -> std::io::Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            r.read_line(&mut h)?;
            if h.trim().is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        if path.ends_with("/models") {
            let b = r#"{"object":"list","data":[{"id":"scripted","object":"model"}]}"#;
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )?;
            continue;
        }
        let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let n = req["max_tokens"].as_u64().unwrap_or(16);
        let k = served.fetch_add(1, Ordering::SeqCst) + 1;
        if let Script::Status { code, every } = script {
            if k.is_multiple_of(every) {
                let b = r#"{"error":{"message":"scripted failure"}}"#;
                write!(
                    conn,
                    "HTTP/1.1 {code} Scripted\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                    b.len()
                )?;
                return Ok(());
            }
        }
        // wait for a slot
        {
            let (m, cv) = state;
            let mut busy = m.lock().unwrap();
            while *busy >= slots {
                busy = cv.wait(busy).unwrap();
            }
            *busy += 1;
            max_in_flight.fetch_max(*busy, Ordering::SeqCst);
        }
        let result = stream(&mut conn, script, n);
        let (m, cv) = state;
        *m.lock().unwrap() -= 1;
        cv.notify_one();
        return result;
    }
}

fn stream(conn: &mut TcpStream, script: Script, n: u64) -> std::io::Result<()> {
    conn.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
    )?;
    let (first, gap) = match script {
        Script::Tokens { first_ms, gap_ms } => (first_ms, gap_ms),
        _ => (100, 20),
    };
    let chunk = |t: &str, fin: bool| {
        format!(
            "data: {{\"choices\":[{{\"text\":\"{t}\",\"index\":0,\"finish_reason\":{}}}]}}\n\n",
            if fin { "\"length\"" } else { "null" }
        )
    };
    // Token i (from 1) leaves at start + first + (i - 1) * gap: an absolute schedule, so a late
    // wake-up on a busy machine delays one token, and the next ones are on time again (sleeping
    // `gap` after each token added every overshoot to all the later ones).
    let start = Instant::now();
    let mut i = 0u64;
    loop {
        i += 1;
        let due = start + Duration::from_millis(first + (i - 1) * gap);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        conn.write_all(chunk("tok", false).as_bytes())?;
        conn.flush()?;
        match script {
            Script::Malformed if i == 2 => {
                conn.write_all(b"data: {this is not json\n\n")?;
                return Ok(());
            }
            Script::Huge if i == 2 => {
                let big = format!("data: {}\n\n", "x".repeat(3 << 20));
                conn.write_all(big.as_bytes())?;
                return Ok(());
            }
            Script::Endless => {}
            _ if i >= n => break,
            _ => {}
        }
    }
    let fin = format!(
        "data: {{\"choices\":[{{\"text\":\"\",\"index\":0,\"finish_reason\":\"length\"}}],\"usage\":{{\"prompt_tokens\":8,\"completion_tokens\":{n}}}}}\n\ndata: [DONE]\n\n"
    );
    let _ = chunk;
    conn.write_all(fin.as_bytes())?;
    conn.flush()
}

/// A models.toml measuring the endpoint `url` with `workload` lines and `extra` top-level
/// tables.
fn endpoint_config(url: &str, workload: &str, extra: &str) -> String {
    format!(
        "schema = 1\n{extra}\n[workload]\n{workload}\n[[model]]\nname = \"scripted\"\nendpoint = \"{url}\"\n"
    )
}

fn serving(cell: &Value) -> &Value {
    &cell["serving"]
}

fn summary(cell: &Value) -> &Value {
    &cell["serving"]["summary"]
}

/// The run folder's requests.jsonl, parsed.
fn requests(dir: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("requests.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn scripted_timing_comes_out_as_scripted() {
    let srv = Scripted::start(
        Script::Tokens {
            first_ms: 100,
            gap_ms: 20,
        },
        4,
    );
    let s = Scratch::new();
    s.config(&endpoint_config(
        &srv.url(),
        "requests = 8\nwarmup_requests = 1\nprompt_tokens = 8\noutput_tokens = 11\nconcurrency = 1",
        "",
    ));
    let out = s.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dir = s.run_dir();
    let r = json(&dir.join("results.json"));
    let c = &cells(&r)[0];
    assert_eq!(c["quant"], "SERVER");
    let p = summary(c);
    assert_eq!(p["requests"], 8);
    assert_eq!(p["completed"], 8);
    let near = |v: &Value, want: f64, tol: f64| {
        let x = v.as_f64().unwrap();
        assert!(
            (x - want).abs() <= tol,
            "{x} is not within {tol} of {want}: {p}"
        );
    };
    // medians: what holds on a busy machine (a late wake-up shifts one request, not the median)
    near(&p["ttft_ms"]["p50"], 100.0, 15.0);
    near(&p["itl_ms"]["p50"], 20.0, 5.0);
    near(&p["tpot_ms"]["p50"], 20.0, 5.0);
    near(&p["e2e_ms"]["p50"], 300.0, 25.0);
    assert_eq!(p["output_tokens_mean"], 11.0);
    assert_eq!(p["output_mismatches"], 0);
    // one user: never two requests at the server at once; warm-up + 8 requests reached it
    assert_eq!(srv.max_in_flight.load(Ordering::SeqCst), 1);
    assert_eq!(srv.served.load(Ordering::SeqCst), 9);
    // every request in requests.jsonl with its clocks, under the cell's key
    let reqs = requests(&dir);
    assert_eq!(reqs.len(), 8);
    assert!(reqs
        .iter()
        .all(|q| q["cell"] == c["key"] && q["itl_ms"].as_array().unwrap().len() == 10));
    // CSV columns of the same point
    let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    let mut rd = csv::Reader::from_reader(csv.as_bytes());
    let head = rd.headers().unwrap().clone();
    let row = rd.records().next().unwrap().unwrap();
    let col = |n: &str| {
        row[head
            .iter()
            .position(|h| h == n)
            .unwrap_or_else(|| panic!("no column {n}"))]
        .to_string()
    };
    assert_eq!(col("completed_requests"), "8");
    assert_eq!(col("concurrency"), "1");
    assert!((col("ttft_ms_p50").parse::<f64>().unwrap() - 100.0).abs() < 15.0);
    for n in [
        "req_per_s",
        "output_tok_s",
        "tpot_ms_p99",
        "itl_ms_p95",
        "e2e_ms_p90",
    ] {
        assert!(!col(n).is_empty(), "{n}");
    }
}

#[test]
fn the_saturation_search_lands_near_a_known_capacity() {
    // 2 slots, 100 ms + 10 × 20 ms per request: 2 / 0.3 s = 6.67 requests/s at most. Below it,
    // constant arrivals never queue (TTFT 100 ms); above it the queue grows and so does TTFT
    // (at 5% over, 60 requests leave about 3 waiting: ~0.4 s more at the end).
    let srv = Scripted::start(
        Script::Tokens {
            first_ms: 100,
            gap_ms: 20,
        },
        2,
    );
    let s = Scratch::new();
    s.config(&endpoint_config(
        &srv.url(),
        "requests = 60\nwarmup_requests = 1\noutput_tokens = 11\narrivals = \"constant\"\nrate = \"max\"",
        // p90 and 400 ms: a stalled thread on a busy machine moves one request, not the p90;
        // beyond the capacity the queue adds seconds within a probe
        "[slo]\nmax_ttft_ms = 400\npercentile = 90\n",
    ));
    let out = s.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = json(&s.run_dir().join("results.json"));
    let c = &cells(&r)[0];
    let max = serving(c)["max_rate_req_s"].as_f64().unwrap();
    let capacity = 2.0 / 0.3;
    assert!(
        (max - capacity).abs() / capacity <= 0.10,
        "found {max}, capacity {capacity}: {}",
        serving(c)["points"]
    );
    let probes = serving(c)["points"].as_array().unwrap();
    assert!(probes.len() <= 12, "{} probes", probes.len());
    // the reported point is the one found, and it met the SLO
    assert_eq!(summary(c)["slo_met"], true);
    assert!(stderr(&out).contains("max rate"), "{}", stderr(&out));
}

#[test]
fn error_answers_and_broken_streams_are_counted_not_fatal() {
    for (script, what) in [
        (
            Script::Status {
                code: 503,
                every: 3,
            },
            "HTTP 503",
        ),
        (
            Script::Status {
                code: 429,
                every: 2,
            },
            "HTTP 429",
        ),
        (
            Script::Status {
                code: 500,
                every: 4,
            },
            "HTTP 500",
        ),
        (Script::Malformed, "malformed event"),
        (Script::Huge, "longer than"),
        (Script::Endless, "did not end within"),
    ] {
        let srv = Scripted::start(script, 4);
        let s = Scratch::new();
        s.config(&endpoint_config(
            &srv.url(),
            "requests = 6\nwarmup_requests = 0\noutput_tokens = 4\nconcurrency = 2\nrequest_timeout_s = 2",
            "",
        ));
        let out = s.run(&[]);
        assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(&out));
        let dir = s.run_dir();
        let r = json(&dir.join("results.json"));
        let p = summary(&cells(&r)[0]);
        assert_eq!(p["requests"], 6, "{what}");
        let failed = p["failed_requests"].as_u64().unwrap();
        assert!(failed >= 1, "{what}: {p}");
        assert!(
            p["first_error"].as_str().unwrap().contains(what),
            "{what}: {p}"
        );
        let reqs = requests(&dir);
        assert_eq!(
            reqs.iter().filter(|q| q.get("error").is_some()).count() as u64,
            failed
        );
        if matches!(script, Script::Endless) {
            assert_eq!(p["timed_out_requests"].as_u64(), Some(failed));
        }
    }
}

#[test]
fn an_endpoint_that_is_down_fails_its_cell_with_the_reason() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = Scratch::new();
    s.config(&endpoint_config(
        &format!("http://127.0.0.1:{port}/v1"),
        "requests = 2\nconcurrency = 1",
        "",
    ));
    let out = s.run(&[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let r = json(&s.run_dir().join("results.json"));
    let e = cells(&r)[0]["error"].as_str().unwrap().to_string();
    assert!(e.contains("does not answer /models"), "{e}");
}

#[test]
fn bad_workloads_are_refused_before_anything_runs() {
    let s = Scratch::new();
    std::fs::write(s.path().join("empty.jsonl"), "").unwrap();
    std::fs::write(
        s.path().join("bad.jsonl"),
        "{\"prompt\": \"x\"}\nnot json\n",
    )
    .unwrap();
    for (workload, slo, want) in [
        ("rate = 0", "", "rate must be a positive number"),
        ("rate = -1", "", "rate must be a positive number"),
        ("rate = nan", "", "rate must be a positive number"),
        ("rate = 1e12", "", "above the limit"),
        ("concurrency = 0", "", "concurrency"),
        ("rate = 1\nconcurrency = 2", "", "not both"),
        ("requests = 0", "", "requests"),
        (
            "prompt_tokens = 0",
            "",
            "prompt_tokens must be at least 1 token",
        ),
        ("output_tokens = 99999999999", "", "output_tokens"),
        (
            "prompt_tokens = {dist = \"normal\", mean = 10}",
            "",
            "needs sd",
        ),
        ("prompt_tokens = {dist = \"zipf\", mean = 10}", "", "zipf"),
        ("arrivals = \"gamma\"", "", "needs burstiness"),
        ("dataset = \"missing.jsonl\"", "", "missing.jsonl"),
        ("dataset = \"empty.jsonl\"", "", "is empty"),
        ("dataset = \"bad.jsonl\"", "", "line 2 is not a JSON object"),
        ("rate = \"max\"", "", "set max_ttft_ms"),
        ("rate = \"fast\"", "", "\"max\""),
        ("requets = 3", "", "did you mean \"requests\""),
    ] {
        s.config(&endpoint_config("http://127.0.0.1:9/v1", workload, slo));
        let out = s.run(&[]);
        assert_eq!(out.status.code(), Some(2), "{workload}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{workload}: {}", stderr(&out));
        assert!(!s.path().join("reports").exists(), "{workload}");
    }
    // a key in the endpoint's place, or credentials in its URL: refused, never echoed
    s.config(
        "schema = 1\n[[model]]\nname = \"e\"\nendpoint = \"http://u:sekrit@127.0.0.1:9/v1\"\n",
    );
    let out = s.run(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("must not carry credentials"),
        "{}",
        stderr(&out)
    );
    s.config("schema = 1\n[[model]]\nname = \"e\"\nendpoint = \"http://127.0.0.1:9/v1\"\napi_key_env = \"sk-live-sekrit\"\n");
    let out = s.run(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!stderr(&out).contains("sekrit"), "{}", stderr(&out));
}

#[test]
fn the_api_key_goes_to_the_endpoint_and_nowhere_else() {
    // a server that records the Authorization headers it gets
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen2 = seen.clone();
    let inner = Scripted::start(
        Script::Tokens {
            first_ms: 5,
            gap_ms: 1,
        },
        4,
    );
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let seen = seen2.clone();
            let inner_port = inner.port;
            std::thread::spawn(move || {
                // read the request, note its Authorization, pass it on to the scripted server
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut head = String::new();
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("authorization:") {
                        seen.lock().unwrap().push(v.trim().to_string());
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    head.push_str(&h);
                    if h.trim().is_empty() {
                        break;
                    }
                }
                let mut body = vec![0u8; len];
                r.read_exact(&mut body).unwrap();
                let mut up = TcpStream::connect(("127.0.0.1", inner_port)).unwrap();
                up.write_all(head.as_bytes()).unwrap();
                up.write_all(&body).unwrap();
                let mut conn = conn;
                let _ = std::io::copy(&mut up, &mut conn);
            });
        }
    });
    let s = Scratch::new();
    s.config(&format!(
        "schema = 1\n[workload]\nrequests = 3\nwarmup_requests = 0\nconcurrency = 1\noutput_tokens = 3\n\
         [[model]]\nname = \"e\"\nendpoint = \"http://127.0.0.1:{port}/v1\"\napi_key_env = \"QB_TEST_KEY\"\n"
    ));
    let secret = "sk-test-0123456789abcdef";
    let out = s
        .cmd()
        .arg("run")
        .env("QB_TEST_KEY", secret)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = seen.lock().unwrap().clone();
    assert!(
        got.len() >= 4
            && got
                .iter()
                .all(|h| h == &format!("bearer {secret}").to_ascii_lowercase()),
        "{got:?}"
    );
    // never in any output
    let mut all = stderr(&out) + &common::stdout(&out);
    for e in std::fs::read_dir(s.run_dir()).unwrap().flatten() {
        if let Ok(t) = std::fs::read_to_string(e.path()) {
            all += &t;
        }
    }
    assert!(!all.contains(secret));
}

// ---- a real llama-server ---------------------------------------------------------------------

/// The pinned llama-server (`scripts/test` builds it and names it in QUANTBENCH_LLAMA_SERVER).
pub fn llama_server() -> String {
    std::env::var("QUANTBENCH_LLAMA_SERVER").unwrap_or_else(|_| {
        panic!(
            "QUANTBENCH_LLAMA_SERVER is not set: run the tests with scripts/test (it builds the \
             pinned llama-server), or set it to a llama-server built by scripts/build-llama-server.sh"
        )
    })
}

fn served_config(workload: &str, extra: &str) -> String {
    format!(
        "schema = 1\n[defaults]\nquants = [\"Q8_0\"]\nn_parallel = 2\nserve = true\nserver_bin = \"{}\"\n\
         {extra}\n[workload]\nwarmup_requests = 1\n{workload}\n\
         [[model]]\nname = \"tiny\"\nsynthetic = \"tiny-llama\"\n",
        llama_server()
    )
}

#[test]
fn a_real_llama_server_serves_a_rate_sweep_with_exact_output_counts() {
    let s = Scratch::new();
    s.config(&served_config(
        "requests = 12\nprompt_tokens = {dist = \"uniform\", min = 8, max = 24}\noutput_tokens = 8\nrate = [2, 8]",
        "[slo]\nmax_ttft_ms = 60000\n",
    ));
    let out = s.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dir = s.run_dir();
    let r = json(&dir.join("results.json"));
    let cs = cells(&r);
    assert_eq!(cs.len(), 2);
    for (c, rate) in cs.iter().zip([2.0, 8.0]) {
        let sv = serving(c);
        assert_eq!(sv["server_pinned"], true, "{sv}");
        assert!(sv["command"].as_str().unwrap().contains("-np 2"), "{sv}");
        let p = summary(c);
        assert_eq!(p["offered_rate_req_s"], rate);
        assert_eq!(p["completed"], 12, "{p}");
        // the server produced exactly what was asked: its usage count, every request
        assert_eq!(p["output_mismatches"], 0, "{p}");
        assert_eq!(p["output_tokens_mean"], 8.0);
        assert!(p["server_decode_ms_mean"].as_f64().unwrap() > 0.0);
        assert!(p["goodput_frac"].as_f64().unwrap() > 0.0);
        assert!(
            c["key"].as_str().unwrap().contains("servedr"),
            "{}",
            c["key"]
        );
    }
    let reqs = requests(&dir);
    assert_eq!(reqs.len(), 24);
    assert!(reqs.iter().all(|q| q["usage_output_tokens"] == 8));
    // prompt lengths as drawn (+ BOS where the model adds one)
    assert!(reqs.iter().all(|q| {
        let (asked, got) = (
            q["prompt_tokens"].as_u64().unwrap(),
            q["usage_prompt_tokens"].as_u64().unwrap(),
        );
        (8..=24).contains(&asked) && (got == asked || got == asked + 1)
    }));
}

#[test]
fn a_closed_loop_and_a_shared_prefix_with_and_without_the_prompt_cache() {
    let s = Scratch::new();
    for (cache, want_cached) in [(true, true), (false, false)] {
        s.config(&served_config(
            &format!(
                "requests = 6\nprompt_tokens = 8\noutput_tokens = 4\nshared_prefix_tokens = 64\n\
                 cache_prompt = {cache}\nconcurrency = 2"
            ),
            "",
        ));
        let out = s
            .cmd()
            .args(["run", "--out", &format!("r{cache}")])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let r = json(&s.run_dir_in(&format!("r{cache}")).join("results.json"));
        let p = summary(&cells(&r)[0]);
        assert_eq!(p["concurrency"], 2);
        assert_eq!(p["completed"], 6);
        let cached = p["cached_prompt_tokens"].as_u64().unwrap_or(0);
        assert_eq!(cached > 0, want_cached, "cache_prompt = {cache}: {p}");
        assert!(serving(&cells(&r)[0])["workload"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "prompt cache {}",
                if cache { "on" } else { "off" }
            )));
    }
}

#[test]
fn a_server_killed_mid_cell_fails_only_its_cell() {
    let s = Scratch::new();
    // two served cells (rates), then the in-process cell; the first server is killed
    s.config(
        &served_config(
            "requests = 40\nprompt_tokens = 8\noutput_tokens = 64\nrate = [1, 2]",
            "",
        )
        .replace("serve = true", "serve = [true, false]"),
    );
    let mut child = s.process().arg("run").spawn().unwrap();
    // wait for a llama-server of this test (its model file is in this scratch's cache)
    let cache = s.cache();
    let pid = {
        let mut found = None;
        common::wait_for(180, "the cell's llama-server", || {
            found = server_pid(&cache);
            found.is_some()
        });
        found.unwrap()
    };
    std::thread::sleep(Duration::from_secs(2));
    common::signal(pid, 9);
    let status = common::wait_bounded(&mut child, 600);
    assert_eq!(status.code(), Some(3));
    let r = json(&s.run_dir().join("results.json"));
    let cs = cells(&r);
    assert_eq!(cs.len(), 3);
    let failed: Vec<&Value> = cs.iter().filter(|c| c["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{cs:?}");
    let e = failed[0]["error"].as_str().unwrap();
    assert!(e.contains("llama-server") && e.contains("signal 9"), "{e}");
    assert!(cs.iter().filter(|c| c["status"] == "ok").count() == 2);
}

/// The pid of a running llama-server whose model file is under `cache`.
fn server_pid(cache: &std::path::Path) -> Option<u32> {
    let want = cache.to_string_lossy().to_string();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("llama-server") && cmd.contains(&want) {
            return Some(pid);
        }
    }
    None
}

#[test]
fn a_missing_or_foreign_llama_server_is_said_before_or_in_the_report() {
    let s = Scratch::new();
    // none: an error before anything runs, naming the build script
    s.config(&served_config("requests = 2\nconcurrency = 1", "").replace(
        &format!("server_bin = \"{}\"", llama_server()),
        "server_bin = \"/nonexistent/llama-server\"",
    ));
    let out = s.run(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("scripts/build-llama-server.sh"),
        "{}",
        stderr(&out)
    );
    assert!(!s.path().join("reports").exists());
    // another build (a wrapper that reports another version): a warning, and the report says so
    let wrapper = s.path().join("other-llama-server");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'version: 9999 (elsewhere)'; exit 0; fi\nexec {} \"$@\"\n",
            llama_server()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    s.config(&served_config("requests = 2\nconcurrency = 1", "").replace(
        &format!("server_bin = \"{}\"", llama_server()),
        &format!("server_bin = \"{}\"", wrapper.display()),
    ));
    let out = s.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not the build of the pinned llama.cpp"),
        "{}",
        stderr(&out)
    );
    let r = json(&s.run_dir().join("results.json"));
    assert_eq!(serving(&cells(&r)[0])["server_pinned"], false);
    assert_eq!(
        serving(&cells(&r)[0])["server_version"],
        "version: 9999 (elsewhere)"
    );
}

#[test]
fn a_taken_port_is_retried_and_a_stopped_server_times_requests_out() {
    let s = Scratch::new();
    // the first start of the cell's server tries a port something already listens on
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    s.config(&served_config(
        "requests = 3\nprompt_tokens = 8\noutput_tokens = 4\nconcurrency = 1",
        "",
    ));
    let out = s
        .cmd()
        .arg("run")
        .env("QUANTBENCH_SERVER_FIRST_PORT", port.to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = json(&s.run_dir().join("results.json"));
    assert_eq!(summary(&cells(&r)[0])["completed"], 3);
    drop(taken);

    // a server that stops answering (SIGSTOP) mid-cell: its requests time out and are counted;
    // the cell ends (the stopped server is killed), nothing hangs
    let s = Scratch::new();
    s.config(&served_config(
        "requests = 30\nprompt_tokens = 8\noutput_tokens = 32\nrate = 2\nrequest_timeout_s = 3",
        "",
    ));
    let mut child = s.process().arg("run").spawn().unwrap();
    let cache = s.cache();
    let mut pid = None;
    common::wait_for(180, "the cell's llama-server", || {
        pid = server_pid(&cache);
        pid.is_some()
    });
    std::thread::sleep(Duration::from_secs(5));
    common::signal(pid.unwrap(), 19); // SIGSTOP
    let status = common::wait_bounded(&mut child, 300);
    assert_eq!(status.code(), Some(0));
    let r = json(&s.run_dir().join("results.json"));
    let p = summary(&cells(&r)[0]);
    assert!(p["timed_out_requests"].as_u64().unwrap() >= 1, "{p}");
    assert!(
        p["first_error"].as_str().unwrap().contains("within 3 s"),
        "{p}"
    );
}

#[test]
fn a_relative_model_path_reaches_the_server() {
    // llama-server runs in a folder of its own (the modules it loads): a `path` relative to
    // where quantbench runs failed every served cell with "failed to load model"
    let s = Scratch::new();
    std::fs::create_dir_all(s.path().join("models")).unwrap();
    std::fs::copy(
        s.cache()
            .join("synthetic/tiny-llama-seed0-w1/tiny-llama-Q8_0.gguf"),
        s.path().join("models/tl-Q8_0.gguf"),
    )
    .unwrap();
    s.config(
        &served_config(
            "requests = 3\nprompt_tokens = 8\noutput_tokens = 4\nconcurrency = 1",
            "",
        )
        .replace(
            "synthetic = \"tiny-llama\"",
            "path = \"models/tl-{QUANT}.gguf\"",
        ),
    );
    let out = s.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = json(&s.run_dir().join("results.json"));
    let c = &cells(&r)[0];
    assert_eq!(c["status"], "ok", "{c}");
    assert_eq!(summary(c)["completed"], 3, "{c}");
}
