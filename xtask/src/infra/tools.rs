//! The external programs the xtask runs, where to find them, and how to install the missing ones.
//!
//! When a tool is missing, the xtask names the package. Where it can install it (as root or with
//! a password-less `sudo`, through apt-get or dnf) it asks on a terminal, installs without asking
//! when `CI` is set, and never installs silently otherwise; `--no-install` (or
//! `VM512_NO_INSTALL=1`) only names the command.
//!
//! Debian and Ubuntu: `qemu-system-x86` and `qemu-utils` come from one source package and must
//! have one version (`qemu-utils` 8.0 and later declare `Breaks: qemu-system-common (<< 8.0)`).
//! A machine with a newer `qemu-utils` from backports than the release's `qemu-system-x86` makes
//! a plain `apt-get install qemu-system-x86 qemu-utils` fail with "held broken packages". So both
//! are installed together, `qemu-utils` pinned to the candidate version of `qemu-system-x86`
//! (`--allow-downgrades`), with `--no-install-recommends` (no GUI stack).

use std::fs;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};

/// A program the xtask runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `qemu-system-x86_64`: boots the VM.
    Qemu,
    /// `qemu-img`: converts the disk formats.
    QemuImg,
    /// 7-Zip: an independent reader of VHD, VMDK, VDI and qcow2 (the tests).
    SevenZip,
    /// libyal's readers of VHD, VMDK and qcow2 (the tests).
    Vhdiinfo,
    Vmdkinfo,
    Qcowinfo,
    /// skopeo: reads the containerDisk as a registry client would (the tests).
    Skopeo,
    /// OVMF, EDK2's UEFI firmware for QEMU (a file, not a program): boots the images under
    /// UEFI (the tests, `run --uefi`).
    Ovmf,
    /// The partition tools that read the disks' GPT (the tests): parted, util-linux's
    /// sfdisk/fdisk, and libblkid's blkid.
    Parted,
    Sfdisk,
    Blkid,
    /// The net family's private test networks: dnsmasq (the DHCP server and router
    /// advertisements libvirt and OpenStack use), iproute2's `ip` (namespaces, bridges, taps),
    /// ping, and Python's raw sockets for the bad-input frames.
    Dnsmasq,
    Ip,
    Ping,
    Python,
    /// libvirt, as its users boot a VM: `virt-install` defines and starts it, `virsh` asks it to
    /// shut down and reads its state (the tests).
    VirtInstall,
    Virsh,
    /// libvirt's daemons, which the tests start where they are not running: `libvirtd`, and
    /// `virtlogd`, through which it logs each VM.
    Libvirtd,
    Virtlogd,
}

/// What `cargo xtask test` needs besides the toolchain.
pub const FOR_TESTS: [Tool; 19] = [
    Tool::Qemu,
    Tool::QemuImg,
    Tool::SevenZip,
    Tool::Vhdiinfo,
    Tool::Vmdkinfo,
    Tool::Qcowinfo,
    Tool::Skopeo,
    Tool::Ovmf,
    Tool::Parted,
    Tool::Sfdisk,
    Tool::Blkid,
    Tool::Dnsmasq,
    Tool::Ip,
    Tool::Ping,
    Tool::Python,
    Tool::VirtInstall,
    Tool::Virsh,
    Tool::Libvirtd,
    Tool::Virtlogd,
];

/// Where Debian and Fedora put OVMF's single-file image (for `-bios`), its code and its
/// variable store (for the two pflash drives), in that order.
const OVMF_FILES: [[&str; 3]; 2] = [
    ["/usr/share/ovmf/OVMF.fd", "/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"],
    [
        "/usr/share/edk2/ovmf/OVMF.fd",
        "/usr/share/edk2/ovmf/OVMF_CODE.fd",
        "/usr/share/edk2/ovmf/OVMF_VARS.fd",
    ],
];

/// OVMF's files on this machine: the single image, the code and the variable store.
pub fn ovmf_files() -> Result<[PathBuf; 3]> {
    locate_ovmf().with_context(|| {
        format!("OVMF was not found; {}. {}", Tool::Ovmf.purpose(), how_to_install(&[Tool::Ovmf]))
    })
}

fn locate_ovmf() -> Option<[PathBuf; 3]> {
    OVMF_FILES
        .iter()
        .find(|files| files.iter().all(|file| fs::metadata(file).is_ok_and(|m| m.is_file())))
        .map(|files| files.map(PathBuf::from))
}

