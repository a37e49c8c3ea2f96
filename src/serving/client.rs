//! One streamed completion request to an OpenAI-compatible endpoint (`/v1/completions`), timed
//! as the user sees it: [`RequestRecord`]'s clocks start when the request is sent and stop at
//! the first chunk that carries text (TTFT), at each later chunk with text (ITL) and at the
//! response's last event (E2E). Whatever the server answers — an error status, a malformed or
//! endless stream, huge lines, silence — becomes a failed record, never a panic or a hang.

use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::serving_stats::RequestRecord;

/// Longest SSE line accepted (bytes): a chunk of one token is a few hundred.
const MAX_LINE: usize = 1 << 20;
/// Most bytes one response may send.
const MAX_BODY: usize = 64 << 20;

/// Where requests go and how they authenticate.
#[derive(Clone)]
pub struct Endpoint {
    /// `http://host:port/v1` (no trailing slash).
    pub base: String,
    /// The model name to put in requests.
    pub model: String,
    /// Sent as `Authorization: Bearer` to this endpoint only (never followed to a redirect).
    pub api_key: Option<String>,
    /// A llama-server quantbench started: token-id prompts, `cache_prompt`, `timings`.
    pub llama_server: bool,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("base", &self.base)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A prompt: token ids (a llama-server quantbench started, exact lengths) or text.
#[derive(Clone, Debug, PartialEq)]
pub enum Prompt {
    Tokens(Vec<i32>),
    Text(String),
}

/// One request to send.
#[derive(Clone, Debug)]
pub struct Request {
    pub prompt: Prompt,
    /// Prompt tokens asked for (with the shared prefix), for the record.
    pub prompt_tokens: u32,
    pub output_tokens: u32,
    pub cache_prompt: bool,
}

/// An HTTP agent for one endpoint: no proxy (a server on this machine must not be reached
/// through one), no redirects (the key must not follow one), bounded waits.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .redirects(0)
        .timeout_connect(Duration::from_secs(10).min(timeout))
        .timeout(timeout)
        .max_idle_connections_per_host(256)
        .build()
}

/// The JSON body of a request.
pub fn body(ep: &Endpoint, r: &Request) -> Value {
    let prompt = match &r.prompt {
        Prompt::Tokens(t) => serde_json::json!(t),
        Prompt::Text(s) => serde_json::json!(s),
    };
    let mut b = serde_json::json!({
        "model": ep.model,
        "prompt": prompt,
        "max_tokens": r.output_tokens,
        "stream": true,
        "stream_options": {"include_usage": true},
        "temperature": 0,
        // vLLM and llama-server both take these: produce exactly max_tokens tokens
        "ignore_eos": true,
        "min_tokens": r.output_tokens,
    });
    if ep.llama_server {
        b["cache_prompt"] = serde_json::json!(r.cache_prompt);
        b["n_predict"] = serde_json::json!(r.output_tokens);
    } else if !r.cache_prompt {
        // `cache_prompt = false` holds for an endpoint too: a llama-server there honours it,
        // other servers ignore the unknown field (as they do `ignore_eos`); on, the server's
        // default, nothing is sent
        b["cache_prompt"] = serde_json::json!(false);
    }
    b
}

/// Sends `r` and reads the streamed answer. `sent_s` (the record's send time) is filled by
/// the caller; the record's times are relative to the moment the request left.
pub fn send(agent: &ureq::Agent, ep: &Endpoint, r: &Request, deadline: Duration) -> RequestRecord {
    let mut rec = RequestRecord {
        prompt_tokens: r.prompt_tokens,
        output_tokens: r.output_tokens,
        ..Default::default()
    };
    let payload = body(ep, r).to_string();
    let mut req = agent
        .post(&format!("{}/completions", ep.base))
        .set("Content-Type", "application/json")
        .set("Accept", "text/event-stream")
        .timeout(deadline);
    if let Some(k) = &ep.api_key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    let t0 = Instant::now();
    let resp = match req.send_string(&payload) {
        Ok(resp) => resp,
        Err(ureq::Error::Status(code, resp)) => {
            rec.status = code;
            let mut text = String::new();
            let _ = resp.into_reader().take(2048).read_to_string(&mut text);
            rec.error = Some(format!("HTTP {code}: {}", one_line(&text, 300)));
            return rec;
        }
        Err(ureq::Error::Transport(t)) => {
            rec.timed_out = is_timeout(&t.to_string()) || t0.elapsed() >= deadline;
            rec.error = Some(if rec.timed_out {
                format!("no answer within {} s", deadline.as_secs())
            } else {
                format!("request failed: {}", one_line(&t.to_string(), 300))
            });
            return rec;
        }
    };
    rec.status = resp.status();
    if !resp.content_type().contains("event-stream") {
        // a server that ignored `stream`: one JSON answer, no per-token times
        let mut text = String::new();
        let _ = resp.into_reader().take(4096).read_to_string(&mut text);
        rec.error = Some(format!(
            "the answer is not a stream (Content-Type {}): {}",
            "not text/event-stream",
            one_line(&text, 200)
        ));
        return rec;
    }
    read_stream(resp.into_reader(), t0, deadline, &mut rec);
    rec
}

