//! One QEMU run described: the machine, firmware, accelerator, COM1, graphics and what it boots,
//! and the command line that says so.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::{Accel, Bus};

/// Where COM1 goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serial {
    /// QEMU's stdio: captured by [`Vm`], or this terminal.
    Stdio,
    /// No COM1 at all (`-serial none`), as on most platforms' default VMs. (The tests boot so;
    /// `run` always has COM1.)
    #[cfg_attr(not(test), allow(dead_code))]
    None,
    /// A log file (OpenStack's console log).
    #[cfg_attr(not(test), allow(dead_code))]
    File(PathBuf),
}

/// What the VM boots from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// A hard disk image on a bus, in a QEMU format (`raw`, `qcow2`, `vmdk`, ...).
    Disk { bus: Bus, format: &'static str },
    /// A CD-ROM image on a bus.
    Cdrom { bus: Bus },
    /// A firmware image in place of the BIOS (`-bios`).
    Bios,
    /// A firmware image in a pflash device (`-drive if=pflash`). (The tests boot the ROM so;
    /// `run` uses `-bios`.)
    #[cfg_attr(not(test), allow(dead_code))]
    Pflash,
    /// A PVH kernel (`-kernel`), which QEMU's firmware (SeaBIOS's PVH option ROM, or qboot on
    /// `microvm`) enters directly.
    Kernel,
}

/// Guest memory OVMF needs to boot (it gives up with less than about 100 MiB).
pub const UEFI_MEMORY_MIB: u32 = 128;

/// The message as it stands on COM1 under OVMF: after the firmware's own text (and its console
/// copy of the message), as a line of its own.
/// The guest agent's port as libvirt and Proxmox give it: `org.qemu.guest_agent.0` on a
/// virtio-serial controller (with an `id`, so that QEMU reports the guest opening it as
/// VSERPORT_CHANGE), on the abstract socket `socket`, where QEMU listens.
pub const AGENT_PORT: &str = "org.qemu.guest_agent.0";
pub fn agent_channel(socket: &str) -> Vec<OsString> {
    [
        "-chardev".to_string(),
        format!("socket,id=qga0,path={socket},abstract=on,server=on,wait=off"),
        "-device".into(),
        "virtio-serial-pci,id=serial0".into(),
        "-device".into(),
        format!("virtserialport,bus=serial0.0,chardev=qga0,id=channel0,name={AGENT_PORT}"),
    ]
    .map(Into::into)
    .to_vec()
}

pub fn uefi_line(message: &str) -> String {
    format!("\r\n{message}\r\n")
}

/// A network card and what it is plugged into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// The QEMU device (`virtio-net-pci`, `e1000`, `e1000e`, with options), or the machine's
    /// default card: e1000 on `pc`, e1000e on `q35`.
    pub model: Option<String>,
    pub backend: NetBackend,
    /// The card's MAC address, or QEMU's default (52:54:00:12:34:56).
    pub mac: Option<String>,
}

/// The network behind a card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetBackend {
    /// QEMU's user networking (10.0.2.0/24, the guest leases 10.0.2.15), with the guest's TCP
    /// port 80 forwarded to this host port on 127.0.0.1.
    User { forward_to: Option<u16> },
    /// A tap device (made by the caller, on a bridge of its own). (The tests' private
    /// networks.)
    #[cfg_attr(not(test), allow(dead_code))]
    Tap { ifname: String },
}

impl Nic {
    /// The card's model on `machine`.
    pub fn model_on(&self, machine: &str) -> String {
        match &self.model {
            Some(model) => model.clone(),
            None if machine == "q35" => "e1000e".into(),
            // microvm has no PCI: its card is on virtio-mmio.
            None if machine.starts_with("microvm") => "virtio-net-device".into(),
            None => "e1000".into(),
        }
    }

    fn args(&self, machine: &str) -> [String; 4] {
        let netdev = match &self.backend {
            NetBackend::User { forward_to: None } => "user,id=net0".to_string(),
            NetBackend::User { forward_to: Some(port) } => {
                format!("user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:80")
            }
            NetBackend::Tap { ifname } => {
                format!("tap,id=net0,ifname={ifname},script=no,downscript=no")
            }
        };
        let mac = self.mac.as_deref().map(|mac| format!(",mac={mac}")).unwrap_or_default();
        let device = format!("{},netdev=net0{mac}", self.model_on(machine));
        ["-netdev".into(), netdev, "-device".into(), device]
    }
}

