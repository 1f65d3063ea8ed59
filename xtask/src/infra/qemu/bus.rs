//! The disk controllers QEMU attaches a boot disk or CD to, and the `-device` arguments for each.

/// The disk controllers hypervisors attach boot disks to: every one SeaBIOS boots from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    /// PIIX IDE, the `pc` machine's own controller (Hyper-V generation 1 too).
    Ide,
    /// AHCI (SATA): the `q35` machine's own ICH9 controller; on `pc` an added one (VirtualBox).
    Ahci,
    /// virtio-blk-pci (OpenStack, KubeVirt).
    VirtioBlk,
    /// virtio-scsi-pci with a scsi-hd / scsi-cd (oVirt, Proxmox).
    VirtioScsi,
    /// NVMe.
    Nvme,
    /// LSI 53C895A SCSI (VMware's "LSI Logic Parallel" family; Proxmox's lsi).
    Lsi,
    /// VMware paravirtual SCSI.
    Pvscsi,
    /// LSI MegaRAID SAS.
    Megasas,
    /// LSI SAS1068 (VMware's "LSI Logic SAS").
    Mptsas,
    /// USB mass storage on an xHCI (USB 3) controller.
    UsbXhci,
    /// USB mass storage on an EHCI (USB 2) controller.
    UsbEhci,
    /// The ISA floppy drive.
    Floppy,
}

impl Bus {
    pub const ALL: [Bus; 12] = [
        Bus::Ide,
        Bus::Ahci,
        Bus::VirtioBlk,
        Bus::VirtioScsi,
        Bus::Nvme,
        Bus::Lsi,
        Bus::Pvscsi,
        Bus::Megasas,
        Bus::Mptsas,
        Bus::UsbXhci,
        Bus::UsbEhci,
        Bus::Floppy,
    ];

    /// The controllers with a CD drive.
    pub const CD_DRIVES: [Bus; 9] = [
        Bus::Ide,
        Bus::Ahci,
        Bus::VirtioScsi,
        Bus::Lsi,
        Bus::Pvscsi,
        Bus::Megasas,
        Bus::Mptsas,
        Bus::UsbXhci,
        Bus::UsbEhci,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bus::Ide => "ide",
            Bus::Ahci => "ahci",
            Bus::VirtioBlk => "virtio-blk",
            Bus::VirtioScsi => "virtio-scsi",
            Bus::Nvme => "nvme",
            Bus::Lsi => "lsi",
            Bus::Pvscsi => "pvscsi",
            Bus::Megasas => "megasas",
            Bus::Mptsas => "mptsas",
            Bus::UsbXhci => "usb-xhci",
            Bus::UsbEhci => "usb-ehci",
            Bus::Floppy => "floppy",
        }
    }

    /// The machine whose built-in controller this is (`q35` for AHCI); `pc` for the others.
    pub fn machine(self) -> &'static str {
        match self {
            Bus::Ahci => "q35",
            _ => "pc",
        }
    }

    /// The `-device` arguments that attach the drive `boot` (a CD where `cd`) on `machine`.
    pub(super) fn devices(self, machine: &str, cd: bool) -> Vec<String> {
        let (ide, scsi) = if cd { ("ide-cd", "scsi-cd") } else { ("ide-hd", "scsi-hd") };
        let one = |device: String| vec![device];
        let behind = |controller: &str, device: &str| {
            vec![
                format!("{controller},id=hba"),
                format!("{device},drive=boot,bus=hba.0,bootindex=1"),
            ]
        };
        let q35 = machine.starts_with("q35");
        match self {
            // IDE on pc, the built-in AHCI on q35: both take ide-hd / ide-cd.
            Bus::Ide => one(format!("{ide},drive=boot,bootindex=1")),
            Bus::Ahci if q35 => one(format!("{ide},drive=boot,bootindex=1")),
            Bus::Ahci => behind("ahci", ide),
            Bus::VirtioBlk => one("virtio-blk-pci,drive=boot,bootindex=1".into()),
            Bus::VirtioScsi => behind("virtio-scsi-pci", scsi),
            Bus::Nvme => one("nvme,drive=boot,serial=vm512,bootindex=1".into()),
            Bus::Lsi => behind("lsi53c895a", scsi),
            Bus::Pvscsi => behind("pvscsi", scsi),
            Bus::Megasas => behind("megasas", scsi),
            Bus::Mptsas => behind("mptsas1068", scsi),
            Bus::UsbXhci => behind("qemu-xhci", "usb-storage"),
            Bus::UsbEhci => behind("usb-ehci", "usb-storage"),
            // The floppy drive has no boot index: `-boot order=a` (see args). q35 has no
            // floppy controller of its own.
            Bus::Floppy if q35 => {
                vec!["isa-fdc,id=fdc".into(), "floppy,unit=0,drive=boot,bus=fdc.0".into()]
            }
            Bus::Floppy => one("floppy,unit=0,drive=boot".into()),
        }
    }
}
