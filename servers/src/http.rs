//! HTTP/1.x request parsing, shared by every model.
//!
//! The parser works on whatever bytes a connection has buffered and never allocates: it either
//! finds one complete request head at the start of the buffer, asks for more bytes, or names the
//! status the server must answer with before closing. Limits are checked on partial input too,
//! so a client cannot make the server buffer an endless request line or header block.

/// Longest request line accepted; longer ones get 414 (nginx's default large buffer is 8 KB).
pub const MAX_REQUEST_LINE: usize = 8 * 1024;
/// Longest request head (request line plus headers) accepted; longer ones get 431.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header fields accepted; more get 431.
pub const MAX_HEADERS: usize = 100;
/// Largest request body skipped on a GET/HEAD; larger ones get 413.
pub const MAX_BODY: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// One parsed request head, borrowing from the connection's buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: Method,
    /// The request line's request-target (RFC 9112 3.2), origin-form: `/path?query`.
    pub target: &'a [u8],
    pub version: Version,
    /// Whether the client allows the connection to stay open after the reply.
    pub keep_alive: bool,
    /// Bytes of the buffer this request used, head and body.
    pub len: usize,
}

/// Why a request cannot be served; each maps to the status sent before closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("malformed request")]
    BadRequest,
    #[error("request line longer than {limit} bytes")]
    UriTooLong { limit: usize },
    #[error("request head longer than {limit} bytes or more than {MAX_HEADERS} fields")]
    HeadersTooLarge { limit: usize },
    #[error("request body longer than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("method not implemented")]
    NotImplemented,
    #[error("http version not supported")]
    VersionNotSupported,
}

impl ParseError {
    pub fn status(self) -> u16 {
        match self {
            ParseError::BadRequest => 400,
            ParseError::UriTooLong { .. } => 414,
            ParseError::HeadersTooLarge { .. } => 431,
            ParseError::PayloadTooLarge { .. } => 413,
            ParseError::MethodNotAllowed => 405,
            ParseError::NotImplemented => 501,
            ParseError::VersionNotSupported => 505,
        }
    }
}

/// Parses the request at the start of `buf`: `Ok(None)` means more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<Request<'_>>, ParseError> {
    let Some(line_end) = find_line_end(buf, MAX_REQUEST_LINE) else {
        return if buf.len() > MAX_REQUEST_LINE {
            Err(ParseError::UriTooLong {
                limit: MAX_REQUEST_LINE,
            })
        } else {
            Ok(None)
        };
    };
    let (method, target, version) = parse_request_line(trim_cr(&buf[..line_end]))?;
    let mut keep_alive = version == Version::Http11;
    let mut has_host = false;
    let mut body_len = 0usize;
    let mut pos = line_end + 1;
    let mut fields = 0usize;
    loop {
        let window = MAX_HEAD.saturating_sub(pos);
        let Some(rel_end) = find_line_end(&buf[pos..], window) else {
            return if buf.len() > MAX_HEAD {
                Err(ParseError::HeadersTooLarge { limit: MAX_HEAD })
            } else {
                Ok(None)
            };
        };
        let line = trim_cr(&buf[pos..pos + rel_end]);
        pos += rel_end + 1;
        if line.is_empty() {
            break;
        }
        fields += 1;
        if fields > MAX_HEADERS {
            return Err(ParseError::HeadersTooLarge { limit: MAX_HEAD });
        }
        let (name, value) = split_field(line)?;
        if name.eq_ignore_ascii_case(b"host") {
            has_host = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = trim_ows(token);
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let len = parse_decimal(value).ok_or(ParseError::BadRequest)?;
            if len > MAX_BODY {
                return Err(ParseError::PayloadTooLarge { limit: MAX_BODY });
            }
            body_len = len;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Chunked bodies on GET are legal but unused in practice; refusing them keeps framing simple.
            return Err(ParseError::NotImplemented);
        }
    }
    if version == Version::Http11 && !has_host {
        return Err(ParseError::BadRequest);
    }
    if buf.len() < pos + body_len {
        return Ok(None);
    }
    Ok(Some(Request {
        method,
        target,
        version,
        keep_alive,
        len: pos + body_len,
    }))
}

