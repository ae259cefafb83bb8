//! Autofs states that take more than one command to reach, as every real-kernel test builds
//! them: INTERIM (a request waits unread in the pipe) and CATATONIC (the kernel gave up on the
//! daemon). Each returns only once the host's `/proc` shows the state.

use std::io;
use std::time::Duration;

use super::Scenario;
use crate::bad;
use crate::packet::V5_PACKET_SIZE;
use crate::reports::{Daemon, Requester, RequesterOutcome};

impl Scenario {
    /// Makes `daemon`'s mount INTERIM: a requester looks up the missing name `key` and the
    /// daemon does not read the request. The requester stays blocked until the packet is read
    /// ([`Scenario::read_packet`]) or the scenario ends.
    ///
    /// # Errors
    ///
    /// The trigger failed, or no whole v5 packet was queued in the daemon's pipe within
    /// `timeout`.
    pub fn make_interim(
        &mut self,
        daemon: &Daemon,
        key: &str,
        timeout: Duration,
    ) -> io::Result<Requester> {
        let req = self.trigger(&daemon.name, key)?;
        self.wait_queued(daemon, key, req, timeout)
    }

    /// [`Scenario::make_interim`] with the lookup made by a second thread of the requester
    /// ([`Scenario::trigger_from_thread`]).
    ///
    /// # Errors
    ///
    /// As [`Scenario::make_interim`].
    pub fn make_interim_from_thread(
        &mut self,
        daemon: &Daemon,
        key: &str,
        timeout: Duration,
    ) -> io::Result<Requester> {
        let req = self.trigger_from_thread(&daemon.name, key)?;
        self.wait_queued(daemon, key, req, timeout)
    }

    /// Waits until `req`'s request for `key` is queued in `daemon`'s pipe.
    fn wait_queued(
        &mut self,
        daemon: &Daemon,
        key: &str,
        req: Requester,
        timeout: Duration,
    ) -> io::Result<Requester> {
        if !self.wait_until(timeout, |s| {
            s.queued_bytes(daemon).unwrap_or(0) == V5_PACKET_SIZE
        }) {
            return Err(bad(format!(
                "the request for `{key}` never reached the pipe of {} within {timeout:?}",
                daemon.name
            )));
        }
        Ok(req)
    }

    /// Makes `daemon`'s mount CATATONIC: the daemon exits, then a lookup finds no reader and
    /// the kernel sets `fd=-1` in mountinfo.
    ///
    /// # Errors
    ///
    /// The daemon did not exit, the lookup did not fail within `timeout`, or mountinfo did not
    /// show `fd=-1` within `timeout`.
    pub fn make_catatonic(&mut self, daemon: &Daemon, timeout: Duration) -> io::Result<()> {
        self.exit_daemon(daemon)?;
        let req = self.trigger(&daemon.name, "after-exit")?;
        match self.wait_requester(&req, timeout)? {
            RequesterOutcome::Failed(_) => {}
            other => {
                return Err(bad(format!(
                    "a lookup in {} after its daemon exited ended {other:?}, not failed",
                    daemon.name
                )));
            }
        }
        if !self.wait_until(timeout, |s| {
            s.mount_line(daemon.mount_id)
                .is_some_and(|l| l.option("fd") == Some("-1"))
        }) {
            return Err(bad(format!(
                "mountinfo of {} never showed fd=-1 within {timeout:?}",
                daemon.name
            )));
        }
        Ok(())
    }
}
