//! The service manager's notification protocol (sd_notify(3)): datagrams to `$NOTIFY_SOCKET`,
//! and the barrier that waits until the manager has read every message sent before it.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{sendmsg, socket, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr};

/// The longest `$NOTIFY_SOCKET` taken: an `AF_UNIX` path is at most 108 bytes.
const MAX_SOCKET_PATH: usize = 108;

/// A connection to the manager that started this process.
pub struct Notifier {
    socket: OwnedFd,
    address: UnixAddr,
}

impl Notifier {
    /// The manager's socket from `$NOTIFY_SOCKET` (`/path` or `@abstract`); `None` when this
    /// process was not started as a notify service.
    pub fn from_env() -> Result<Option<Notifier>> {
        let Some(value) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(value.as_os_str());
        if bytes.is_empty() || bytes.len() > MAX_SOCKET_PATH {
            bail!("NOTIFY_SOCKET is empty or longer than {MAX_SOCKET_PATH} bytes");
        }
        let address = match bytes.strip_prefix(b"@") {
            Some(name) => UnixAddr::new_abstract(name),
            None if bytes.starts_with(b"/") => UnixAddr::new(bytes),
            None => bail!("NOTIFY_SOCKET is neither an absolute path nor an abstract name"),
        }
        .context("reading NOTIFY_SOCKET")?;
        let socket = socket(AddressFamily::Unix, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)
            .context("creating a socket to notify the service manager")?;
        Ok(Some(Notifier { socket, address }))
    }

    /// Sends newline-separated `KEY=VALUE` assignments in one datagram.
    pub fn send(&self, state: &str) -> Result<()> {
        self.send_with(state, &[])
    }

    /// Returns once the manager has processed every message sent before, or after `timeout`.
    pub fn barrier(&self, timeout: Duration) -> Result<()> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating a barrier pipe")?;
        self.send_with("BARRIER=1", &[write.as_raw_fd()])?;
        drop(write);
        let mut fds = [PollFd::new(read.as_fd(), PollFlags::POLLIN)];
        let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let ready = poll(&mut fds, PollTimeout::from(millis)).context("waiting for the service manager")?;
        if ready == 0 {
            bail!("the service manager did not take the notification within {timeout:?}");
        }
        Ok(())
    }

    fn send_with(&self, state: &str, fds: &[std::os::fd::RawFd]) -> Result<()> {
        let iov = [IoSlice::new(state.as_bytes())];
        let rights = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
        sendmsg(self.socket.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, Some(&self.address))
            .with_context(|| format!("notifying the service manager ({})", state.replace('\n', " ")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn messages_and_the_barrier_reach_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let manager = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            socket: socket(AddressFamily::Unix, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None).unwrap(),
            address: UnixAddr::new(&path).unwrap(),
        };
        notifier.send("READY=1\nSTATUS=healthy").unwrap();
        let mut buf = [0u8; 64];
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=healthy");

        // The barrier's pipe arrives with the message; it returns once the manager drops it.
        let handle = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let msg =
                nix::sys::socket::recvmsg::<()>(manager.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())
                    .unwrap();
            let mut passed = Vec::new();
            for cmsg in msg.cmsgs().unwrap() {
                if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = cmsg {
                    passed.extend(fds);
                }
            }
            assert_eq!(passed.len(), 1);
            std::thread::sleep(Duration::from_millis(50));
            nix::unistd::close(passed[0]).unwrap();
        });
        notifier.barrier(Duration::from_secs(5)).unwrap();
        handle.join().unwrap();
    }

    #[test]
    fn a_barrier_nobody_answers_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let _manager = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            socket: socket(AddressFamily::Unix, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None).unwrap(),
            address: UnixAddr::new(&path).unwrap(),
        };
        let err = notifier.barrier(Duration::from_millis(100)).unwrap_err();
        assert!(err.to_string().contains("did not take the notification"), "{err:#}");
    }
}
