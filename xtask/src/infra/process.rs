//! Child processes that cannot outlive the xtask, the signals that end it, and what `/proc` says
//! about a process.
//!
//! Every child (cargo, qemu-img, QEMU, llvm-objdump) starts through [`spawn`]: in a process group
//! of its own, with `PR_SET_PDEATHSIG` so that the kernel kills it if the thread that started it
//! dies, even by SIGKILL. [`handle_signals`] turns SIGINT, SIGTERM and SIGHUP into an orderly end:
//! a thread kills every registered process group and removes every registered scratch path, then
//! exits with 128 + the signal's number. What is registered is unregistered when it ends normally.

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};

/// What a signal must not leave behind: process groups to kill, paths to remove.
struct Leftovers {
    groups: Vec<u32>,
    paths: Vec<PathBuf>,
}

static LEFTOVERS: Mutex<Leftovers> =
    Mutex::new(Leftovers { groups: Vec::new(), paths: Vec::new() });

/// Ctrl-C presses, counted instead of ending the xtask while [`count_interrupts`] is on.
static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);
static COUNTING_INTERRUPTS: AtomicBool = AtomicBool::new(false);
/// The write end of the pipe the signal handler wakes the cleanup thread through.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

/// Installs handlers for SIGINT, SIGTERM and SIGHUP (a closed terminal): each kills every child
/// process group and removes every scratch path registered here, then exits 128 + signal.
pub fn handle_signals() -> Result<()> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error()).context("creating the signal pipe");
    }
    SIGNAL_PIPE.store(fds[1], Ordering::SeqCst);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            // SAFETY: the read end belongs to this thread alone from here on.
            let mut pipe =
                unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) };
            let mut signal = [0u8; 1];
            while pipe.read_exact(&mut signal).is_ok() {
                let signal = i32::from(signal[0]);
                if signal == libc::SIGINT && COUNTING_INTERRUPTS.load(Ordering::SeqCst) {
                    INTERRUPTS.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                let (groups, paths) = clean_up();
                eprintln!(
                    "\nxtask: stopped by {}: killed {groups} child process group(s), removed \
                     {paths} scratch path(s)",
                    signal_name(signal)
                );
                // SAFETY: ends the process at once; no destructor of another thread must run.
                unsafe { libc::_exit(128 + signal) };
            }
        })
        .context("starting the signal thread")?;
    extern "C" fn on_signal(signal: libc::c_int) {
        let byte = signal as u8;
        // SAFETY: write(2) is async-signal-safe; a full pipe only loses a repeated signal.
        unsafe { libc::write(SIGNAL_PIPE.load(Ordering::Relaxed), (&raw const byte).cast(), 1) };
    }
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installs a handler that only calls write(2).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error()).context("installing a signal handler");
            }
        }
    }
    Ok(())
}

/// From now on Ctrl-C (SIGINT) is counted ([`interrupts`]) instead of ending the xtask; SIGTERM
/// and SIGHUP still end it.
pub fn count_interrupts() {
    COUNTING_INTERRUPTS.store(true, Ordering::SeqCst);
}

/// Ctrl-C presses counted so far.
pub fn interrupts() -> usize {
    INTERRUPTS.load(Ordering::SeqCst)
}

/// Kills every registered process group and removes every registered path; returns how many of
/// each.
fn clean_up() -> (usize, usize) {
    let leftovers = LEFTOVERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for &group in &leftovers.groups {
        // SAFETY: kill(2) on a process group this process started.
        unsafe { libc::kill(-(group as libc::pid_t), libc::SIGKILL) };
    }
    for path in &leftovers.paths {
        let _ = std::fs::remove_dir_all(path).or_else(|_| std::fs::remove_file(path));
        // A shared parent (target/tmp) goes too once it is empty.
        if let Some(parent) = path.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
    (leftovers.groups.len(), leftovers.paths.len())
}

/// Removes `path` if a signal ends the xtask before [`forget_path`].
pub fn remove_on_signal(path: &Path) {
    LEFTOVERS.lock().unwrap().paths.push(path.to_path_buf());
}

pub fn forget_path(path: &Path) {
    LEFTOVERS.lock().unwrap().paths.retain(|p| p != path);
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT (Ctrl-C)",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP (the terminal closed)",
        _ => "a signal",
    }
}