impl Tool {
    pub fn binary(self) -> &'static str {
        match self {
            Tool::Qemu => "qemu-system-x86_64",
            Tool::QemuImg => "qemu-img",
            Tool::SevenZip => "7z",
            Tool::Vhdiinfo => "vhdiinfo",
            Tool::Vmdkinfo => "vmdkinfo",
            Tool::Qcowinfo => "qcowinfo",
            Tool::Skopeo => "skopeo",
            Tool::Ovmf => "OVMF.fd",
            Tool::Parted => "parted",
            Tool::Sfdisk => "sfdisk",
            Tool::Blkid => "blkid",
            Tool::Dnsmasq => "dnsmasq",
            Tool::Ip => "ip",
            Tool::Ping => "ping",
            Tool::Python => "python3",
            Tool::VirtInstall => "virt-install",
            Tool::Virsh => "virsh",
            Tool::Libvirtd => "libvirtd",
            Tool::Virtlogd => "virtlogd",
        }
    }

    /// Where the tool is: a program in PATH (or in /usr/sbin and /sbin, which are not in every
    /// user's PATH), or OVMF's files.
    fn locate(self) -> Option<PathBuf> {
        if self == Tool::Ovmf {
            return locate_ovmf().map(|[single, ..]| single);
        }
        find_in_path(self.binary()).or_else(|| {
            ["/usr/sbin", "/sbin"]
                .iter()
                .map(|dir| Path::new(dir).join(self.binary()))
                .find(|candidate| candidate.is_file())
        })
    }

    fn purpose(self) -> &'static str {
        match self {
            Tool::Qemu => "it boots the VM",
            Tool::QemuImg => "it converts the disk formats (qcow2, vmdk, vdi, vhd)",
            Tool::SevenZip => "the tests read every disk format with it",
            Tool::Vhdiinfo | Tool::Vmdkinfo | Tool::Qcowinfo => {
                "the tests read the disk formats with libyal's tools"
            }
            Tool::Skopeo => "the tests read the containerDisk with it",
            Tool::Ovmf => "it boots the images under UEFI",
            Tool::Parted | Tool::Sfdisk | Tool::Blkid => {
                "the tests read the disks' partition table with it"
            }
            Tool::Dnsmasq | Tool::Ip | Tool::Ping | Tool::Python => {
                "the net family's tests build a private network with it"
            }
            Tool::VirtInstall | Tool::Virsh => "the tests boot the images as libvirt's users do",
            Tool::Libvirtd | Tool::Virtlogd => "the tests run libvirt's VMs through it",
        }
    }

    fn debian_package(self) -> &'static str {
        match self {
            Tool::Qemu => "qemu-system-x86",
            Tool::QemuImg => "qemu-utils",
            Tool::SevenZip => "p7zip-full",
            Tool::Vhdiinfo => "libvhdi-utils",
            Tool::Vmdkinfo => "libvmdk-utils",
            Tool::Qcowinfo => "libqcow-utils",
            Tool::Skopeo => "skopeo",
            Tool::Ovmf => "ovmf",
            Tool::Parted => "parted",
            Tool::Sfdisk => "fdisk",
            Tool::Blkid => "util-linux",
            Tool::Dnsmasq => "dnsmasq-base",
            Tool::Ip => "iproute2",
            Tool::Ping => "iputils-ping",
            Tool::Python => "python3",
            Tool::VirtInstall => "virtinst",
            Tool::Virsh => "libvirt-clients",
            Tool::Libvirtd | Tool::Virtlogd => "libvirt-daemon-system",
        }
    }

    fn fedora_package(self) -> &'static str {
        match self {
            Tool::Qemu => "qemu-system-x86",
            Tool::QemuImg => "qemu-img",
            Tool::SevenZip => "p7zip-plugins",
            Tool::Vhdiinfo => "libvhdi-tools",
            Tool::Vmdkinfo => "libvmdk-tools",
            Tool::Qcowinfo => "libqcow-tools",
            Tool::Skopeo => "skopeo",
            Tool::Ovmf => "edk2-ovmf",
            Tool::Parted => "parted",
            Tool::Sfdisk | Tool::Blkid => "util-linux",
            Tool::Dnsmasq => "dnsmasq",
            Tool::Ip => "iproute",
            Tool::Ping => "iputils",
            Tool::Python => "python3",
            Tool::VirtInstall => "virt-install",
            Tool::Virsh => "libvirt-client",
            // The daemon with its QEMU driver (libvirt-daemon alone has no driver).
            Tool::Libvirtd => "libvirt-daemon-kvm",
            Tool::Virtlogd => "libvirt-daemon-log",
        }
    }
}

