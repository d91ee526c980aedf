//! SIGINT (Ctrl-C) and SIGTERM, so that the server can stop gracefully.
//!
//! Rust's standard library has no signal API, and wschat adds no runtime
//! dependency for one, so this module declares the four C library functions
//! it needs. It is the only `unsafe` code in wschat.
//!
//! The method is the one the POSIX threads documents recommend for a
//! threaded program: block the signals in every thread, and let one thread
//! wait for them with `sigwait(3)`. The kernel then never interrupts a
//! thread to run a handler, so nothing here has to be async-signal-safe.
//! The blocked set is inherited by every thread created afterwards, which
//! is why [`block_stop_signals`] must run before the first thread starts.
//!
//! The constants are Linux's; on other systems the server runs without a
//! graceful stop.

use std::io;

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
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "signals are only handled on Linux",
        ))
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
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "signals are only handled on Linux",
            ))
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::c_int;
    use std::io;

    pub const SIGINT: c_int = 2;
    pub const SIGTERM: c_int = 15;
    const SIG_BLOCK: c_int = 0;

    /// `sigset_t`: glibc and musl both reserve 1024 bits.
    #[repr(C)]
    #[derive(Debug)]
    pub struct SigSet([u64; 16]);

    unsafe extern "C" {
        fn sigemptyset(set: *mut SigSet) -> c_int;
        fn sigaddset(set: *mut SigSet, signum: c_int) -> c_int;
        fn pthread_sigmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
        fn sigwait(set: *const SigSet, signal: *mut c_int) -> c_int;
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
}