/// A child process in its own process group, killed with its whole group when dropped (or when
/// a signal ends the xtask), and by the kernel if the thread that started it dies.
pub struct Guarded {
    child: Child,
    reaped: bool,
}

/// Starts `command` as a [`Guarded`] child.
pub fn spawn(command: &mut Command) -> io::Result<Guarded> {
    // SAFETY: getpid(2) is always safe.
    let parent = unsafe { libc::getpid() };
    command.process_group(0);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent died before prctl took effect: nobody would kill this child.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        })
    };
    let child = command.spawn()?;
    LEFTOVERS.lock().unwrap().groups.push(child.id());
    Ok(Guarded { child, reaped: false })
}

/// Runs `command` to the end as a [`Guarded`] child; its output goes where the command says.
pub fn status(command: &mut Command) -> io::Result<ExitStatus> {
    spawn(command)?.wait()
}

/// Runs `command` to the end as a [`Guarded`] child and collects stdout and stderr.
pub fn output(command: &mut Command) -> io::Result<Output> {
    use std::process::Stdio;
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut guarded = spawn(command)?;
    let mut stdout = guarded.child.stdout.take().expect("piped");
    let mut stderr = guarded.child.stderr.take().expect("piped");
    // Read stderr on a thread: a child that fills one pipe while we wait on the other would hang.
    let err = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        bytes
    });
    let mut out = Vec::new();
    stdout.read_to_end(&mut out)?;
    let status = guarded.wait()?;
    Ok(Output { status, stdout: out, stderr: err.join().unwrap_or_default() })
}

/// As [`output`], bounded: a child still running after `timeout` is killed with its whole group,
/// and the error carries what it had printed.
#[cfg_attr(not(test), allow(dead_code))]
pub fn output_within(command: &mut Command, timeout: Duration) -> Result<Output> {
    use std::process::Stdio;
    use std::sync::mpsc;
    let shown = format!("{command:?}");
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut guarded = spawn(command).with_context(|| format!("starting {shown}"))?;
    // Each pipe is read to its end on a thread of its own, so that neither can fill up.
    let read = |mut pipe: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            let _ = tx.send(bytes);
        });
        rx
    };
    let stdout = read(Box::new(guarded.child.stdout.take().expect("piped")));
    let stderr = read(Box::new(guarded.child.stderr.take().expect("piped")));
    // The pipes close when the group is gone; a grandchild outside it that kept them open must
    // not hang the caller.
    let collect =
        |rx: &mpsc::Receiver<Vec<u8>>| rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        if let Some(status) = guarded.try_wait()? {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            guarded.kill();
            let printed = [collect(&stdout), collect(&stderr)].concat();
            anyhow::bail!(
                "{shown} was still running after {timeout:?} and was killed; it printed: {}",
                String::from_utf8_lossy(&printed).trim()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output { status, stdout: collect(&stdout), stderr: collect(&stderr) })
}

impl Guarded {
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Waits for the child to exit.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait()?;
        self.reaped();
        Ok(status)
    }

    /// The child's status if it has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        let status = self.child.try_wait()?;
        if status.is_some() {
            self.reaped();
        }
        Ok(status)
    }

    fn reaped(&mut self) {
        if !self.reaped {
            self.reaped = true;
            let id = self.child.id();
            LEFTOVERS.lock().unwrap().groups.retain(|&group| group != id);
        }
    }

    /// Kills the child's whole process group and reaps the child.
    pub fn kill(&mut self) {
        if !self.reaped {
            // SAFETY: the group of a child not yet reaped: its id cannot have been reused.
            unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = self.wait();
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.kill();
    }
}