/// Environment variable that forbids installing: the xtask only says what to install.
pub const NO_INSTALL_ENV: &str = "VM512_NO_INSTALL";
static NO_INSTALL: AtomicBool = AtomicBool::new(false);

/// `--no-install`: never offer to install a missing tool.
pub fn forbid_installing() {
    NO_INSTALL.store(true, Ordering::SeqCst);
}

/// The first executable called `name` in `$PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| {
        fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The path of `tool`, or an error that says how to install it.
pub fn path(tool: Tool) -> Result<PathBuf> {
    tool.locate().with_context(|| {
        format!(
            "{} was not found in PATH; {}. {}",
            tool.binary(),
            tool.purpose(),
            how_to_install(&[tool])
        )
    })
}

/// Makes sure every tool in `tools` is installed, installing the missing ones (see the module
/// documentation for when it asks).
pub fn require(tools: &[Tool]) -> Result<()> {
    let missing: Vec<Tool> = tools.iter().copied().filter(|t| t.locate().is_none()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<_> =
        missing.iter().map(|t| format!("{} ({})", t.binary(), t.purpose())).collect();
    let what = format!("missing: {}", names.join("; "));
    let Some(plan) = InstallPlan::for_this_machine(&missing) else {
        bail!("{what}. {}", how_to_install(&missing));
    };
    let no_install = NO_INSTALL.load(Ordering::SeqCst)
        || std::env::var_os(NO_INSTALL_ENV).is_some_and(|v| !v.is_empty() && v != "0");
    if no_install {
        bail!("{what}. Install with: {}", plan.shown());
    }
    let Some(prefix) = privilege() else {
        bail!("{what}. Install as root: {}", plan.shown());
    };
    let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
    if in_ci {
        eprintln!("{what}\nCI is set: installing with: {}", plan.shown());
    } else if std::io::stdin().is_terminal() {
        eprint!("{what}\nInstall now with `{}`? [y/N] ", plan.shown());
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("not installed; install with: {}", plan.shown());
        }
    } else {
        bail!(
            "{what}. Install with: {} (run this on a terminal to be asked, or set CI=1 to \
             install without asking)",
            plan.shown()
        );
    }
    plan.run(prefix)?;
    if let Some(still) = missing.iter().find(|t| t.locate().is_none()) {
        bail!("{} is still missing after the install: {}", still.binary(), plan.shown());
    }
    Ok(())
}

/// How to install some tools with the machine's package manager.
enum InstallPlan {
    /// Debian/Ubuntu: refresh the package lists, then install, both QEMU packages pinned to
    /// `qemu-system-x86`'s candidate version as the refreshed lists give it (see the module
    /// documentation). The version is read only after the update: a machine's lists may be older
    /// than its mirror, whose pool then no longer has the version they name.
    Apt(Vec<Tool>),
    /// Fedora.
    Dnf(Vec<Tool>),
}

impl InstallPlan {
    fn for_this_machine(tools: &[Tool]) -> Option<InstallPlan> {
        if find_in_path("apt-get").is_some() {
            Some(InstallPlan::Apt(tools.to_vec()))
        } else if find_in_path("dnf").is_some() {
            Some(InstallPlan::Dnf(tools.to_vec()))
        } else {
            None
        }
    }

    /// `apt-get update`, the first of the apt plan's two commands.
    fn apt_update() -> Vec<String> {
        ["apt-get", "update", "-qq"].map(String::from).to_vec()
    }

