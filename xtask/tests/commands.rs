//! The xtask binary as a user runs it: `run` booting and ending on Ctrl-C, SIGTERM and SIGHUP;
//! `image` keeping its set whole when interrupted, out of disk or raced; arguments refused
//! before anything starts. Tests that build images or start QEMU are listed as ignored by plain
//! `cargo test`; `cargo xtask test` runs them.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const XTASK: &str = env!("CARGO_BIN_EXE_xtask");
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// A directory for one test, removed when it ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let base = std::env::var_os("VM512_SCRATCH")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
        let path = base.join(format!("{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }

    fn images(&self) -> PathBuf {
        self.0.join("images")
    }

    /// The names in the scratch directory, hidden ones (staging) included.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The xtask with its artifacts in `scratch`, headless, no terminal.
fn xtask(scratch: &Scratch, args: &[&str]) -> Command {
    let mut command = Command::new(XTASK);
    command
        .args(args)
        .env("VM512_IMAGES_DIR", scratch.images())
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("CI")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs the xtask to the end (killing it after 2 minutes); returns its status, stdout and
/// stderr.
fn finish(mut command: Command) -> (ExitStatus, String, String) {
    let mut child = command.spawn().unwrap();
    let read = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            signal(child.id(), libc::SIGTERM);
            let _ = child.wait();
            panic!("the xtask was still running after {BOOT_TIMEOUT:?}: {:?}", stderr.join());
        }
        thread::sleep(Duration::from_millis(20));
    };
    (status, stdout.join().unwrap(), stderr.join().unwrap())
}

/// Every process below `pid`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        for task in fs::read_dir(format!("/proc/{parent}/task")).into_iter().flatten().flatten() {
            let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}

fn command_name(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string()
}

/// Whether `pid` is gone (or a zombie about to be reaped by init).
fn gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        }
    }
}

fn wait_gone(pids: &[u32], within: Duration) -> Vec<u32> {
    let deadline = Instant::now() + within;
    while pids.iter().any(|&p| !gone(p)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    pids.iter().copied().filter(|&p| !gone(p)).collect()
}

fn wait_status(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the xtask did not end within {within:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a child of this test.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
}

/// Reads the child's stdout on a thread; returns the lines as they come.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line that is `needle` (COM1's CR LF ends it); adds what it read to `seen`.
fn wait_line(rx: &mpsc::Receiver<String>, needle: &str, seen: &mut String) {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    while !seen.lines().any(|line| line.trim_end_matches('\r') == needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
            }
            Err(_) => panic!("no {needle:?} on the xtask's stdout; it printed:\n{seen}"),
        }
    }
}

/// `run` boots the image in this terminal; the signal is sent once the message is on COM1.
/// Returns the exit status, what it printed, and the QEMU processes it had.
fn run_then_signal(
    scratch: &Scratch,
    signal_number: i32,
    extra_env: &[(&str, &str)],
) -> (ExitStatus, String, Vec<u32>) {
    let mut command = xtask(scratch, &["run", "--format", "raw"]);
    command.env("VM512_ACCEL", "tcg");
    for (name, value) in extra_env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let rx = lines(&mut child);
    let mut seen = String::new();
    wait_line(&rx, "Hello World!", &mut seen);
    let qemus: Vec<u32> = descendants(child.id())
        .into_iter()
        .filter(|&p| command_name(p).starts_with("qemu-system"))
        .collect();
    assert_eq!(qemus.len(), 1, "one QEMU below the xtask: {:?}", descendants(child.id()));
    signal(child.id(), signal_number);
    let status = wait_status(&mut child, Duration::from_secs(15));
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
        seen.push_str(&line);
        seen.push('\n');
    }
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    seen.push_str(&stderr);
    (status, seen, qemus)
}