/// User + system CPU time of process `pid` and all its threads, from `/proc/PID/stat` (fields
/// 14 and 15, in clock ticks of 1/100 s: USER_HZ is 100 on x86 Linux).
pub fn cpu_time(pid: u32) -> Result<Duration> {
    const USER_HZ: u64 = 100;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (is this Linux?)"))?;
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).context("odd /proc stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state): utime is field 14, stime field 15.
    let ticks: u64 = fields
        .get(11..13)
        .context("short /proc stat")?
        .iter()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    Ok(Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// Context switches of process `pid`, all its threads, voluntary and not: each is a wake-up of
/// one of its threads (from `/proc/PID/task/*/status`).
pub fn context_switches(pid: u32) -> Result<u64> {
    let mut total = 0;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("reading /proc/{pid}/task (is this Linux?)"))?;
    for task in tasks.flatten() {
        // A thread may end between the listing and the read: it no longer counts.
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else { continue };
        total += status
            .lines()
            .filter(|line| {
                line.starts_with("voluntary_ctxt_switches:")
                    || line.starts_with("nonvoluntary_ctxt_switches:")
            })
            .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Ok(total)
}

/// Resident memory of a process, from `/proc/PID/status` (VmRSS, in KiB).
pub fn resident_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc status")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Whether a process with this id exists (it may be a zombie).
    fn alive(pid: u32) -> bool {
        // SAFETY: signal 0 only checks.
        unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
    }

    #[test]
    fn cpu_time_of_this_process_grows_when_it_works() {
        // Other tests share the cores: spin until the clock moves, giving up after 20 s.
        let before = cpu_time(std::process::id()).unwrap();
        let start = Instant::now();
        let mut x = 0u64;
        let mut after = before;
        while after - before < Duration::from_millis(100) && start.elapsed().as_secs() < 20 {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            after = cpu_time(std::process::id()).unwrap();
        }
        assert!(after - before >= Duration::from_millis(100), "{before:?} -> {after:?}");
    }

    #[test]
    fn context_switches_count_a_sleeping_child_s_wakeups() {
        let guarded = spawn(
            Command::new("sh")
                .args(["-c", "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 0.01; done; sleep 60"]),
        )
        .unwrap();
        let first = context_switches(guarded.id()).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let later = context_switches(guarded.id()).unwrap();
        assert!(later >= first + 10, "{first} -> {later}: each sleep is a wake-up");
    }

    #[test]
    fn a_bounded_run_collects_the_output_or_kills_the_child_in_time() {
        let out = output_within(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(
            (out.status.code(), &out.stdout[..], &out.stderr[..]),
            (Some(3), &b"out\n"[..], &b"err\n"[..])
        );

        let start = Instant::now();
        let error = output_within(
            Command::new("sh").args(["-c", "echo started; sleep 60"]),
            Duration::from_millis(300),
        )
        .unwrap_err()
        .to_string();
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
        assert!(
            error.contains("still running after 300ms") && error.contains("started"),
            "{error}"
        );
    }

    #[test]
    fn a_guarded_child_dies_with_its_whole_group_when_dropped() {
        // A shell that starts a grandchild in the same group, then waits.
        let mut command = Command::new("sh");
        command.args(["-c", "sleep 60 & echo $!; wait"]).stdout(std::process::Stdio::piped());
        let mut guarded = spawn(&mut command).unwrap();
        let mut line = String::new();
        let mut stdout = guarded.child().stdout.take().unwrap();
        let mut byte = [0u8; 1];
        while stdout.read_exact(&mut byte).is_ok() && byte[0] != b'\n' {
            line.push(byte[0] as char);
        }
        let grandchild: u32 = line.trim().parse().unwrap();
        let shell = guarded.id();
        assert!(alive(grandchild) && alive(shell));
        drop(guarded);
        let deadline = Instant::now() + Duration::from_secs(5);
        // The grandchild is reparented and reaped by init once killed.
        while alive(grandchild) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!alive(grandchild), "the grandchild {grandchild} outlived its group");
        assert!(!LEFTOVERS.lock().unwrap().groups.contains(&shell));
    }

    #[test]
    fn a_guarded_child_dies_when_the_thread_that_started_it_ends() {
        // PR_SET_PDEATHSIG: the kernel kills it even though nothing drops the guard.
        let pid = std::thread::spawn(|| {
            let guarded = spawn(Command::new("sleep").arg("60")).unwrap();
            let pid = guarded.id();
            std::mem::forget(guarded);
            pid
        })
        .join()
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        // Killed, it stays a zombie of this process until reaped: look at its state.
        let dead = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
                stat.rsplit_once(')').is_some_and(|(_, s)| s.trim_start().starts_with('Z'))
            })
        };
        while !dead() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(dead(), "sleep {pid} outlived the thread that started it");
        // SAFETY: reap the zombie this test made.
        unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0) };
        LEFTOVERS.lock().unwrap().groups.retain(|&g| g != pid);
    }
}
