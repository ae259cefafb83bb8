//! A loopback TCP port that refuses connections for as long as a test needs it.
//!
//! A port bound and released at once is only free: another test process may take it (an
//! agent on `127.0.0.1:0`, a fake server) before the test connects, and then something
//! answers. A socket that stays bound to the port but never listens keeps everyone else off
//! it, and the kernel answers a connection to it with a reset: `ECONNREFUSED`.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// A `127.0.0.1` port bound by this process and never listened on; refused until dropped.
#[derive(Debug)]
pub struct ClosedPort {
    // Bound without SO_REUSEADDR or SO_REUSEPORT, so no other socket can bind the port.
    _socket: Socket,
    addr: SocketAddr,
}

impl ClosedPort {
    /// Binds a free port of `127.0.0.1`.
    ///
    /// # Errors
    ///
    /// The socket cannot be made or bound.
    pub fn bind() -> io::Result<ClosedPort> {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        socket.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
        let addr = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| crate::bad("a TCP socket without an IP address"))?;
        Ok(ClosedPort {
            _socket: socket,
            addr,
        })
    }

    /// The address: connecting to it is refused.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_to_a_closed_port_is_refused_and_nobody_else_can_bind_it() {
        let port = ClosedPort::bind().unwrap();
        let err = std::net::TcpStream::connect(port.addr()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        let err = std::net::TcpListener::bind(port.addr()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    }
}
