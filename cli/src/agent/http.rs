//! A tiny HTTP/1.1 server on a std thread for `/metrics` and `/healthz`: one request per
//! connection, GET only, bounded request size and read timeout; nothing else is served.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::Arc,
    time::Duration,
};

use prometheus_client::registry::Registry;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("listening on {addr} failed")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The content type of the OpenMetrics text exposition.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of the Prometheus text format 0.0.4.
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds `addr` and serves on a background thread; returns the bound address (port 0 picks one).
pub fn serve(addr: SocketAddr, registry: Registry) -> Result<SocketAddr, HttpError> {
    let listener = TcpListener::bind(addr).map_err(|source| HttpError::Bind { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    let registry = Arc::new(registry);
    std::thread::Builder::new()
        .name("kpath-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                if let Err(e) = answer(conn, &registry) {
                    log::debug!("metrics connection: {e}");
                }
            }
        })
        .map_err(|source| HttpError::Bind { addr, source })?;
    Ok(bound)
}

fn answer(mut conn: TcpStream, registry: &Registry) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.by_ref().take(8192).read_line(&mut line)?;
    // Skip the headers (bounded): nothing in them changes the answer.
    // Of the headers (bounded) only Accept matters: OpenMetrics when asked for (Prometheus
    // asks), else the classic text format.
    let mut header = String::new();
    let mut openmetrics = false;
    let mut budget = 64;
    while budget > 0 {
        header.clear();
        if reader.by_ref().take(8192).read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        let h = header.to_ascii_lowercase();
        if h.starts_with("accept:") && h.contains("application/openmetrics-text") {
            openmetrics = true;
        }
        budget -= 1;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => match if openmetrics {
            super::metrics::render(registry).map(|t| (OPENMETRICS, t))
        } else {
            super::metrics::render_classic(registry).map(|t| (CLASSIC, t))
        } {
            Ok((ctype, text)) => ("200 OK", ctype, text),
            Err(_) => (
                "500 Internal Server Error",
                "text/plain",
                "encoding failed\n".into(),
            ),
        },
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".into()),
        ("GET", _) => ("404 Not Found", "text/plain", "try /metrics\n".into()),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())?;
    conn.flush()
}

/// Whether `addr` may be listened on: loopback always; anything else only when the user
/// gave it explicitly (the metrics name processes and kernel paths of the machine).
pub fn check_listen(addr: &SocketAddr, explicit: bool) -> Result<(), String> {
    if addr.ip().is_loopback() || explicit {
        return Ok(());
    }
    Err(format!(
        "{addr} is not a loopback address: pass --listen {addr} to expose the metrics beyond this machine"
    ))
}
