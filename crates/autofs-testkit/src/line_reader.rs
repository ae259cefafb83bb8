//! Reading lines from the scenario init's stdout with a deadline (non-blocking fd, short
//! sleeps), so a hung init fails the test instead of hanging it.

use std::io::{self, Read};
use std::process::ChildStdout;
use std::time::{Duration, Instant};

use crate::bad;

/// Reads lines from the init's stdout with a deadline (non-blocking fd + short sleeps).
pub(crate) struct LineReader {
    out: ChildStdout,
    buf: Vec<u8>,
}

impl LineReader {
    pub(crate) fn new(out: ChildStdout) -> io::Result<LineReader> {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let fl = fcntl(&out, FcntlArg::F_GETFL).map_err(io::Error::from)?;
        fcntl(
            &out,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(fl) | OFlag::O_NONBLOCK),
        )
        .map_err(io::Error::from)?;
        Ok(LineReader {
            out,
            buf: Vec::new(),
        })
    }

    pub(crate) fn read_line(&mut self, deadline: Instant) -> io::Result<String> {
        let mut sleep = Duration::from_micros(100);
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            let mut tmp = [0u8; 4096];
            match self.out.read(&mut tmp) {
                Ok(0) => return Err(bad("the scenario exited (EOF on its stdout)")),
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    sleep = Duration::from_micros(100);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no reply from the scenario in time",
                ));
            }
            std::thread::sleep(sleep);
            sleep = (sleep * 2).min(Duration::from_millis(5));
        }
    }
}
