//! The server's log lines on stderr, and the one escaping function for what clients control.
//!
//! Everything a client chooses (the path's hash, the method, reasons that quote an upload's
//! content, a panic message) goes through [`escape`] before it is written, in the text and in the
//! JSON format alike: a line break, a carriage return, an escape sequence or an invisible
//! character becomes a visible escape, so a request can neither forge a log line nor move the
//! terminal's cursor. One request is one line.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

/// Request logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Nothing.
    Off,
    /// One human line per cache request on stderr (the proxy's `debug` option).
    Debug,
    /// One JSON object per request on stderr: time, method, route, hash, status, bytes, ms, token
    /// (the token's name, never its secret). Storage faults as `{"level":"warn",...}` lines.
    Json,
}

impl LogFormat {
    /// `serve`'s names of the formats (`--log`), in the order of [`LogFormat::from_serve_name`].
    pub const SERVE_NAMES: &'static [&'static str] = &["text", "json", "off"];

    /// `--log text` (one human line per request: [`LogFormat::Debug`]), `json` or `off`.
    pub fn from_serve_name(name: &str) -> Option<LogFormat> {
        match name {
            "text" => Some(LogFormat::Debug),
            "json" => Some(LogFormat::Json),
            "off" => Some(LogFormat::Off),
            _ => None,
        }
    }
}

/// Longest method shown in a log line (hyper accepts any token as a method).
const MAX_METHOD_CHARS: usize = 32;

/// `s` with `\` and every character that is not printed as itself escaped: `\n`, `\r`, `\t`, and
/// `\u{..}` for other control characters (ESC, DEL, C1), format characters (bidirectional
/// overrides, zero-width characters), line and paragraph separators, and anything else Rust's
/// `Debug` formatting does not show as itself.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c == '\\' || hidden(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if hidden(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// True for a character that would not show as itself in a terminal or log viewer.
fn hidden(c: char) -> bool {
    // `escape_debug` leaves a character alone exactly when it is printable (quotes aside).
    c.is_control() || (c != '"' && c != '\'' && c.escape_debug().nth(1).is_some())
}

/// The method as shown in logs: escaped and at most [`MAX_METHOD_CHARS`] characters.
fn shown_method(method: &str) -> String {
    let cut: String = method.chars().take(MAX_METHOD_CHARS).collect();
    escape(&cut).into_owned()
}

/// What a request line needs (the hash and token as the cache handlers recorded them).
pub struct RequestLine<'a> {
    pub method: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub elapsed: Duration,
    /// The hash as the client wrote it (raw: escaped here), if a cache handler answered.
    pub hash: Option<&'a str>,
    /// The token's name, never its secret.
    pub token: Option<&'a str>,
    pub bytes: u64,
}

/// Writes one request line in `format` (cache requests only in the text format).
pub fn request(format: LogFormat, line: &RequestLine<'_>) {
    match format {
        LogFormat::Off => {}
        LogFormat::Debug => {
            if let Some(text) = text_line(line) {
                eprintln!("{text}");
            }
        }
        LogFormat::Json => eprintln!("{}", json_line(SystemTime::now(), line)),
    }
}

/// `nx-open-cache: PUT 123 -> 200 1234 B 4 ms` for a cache request; `None` for the others.
pub fn text_line(line: &RequestLine<'_>) -> Option<String> {
    let hash = line.hash?;
    Some(format!(
        "nx-open-cache: {} {} -> {} {} B {} ms",
        shown_method(line.method),
        escape(hash),
        line.status,
        line.bytes,
        line.elapsed.as_millis()
    ))
}

