//! A small client for one Prometheus HTTP API call: the instant query (`/api/v1/query`).
//!
//! Parsing the response is separate from the I/O so that the odd answers Prometheus gives
//! (`"NaN"`, `"+Inf"`, empty vectors, `status: error` with any HTTP code) are unit-tested
//! without a server. Every query opens its own HTTP/1.1 connection: `slo-report` sends a few
//! dozen queries once, so a pool would buy nothing.

use std::path::Path;
use std::sync::Arc;

use base64::prelude::{BASE64_STANDARD, Engine as _};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Request, Uri, header};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The largest response body read; an instant query returning one sample is a few hundred bytes.
const MAX_BODY: usize = 4 << 20;

/// CA bundles tried, in order, for `https://` when no `--ca-file` is given (Debian/Ubuntu/Alpine,
/// RHEL/Fedora, macOS/BSD).
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Why a query produced no number.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach Prometheus at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake with Prometheus at {url} failed: {source}")]
    Tls {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP exchange with Prometheus at {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: hyper::Error,
    },
    #[error("Prometheus at {url} answered HTTP {status} to `{query}`: {body}")]
    Status {
        url: String,
        query: String,
        status: u16,
        body: String,
    },
    #[error("Prometheus at {url} rejected `{query}`: {error_type}: {error}")]
    Query {
        url: String,
        query: String,
        error_type: String,
        error: String,
    },
    #[error("Prometheus at {url} sent an answer to `{query}` that is not a query result: {reason}")]
    Response {
        url: String,
        query: String,
        reason: String,
    },
}

/// How a request authenticates.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    #[default]
    None,
    Bearer(String),
    Basic {
        user: String,
        password: String,
    },
}

impl Auth {
    fn header(&self) -> Option<String> {
        match self {
            Auth::None => None,
            Auth::Bearer(token) => Some(format!("Bearer {token}")),
            Auth::Basic { user, password } => Some(format!(
                "Basic {}",
                BASE64_STANDARD.encode(format!("{user}:{password}"))
            )),
        }
    }
}

/// A Prometheus server: where it is and how to talk to it.
#[derive(Debug, Clone)]
pub struct Client {
    /// The URL as the user gave it, for messages.
    url: String,
    host: String,
    port: u16,
    /// Path prefix (a Prometheus behind `/prometheus`), without a trailing slash.
    prefix: String,
    tls: Option<Arc<ClientConfig>>,
    auth: Auth,
    /// Sent as `timeout=`, so that Prometheus stops evaluating when the report gives up.
    query_timeout: Option<std::time::Duration>,
}

