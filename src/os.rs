//! The few things wschat needs from the operating system that Rust's
//! standard library does not offer, declared by hand from the C library
//! (wschat adds no runtime dependency for them). This is the only `unsafe`
//! code in wschat, and each use says why it is sound.
//!
//! - **Signals** ([`block_stop_signals`], [`StopSignals::wait`]): SIGINT
//!   (Ctrl-C) and SIGTERM start the graceful stop. The method is the one
//!   POSIX recommends for a threaded program: block the signals in every
//!   thread, and let one thread wait for them with `sigwait(3)`. No handler
//!   ever interrupts a thread, so nothing has to be async-signal-safe. The
//!   blocked set is inherited by threads created afterwards, which is why
//!   [`block_stop_signals`] must run before the first thread starts.
//! - **A write that never waits** ([`send_without_blocking`]): `sendmsg(2)`
//!   with `MSG_DONTWAIT` sends what the socket's buffer has room for and
//!   returns at once. A broadcasting thread uses it to hand frames straight
//!   to the kernel instead of waking the client's writer thread, and never
//!   waits for a slow client (docs/performance.md has the figures). The
//!   socket itself stays blocking, for the client's own reader and writer.
//!
//! - **The open-file limit** ([`raise_open_file_limit`]): every client holds
//!   a socket, and the usual soft limit of 1,024 descriptors is far below
//!   the default `--max-clients`. A process may raise its soft limit up to
//!   its hard limit (`setrlimit(2)`), and wschat does so at start.
//!
//! The constants and structure layouts are Linux's (glibc and musl); on
//! other systems there is no graceful stop, and every frame goes through
//! the writer thread.

use std::io::{self, IoSlice};
use std::net::TcpStream;

/// A set of blocked signals that can be waited for.
#[derive(Debug)]
pub struct StopSignals {
    #[cfg(target_os = "linux")]
    set: linux::SigSet,
}

/// Blocks SIGINT and SIGTERM in this thread and every thread it starts
/// from now on; [`StopSignals::wait`] then receives them.
pub fn block_stop_signals() -> io::Result<StopSignals> {
    #[cfg(target_os = "linux")]
    {
        linux::block([linux::SIGINT, linux::SIGTERM]).map(|set| StopSignals { set })
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(unsupported())
    }
}

impl StopSignals {
    /// Waits until SIGINT or SIGTERM arrives; returns its name.
    pub fn wait(&self) -> io::Result<&'static str> {
        #[cfg(target_os = "linux")]
        {
            linux::wait(&self.set).map(|signal| match signal {
                linux::SIGINT => "SIGINT",
                _ => "SIGTERM",
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            Err(unsupported())
        }
    }
}

/// Sends as much of `pieces` (one after another, as `writev` would) as the
/// socket takes right now, without waiting: `Ok(0)` if it takes nothing.
pub fn send_without_blocking(stream: &TcpStream, pieces: &[IoSlice<'_>]) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // The kernel takes at most IOV_MAX (1024) pieces in one call.
        let pieces = &pieces[..pieces.len().min(1024)];
        loop {
            match linux::send_nowait(stream.as_raw_fd(), pieces) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                result => return result,
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (stream, pieces);
        Ok(0)
    }
}

/// Raises the soft limit on open files to `wanted`, or as near as the hard
/// limit allows; returns the soft limit in force afterwards.
pub fn raise_open_file_limit(wanted: u64) -> io::Result<u64> {
    #[cfg(target_os = "linux")]
    {
        linux::raise_open_file_limit(wanted)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = wanted;
        Err(unsupported())
    }
}

#[cfg(not(target_os = "linux"))]
fn unsupported() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "only implemented on Linux")
}

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::{c_int, c_void};
    use std::io::{self, IoSlice};

    pub const SIGINT: c_int = 2;
    pub const SIGTERM: c_int = 15;
    const SIG_BLOCK: c_int = 0;
    const MSG_DONTWAIT: c_int = 0x40;
    const RLIMIT_NOFILE: c_int = 7;
    const MSG_NOSIGNAL: c_int = 0x4000;

    /// `sigset_t`: glibc and musl both reserve 1024 bits.
    #[repr(C)]
    #[derive(Debug)]
    pub struct SigSet([u64; 16]);

    /// `struct msghdr`, with no address and no control data.
    #[repr(C)]
    struct MsgHdr {
        name: *mut c_void,
        name_len: u32,
        /// `IoSlice` is guaranteed to have the layout of `struct iovec`.
        iov: *const IoSlice<'static>,
        iov_len: usize,
        control: *mut c_void,
        control_len: usize,
        flags: c_int,
    }

    /// `struct rlimit`.
    #[repr(C)]
    struct RLimit {
        soft: u64,
        hard: u64,
    }

    unsafe extern "C" {
        fn getrlimit(resource: c_int, limit: *mut RLimit) -> c_int;
        fn setrlimit(resource: c_int, limit: *const RLimit) -> c_int;
        fn sigemptyset(set: *mut SigSet) -> c_int;
        fn sigaddset(set: *mut SigSet, signum: c_int) -> c_int;
        fn pthread_sigmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
        fn sigwait(set: *const SigSet, signal: *mut c_int) -> c_int;
        fn sendmsg(fd: c_int, message: *const MsgHdr, flags: c_int) -> isize;
    }

    pub fn block(signals: [c_int; 2]) -> io::Result<SigSet> {
        let mut set = SigSet([0; 16]);
        // SAFETY: `set` is a valid, writable sigset_t for the duration of
        // each call, and the signal numbers are valid.
        unsafe {
            if sigemptyset(&mut set) != 0 {
                return Err(io::Error::last_os_error());
            }
            for signal in signals {
                if sigaddset(&mut set, signal) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // pthread_sigmask returns the error number instead of setting errno.
            match pthread_sigmask(SIG_BLOCK, &set, std::ptr::null_mut()) {
                0 => Ok(set),
                errno => Err(io::Error::from_raw_os_error(errno)),
            }
        }
    }

    pub fn wait(set: &SigSet) -> io::Result<c_int> {
        let mut signal: c_int = 0;
        // SAFETY: `set` was filled by `block`; `signal` is writable.
        match unsafe { sigwait(set, &mut signal) } {
            0 => Ok(signal),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }

    pub fn send_nowait(fd: c_int, pieces: &[IoSlice<'_>]) -> io::Result<usize> {
        let message = MsgHdr {
            name: std::ptr::null_mut(),
            name_len: 0,
            iov: pieces.as_ptr().cast(),
            iov_len: pieces.len(),
            control: std::ptr::null_mut(),
            control_len: 0,
            flags: 0,
        };
        // SAFETY: `message` points at `pieces`, which outlive the call and
        // which the kernel only reads; `fd` is an open socket.
        let sent = unsafe { sendmsg(fd, &message, MSG_DONTWAIT | MSG_NOSIGNAL) };
        usize::try_from(sent).map_err(|_| io::Error::last_os_error())
    }

    pub fn raise_open_file_limit(wanted: u64) -> io::Result<u64> {
        let mut limit = RLimit { soft: 0, hard: 0 };
        // SAFETY: `limit` is a valid, writable `struct rlimit`.
        if unsafe { getrlimit(RLIMIT_NOFILE, &mut limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if limit.soft >= wanted {
            return Ok(limit.soft);
        }
        let raised = RLimit {
            soft: wanted.min(limit.hard),
            hard: limit.hard,
        };
        // SAFETY: `raised` is a valid `struct rlimit`, read by the call.
        if unsafe { setrlimit(RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(raised.soft)
    }
}