    /// The apt plan's install command, with `qemu_version` (the candidate after the update) as
    /// the pin of both QEMU packages.
    fn apt_install(tools: &[Tool], qemu_version: &Option<String>) -> Vec<String> {
        let mut install: Vec<String> =
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "--allow-downgrades"]
                .map(String::from)
                .to_vec();
        let qemu = [Tool::Qemu, Tool::QemuImg];
        let mut packages: Vec<Tool> = tools.to_vec();
        if tools.iter().any(|t| qemu.contains(t)) {
            packages.retain(|t| !qemu.contains(t));
            packages.extend(qemu);
        }
        for tool in packages {
            let package = tool.debian_package();
            let word = match (qemu.contains(&tool), qemu_version) {
                (true, Some(version)) => format!("{package}={version}"),
                _ => package.to_string(),
            };
            // Tools of one package name it once.
            if !install.contains(&word) {
                install.push(word);
            }
        }
        install
    }

    fn dnf_install(tools: &[Tool]) -> Vec<String> {
        let mut install: Vec<String> = ["dnf", "install", "-y"].map(String::from).to_vec();
        install.extend(once_each(tools.iter().map(|t| t.fedora_package())).map(String::from));
        install
    }

    /// The commands as a person would type them. The apt pin is shown as the shell expression
    /// that reads the candidate after the update, since that is the version `run` installs.
    fn shown(&self) -> String {
        let sudo = if is_root() { "" } else { "sudo " };
        let commands = match self {
            InstallPlan::Apt(tools) => {
                let pin = "$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')";
                let install = InstallPlan::apt_install(tools, &Some(pin.into()))
                    .into_iter()
                    .map(|word| if word.contains('$') { format!("\"{word}\"") } else { word })
                    .collect();
                vec![InstallPlan::apt_update(), install]
            }
            InstallPlan::Dnf(tools) => vec![InstallPlan::dnf_install(tools)],
        };
        let lines: Vec<String> =
            commands.iter().map(|c| format!("{sudo}{}", c.join(" "))).collect();
        lines.join(" && ")
    }

    fn run(&self, prefix: Option<&str>) -> Result<()> {
        self.run_with(
            |words| run_install_command(words, prefix),
            || candidate_version("qemu-system-x86"),
        )
    }

    /// Runs the plan's commands through `run`, asking `qemu_candidate` for the pin only once the
    /// package lists are refreshed.
    fn run_with(
        &self,
        mut run: impl FnMut(&[String]) -> Result<()>,
        qemu_candidate: impl FnOnce() -> Option<String>,
    ) -> Result<()> {
        match self {
            InstallPlan::Apt(tools) => {
                run(&InstallPlan::apt_update())?;
                run(&InstallPlan::apt_install(tools, &qemu_candidate()))
            }
            InstallPlan::Dnf(tools) => run(&InstallPlan::dnf_install(tools)),
        }
    }
}

/// Runs one package-manager command, through `prefix` (sudo) where given.
fn run_install_command(words: &[String], prefix: Option<&str>) -> Result<()> {
    let mut command = match prefix {
        Some(sudo) => {
            let mut command = Command::new(sudo);
            command.arg("-n").args(words);
            command
        }
        None => {
            let mut command = Command::new(&words[0]);
            command.args(&words[1..]);
            command
        }
    };
    eprintln!("running: {}", words.join(" "));
    // Not a guarded child: an install killed halfway would leave dpkg half-configured.
    let status = command
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .with_context(|| format!("running {}", words.join(" ")))?;
    if !status.success() {
        bail!("`{}` failed ({status}); see its messages above", words.join(" "));
    }
    Ok(())
}

/// `apt-cache policy`'s candidate version of `package`, if apt knows it.
fn candidate_version(package: &str) -> Option<String> {
    let out = Command::new("apt-cache").args(["policy", package]).output().ok()?;
    parse_candidate(&String::from_utf8_lossy(&out.stdout))
}

fn parse_candidate(policy: &str) -> Option<String> {
    policy
        .lines()
        .find_map(|line| line.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "(none)")
        .map(str::to_string)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid(2) is always safe.
    unsafe { libc::geteuid() == 0 }
}

/// How this user can install: `Some(None)` as root, `Some(Some("sudo"))` where password-less
/// sudo works, `None` otherwise.
fn privilege() -> Option<Option<&'static str>> {
    if is_root() {
        return Some(None);
    }
    let sudo_works = find_in_path("sudo").is_some()
        && Command::new("sudo").args(["-n", "true"]).output().is_ok_and(|o| o.status.success());
    sudo_works.then_some(Some("sudo"))
}