/// The URL is not one `slo-report` can use.
pub fn check_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        Some(other) => return Err(format!("`{url}`: scheme {other} is not http or https")),
        None => {
            return Err(format!(
                "`{url}` has no scheme; write it like http://prometheus:9090"
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{url}` has no host"));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!(
            "`{url}`: credentials in the URL are not read; use --bearer-token-file or --basic-auth-user"
        ));
    }
    if uri.query().is_some() {
        return Err(format!("`{url}`: a query string is not allowed here"));
    }
    Ok(uri)
}

/// [`check_url`] as a clap value parser.
pub fn check_url_arg(url: &str) -> Result<String, String> {
    check_url(url).map(|_| url.to_string())
}

impl Client {
    /// A client for `url` (checked with [`check_url`]). For `https://`, the server certificate is
    /// verified against `ca_file`, or else the system CA bundle.
    pub fn new(url: &str, auth: Auth, ca_file: Option<&Path>) -> Result<Self, String> {
        let uri = check_url(url)?;
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().unwrap_or_default();
        // `[::1]` is how the URL writes an IPv6 host; connect and verify without the brackets.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let bundle = match ca_file {
                Some(file) => file.to_path_buf(),
                None => SYSTEM_CA_BUNDLES
                    .iter()
                    .map(Path::new)
                    .find(|p| p.exists())
                    .ok_or_else(|| {
                        format!(
                            "no system CA bundle found (looked at {}); pass --ca-file",
                            SYSTEM_CA_BUNDLES.join(", ")
                        )
                    })?
                    .to_path_buf(),
            };
            Some(crate::probe::apiserver::tls_config(&bundle)?)
        } else {
            None
        };
        Ok(Self {
            url: url.to_string(),
            host,
            port,
            prefix: uri.path().trim_end_matches('/').to_string(),
            tls,
            auth,
            query_timeout: None,
        })
    }

    /// Asks Prometheus to give up on each query after `timeout` (whole seconds, at least 1).
    pub fn with_query_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.query_timeout = Some(timeout);
        self
    }

    /// The URL as given, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs the instant query `promql` at `time` (Unix seconds) and returns its single value,
    /// `None` for an empty result.
    pub async fn query(&self, promql: &str, time: f64) -> Result<Option<f64>, Error> {
        let mut path = format!(
            "{}/api/v1/query?query={}&time={time:.3}",
            self.prefix,
            percent_encode(promql)
        );
        if let Some(timeout) = self.query_timeout {
            path.push_str(&format!("&timeout={}s", timeout.as_secs().max(1)));
        }
        let (status, body) = self.get(&path).await?;
        parse_query_response(status, &body).map_err(|e| match e {
            ResponseError::Status(status, body) => Error::Status {
                url: self.url.clone(),
                query: promql.to_string(),
                status,
                body,
            },
            ResponseError::Query { error_type, error } => Error::Query {
                url: self.url.clone(),
                query: promql.to_string(),
                error_type,
                error,
            },
            ResponseError::Malformed(reason) => Error::Response {
                url: self.url.clone(),
                query: promql.to_string(),
                reason,
            },
        })
    }

    async fn get(&self, path: &str) -> Result<(u16, Bytes), Error> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| Error::Connect {
                url: self.url.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => self.exchange(tcp, path).await,
            Some(tls) => {
                let name = ServerName::try_from(self.host.clone()).map_err(|e| Error::Tls {
                    url: self.url.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
                })?;
                let stream = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|source| Error::Tls {
                        url: self.url.clone(),
                        source,
                    })?;
                self.exchange(stream, path).await
            }
        }
    }

    async fn exchange<S>(&self, stream: S, path: &str) -> Result<(u16, Bytes), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let http = |source| Error::Http {
            url: self.url.clone(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        let driver = tokio::spawn(connection);
        let host = match self.port {
            80 | 443 => self.host.clone(),
            port if self.host.contains(':') => format!("[{}]:{port}", self.host),
            port => format!("{}:{port}", self.host),
        };
        let mut request = Request::get(path)
            .header(header::HOST, host)
            .header(header::ACCEPT, "application/json")
            .header(header::CONNECTION, "close")
            .header(
                header::USER_AGENT,
                concat!("kube-netprobe/", env!("CARGO_PKG_VERSION"), " slo-report"),
            );
        if let Some(value) = self.auth.header() {
            request = request.header(header::AUTHORIZATION, value);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .expect("a GET with valid headers builds");
        let result = async {
            let response = sender.send_request(request).await.map_err(http)?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| Error::Response {
                    url: self.url.clone(),
                    query: path.to_string(),
                    reason: format!("reading the body: {e}"),
                })?
                .to_bytes();
            Ok((status, body))
        }
        .await;
        driver.abort();
        result
    }
}

