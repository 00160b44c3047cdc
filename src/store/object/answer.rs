//! What a cloud said when it refused a request, made short: the service's own error code and
//! message, taken out of the XML (S3, GCS's XML API, Azure: `<Code>`, `<Message>`) or JSON (GCS's
//! JSON API: `{"error":{"code":..,"message":..}}`) body that the client's error text carries,
//! instead of the raw body. Request ids, times and timings are dropped, so that the same fault
//! reads the same on every request (the run summary groups by it), and what is left is cut at a
//! word boundary.

use crate::stats::shorten;

/// Longest short text of a cloud error.
const MAX_SHORT: usize = 240;

/// The service's error code and message found in an error answer's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    /// e.g. `NoSuchBucket`, `InvalidAccessKeyId`, `ContainerNotFound` (JSON: the numeric code).
    pub code: Option<String>,
    /// e.g. `The specified bucket does not exist`, without request id and time lines.
    pub message: Option<String>,
}

impl ServiceError {
    /// `Code: Message`, or whichever of the two is there.
    pub fn text(&self) -> String {
        match (&self.code, &self.message) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.clone(),
            (None, Some(m)) => m.clone(),
            (None, None) => String::new(),
        }
    }
}

/// The service error in `text` (a client error message ending with the answer's body), if there
/// is one.
pub fn service_error(text: &str) -> Option<ServiceError> {
    if let Some(at) = text.find("<Error>") {
        let xml = &text[at..];
        let code = xml_value(xml, "Code");
        let message = xml_value(xml, "Message").map(|m| match json_error(&m) {
            // The GCS XML API may wrap a JSON API answer in <Message>.
            Some(inner) => inner.message.unwrap_or(m),
            None => m,
        });
        let found = ServiceError {
            code,
            message: message.map(|m| clean_message(&m)).filter(|m| !m.is_empty()),
        };
        return (found.code.is_some() || found.message.is_some()).then_some(found);
    }
    let at = text.find("{\"error\"")?;
    json_error(&text[at..])
}