fn is_timeout(s: &str) -> bool {
    let s = s.to_ascii_lowercase();
    s.contains("timed out") || s.contains("timeout")
}

/// One line of at most `max` characters, for messages.
pub fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max).collect::<String>())
    } else {
        flat.to_string()
    }
}

/// Reads server-sent events until `[DONE]`, the end of the body, an error or the deadline.
fn read_stream(
    body: Box<dyn Read + Send + Sync>,
    t0: Instant,
    deadline: Duration,
    rec: &mut RequestRecord,
) {
    let mut reader = BufReader::with_capacity(64 << 10, body);
    let mut line = Vec::new();
    let mut last_text: Option<f64> = None;
    let mut last_event: Option<f64> = None;
    let mut total = 0usize;
    let mut finished = false;
    loop {
        line.clear();
        let n = match read_line_capped(&mut reader, &mut line) {
            Ok(n) => n,
            Err(e) => {
                rec.timed_out = is_timeout(&e.to_string()) || t0.elapsed() >= deadline;
                rec.error = Some(if rec.timed_out {
                    format!("the stream did not end within {} s", deadline.as_secs())
                } else {
                    format!("reading the stream: {}", one_line(&e.to_string(), 200))
                });
                return;
            }
        };
        let now_ms = t0.elapsed().as_secs_f64() * 1000.0;
        if n == 0 {
            break; // end of body
        }
        total += n;
        if total > MAX_BODY {
            rec.error = Some(format!("the answer exceeds {} MiB", MAX_BODY >> 20));
            return;
        }
        if t0.elapsed() >= deadline {
            rec.timed_out = true;
            rec.error = Some(format!(
                "the stream did not end within {} s",
                deadline.as_secs()
            ));
            return;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let Some(data) = text.strip_prefix("data:") else {
            continue; // blank separators, `event:`, `: keep-alive` comments
        };
        let data = data.trim_start();
        if data == "[DONE]" {
            finished = true;
            break;
        }
        let v: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(_) => {
                rec.error = Some(format!("malformed event: {}", one_line(data, 120)));
                return;
            }
        };
        if let Some(e) = v.get("error") {
            rec.error = Some(format!(
                "the server reported an error: {}",
                one_line(&e.to_string(), 200)
            ));
            return;
        }
        last_event = Some(now_ms);
        finished |= event(&v, now_ms, &mut last_text, rec);
    }
    if rec.ttft_ms.is_none() {
        rec.error = Some("the stream ended without any generated text".into());
        return;
    }
    if !finished && rec.usage_output_tokens.is_none() {
        rec.error = Some("the stream ended before the answer was complete".into());
        return;
    }
    rec.e2e_ms = last_event.or(last_text);
}

/// One event of the stream: its text times the token clocks, its `usage` and `timings` fill
/// the counts; whether it ends the answer (`finish_reason`).
fn event(v: &Value, now_ms: f64, last_text: &mut Option<f64>, rec: &mut RequestRecord) -> bool {
    let choice = v.get("choices").and_then(|c| c.get(0));
    let piece = choice
        .and_then(|c| c.get("text").or_else(|| c.pointer("/delta/content")))
        .and_then(Value::as_str)
        .unwrap_or("");
    if !piece.is_empty() {
        match *last_text {
            None => rec.ttft_ms = Some(now_ms),
            Some(prev) => rec.itl_ms.push(now_ms - prev),
        }
        *last_text = Some(now_ms);
    }
    if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
        let int = |k: &str| {
            u.get(k)
                .and_then(Value::as_u64)
                .map(|x| x.min(u64::from(u32::MAX)) as u32)
        };
        rec.usage_prompt_tokens = int("prompt_tokens").or(rec.usage_prompt_tokens);
        rec.usage_output_tokens = int("completion_tokens").or(rec.usage_output_tokens);
    }
    if let Some(t) = v.get("timings").filter(|t| t.is_object()) {
        let f = |k: &str| t.get(k).and_then(Value::as_f64);
        rec.server_prompt_ms = f("prompt_ms").or(rec.server_prompt_ms);
        rec.server_decode_ms = f("predicted_ms").or(rec.server_decode_ms);
        rec.server_cached_tokens = f("cache_n").map(|x| x as u32).or(rec.server_cached_tokens);
    }
    choice
        .and_then(|c| c.get("finish_reason"))
        .is_some_and(|f| !f.is_null())
}