#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn ctrl_c_presses_the_power_button_and_sigterm_and_sighup_stop_qemu() {
    let cases = [(libc::SIGINT, "sigint"), (libc::SIGTERM, "sigterm"), (libc::SIGHUP, "sighup")];
    let results: Vec<_> = cases
        .iter()
        .map(|&(number, name)| {
            thread::spawn(move || {
                let scratch = Scratch::new(&format!("run-{name}"));
                let (status, printed, qemus) = run_then_signal(&scratch, number, &[]);
                let left = wait_gone(&qemus, Duration::from_secs(2));
                (name, status, printed, left, scratch.names())
            })
        })
        .collect();
    for handle in results {
        let (name, status, printed, left, names) = handle.join().unwrap();
        assert!(left.is_empty(), "{name}: QEMU {left:?} outlived the xtask:\n{printed}");
        assert_eq!(names, vec!["run".to_string()], "{name}: scratch files left behind");
        match name {
            // The power button: the VM powers itself off, and run succeeds.
            "sigint" => {
                assert!(status.success(), "{name}: {status}\n{printed}");
                assert!(printed.contains("power button pressed"), "{printed}");
                assert!(printed.contains("the VM powered itself off"), "{printed}");
            }
            "sigterm" => assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{printed}"),
            _ => assert_eq!(status.code(), Some(128 + libc::SIGHUP), "{printed}"),
        }
    }
}

/// `run` after `image --format all`: the set is still whole (`sha256sum -c`), since `run`
/// builds what it boots in a directory of its own; and nothing but the VM's own lines and
/// `run`'s reach the terminal, no QEMU warning among them, under every accelerator there is.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn run_leaves_the_image_set_alone_and_shows_no_qemu_warning() {
    let scratch = Scratch::new("run-set");
    let (status, _, stderr) = finish(xtask(&scratch, &["image", "--format", "all"]));
    assert!(status.success(), "{stderr}");
    let before = verified_set(&scratch.images());
    let kvm = fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
    for accel in ["tcg", "kvm"].into_iter().filter(|&a| a == "tcg" || kvm) {
        let (status, printed, _) =
            run_then_signal(&scratch, libc::SIGINT, &[("VM512_ACCEL", accel)]);
        assert!(status.success(), "{accel}: {status}\n{printed}");
        assert!(!printed.to_lowercase().contains("warning"), "{accel}: {printed}");
        assert_eq!(verified_set(&scratch.images()), before, "{accel}: run changed the set");
    }
}

/// A DISPLAY no X server answers on, and a TMPDIR with a comma: `run` boots in the terminal.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn run_falls_back_to_the_terminal_on_a_stale_display_and_takes_any_tmpdir() {
    let scratch = Scratch::new("run-display");
    let tmp = scratch.0.join("a,b");
    fs::create_dir_all(&tmp).unwrap();
    let tmp = tmp.to_string_lossy().into_owned();
    let (status, printed, qemus) =
        run_then_signal(&scratch, libc::SIGINT, &[("DISPLAY", ":987"), ("TMPDIR", &tmp)]);
    assert!(
        printed.contains("DISPLAY=:987 is set, but no display server answers there"),
        "{printed}"
    );
    assert!(printed.contains("\nHello World!"), "{printed}");
    assert!(status.success(), "{status}\n{printed}");
    assert!(wait_gone(&qemus, Duration::from_secs(2)).is_empty());
}

