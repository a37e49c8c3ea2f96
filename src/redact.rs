//! Text made safe for where it goes. Secrets kept out of messages and reports: the userinfo
//! (`user:password@`) of every URL in a text, and known secret values (a hub token), replaced
//! before the text can reach a stream or a file. The one escaper for text shown on a terminal
//! (labels and names a config or a server chose), and the one neutraliser of CSV text cells that
//! a spreadsheet would run as a formula. Plain string functions; never prints.

use std::borrow::Cow;

/// What replaces a secret in a message.
pub const REDACTED: &str = "<redacted>";

/// Characters that end a URL's authority in running text (besides the path's `/`, `?`, `#`).
fn ends_authority(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '/' | '?' | '#' | '"' | '\'' | '`' | '<' | '>' | '(' | ')' | '[' | ']' | '{' | '}'
        )
}

/// `text` with the userinfo of every URL in it removed: `http://user:pass@mirror:8080/x` becomes
/// `http://mirror:8080/x`. Works on running text (error messages, command lines), not only on
/// whole URLs, so a URL quoted anywhere in a message loses its password.
pub fn strip_userinfo(text: &str) -> Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(ends_authority).unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => out.push_str(&authority[at + 1..]),
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Secret values to keep out of a text, and the rule that removes them: every occurrence of a
/// secret, then every `Bearer …` credential and every URL's userinfo.
#[derive(Clone, Default)]
pub struct Secrets(Vec<String>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} redacted)", self.0.len())
    }
}

impl Secrets {
    /// Adds a secret: as given and trimmed (a token read with its line ending). Values shorter
    /// than 4 characters are not secrets worth replacing everywhere.
    pub fn add(&mut self, secret: &str) {
        for s in [secret, secret.trim()] {
            if s.chars().count() >= 4 && !self.0.iter().any(|k| k == s) {
                self.0.push(s.to_string());
            }
        }
        // the longest first, so a secret containing another is replaced whole
        self.0.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// `text` with every secret, `Bearer` credential and URL userinfo replaced.
    pub fn redact(&self, text: &str) -> String {
        let mut t = text.to_string();
        for s in &self.0 {
            if t.contains(s.as_str()) {
                t = t.replace(s.as_str(), REDACTED);
            }
        }
        let t = redact_bearer(&t);
        strip_userinfo(&t).into_owned()
    }
}

/// Replaces the credential after every `Bearer ` (an `Authorization` header quoted in an HTTP
/// library's error) up to the next quote, whitespace or end.
fn redact_bearer(text: &str) -> Cow<'_, str> {
    const KEY: &str = "Bearer ";
    if !text.contains(KEY) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(KEY) {
        out.push_str(&rest[..i + KEY.len()]);
        let tail = &rest[i + KEY.len()..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '`'))
            .unwrap_or(tail.len());
        if end > 0 {
            out.push_str(REDACTED);
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Text a config, a file name or a server chose, made safe to show on a terminal: control
/// characters (newlines, escape sequences) and the bidirectional overrides that reorder what is
/// shown (U+202A–U+202E, U+2066–U+2069, U+200E/F, U+061C) are written as `\n`, `\u{202e}`, ….
/// Plain text is returned as it is.
pub fn terminal(text: &str) -> Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}')
    }
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Whether `s` is a plain decimal number (`-1.5`, `2e-3`, `+7`): a spreadsheet reads it as a
/// number, never as a formula, so it is written as it is.
fn plain_number(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some((a, b)) => {
            (digits(a) || a.is_empty()) && (digits(b) || b.is_empty()) && (a.len() + b.len() > 0)
        }
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e)));
    mantissa_ok && exponent_ok
}

/// The one neutraliser of CSV text cells: a value a spreadsheet would evaluate as a formula
/// (starting with `=`, `+`, `-`, `@`, a tab or a carriage return) gets a leading `'`, as OWASP
/// recommends, and so does one already starting with `'` (so the rule can be undone exactly).
/// Numbers, negative ones included, are written as they are and stay numbers.
pub fn spreadsheet_safe(value: &str) -> Cow<'_, str> {
    match value.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r' | '\'') if !plain_number(value) => {
            Cow::Owned(format!("'{value}"))
        }
        _ => Cow::Borrowed(value),
    }
}