/// One request as a JSON object; client-controlled values escaped as in the text format.
pub fn json_line(now: SystemTime, line: &RequestLine<'_>) -> serde_json::Value {
    serde_json::json!({
        "time": rfc3339(now),
        "method": shown_method(line.method),
        "route": line.route,
        "hash": line.hash.map(|h| escape(h).into_owned()),
        "status": line.status,
        "bytes": line.bytes,
        "ms": (line.elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0,
        "token": line.token,
    })
}

/// A warning (a storage fault, a refused object, a caught panic): `message` is escaped whole,
/// since its reasons may quote what a client sent.
pub fn warn(format: LogFormat, message: &str) {
    let message = escape(message);
    match format {
        LogFormat::Off => {}
        LogFormat::Debug => eprintln!("nx-open-cache: warning: {message}"),
        LogFormat::Json => eprintln!(
            "{}",
            serde_json::json!({"time": rfc3339(SystemTime::now()), "level": "warn", "message": message})
        ),
    }
}

/// UTC time as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(method: &'a str, hash: Option<&'a str>) -> RequestLine<'a> {
        RequestLine {
            method,
            route: "cache",
            status: 401,
            elapsed: Duration::from_micros(4_200),
            hash,
            token: None,
            bytes: 0,
        }
    }

    #[test]
    fn escapes_what_a_terminal_would_not_show() {
        assert_eq!(escape("123abc_-"), "123abc_-");
        assert!(matches!(escape("plain text é ü 漢字"), Cow::Borrowed(_)));
        for (raw, shown) in [
            ("a\nb", "a\\nb"),
            ("a\rb", "a\\rb"),
            ("a\tb", "a\\tb"),
            ("a\u{1b}[2J", "a\\u{1b}[2J"),
            ("a\u{7f}", "a\\u{7f}"),
            ("a\u{0}", "a\\u{0}"),
            ("a\u{85}", "a\\u{85}"),
            ("a\u{202e}b", "a\\u{202e}b"),
            ("a\u{200b}b", "a\\u{200b}b"),
            ("a\u{2028}b", "a\\u{2028}b"),
            ("a\u{feff}", "a\\u{feff}"),
            ("a\\nb", "a\\\\nb"),
            ("say \"hi\" 'x'", "say \"hi\" 'x'"),
        ] {
            assert_eq!(escape(raw), shown, "{raw:?}");
        }
    }

    #[test]
    fn a_forged_hash_stays_on_one_line() {
        let forged = "abc\n<forged line>\r\u{1b}[2J";
        let text = text_line(&line("GET", Some(forged))).unwrap_or_default();
        assert_eq!(
            text,
            "nx-open-cache: GET abc\\n<forged line>\\r\\u{1b}[2J -> 401 0 B 4 ms"
        );
        let json = json_line(SystemTime::UNIX_EPOCH, &line("GET", Some(forged))).to_string();
        assert!(!json.contains(['\n', '\r', '\u{1b}']), "{json}");
        let back: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back["hash"], "abc\\n<forged line>\\r\\u{1b}[2J");
        let long = "X".repeat(100);
        assert_eq!(
            json_line(SystemTime::UNIX_EPOCH, &line(&long, None))["method"],
            "X".repeat(MAX_METHOD_CHARS)
        );
    }

    #[test]
    fn json_log_line_fields() {
        let line = RequestLine {
            method: "PUT",
            route: "cache",
            status: 200,
            elapsed: Duration::from_micros(4_200),
            hash: Some("123"),
            token: Some("ci"),
            bytes: 42,
        };
        assert_eq!(
            json_line(SystemTime::UNIX_EPOCH, &line).to_string(),
            r#"{"bytes":42,"hash":"123","method":"PUT","ms":4.2,"route":"cache","status":200,"time":"1970-01-01T00:00:00.000Z","token":"ci"}"#
        );
        let anonymous = RequestLine {
            method: "GET",
            route: "unmatched",
            status: 404,
            elapsed: Duration::ZERO,
            hash: None,
            token: None,
            bytes: 0,
        };
        let v = json_line(SystemTime::UNIX_EPOCH, &anonymous);
        assert_eq!(v["token"], serde_json::Value::Null);
        assert_eq!(v["hash"], serde_json::Value::Null);
        assert_eq!(text_line(&anonymous), None);
    }

    #[test]
    fn formats_utc_time() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_millis(951_782_400_000);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