/// The machine's firmware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firmware {
    /// QEMU's own: SeaBIOS.
    Bios,
    /// OVMF (UEFI) as one read-only image, `-bios`.
    Uefi { image: PathBuf },
    /// OVMF as platforms install it: two pflash drives, its code (read-only) and a writable copy
    /// of its variable store.
    #[cfg_attr(not(test), allow(dead_code))]
    UefiPflash { code: PathBuf, vars: PathBuf },
}

/// Everything that describes one QEMU run.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub image: PathBuf,
    pub boot: Boot,
    /// QEMU machine type: `pc`, `q35`, `isapc`.
    pub machine: String,
    pub accel: Accel,
    /// QEMU CPU model (`-cpu`), or QEMU's default.
    pub cpu: Option<String>,
    /// The window's display backend (`gtk`, `sdl`), or none: `-display none`.
    pub display: Option<String>,
    /// COM1.
    pub serial: Serial,
    /// The graphics card (`-vga std`, `vmware`, ...), or the machine's default.
    pub vga: Option<String>,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// SeaBIOS or OVMF.
    pub firmware: Firmware,
    /// The network card, or none (`-nic none`: no PXE ROM for the firmware to try first).
    pub nic: Option<Nic>,
    /// Extra arguments, appended last.
    pub extra: Vec<OsString>,
    /// What to call this VM in messages, in front of its description (a test case's name).
    pub label: Option<String>,
}

impl VmConfig {
    /// The same VM booted by UEFI `firmware` (OVMF), with the memory OVMF needs.
    pub fn under_uefi(self, firmware: Firmware) -> VmConfig {
        VmConfig { firmware, memory_mib: UEFI_MEMORY_MIB, ..self }
    }

    /// `image` booted as `boot` on `machine`, headless, with the accelerator [`Accel::choose`]
    /// picks.
    pub fn new(image: &Path, boot: Boot, machine: &str) -> VmConfig {
        VmConfig {
            image: image.to_path_buf(),
            boot,
            machine: machine.to_string(),
            accel: Accel::default_choice(),
            cpu: None,
            display: None,
            serial: Serial::Stdio,
            vga: None,
            memory_mib: 32,
            firmware: Firmware::Bios,
            nic: None,
            extra: Vec::new(),
            label: None,
        }
    }