/// Refused before anything is built or started: no images directory appears.
#[test]
fn run_refuses_what_cannot_boot_before_starting_anything() {
    let scratch = Scratch::new("run-refused");
    for (args, env, expected) in [
        (&["run", "--format", "raw", "--bus", "ahci"][..], None, "use --format img"),
        (&["run", "--format", "raw", "--bus", "virtio-blk"][..], None, "use --format img"),
        (&["run", "--format", "iso", "--bus", "virtio-blk"][..], None, "CD drive"),
        (&["run", "--format", "rom", "--bus", "virtio-scsi"][..], None, "rom is firmware"),
        (&["run"][..], Some("bogus"), "VM512_ACCEL must be `kvm` or `tcg`, not `bogus`"),
        (&["image", "-m", "-f"][..], None, "--message needs a value"),
    ] {
        let mut command = xtask(&scratch, args);
        if let Some(accel) = env {
            command.env("VM512_ACCEL", accel);
        }
        let (status, _, stderr) = finish(command);
        assert!(!status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    assert!(scratch.names().is_empty(), "something was built: {:?}", scratch.names());
}

#[test]
fn help_names_every_format_and_each_command_has_its_own() {
    let scratch = Scratch::new("help");
    let (status, general, _) = finish(xtask(&scratch, &["help"]));
    assert!(status.success());
    assert!(general.contains("rom           64 KiB firmware"), "{general}");
    let (status, image, _) = finish(xtask(&scratch, &["help", "image"]));
    assert!(status.success());
    assert!(
        image.contains("cargo xtask image [OPTIONS]") && image.contains("--format LIST"),
        "{image}"
    );
    let (_, run, _) = finish(xtask(&scratch, &["run", "--help"]));
    assert!(run.contains("--bus BUS"), "{run}");
}

/// `sha256sum -c` in `dir`: every listed file verifies. Returns the listed names.
fn verified_set(dir: &Path) -> Vec<String> {
    let out =
        Command::new("sha256sum").args(["-c", "SHA256SUMS"]).current_dir(dir).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "sha256sum -c in {}: {text}", dir.display());
    let mut listed: Vec<String> =
        text.lines().filter_map(|l| l.strip_suffix(": OK")).map(str::to_string).collect();
    listed.sort();
    let mut present: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "SHA256SUMS")
        .collect();
    present.sort();
    assert_eq!(listed, present, "SHA256SUMS must list exactly the files beside it");
    listed
}

/// Whether the raw boot sector in `dir` carries `message` as its line (text, CR LF and the end
/// mark; zero bytes, which the code skips, left out).
fn has_message(dir: &Path, message: &str) -> bool {
    let raw = fs::read(dir.join("512-byte-vm.raw")).unwrap();
    let printed: Vec<u8> = raw.into_iter().filter(|&b| b != 0).collect();
    let line = [message.as_bytes(), b"\r\n\xFF"].concat();
    printed.windows(line.len()).any(|w| w == line)
}

/// `image -m Hi` after `image --format all` (22 files: both families) leaves one set: raw with "Hi" and
/// nothing else.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn each_image_build_replaces_the_whole_set() {
    let scratch = Scratch::new("image-set");
    let (status, _, stderr) = finish(xtask(&scratch, &["image", "--format", "all"]));
    assert!(status.success(), "{stderr}");
    assert_eq!(verified_set(&scratch.images()).len(), 22);
    let (status, stdout, stderr) = finish(xtask(&scratch, &["image", "-m", "Hi"]));
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("exactly these files"), "{stdout}");
    assert_eq!(verified_set(&scratch.images()), vec!["512-byte-vm.raw".to_string()]);
    assert!(has_message(&scratch.images(), "Hi"));
    assert_eq!(scratch.names(), vec!["images".to_string()]);
}

/// Interrupted halfway (SIGTERM, then SIGKILL), a build leaves the previous set whole; the next
/// build clears what the SIGKILL left.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn an_interrupted_build_leaves_the_previous_set_whole() {
    let scratch = Scratch::new("image-interrupted");
    let (status, _, stderr) =
        finish(xtask(&scratch, &["image", "--format", "raw,iso", "-m", "Old"]));
    assert!(status.success(), "{stderr}");
    for (number, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGKILL, "SIGKILL")] {
        let mut child =
            xtask(&scratch, &["image", "--format", "all", "-m", "New"]).spawn().unwrap();
        // Strike while the new set is being written.
        let deadline = Instant::now() + BOOT_TIMEOUT;
        while !scratch.names().iter().any(|n| n.contains(".staging-")) {
            assert!(Instant::now() < deadline, "no staging directory appeared");
            thread::sleep(Duration::from_millis(2));
        }
        signal(child.id(), number);
        let status = wait_status(&mut child, Duration::from_secs(15));
        assert!(!status.success(), "{name}: the build finished before the signal");
        assert_eq!(
            verified_set(&scratch.images()),
            vec!["512-byte-vm.iso", "512-byte-vm.raw"],
            "{name}"
        );
        assert!(has_message(&scratch.images(), "Old"), "{name}");
        if number == libc::SIGTERM {
            assert_eq!(scratch.names(), vec!["images".to_string()], "SIGTERM left files behind");
        }
    }
    let (status, _, stderr) = finish(xtask(&scratch, &["image", "-m", "Next"]));
    assert!(status.success(), "{stderr}");
    assert_eq!(scratch.names(), vec!["images".to_string()], "the killed build's staging stayed");
}