/// `names` in their order, each only the first time it comes (several tools share a package).
fn once_each(names: impl Iterator<Item = &'static str>) -> impl Iterator<Item = &'static str> {
    let mut seen = Vec::new();
    names.filter(move |name| {
        let first = !seen.contains(name);
        seen.push(*name);
        first
    })
}

/// Install commands for every common system, for an error message.
fn how_to_install(tools: &[Tool]) -> String {
    let debian: Vec<_> = once_each(tools.iter().map(|t| t.debian_package())).collect();
    let fedora: Vec<_> = once_each(tools.iter().map(|t| t.fedora_package())).collect();
    format!(
        "Install it: `sudo apt-get install --no-install-recommends {}` (Debian/Ubuntu; see \
         docs/tools.md if apt reports held broken packages), `sudo dnf install {}` (Fedora)",
        debian.join(" "),
        fedora.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tools_are_not_found() {
        assert!(find_in_path("no-such-tool-vm512").is_none());
        assert!(find_in_path("sh").is_some());
    }

    #[test]
    fn apt_installs_both_qemu_packages_at_the_system_emulators_version() {
        let policy =
            "qemu-system-x86:\n  Installed: (none)\n  Candidate: 1:7.2+dfsg-7+deb12u18+b3\n";
        let version = parse_candidate(policy);
        assert_eq!(version.as_deref(), Some("1:7.2+dfsg-7+deb12u18+b3"));
        assert_eq!(parse_candidate("x:\n  Candidate: (none)\n"), None);
        let install = InstallPlan::apt_install(&[Tool::Qemu], &version).join(" ");
        assert!(install.contains("--no-install-recommends --allow-downgrades"), "{install}");
        assert!(
            install.ends_with(
                "qemu-system-x86=1:7.2+dfsg-7+deb12u18+b3 qemu-utils=1:7.2+dfsg-7+deb12u18+b3"
            ),
            "{install}"
        );
        assert_eq!(InstallPlan::apt_update().join(" "), "apt-get update -qq");
    }

    /// The pin is read after `apt-get update`, never from the lists the machine came with: a
    /// fresh machine's lists named a version its mirror no longer had ("Version ... was not
    /// found"). What a person is shown reads it at the same moment.
    #[test]
    fn the_apt_pin_is_read_after_the_update() {
        let plan = InstallPlan::Apt(vec![Tool::Qemu, Tool::SevenZip]);
        let ran = std::cell::RefCell::new(Vec::new());
        plan.run_with(
            |words| {
                ran.borrow_mut().push(words.join(" "));
                Ok(())
            },
            || {
                let updated = ran.borrow().iter().any(|c| c == "apt-get update -qq");
                Some(if updated { "new" } else { "stale" }.to_string())
            },
        )
        .unwrap();
        let ran = ran.into_inner();
        assert_eq!(ran.len(), 2, "{ran:?}");
        assert!(ran[1].ends_with("p7zip-full qemu-system-x86=new qemu-utils=new"), "{ran:?}");

        let shown = plan.shown();
        let (update, install) = shown.split_once(" && ").unwrap();
        assert!(update.ends_with("apt-get update -qq"), "{shown}");
        assert!(
            install.ends_with(
                "p7zip-full \"qemu-system-x86=$(apt-cache policy qemu-system-x86 | awk \
                 '/Candidate:/ {print $2}')\" \"qemu-utils=$(apt-cache policy qemu-system-x86 \
                 | awk '/Candidate:/ {print $2}')\""
            ),
            "{shown}"
        );
    }

    /// libvirt comes as QEMU does: on a fresh machine `cargo xtask test` installs its tools and
    /// daemons from their packages with the rest, each package named once, QEMU's pin kept.
    #[test]
    fn the_libvirt_tools_are_installed_with_the_others() {
        let libvirt = [Tool::VirtInstall, Tool::Virsh, Tool::Libvirtd, Tool::Virtlogd];
        assert!(libvirt.iter().all(|tool| FOR_TESTS.contains(tool)));
        let install = InstallPlan::apt_install(&FOR_TESTS, &Some("1:7.2".into()));
        for package in ["virtinst", "libvirt-clients", "libvirt-daemon-system"] {
            assert_eq!(install.iter().filter(|w| *w == package).count(), 1, "{install:?}");
        }
        assert!(install.iter().any(|w| w == "--no-install-recommends"), "{install:?}");
        assert!(
            install.ends_with(&["qemu-system-x86=1:7.2".into(), "qemu-utils=1:7.2".into()]),
            "{install:?}"
        );
        assert_eq!(
            InstallPlan::dnf_install(&libvirt).join(" "),
            "dnf install -y virt-install libvirt-client libvirt-daemon-kvm libvirt-daemon-log"
        );
        let hint = how_to_install(&libvirt);
        assert!(
            hint.contains(
                "--no-install-recommends virtinst libvirt-clients libvirt-daemon-system`"
            ),
            "{hint}"
        );
    }

    /// The plan for every tool the tests need, simulated by apt-get itself (`-s`: nothing is
    /// installed) on a Debian machine; on this kind of machine that includes the one with the
    /// newer qemu-utils from backports.
    #[test]
    fn apt_accepts_the_plan_where_apt_is_present() {
        if find_in_path("apt-get").is_none() {
            eprintln!("no apt-get: nothing to simulate");
            return;
        }
        let version = candidate_version("qemu-system-x86");
        if version.is_none() {
            eprintln!(
                "apt knows no qemu-system-x86 (package lists not updated): nothing to simulate"
            );
            return;
        }
        let install = InstallPlan::apt_install(&FOR_TESTS, &version);
        let out = Command::new("apt-get").arg("-s").args(&install[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "apt-get -s {}: {}{}",
            install[1..].join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