/// `read_until(b'\n')` that refuses lines longer than [`MAX_LINE`].
fn read_line_capped(r: &mut impl BufRead, out: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut n = 0;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(n);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        out.extend_from_slice(&buf[..take]);
        r.consume(take);
        n += take;
        if n > MAX_LINE {
            return Err(std::io::Error::other(format!(
                "an event line longer than {} KiB",
                MAX_LINE >> 10
            )));
        }
        if done {
            return Ok(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(stream: &str) -> RequestRecord {
        let mut rec = RequestRecord {
            output_tokens: 3,
            ..Default::default()
        };
        read_stream(
            Box::new(std::io::Cursor::new(stream.as_bytes().to_vec())),
            Instant::now(),
            Duration::from_secs(5),
            &mut rec,
        );
        rec
    }

    #[test]
    fn ttft_is_the_first_chunk_with_text_and_usage_gives_the_counts() {
        let s = "data: {\"choices\":[{\"text\":\"\",\"finish_reason\":null}]}\n\n\
                 : keep-alive\n\n\
                 data: {\"choices\":[{\"text\":\"a\",\"finish_reason\":null}]}\n\n\
                 data: {\"choices\":[{\"text\":\"b\",\"finish_reason\":null}]}\n\n\
                 data: {\"choices\":[{\"text\":\"c\",\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3},\"timings\":{\"prompt_ms\":1.5,\"predicted_ms\":2.5,\"cache_n\":0}}\n\n\
                 data: [DONE]\n\n";
        let r = parse(s);
        assert!(r.error.is_none(), "{r:?}");
        assert!(r.ttft_ms.is_some());
        assert_eq!(r.itl_ms.len(), 2);
        assert_eq!(
            (r.usage_prompt_tokens, r.usage_output_tokens),
            (Some(9), Some(3))
        );
        assert_eq!(
            (r.server_prompt_ms, r.server_decode_ms),
            (Some(1.5), Some(2.5))
        );
        assert!(r.ok());
    }

    #[test]
    fn chat_deltas_count_as_text() {
        let s = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\
                 data: {\"choices\":[{\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"length\"}]}\n\
                 data: [DONE]\n";
        let r = parse(s);
        assert!(r.ok(), "{r:?}");
        assert!(r.itl_ms.is_empty());
    }

    #[test]
    fn bad_streams_fail_the_record_with_a_reason() {
        assert!(parse("data: {not json\n")
            .error
            .unwrap()
            .contains("malformed"));
        assert!(
            parse("data: {\"error\":{\"message\":\"slot unavailable\"}}\n")
                .error
                .unwrap()
                .contains("slot unavailable")
        );
        assert!(parse("")
            .error
            .unwrap()
            .contains("without any generated text"));
        let cut = parse("data: {\"choices\":[{\"text\":\"a\",\"finish_reason\":null}]}\n");
        assert!(cut
            .error
            .unwrap()
            .contains("before the answer was complete"));
        let huge = format!("data: {}\n", "x".repeat(MAX_LINE + 10));
        assert!(parse(&huge).error.unwrap().contains("longer than"));
    }

    #[test]
    fn an_endpoint_is_told_when_the_prompt_cache_is_off() {
        let ep = Endpoint {
            base: "http://h/v1".into(),
            model: "m".into(),
            api_key: None,
            llama_server: false,
        };
        let mut r = Request {
            prompt: Prompt::Text("hi".into()),
            prompt_tokens: 1,
            output_tokens: 4,
            cache_prompt: false,
        };
        assert_eq!(body(&ep, &r)["cache_prompt"], serde_json::json!(false));
        assert!(body(&ep, &r).get("n_predict").is_none());
        r.cache_prompt = true;
        assert!(body(&ep, &r).get("cache_prompt").is_none());
        let managed = Endpoint {
            llama_server: true,
            ..ep
        };
        assert_eq!(body(&managed, &r)["cache_prompt"], serde_json::json!(true));
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let ep = Endpoint {
            base: "http://h/v1".into(),
            model: "m".into(),
            api_key: Some("sk-secret".into()),
            llama_server: false,
        };
        assert!(!format!("{ep:?}").contains("sk-secret"));
    }
}