/// What a response said other than a number.
#[derive(Debug, PartialEq)]
pub enum ResponseError {
    /// Not a Prometheus API answer, with an HTTP error status (a proxy, a wrong path); the body
    /// is shortened.
    Status(u16, String),
    /// Prometheus's own `status: error`.
    Query { error_type: String, error: String },
    /// Something else that cannot be read as a one-value result.
    Malformed(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiResponse {
    status: String,
    data: Option<QueryData>,
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryData {
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct VectorSample {
    value: (f64, String),
}

/// Reads an `/api/v1/query` answer whose result has at most one sample (the queries all
/// aggregate with `sum`): `Ok(None)` for an empty vector, the value otherwise, `NaN` and
/// `±Inf` included.
pub fn parse_query_response(status: u16, body: &[u8]) -> Result<Option<f64>, ResponseError> {
    let api: ApiResponse = match serde_json::from_slice(body) {
        Ok(api) => api,
        Err(e) if (200..300).contains(&status) => {
            return Err(ResponseError::Malformed(format!("not JSON: {e}")));
        }
        Err(_) => return Err(ResponseError::Status(status, shorten(body))),
    };
    if api.status == "error" {
        return Err(ResponseError::Query {
            error_type: printable(api.error_type.as_deref().unwrap_or("error").as_bytes(), 100),
            error: printable(api.error.unwrap_or_default().as_bytes(), 500),
        });
    }
    if !(200..300).contains(&status) {
        return Err(ResponseError::Status(status, shorten(body)));
    }
    if api.status != "success" {
        return Err(ResponseError::Malformed(format!("status {:?}", api.status)));
    }
    let data = api
        .data
        .ok_or_else(|| ResponseError::Malformed("no data".into()))?;
    let bad = |e: serde_json::Error| ResponseError::Malformed(format!("{}: {e}", data.result_type));
    match data.result_type.as_str() {
        "vector" => {
            let samples: Vec<VectorSample> =
                serde_json::from_value(data.result.clone()).map_err(bad)?;
            match samples.as_slice() {
                [] => Ok(None),
                [one] => parse_value(&one.value.1).map(Some),
                many => Err(ResponseError::Malformed(format!(
                    "{} series where one was expected",
                    many.len()
                ))),
            }
        }
        "scalar" => {
            let (_, value): (f64, String) =
                serde_json::from_value(data.result.clone()).map_err(bad)?;
            parse_value(&value).map(Some)
        }
        other => Err(ResponseError::Malformed(format!(
            "result type {other:?} where a vector was expected"
        ))),
    }
}

/// A sample value as the API writes it: a decimal string, `NaN`, `+Inf` or `-Inf`.
fn parse_value(text: &str) -> Result<f64, ResponseError> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => text
            .parse()
            .map_err(|_| ResponseError::Malformed(format!("sample value {text:?}"))),
    }
}

/// A body for an error message: trimmed, at most 200 characters, [`printable`].
fn shorten(body: &[u8]) -> String {
    let body = body.trim_ascii();
    if body.is_empty() {
        "(empty body)".into()
    } else {
        printable(body, 200)
    }
}

/// Text a server sent, made safe to print on a terminal: control characters (NUL, ESC,
/// newlines) and invisible direction or width marks as `\u{..}` escapes, bytes that are not
/// UTF-8 (0xFF) as `\xff`; at most `max` characters of the original, then `...`.
pub fn printable(bytes: &[u8], max: usize) -> String {
    use std::fmt::Write as _;
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
    };
    let mut out = String::new();
    let mut taken = 0;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if taken == max {
                out.push_str("...");
                return out;
            }
            if hidden(c) {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
            taken += 1;
        }
        for byte in chunk.invalid() {
            if taken == max {
                out.push_str("...");
                return out;
            }
            let _ = write!(out, "\\x{byte:02x}");
            taken += 1;
        }
    }
    out
}

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`) is escaped in a
/// query-string value; PromQL's `{`, `"`, `+`, `=` and `&` among them.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a query-string value ([`QUERY_VALUE`]), UTF-8 bytes as `%XX` each.
pub fn percent_encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, QUERY_VALUE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Option<f64>, ResponseError> {
        parse_query_response(200, body.as_bytes())
    }

    #[test]
    fn reads_a_one_sample_vector() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{},"value":[1769817600,"180000"]}]}}"#;
        assert_eq!(parse(body), Ok(Some(180000.0)));
        let fractional = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{},"value":[1769817600.123,"0.5e-3"]}]}}"#;
        assert_eq!(parse(fractional), Ok(Some(0.0005)));
    }

    #[test]
    fn an_empty_vector_is_no_value() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse(body), Ok(None));
    }

    #[test]
    fn reads_nan_and_infinities() {
        let with = |v: &str| {
            format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1,"{v}"]}}]}}}}"#
            )
        };
        assert!(parse(&with("NaN")).unwrap().unwrap().is_nan());
        assert_eq!(parse(&with("+Inf")), Ok(Some(f64::INFINITY)));
        assert_eq!(parse(&with("-Inf")), Ok(Some(f64::NEG_INFINITY)));
        assert!(matches!(
            parse(&with("lots")),
            Err(ResponseError::Malformed(m)) if m.contains("lots")
        ));
    }

    #[test]
    fn reads_a_scalar() {
        let body = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"2.5"]}}"#;
        assert_eq!(parse(body), Ok(Some(2.5)));
    }

    #[test]
    fn several_series_are_refused() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}]}}"#;
        assert_eq!(
            parse(body),
            Err(ResponseError::Malformed(
                "2 series where one was expected".into()
            ))
        );
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(matches!(parse(matrix), Err(ResponseError::Malformed(_))));
    }

    #[test]
    fn prometheus_errors_carry_its_message_whatever_the_status() {
        let body = r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:27: parse error: unexpected \"}\""}"#;
        let want = ResponseError::Query {
            error_type: "bad_data".into(),
            error: r#"invalid parameter "query": 1:27: parse error: unexpected "}""#.into(),
        };
        assert_eq!(parse_query_response(400, body.as_bytes()), Err(want));
        let timeout = r#"{"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"}"#;
        assert!(matches!(
            parse_query_response(503, timeout.as_bytes()),
            Err(ResponseError::Query { error_type, .. }) if error_type == "timeout"
        ));
    }

    #[test]
    fn server_text_is_escaped_for_the_terminal() {
        assert_eq!(
            printable(b"bad\0gateway\xff\x1b[2J\n\xe2\x80\xaeevil", 100),
            r"bad\u{0}gateway\xff\u{1b}[2J\n\u{202e}evil"
        );
        assert_eq!(printable("déjà vu".as_bytes(), 100), "déjà vu");
        assert_eq!(printable(b"abcdef", 3), "abc...");
        assert_eq!(
            parse_query_response(502, b"upstream \0 down\xff\r\n"),
            Err(ResponseError::Status(
                502,
                r"upstream \u{0} down\xff".into()
            ))
        );
        let body = r#"{"status":"error","errorType":"bad\u0007data","error":"nul \u0000 here"}"#;
        assert_eq!(
            parse_query_response(400, body.as_bytes()),
            Err(ResponseError::Query {
                error_type: r"bad\u{7}data".into(),
                error: r"nul \u{0} here".into(),
            })
        );
    }

    #[test]
    fn http_errors_without_an_api_body_keep_a_short_body() {
        assert_eq!(
            parse_query_response(404, b"404 page not found\n"),
            Err(ResponseError::Status(404, "404 page not found".into()))
        );
        let long = "x".repeat(500);
        match parse_query_response(502, long.as_bytes()) {
            Err(ResponseError::Status(502, body)) => assert_eq!(body.len(), 203),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_query_response(500, b""),
            Err(ResponseError::Status(500, "(empty body)".into()))
        );
        assert!(matches!(
            parse_query_response(200, b"<html>"),
            Err(ResponseError::Malformed(_))
        ));
    }

    #[test]
    fn encodes_promql_for_the_query_string() {
        assert_eq!(
            percent_encode(r#"sum(increase(a{b=~"c|d"}[30d]))"#),
            "sum%28increase%28a%7Bb%3D~%22c%7Cd%22%7D%5B30d%5D%29%29"
        );
        assert_eq!(percent_encode("a b+é"), "a%20b%2B%C3%A9");
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(BASE64_STANDARD.encode(input), want, "{input:?}");
        }
        let auth = Auth::Basic {
            user: "Aladdin".into(),
            password: "open sesame".into(),
        };
        assert_eq!(
            auth.header().as_deref(),
            Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
        );
    }

    #[test]
    fn checks_urls() {
        assert!(check_url("http://prometheus:9090").is_ok());
        assert!(check_url("https://prom.example/prometheus/").is_ok());
        assert!(check_url("prometheus:9090").unwrap_err().contains("scheme"));
        assert!(check_url("ftp://x").unwrap_err().contains("ftp"));
        assert!(
            check_url("http://u:p@x")
                .unwrap_err()
                .contains("credentials")
        );
        assert!(check_url("http://x/?a=b").unwrap_err().contains("query"));
    }

    #[test]
    fn keeps_the_path_prefix() {
        let client = Client::new("http://127.0.0.1:9090/prom/", Auth::None, None).unwrap();
        assert_eq!(
            (client.host.as_str(), client.port, client.prefix.as_str()),
            ("127.0.0.1", 9090, "/prom")
        );
        let v6 = Client::new("http://[::1]", Auth::None, None).unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 80));
    }
}