/// Index of the `\n` ending the first line, looking at no more than `limit + 1` bytes.
fn find_line_end(buf: &[u8], limit: usize) -> Option<usize> {
    let window = &buf[..buf.len().min(limit.saturating_add(1))];
    window.iter().position(|&b| b == b'\n')
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn parse_request_line(line: &[u8]) -> Result<(Method, &[u8], Version), ParseError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::BadRequest);
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(ParseError::BadRequest);
    }
    if !target.starts_with(b"/") || !target.iter().all(|&b| b.is_ascii_graphic()) {
        return Err(ParseError::BadRequest);
    }
    let version = match version {
        b"HTTP/1.1" => Version::Http11,
        b"HTTP/1.0" => Version::Http10,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(ParseError::VersionNotSupported)
        }
        _ => return Err(ParseError::BadRequest),
    };
    let method = match method {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        b"POST" | b"PUT" | b"DELETE" | b"PATCH" | b"OPTIONS" | b"TRACE" | b"CONNECT" => {
            return Err(ParseError::MethodNotAllowed)
        }
        _ => return Err(ParseError::NotImplemented),
    };
    Ok((method, target, version))
}

fn split_field(line: &[u8]) -> Result<(&[u8], &[u8]), ParseError> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(ParseError::BadRequest)?;
    let name = &line[..colon];
    // Whitespace before the colon or a folded continuation line are request smuggling vectors (RFC 9112 5.1).
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(ParseError::BadRequest);
    }
    let value = trim_ows(&line[colon + 1..]);
    if value.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Err(ParseError::BadRequest);
    }
    Ok((name, value))
}

fn parse_decimal(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 18 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        s.iter()
            .fold(0usize, |n, &d| n * 10 + usize::from(d - b'0')),
    )
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(buf: &[u8]) -> Request<'_> {
        parse(buf).expect("valid").expect("complete")
    }

    #[test]
    fn simple_get_keeps_alive_on_1_1() {
        let r = ok(b"GET /a.html HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.target, b"/a.html");
        assert!(r.keep_alive);
        assert_eq!(r.len, 33);
    }

    #[test]
    fn http_1_0_closes_by_default_and_keeps_alive_on_request() {
        assert!(!ok(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(ok(b"HEAD / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!ok(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: foo, close\r\n\r\n").keep_alive);
    }

    #[test]
    fn partial_input_asks_for_more() {
        let full = b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(ok(full).len, full.len());
    }

    #[test]
    fn pipelined_requests_parse_one_at_a_time() {
        let buf = b"GET /1 HTTP/1.1\nHost: x\n\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n";
        let first = ok(buf);
        assert_eq!(first.target, b"/1");
        assert_eq!(ok(&buf[first.len..]).target, b"/2");
    }

    #[test]
    fn limits_apply_before_the_line_ends() {
        let long = vec![b'a'; MAX_REQUEST_LINE + 1];
        assert_eq!(parse(&long).unwrap_err().status(), 414);
        let mut head = b"GET / HTTP/1.1\r\nHost: x\r\nX: ".to_vec();
        head.resize(MAX_HEAD + 1, b'a');
        assert_eq!(parse(&head).unwrap_err().status(), 431);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X{i}: y\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
        assert_eq!(parse(req.as_bytes()).unwrap_err().status(), 431);
    }

    #[test]
    fn bad_requests_get_their_status() {
        let cases: &[(&[u8], u16)] = &[
            (b"GET / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
            (b"GET / HTTX/1.1\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\n\r\n", 405),
            (b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n", 501),
            (b"GET a HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
                400,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n",
                413,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                501,
            ),
            (b"\x00\xff\x13\n", 400),
        ];
        for (req, status) in cases {
            let got = parse(req).map(|_| ()).unwrap_err().status();
            assert_eq!(got, *status, "{}", String::from_utf8_lossy(req));
        }
    }
}