/// A GCS JSON API error object (`{"error":{"code":404,"message":"Not Found",..}}`) at the start
/// of `text` (anything after it is ignored).
fn json_error(text: &str) -> Option<ServiceError> {
    let start = text.find('{')?;
    let mut stream =
        serde_json::Deserializer::from_str(&text[start..]).into_iter::<serde_json::Value>();
    let value = stream.next()?.ok()?;
    let error = value.get("error")?;
    let code = match error.get("code") {
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    let message = match error {
        serde_json::Value::String(s) => Some(s.clone()),
        _ => error
            .get("message")
            .and_then(|m| m.as_str())
            .map(str::to_owned),
    };
    Some(ServiceError {
        code,
        message: message.map(|m| clean_message(&m)).filter(|m| !m.is_empty()),
    })
}

/// The text of the first `<tag>...</tag>` in `xml`, unescaped and trimmed.
fn xml_value(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    let value = unescape(xml[start..start + len].trim());
    (!value.is_empty()).then_some(value)
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// A service message on one line, without the request id and time lines Azure appends.
fn clean_message(m: &str) -> String {
    m.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("RequestId:") && !l.starts_with("Time:"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A root cause that cannot fix itself within a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lasting {
    /// The bucket or container does not exist.
    NoBucket,
    /// The credentials were refused: an unknown key id, a wrong secret, a 401.
    Credentials,
    /// The host name is not known (not a temporary failure to resolve it).
    UnknownHost,
}

/// The lasting root cause a client error's text names, if any. Decided on the HTTP status, the
/// service's own error code (and message) and the resolver's words, never on the rest of the
/// text: a URL or a bucket name (`nx-token-cache`) says nothing. Shared by the object and http
/// backends.
pub fn lasting(text: &str) -> Option<Lasting> {
    if unknown_host(text) {
        return Some(Lasting::UnknownHost);
    }
    let service = service_error(text);
    let code = service.as_ref().and_then(|s| s.code.as_deref());
    match code {
        Some("NoSuchBucket" | "ContainerNotFound") => return Some(Lasting::NoBucket),
        Some(
            "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "AuthorizationFailure"
            | "AuthenticationFailed",
        ) => return Some(Lasting::Credentials),
        _ => {}
    }
    let message = service
        .as_ref()
        .and_then(|s| s.message.as_deref())
        .unwrap_or("")
        .to_ascii_lowercase();
    match status(text) {
        Some("404")
            if message.contains("bucket does not exist")
                || message.contains("bucket not found") =>
        {
            Some(Lasting::NoBucket)
        }
        Some("401") => Some(Lasting::Credentials),
        _ => None,
    }
}

/// Whether a client error's text says the host name is not known (EAI_NONAME: "Name or service
/// not known", "nodename nor servname provided"), as opposed to a temporary failure to resolve
/// it (EAI_AGAIN: "Temporary failure in name resolution"), which may pass. Only the resolver's
/// part of the text is read, not the URL before it.
pub fn unknown_host(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    let Some(at) = ["dns error", "failed to lookup address"]
        .iter()
        .filter_map(|n| lower.find(n))
        .min()
    else {
        return false;
    };
    let resolver = &lower[at..];
    if resolver.contains("temporary") || resolver.contains("try again") {
        return false;
    }
    resolver.contains("name or service not known")
        || resolver.contains("nodename nor servname")
        || resolver.contains("no such host")
        || resolver.contains("failed to lookup address")
}

/// The HTTP status in a client error text (`... status code: 404 Not Found ...`), e.g. `404`.
pub fn status(text: &str) -> Option<&str> {
    let at = text.find("status code: ")? + "status code: ".len();
    let digits = &text[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    (end == 3).then(|| &digits[..end])
}

/// `text` made short: the status and the service's code and message when the body has them
/// (e.g. `404 NoSuchBucket: The specified bucket does not exist`), otherwise the text without
/// timings; at most [`MAX_SHORT`] characters, cut at a word boundary.
pub fn short(text: &str) -> String {
    if let Some(mut e) = service_error(text) {
        let status = status(text);
        if e.code.is_some() && e.code.as_deref() == status {
            // GCS JSON: the code is the status again.
            e.code = None;
        }
        let shown = match status {
            Some(s) => format!("{s} {}", e.text()),
            None => e.text(),
        };
        return shorten(&shown, MAX_SHORT);
    }
    shorten(&without_timings(text), MAX_SHORT)
}

/// `text` without the client's timings (` in 47.766521ms`), which differ on every request.
fn without_timings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(" in ") {
        let after = &rest[i + 4..];
        let number = after
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(after.len());
        let unit = ["ms", "µs", "ns", "s"]
            .iter()
            .find(|u| number > 0 && after[number..].starts_with(**u));
        out.push_str(&rest[..i]);
        match unit {
            Some(u) => rest = &after[number + u.len()..],
            None => {
                out.push_str(" in ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Bodies as the emulators answered them (moto 5, fake-gcs-server 1.54 behind
    // scripts/gcs-xml-front.js, Azurite 3.37), inside object_store's error text.
    const MOTO_NO_BUCKET: &str = "Generic S3 error: Error performing list request: Error performing GET http://127.0.0.1:35829/acme-nx-cahce?list-type=2 in 47.766521ms - Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message><BucketName>acme-nx-cahce</BucketName><RequestId>uowCdLYmrWnoAazrtp1dlSUyGJDstWOOXRwrRAER8UTSdmByM9jc</RequestId><HostId>9Gjjt1m+cjU4OPvX9O9/8RuvnG41MRb/18Oux2o5H5MY7ISNTlXN+Dz9IG62/ILVxhAGI0qyPfg=</HostId></Error>";
    const MOTO_BAD_KEY: &str = "Generic S3 error: Error performing list request: Error performing GET http://127.0.0.1:41000/nxoc-s3-86c5a869?list-type=2 in 5.1ms - Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Error><Code>InvalidAccessKeyId</Code><Message>The AWS Access Key Id you provided does not exist in our records.</Message><BucketName>nxoc-s3-86c5a869</BucketName><RequestId>wUoLamkDB01FUrA3X6fq4eR0k2AlHKi3nfkIlekQtm4yoHGge4A2</RequestId><HostId>9Gjjt1m+cjU4OPvX9O9/8RuvnG41MRb/18Oux2o5H5MY7ISNTlXN+Dz9IG62/ILVxhAGI0qyPfg=</HostId></Error>";
    const GCS_XML_NO_BUCKET: &str = "Generic GCS error: Error performing list request: Server returned non-2xx status code: 404 Not Found: <?xml version='1.0' encoding='UTF-8'?><Error><Code>NoSuchBucket</Code><Message>{&quot;error&quot;:{&quot;code&quot;:404,&quot;message&quot;:&quot;Not Found&quot;,&quot;errors&quot;:[{&quot;domain&quot;:&quot;global&quot;,&quot;reason&quot;:&quot;Not Found&quot;,&quot;message&quot;:&quot;Not Found&quot;}]}}\n</Message></Error>";
    const GCS_JSON_NO_BUCKET: &str = "Server returned non-2xx status code: 404 Not Found: {\"error\":{\"code\":404,\"message\":\"Not Found\",\"errors\":[{\"domain\":\"global\",\"reason\":\"Not Found\",\"message\":\"Not Found\"}]}}\n";
    const AZURITE_NO_CONTAINER: &str = "Generic MicrosoftAzure error: Error performing list request: Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<Error>\n  <Code>ContainerNotFound</Code>\n  <Message>The specified container does not exist.\nRequestId:6f1b30b7-d8a0-44c6-bfaf-3494cd709f07\nTime:2026-11-27T07:46:11.862Z</Message>\n</Error>";
    const AZURITE_BAD_KEY: &str = "Generic MicrosoftAzure error: Error performing list request: Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<Error>\n  <Code>AuthorizationFailure</Code>\n  <Message>Server failed to authenticate the request. Make sure the value of the Authorization header is formed correctly including the signature.\nRequestId:708f12d6-dda5-4dcb-a73a-8762566c3da7\nTime:2026-11-27T07:46:11.897Z</Message>\n</Error>";

    #[test]
    fn s3_code_and_message_come_out_of_moto_xml_without_request_ids() {
        assert_eq!(
            short(MOTO_NO_BUCKET),
            "404 NoSuchBucket: The specified bucket does not exist"
        );
        assert_eq!(
            short(MOTO_BAD_KEY),
            "403 InvalidAccessKeyId: The AWS Access Key Id you provided does not exist in our records."
        );
    }

    #[test]
    fn gcs_json_inside_xml_and_plain_json_give_the_json_message() {
        assert_eq!(short(GCS_XML_NO_BUCKET), "404 NoSuchBucket: Not Found");
        assert_eq!(short(GCS_JSON_NO_BUCKET), "404 Not Found");
    }

    #[test]
    fn azurite_messages_lose_their_request_id_and_time_lines() {
        assert_eq!(
            short(AZURITE_NO_CONTAINER),
            "404 ContainerNotFound: The specified container does not exist."
        );
        let bad = short(AZURITE_BAD_KEY);
        assert!(bad.starts_with("403 AuthorizationFailure: Server failed to authenticate"));
        assert!(
            !bad.contains("RequestId") && !bad.contains("2026-"),
            "{bad}"
        );
    }

    #[test]
    fn the_same_fault_reads_the_same_on_every_request() {
        let other = MOTO_NO_BUCKET
            .replace("47.766521ms", "5.2ms")
            .replace("uowCdLYm", "XXXXXXXX");
        assert_eq!(short(MOTO_NO_BUCKET), short(&other));
        let plain =
            "Generic S3 error: Error performing GET http://h/b in 12.5ms - connection reset";
        assert_eq!(
            short(plain),
            "Generic S3 error: Error performing GET http://h/b - connection reset"
        );
    }

    #[test]
    fn lasting_is_decided_on_status_and_code_not_on_the_url() {
        assert_eq!(lasting(MOTO_NO_BUCKET), Some(Lasting::NoBucket));
        assert_eq!(lasting(MOTO_BAD_KEY), Some(Lasting::Credentials));
        assert_eq!(lasting(AZURITE_NO_CONTAINER), Some(Lasting::NoBucket));
        assert_eq!(lasting(AZURITE_BAD_KEY), Some(Lasting::Credentials));
        // A bucket named like a credential, answering 503 SlowDown: it may pass.
        let slow = "Generic S3 error: Error performing GET http://127.0.0.1:9000/nx-token-cache/p/123?continuation-token=abc&x-id=authorization-credential in 4ms - Server returned non-2xx status code: 503 Service Unavailable: <Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
        assert_eq!(lasting(slow), None);
        let expired = "Generic S3 error: status code: 400 Bad Request: <Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message></Error>";
        assert_eq!(lasting(expired), None);
        let imds = "Generic S3 error: Error fetching credentials from instance metadata: error sending request: operation timed out";
        assert_eq!(lasting(imds), None);
    }

    #[test]
    fn only_a_name_that_is_not_known_is_an_unknown_host() {
        let again = "error sending request for url (http://nx-cache.example/v1/cache/1): client error (Connect): dns error: failed to lookup address information: Temporary failure in name resolution";
        assert!(!unknown_host(again));
        assert_eq!(lasting(again), None);
        let unknown = "error sending request for url (http://nx-cahce.example/): client error (Connect): dns error: failed to lookup address information: Name or service not known";
        assert!(unknown_host(unknown));
        let mac = "dns error: failed to lookup address information: nodename nor servname provided, or not known";
        assert!(unknown_host(mac));
        // A URL that merely contains the words is not a resolver's answer.
        assert!(!unknown_host(
            "Error performing GET http://h/dns-error-cache/1 - connection reset"
        ));
    }

    #[test]
    fn a_long_text_without_a_body_is_cut_at_a_word_boundary() {
        let long = format!("Generic S3 error: {}", "word ".repeat(200));
        let s = short(&long);
        assert!(s.chars().count() <= MAX_SHORT, "{s}");
        assert!(s.ends_with("word…"), "{s}");
    }
}
