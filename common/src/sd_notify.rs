//! systemd's service notification protocol (sd_notify(3)), with std alone.
//!
//! A unit of `Type=notify` tells its service manager how it is doing by
//! sending newline-separated `KEY=VALUE` lines in one datagram to the unix
//! socket named by `NOTIFY_SOCKET`: `READY=1` once it serves, `WATCHDOG=1`
//! while it is alive (at least every `WATCHDOG_USEC`, when `WatchdogSec=` is
//! set), `STOPPING=1` when it begins to shut down, and `STATUS=...` for the
//! line `systemctl status` shows. A socket name starting with `@` is in the
//! abstract namespace (the `@` stands for the leading NUL byte).
//!
//! Without `NOTIFY_SOCKET` (not started by systemd, or not as `Type=notify`)
//! there is no `Notifier` and nothing is sent. Sending never blocks: a ping
//! the manager has no room for is dropped and reported as an error, which
//! callers log and carry on.

use std::ffi::OsStr;
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// One line of a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State<'a> {
    /// Start-up is finished: the service serves.
    Ready,
    /// Shutdown has begun.
    Stopping,
    /// A keep-alive ping for the watchdog.
    Watchdog,
    /// A one-line human description of the service's state.
    Status(&'a str),
}

/// The datagram for `states`. A status with line breaks would end its line
/// early (and could smuggle in other keys): they become spaces.
pub fn message(states: &[State<'_>]) -> String {
    let lines: Vec<String> = states
        .iter()
        .map(|s| match s {
            State::Ready => "READY=1".to_string(),
            State::Stopping => "STOPPING=1".to_string(),
            State::Watchdog => "WATCHDOG=1".to_string(),
            State::Status(text) => format!("STATUS={}", text.replace(['\n', '\r'], " ")),
        })
        .collect();
    lines.join("\n")
}

/// The socket address `NOTIFY_SOCKET` names: a path, or an abstract name after `@`.
pub fn address(name: &OsStr) -> io::Result<SocketAddr> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = name.as_bytes();
    match bytes.split_first() {
        None => Err(io::Error::new(io::ErrorKind::InvalidInput, "NOTIFY_SOCKET is empty")),
        Some((b'@', abstract_name)) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(abstract_name)
        }
        Some((b'/', _)) => SocketAddr::from_pathname(name),
        Some(_) => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("NOTIFY_SOCKET {name:?} is neither an absolute path nor an abstract name (@...)"))),
    }
}

/// The watchdog interval systemd expects pings within, from the values of
/// `WATCHDOG_USEC` and `WATCHDOG_PID`: none if the watchdog is off, or if it
/// is meant for another process (`WATCHDOG_PID` set and not `pid`).
pub fn watchdog_interval(usec: Option<&str>, watchdog_pid: Option<&str>, pid: u32) -> Option<Duration> {
    if let Some(for_pid) = watchdog_pid {
        if for_pid.trim().parse::<u32>().ok() != Some(pid) {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec))
}

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    to: SocketAddr,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` asks for; `Ok(None)` when it is unset.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        match std::env::var_os("NOTIFY_SOCKET") {
            None => Ok(None),
            Some(name) => Self::to(&name).map(Some),
        }
    }

    /// A notifier that sends to the socket `name` (as `NOTIFY_SOCKET` writes it).
    pub fn to(name: &OsStr) -> io::Result<Notifier> {
        let to = address(name)?;
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Notifier { socket, to })
    }

    /// Sends `states` in one datagram.
    pub fn notify(&self, states: &[State<'_>]) -> io::Result<()> {
        let message = message(states);
        let sent = self.socket.send_to_addr(message.as_bytes(), &self.to)?;
        if sent != message.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "the notification was cut short"));
        }
        Ok(())
    }
}

/// The watchdog interval of this process from its environment (see `watchdog_interval`).
pub fn watchdog_from_env() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval(usec.as_deref(), pid.as_deref(), std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn lines_are_joined_and_a_status_stays_on_its_line() {
        assert_eq!(message(&[State::Ready, State::Status("leader of 3, 12 functions")]), "READY=1\nSTATUS=leader of 3, 12 functions");
        assert_eq!(message(&[State::Watchdog]), "WATCHDOG=1");
        assert_eq!(message(&[State::Stopping, State::Status("a\nREADY=1\r")]), "STOPPING=1\nSTATUS=a READY=1 ");
    }

    #[test]
    fn paths_and_abstract_names_are_told_apart() {
        use std::os::linux::net::SocketAddrExt;
        let path = address(OsStr::new("/run/systemd/notify")).unwrap();
        assert_eq!(path.as_pathname(), Some(std::path::Path::new("/run/systemd/notify")));
        let abstract_name = address(OsStr::new("@sluice/notify")).unwrap();
        assert_eq!(abstract_name.as_abstract_name(), Some(&b"sluice/notify"[..]));
        assert_eq!(abstract_name.as_pathname(), None);
        assert!(address(OsStr::new("")).is_err());
        assert!(address(OsStr::new("relative/path")).is_err());
    }

    #[test]
    fn the_watchdog_is_ours_only_without_a_pid_or_with_our_pid() {
        let two_s = Some(Duration::from_secs(2));
        assert_eq!(watchdog_interval(Some("2000000"), None, 42), two_s);
        assert_eq!(watchdog_interval(Some("2000000"), Some("42"), 42), two_s);
        assert_eq!(watchdog_interval(Some("2000000"), Some("43"), 42), None);
        assert_eq!(watchdog_interval(Some("2000000"), Some("junk"), 42), None);
        assert_eq!(watchdog_interval(None, None, 42), None);
        assert_eq!(watchdog_interval(Some("0"), None, 42), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 42), None);
    }

    #[test]
    fn a_datagram_reaches_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::to(path.as_os_str()).unwrap();
        notifier.notify(&[State::Ready, State::Status("up")]).unwrap();
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=up");
    }

    #[test]
    fn a_datagram_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("sluice-sd-notify-test-{}", std::process::id());
        let listener = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        let notifier = Notifier::to(&OsString::from(format!("@{name}"))).unwrap();
        notifier.notify(&[State::Watchdog]).unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[test]
    fn no_one_listening_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let notifier = Notifier::to(dir.path().join("nobody").as_os_str()).unwrap();
        assert!(notifier.notify(&[State::Ready]).is_err());
    }
}