/// A CSV value as written before [`spreadsheet_safe`]: one leading `'` removed. Reading an
/// older CSV (written raw), a value starting with `'` loses it; quantbench never wrote one.
pub fn from_spreadsheet_safe(value: &str) -> &str {
    value.strip_prefix('\'').unwrap_or(value)
}

/// The one escaper of text put into Markdown (summary.md, `compare --format md`): a label, a
/// name or an error a config, a CSV or a server chose must stay one table cell or one line, and
/// never become HTML (a Markdown viewer renders raw `<script>`/`<img>`). Line breaks become
/// spaces, `|` is escaped, `<` and `>` become entities. Backticks and asterisks are kept: the
/// reports' own cells use them.
pub fn markdown_text(text: &str) -> Cow<'_, str> {
    if !text.contains(['\n', '\r', '|', '<', '>']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' | '\r' => out.push(' '),
            '|' => out.push_str("\\|"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_text_stays_one_cell_and_never_html() {
        assert_eq!(markdown_text("Q4_K_M `x` **y**"), "Q4_K_M `x` **y**");
        assert_eq!(
            markdown_text("a|b<script>x</script>\n| injected | row |"),
            "a\\|b&lt;script&gt;x&lt;/script&gt; \\| injected \\| row \\|"
        );
    }

    #[test]
    fn userinfo_is_stripped_from_every_url_in_a_text() {
        for (text, want) in [
            ("http://mirror/x", "http://mirror/x"),
            ("http://user:pass@mirror:8080/x", "http://mirror:8080/x"),
            (
                "GET https://u:p@a.example/x failed; tried http://v@b.example too",
                "GET https://a.example/x failed; tried http://b.example too",
            ),
            ("\"http://u:p@h\"", "\"http://h\""),
            // an `@` in the path or query is not userinfo
            ("http://h/a@b?c=d@e", "http://h/a@b?c=d@e"),
            // a password holding `@` and `:`: everything up to the authority's last `@` goes
            ("http://u:p@ss:w@h:1/x", "http://h:1/x"),
            ("user@example.com wrote", "user@example.com wrote"),
            ("no url", "no url"),
        ] {
            assert_eq!(strip_userinfo(text), want, "{text}");
        }
    }

    #[test]
    fn secrets_bearers_and_userinfo_are_redacted() {
        let mut s = Secrets::default();
        s.add("hf_SECRET_token\r\n");
        let t = s.redact(
            "invalid header 'Authorization: Bearer hf_SECRET_token\r\n' for http://a:b@h/x; \
             again hf_SECRET_token",
        );
        assert!(!t.contains("SECRET") && !t.contains("a:b"), "{t}");
        assert!(
            t.contains("Bearer <redacted>") && t.contains("http://h/x"),
            "{t}"
        );
        // a bearer whose token is not a known secret (another source) goes too
        assert_eq!(
            Secrets::default().redact("Authorization: Bearer xyz123"),
            "Authorization: Bearer <redacted>"
        );
        assert!(!format!("{s:?}").contains("SECRET"));
    }

    #[test]
    fn spreadsheet_formulas_are_neutralised_and_numbers_kept() {
        for (v, want) in [
            (
                "=HYPERLINK(\"http://x\",\"y\")",
                "'=HYPERLINK(\"http://x\",\"y\")",
            ),
            ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("'quoted", "''quoted"),
            ("-", "'-"),
            ("-inf", "'-inf"),
            // numbers stay numbers
            ("-1.5", "-1.5"),
            ("+7", "+7"),
            ("-2e-3", "-2e-3"),
            ("-.5", "-.5"),
            ("12", "12"),
            // plain text stays
            ("GPT-2 (124M)", "GPT-2 (124M)"),
            ("", ""),
        ] {
            assert_eq!(spreadsheet_safe(v), want, "{v:?}");
            assert_eq!(from_spreadsheet_safe(&spreadsheet_safe(v)), v, "{v:?}");
        }
    }

    #[test]
    fn terminal_text_is_escaped() {
        assert_eq!(terminal("GPT-2 (124M)"), "GPT-2 (124M)");
        assert_eq!(terminal("a\nb\rc\x1b[31m"), "a\\nb\\rc\\u{1b}[31m");
        assert_eq!(terminal("evil\u{202e}fdp.exe"), "evil\\u{202e}fdp.exe");
        assert_eq!(terminal("模型 ünïcode"), "模型 ünïcode");
    }
}
