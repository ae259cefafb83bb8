//! Plain HTTP/1.0 to a real agent's listeners, and reading its Prometheus text: one client
//! for the tests and benchmarks that scrape `/metrics` (HTTP/1.0, so no chunked body to
//! decode).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Longest a request waits to connect, and then for each read.
const WAIT: Duration = Duration::from_secs(30);

/// `METHOD path` over HTTP/1.0 to `addr`: the status code and the body.
///
/// # Errors
///
/// Connecting, writing or reading failed (each waits at most 30 s), the response is not
/// UTF-8, or it has no status line.
pub fn request(addr: SocketAddr, method: &str, path: &str) -> io::Result<(u16, String)> {
    let context =
        |e: io::Error| io::Error::new(e.kind(), format!("{method} http://{addr}{path}: {e}"));
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).map_err(context)?;
    stream.set_read_timeout(Some(WAIT)).map_err(context)?;
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(context)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(context)?;
    let raw = String::from_utf8(raw)
        .map_err(|e| context(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            context(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no status line in {head:?}"),
            ))
        })?;
    Ok((code, body.to_owned()))
}

/// The body of `GET /metrics` from `addr`.
///
/// # Errors
///
/// As [`request`], or a status other than 200.
pub fn scrape(addr: SocketAddr) -> io::Result<String> {
    let (code, body) = request(addr, "GET", "/metrics")?;
    if code != 200 {
        return Err(io::Error::other(format!(
            "GET http://{addr}/metrics: status {code}: {body}"
        )));
    }
    Ok(body)
}

/// The value of the sample whose name and labels are exactly `series` (as exposed) in a
/// Prometheus text body, if there is one and it is a number.
pub fn sample_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_by_exact_series() {
        let text = "# HELP a_total x\na_total 3\na_total_more 4\nb{state=\"ACTIVE\"} 2.5\n";
        assert_eq!(sample_value(text, "a_total"), Some(3.0));
        assert_eq!(sample_value(text, "b{state=\"ACTIVE\"}"), Some(2.5));
        assert_eq!(sample_value(text, "b"), None);
        assert_eq!(sample_value(text, "c"), None);
    }
}