    /// The QEMU command line (without QMP).
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
        push(&["-machine", &self.machine, "-accel", self.accel.name()]);
        // QEMU's default CPU model otherwise. (Not `-cpu host` under KVM: QEMU 7.2 aborts with it on
        // nested KVM, "failed to set MSR 0x10a".)
        if let Some(cpu) = &self.cpu {
            push(&["-cpu", cpu]);
        }
        push(&["-m", &self.memory_mib.to_string()]);
        match &self.firmware {
            Firmware::Bios => {}
            Firmware::Uefi { image } => push(&["-bios", &image.display().to_string()]),
            Firmware::UefiPflash { code, vars } => push(&[
                "-drive",
                &format!("if=pflash,format=raw,unit=0,readonly=on,file={}", escape(code)),
                "-drive",
                &format!("if=pflash,format=raw,unit=1,file={}", escape(vars)),
            ]),
        }
        // No monitor; no network unless asked for (and so no PXE ROM to wait for); a guest
        // reset ends QEMU instead of booting again, so a crash cannot pass for a boot.
        push(&["-monitor", "none", "-no-reboot"]);
        match &self.nic {
            None => push(&["-nic", "none"]),
            Some(nic) => {
                let nic = nic.args(&self.machine);
                push(&nic.each_ref().map(String::as_str))
            }
        }
        match &self.serial {
            Serial::Stdio => push(&["-serial", "stdio"]),
            Serial::None => push(&["-serial", "none"]),
            Serial::File(path) => push(&["-serial", &format!("file:{}", path.display())]),
        }
        push(&["-display", self.display.as_deref().unwrap_or("none")]);
        if let Some(vga) = &self.vga {
            push(&["-vga", vga]);
        }
        let file = escape(&self.image);
        // snapshot=on: the guest's writes go to a throw-away overlay, so the image never changes
        // and any number of QEMUs can share it (IDE disks refuse readonly=on).
        let drive = |format: &str, media: &str| {
            format!("file={file},format={format},if=none,id=boot,media={media},snapshot=on")
        };
        let attach = |bus: Bus, cd: bool| {
            let mut args = Vec::new();
            for device in bus.devices(&self.machine, cd) {
                args.extend(["-device".to_string(), device]);
            }
            if bus == Bus::Floppy {
                args.extend(["-boot".to_string(), "order=a".to_string()]);
            }
            args
        };
        let strings: Vec<String> = match &self.boot {
            Boot::Disk { bus, format } => {
                let mut args = vec!["-drive".to_string(), drive(format, "disk")];
                args.extend(attach(*bus, false));
                args
            }
            Boot::Cdrom { bus } => {
                let mut args = vec!["-drive".to_string(), drive("raw", "cdrom")];
                args.extend(attach(*bus, true));
                args
            }
            Boot::Bios => vec!["-bios".into(), self.image.display().to_string()],
            Boot::Pflash => {
                vec!["-drive".into(), format!("if=pflash,format=raw,readonly=on,file={file}")]
            }
            Boot::Kernel => vec!["-kernel".into(), self.image.display().to_string()],
        };
        args.extend(strings.into_iter().map(OsString::from));
        args.extend(self.extra.iter().cloned());
        args
    }

    /// A short name for messages: "512-byte-vm.raw as disk on ide (pc, tcg)".
    pub fn describe(&self) -> String {
        let name = self.image.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        let how = match &self.boot {
            Boot::Disk { bus, .. } => format!("disk on {}", bus.name()),
            Boot::Cdrom { bus } => format!("CD on {}", bus.name()),
            Boot::Bios => "-bios".to_string(),
            Boot::Pflash => "pflash".to_string(),
            Boot::Kernel => "-kernel".to_string(),
        };
        let cpu = self.cpu.as_deref().map(|c| format!(", cpu {c}")).unwrap_or_default();
        let label = self.label.as_deref().map(|l| format!("{l}: ")).unwrap_or_default();
        let firmware = match self.firmware {
            Firmware::Bios => "",
            Firmware::Uefi { .. } => ", UEFI",
            Firmware::UefiPflash { .. } => ", UEFI pflash",
        };
        format!("{label}{name} as {how} ({}, {}{firmware}{cpu})", self.machine, self.accel.name())
    }
}

/// A path as a QEMU option value: commas doubled.
fn escape(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::super::Accel;
    use super::*;

    fn line(config: &VmConfig) -> String {
        config.args().iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn command_line_for_each_bus_names_the_right_device() {
        let mut config = VmConfig::new(
            Path::new("/images/a,b.raw"),
            Boot::Disk { bus: Bus::Ide, format: "raw" },
            "pc",
        );
        config.accel = Accel::Tcg;
        let ide = line(&config);
        assert!(ide.contains("-machine pc -accel tcg"), "{ide}");
        assert!(ide.contains("file=/images/a,,b.raw,format=raw"), "commas are escaped: {ide}");
        assert!(ide.contains("ide-hd,drive=boot"), "{ide}");
        assert!(ide.contains("-display none") && ide.contains("-no-reboot"), "{ide}");
        config.boot = Boot::Disk { bus: Bus::VirtioScsi, format: "qcow2" };
        let scsi = line(&config);
        assert!(scsi.contains("virtio-scsi-pci") && scsi.contains("scsi-hd,drive=boot"), "{scsi}");
        assert!(scsi.contains("format=qcow2"), "{scsi}");
        config.boot = Boot::Cdrom { bus: Bus::Ahci };
        assert!(
            line(&config).contains("ide-cd,drive=boot") && line(&config).contains("media=cdrom")
        );
        config.boot = Boot::Pflash;
        assert!(line(&config).contains("if=pflash,format=raw,readonly=on,file=/images/a,,b.raw"));
    }

    #[test]
    fn a_window_names_its_backend_and_never_leaves_qemu_to_pick_one() {
        // With no `-display`, a QEMU without GTK or SDL falls back to a VNC server.
        let mut config = VmConfig::new(Path::new("a.raw"), Boot::Bios, "pc");
        config.display = Some("gtk".into());
        assert!(line(&config).contains("-display gtk"));
    }
}
