//! `results.json`: the whole report, pretty-printed.

use anyhow::Result;

use super::Format;
use crate::results::Report;

pub struct Json;

impl Format for Json {
    fn file_name(&self) -> &'static str {
        "results.json"
    }
    fn render(&self, report: &Report) -> Result<String> {
        let mut s = serde_json::to_string_pretty(report)?;
        s.push('\n');
        Ok(s)
    }
}
