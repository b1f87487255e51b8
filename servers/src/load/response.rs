//! Incremental parsing of response heads, just enough to frame keep-alive responses.

/// What a buffered response head says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// Bytes of the head, including the blank line.
    pub head_len: usize,
    pub content_length: usize,
    /// The server will close after this response.
    pub close: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed response head")]
    Malformed,
    #[error("response without content-length")]
    NoLength,
}

/// Largest response head accepted before calling the response malformed.
pub const MAX_HEAD: usize = 16 * 1024;

/// Parses the response head at the start of `buf`; `Ok(None)` means it is incomplete.
/// `head_only` marks replies to HEAD, whose Content-Length describes no body.
pub fn parse_head(buf: &[u8], head_only: bool) -> Result<Option<Head>, HeadError> {
    let Some(end) = find_blank_line(buf) else {
        return if buf.len() > MAX_HEAD {
            Err(HeadError::Malformed)
        } else {
            Ok(None)
        };
    };
    let head = &buf[..end];
    if head.len() < 12 || !head.starts_with(b"HTTP/1.") || head[8] != b' ' {
        return Err(HeadError::Malformed);
    }
    let status = parse_num(&head[9..12]).ok_or(HeadError::Malformed)? as u16;
    let mut content_length = None;
    let mut close = head.starts_with(b"HTTP/1.0");
    for line in head.split(|&b| b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            content_length = Some(parse_num(value).ok_or(HeadError::Malformed)?);
        } else if name.eq_ignore_ascii_case(b"connection") {
            close = value.eq_ignore_ascii_case(b"close");
        }
    }
    let no_body = head_only || status == 204 || status == 304 || (100..200).contains(&status);
    let content_length = match (no_body, content_length) {
        (true, _) => 0,
        (false, Some(n)) => n,
        (false, None) => return Err(HeadError::NoLength),
    };
    Ok(Some(Head {
        status,
        head_len: end,
        content_length,
        close,
    }))
}

fn find_blank_line(buf: &[u8]) -> Option<usize> {
    let window = &buf[..buf.len().min(MAX_HEAD)];
    window
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

fn parse_num(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 15 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, &d| n * 10 + usize::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_keep_alive_and_close() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let h = parse_head(r, false).unwrap().unwrap();
        assert_eq!(
            (h.status, h.head_len, h.content_length, h.close),
            (200, 38, 5, false)
        );
        let r = b"HTTP/1.1 404 Not Found\r\nconnection: Close\r\ncontent-length:3\r\n\r\n";
        let h = parse_head(r, false).unwrap().unwrap();
        assert_eq!((h.status, h.content_length, h.close), (404, 3, true));
        assert!(
            parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false)
                .unwrap()
                .unwrap()
                .close
        );
    }

    #[test]
    fn incomplete_and_bad_heads() {
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Le", false),
            Ok(None)
        );
        assert_eq!(
            parse_head(b"garbage\r\n\r\n", false),
            Err(HeadError::Malformed)
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\n\r\n", false),
            Err(HeadError::NoLength)
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\n\r\n", true)
                .unwrap()
                .unwrap()
                .content_length,
            0
        );
    }
}
