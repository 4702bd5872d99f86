//! A memory-mapped file truncated while it is read: SIGBUS, turned into one line.
//!
//! `Dump` (and the checkpoint reader) memory-map their files. When another process truncates a
//! file while it is read (`numpy.savez` rewrites a dump in place: open, truncate, write),
//! touching a page past the new end raises SIGBUS, whose default action kills the process
//! without a word. [`install`] replaces it with a handler that prints one line naming the
//! files and exits with code 2 (under `--tui`, after putting the terminal back as it was), or,
//! under the printed `diff --watch`, prints one line and restarts the
//! process (`execv` of `/proc/self/exe` with the same arguments): the watch goes on and
//! compares the dump once its writer has finished (the restarted process finds
//! [`RESTARTED`] in its environment and waits for the files to settle before reading them).
//! The handler only calls `tcsetattr`, `write`, `execve` and `_exit`, which are
//! async-signal-safe; everything it needs is prepared by [`install`].

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// The environment variable a restarted `--watch` finds set.
pub const RESTARTED: &str = "DIVERGENCE_WATCH_RESTARTED";

/// What the handler does, prepared by [`install`] and leaked (never freed, never changed once
/// published: a new `install` publishes a new one).
struct Plan {
    /// The terminal's settings before the interactive view took it over (`--tui`): put back,
    /// with the main screen and the cursor, before the line is printed.
    terminal: Option<libc::termios>,
    /// The line to print.
    message: &'static [u8],
    /// Null-terminated argv and envp for the restart; `None`: exit.
    restart: Option<(*const *const libc::c_char, *const *const libc::c_char)>,
}

static PLAN: AtomicPtr<Plan> = AtomicPtr::new(ptr::null_mut());

extern "C" fn on_sigbus(_signal: libc::c_int) {
    let plan = PLAN.load(Ordering::Acquire);
    // SAFETY: `plan` is null or a leaked `Plan` whose buffers are leaked too (see `install`);
    // write, execve and _exit are async-signal-safe.
    unsafe {
        if let Some(plan) = plan.as_ref() {
            if let Some(t) = &plan.terminal {
                libc::tcsetattr(0, libc::TCSANOW, t);
                let leave = b"\x1b[?1049l\x1b[?25h";
                libc::write(1, leave.as_ptr().cast(), leave.len());
            }
            libc::write(2, plan.message.as_ptr().cast(), plan.message.len());
            if let Some((argv, envp)) = plan.restart {
                libc::execve(c"/proc/self/exe".as_ptr(), argv, envp);
            }
        }
        libc::_exit(2);
    }
}

/// A leaked, null-terminated array of C strings.
fn c_array(items: impl Iterator<Item = Vec<u8>>) -> *const *const libc::c_char {
    let strings: Vec<CString> = items.filter_map(|s| CString::new(s).ok()).collect();
    let mut ptrs: Vec<*const libc::c_char> =
        Vec::leak(strings).iter().map(|s| s.as_ptr()).collect();
    ptrs.push(ptr::null());
    Vec::leak(ptrs).as_ptr()
}

/// Installs the handler. `files` are named in the message; with `restart`, the process starts
/// again with its own arguments instead of exiting (for `--watch`); with `terminal`, the
/// terminal's current settings are saved now and put back before the exit (for `--tui`, whose
/// raw mode and alternate screen would otherwise outlive the process).
pub fn install(files: &str, restart: bool, terminal: bool) {
    let what = if restart {
        "restarting the watch"
    } else {
        "run again once its writer has finished"
    };
    let line = format!(
        "error: {files}: a file was truncated or rewritten while it was being read (SIGBUS); {what}\n"
    );
    let restart = restart.then(|| {
        let argv = c_array(std::env::args_os().map(|a| a.as_bytes().to_vec()));
        let envp = c_array(
            std::env::vars_os()
                .filter(|(k, _)| k != RESTARTED)
                .map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes()].concat())
                .chain(std::iter::once(format!("{RESTARTED}=1").into_bytes())),
        );
        (argv, envp)
    });
    let terminal = terminal
        .then(|| {
            // SAFETY: tcgetattr fills the zeroed struct; on failure (not a terminal) it is unused.
            unsafe {
                let mut t: libc::termios = std::mem::zeroed();
                (libc::tcgetattr(0, &mut t) == 0).then_some(t)
            }
        })
        .flatten();
    let plan = Box::leak(Box::new(Plan {
        terminal,
        message: Vec::leak(line.into_bytes()),
        restart,
    }));
    PLAN.store(plan, Ordering::Release);
    // SAFETY: plain libc calls on zero-initialised, properly sized structs. SA_NODEFER keeps
    // SIGBUS unblocked inside the handler, so a restarted process does not inherit it blocked;
    // it is unblocked here too in case it was.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_NODEFER;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, ptr::null_mut());
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGBUS);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, ptr::null_mut());
    }
}