/// Two builds at once: one waits for the other, and the set is one of the two, whole.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn concurrent_builds_do_not_mix_their_files() {
    let scratch = Scratch::new("image-concurrent");
    let first = xtask(&scratch, &["image", "--format", "all", "-m", "First"]).spawn().unwrap();
    let second =
        xtask(&scratch, &["image", "--format", "raw,iso,qcow2", "-m", "Second"]).spawn().unwrap();
    for child in [first, second] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let set = verified_set(&scratch.images());
    match set.len() {
        22 => assert!(has_message(&scratch.images(), "First")),
        3 => assert!(has_message(&scratch.images(), "Second")),
        _ => panic!("a mixed set: {set:?}"),
    }
}

/// A full disk: the error says so in plain words, and the previous set stays. Needs root, to
/// mount a small tmpfs.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn a_full_disk_is_named_and_the_previous_set_stays() {
    // SAFETY: geteuid(2) is always safe.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot mount a small tmpfs to fill; skipped");
        return;
    }
    let scratch = Scratch::new("image-full");
    let mount = |size: &str| {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&scratch.0)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs");
    };
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    mount("1040k");
    let _unmount = Unmount(&scratch.0);
    let (status, _, stderr) = finish(xtask(&scratch, &["image", "-m", "Old"]));
    assert!(status.success(), "{stderr}");
    // 1040 KiB: the old set and one 1 MiB file fit, no more. img,qcow2 fails writing the raw disk
    // qemu-img reads; qcow2 alone fails inside qemu-img.
    for formats in ["img,qcow2", "qcow2"] {
        let (status, _, stderr) =
            finish(xtask(&scratch, &["image", "--format", formats, "-m", "New"]));
        assert!(!status.success(), "{formats}: the build fit");
        assert!(stderr.contains("is full"), "{formats}: {stderr}");
        assert_eq!(verified_set(&scratch.images()), vec!["512-byte-vm.raw".to_string()]);
        assert!(has_message(&scratch.images(), "Old"));
        assert_eq!(scratch.names(), vec!["images".to_string()], "{formats}: staging left");
    }
}

/// `bench` dies with every QEMU it started (it used to leave them running under init).
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn sigterm_to_bench_stops_every_qemu() {
    let scratch = Scratch::new("bench-sigterm");
    let mut child =
        xtask(&scratch, &["bench", "--quick"]).env("VM512_ACCEL", "tcg").spawn().unwrap();
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let qemus = loop {
        let qemus: Vec<u32> = descendants(child.id())
            .into_iter()
            .filter(|&p| command_name(p).starts_with("qemu-system"))
            .collect();
        if !qemus.is_empty() {
            break qemus;
        }
        assert!(Instant::now() < deadline, "bench started no QEMU");
        assert!(child.try_wait().unwrap().is_none(), "bench ended before starting a QEMU");
        thread::sleep(Duration::from_millis(5));
    };
    signal(child.id(), libc::SIGTERM);
    let status = wait_status(&mut child, Duration::from_secs(15));
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    assert_eq!(wait_gone(&qemus, Duration::from_secs(2)), Vec::<u32>::new(), "QEMU outlived bench");
}
