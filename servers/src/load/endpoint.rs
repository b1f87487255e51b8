//! Where a load goes: an `http://` URL on this machine's loopback, resolved into the address to
//! connect to, the Host header and the request path.

use std::net::{SocketAddr, ToSocketAddrs};

/// One URL of a load, parsed and resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Host header value, as written in the URL.
    pub host: String,
    pub path: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("only http:// URLs are supported: {url}")]
    Scheme { url: String },
    #[error("cannot resolve {host}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{host} is not a loopback address; kpath load only targets this machine's loopback")]
    NotLoopback { host: String },
    #[error("malformed URL {url:?}: {why}")]
    Malformed { url: String, why: &'static str },
}

/// An `http://` URL split into authority and path and checked, but not resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpUrl<'a> {
    /// `host` or `host:port`, as written: the Host header.
    pub authority: &'a str,
    /// Starts with `/`; `/` when the URL has no path.
    pub path: &'a str,
}

impl<'a> HttpUrl<'a> {
    pub fn parse(url: &'a str) -> Result<HttpUrl<'a>, EndpointError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| EndpointError::Scheme {
                url: url.to_string(),
            })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let malformed = |why| EndpointError::Malformed {
            url: url.to_string(),
            why,
        };
        if authority.is_empty() {
            return Err(malformed("no host"));
        }
        // The path goes into the request line as it is: a space or a line break would split it.
        if path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(malformed("whitespace or a control character in the path"));
        }
        if path.contains('#') {
            return Err(malformed("a fragment (#) is never sent to the server"));
        }
        Ok(HttpUrl { authority, path })
    }

    /// The URL names only a server (`http://HOST:PORT`, with or without the trailing `/`).
    pub fn is_server_only(&self) -> bool {
        self.path == "/"
    }
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, EndpointError> {
        let HttpUrl { authority, path } = HttpUrl::parse(url)?;
        Ok(Endpoint {
            addr: resolve_loopback(authority)?,
            host: authority.to_string(),
            path: path.to_string(),
        })
    }

    pub fn request(&self, close: bool) -> Vec<u8> {
        let conn = if close { "Connection: close\r\n" } else { "" };
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\n{conn}\r\n",
            self.path, self.host
        )
        .into_bytes()
    }
}

/// The address `authority` (port 80 unless it names one) resolves to, if that is loopback.
fn resolve_loopback(authority: &str) -> Result<SocketAddr, EndpointError> {
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let resolved: Vec<SocketAddr> = with_port
        .to_socket_addrs()
        .map_err(|source| EndpointError::Resolve {
            host: authority.to_string(),
            source,
        })?
        .collect();
    // Every resolved address must be loopback, so a name cannot smuggle in a remote host.
    match resolved.first() {
        Some(first) if resolved.iter().all(|a| a.ip().is_loopback()) => Ok(*first),
        _ => Err(EndpointError::NotLoopback {
            host: authority.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loopback_urls() {
        let t = Endpoint::parse("http://127.0.0.1:8080/a.html").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            (t.host.as_str(), t.path.as_str()),
            ("127.0.0.1:8080", "/a.html")
        );
        assert_eq!(Endpoint::parse("http://[::1]:9").unwrap().path, "/");
        assert_eq!(Endpoint::parse("http://127.0.0.2").unwrap().addr.port(), 80);
    }

    #[test]
    fn refuses_anything_else() {
        assert!(matches!(
            Endpoint::parse("http://10.0.0.1:80/"),
            Err(EndpointError::NotLoopback { .. })
        ));
        assert!(matches!(
            Endpoint::parse("http://192.0.2.1/"),
            Err(EndpointError::NotLoopback { .. })
        ));
        assert!(matches!(
            Endpoint::parse("https://127.0.0.1/"),
            Err(EndpointError::Scheme { .. })
        ));
        for bad in [
            "http://",
            "http:///a.html",
            "http://127.0.0.1:8080/a b",
            "http://127.0.0.1:8080/a\r\nX: y",
            "http://127.0.0.1:8080/a#top",
        ] {
            assert!(
                matches!(Endpoint::parse(bad), Err(EndpointError::Malformed { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn splits_without_resolving() {
        // .invalid never resolves (RFC 6761): parsing alone must not try.
        let u = HttpUrl::parse("http://server.invalid:8080/a?b=1").unwrap();
        assert_eq!((u.authority, u.path), ("server.invalid:8080", "/a?b=1"));
        assert!(!u.is_server_only());
        for server in ["http://h:1", "http://h:1/", "http://[::1]:9/"] {
            assert!(HttpUrl::parse(server).unwrap().is_server_only(), "{server}");
        }
        for path in ["http://h:1/a", "http://h:1//", "http://h:1/?x"] {
            assert!(!HttpUrl::parse(path).unwrap().is_server_only(), "{path}");
        }
    }
}
