//! The 64-bit core: the machine-owning part of every 64-bit image. Each entry is thin and says
//! only what its firmware left (where the RSDP is), then hands over here:
//!
//! - the UEFI program (`src/efi/`), after ExitBootServices;
//! - the PVH kernel (`src/pvh/`), after its long-mode stub.
//!
//! The core prints the message on COM1, installs its interrupt table, stops every timer, wires
//! up the interrupts it answers (the keyboard, COM1, and the ACPI power button's SCI or Generic
//! Event Device) and sleeps in `hlt` until one of them comes: a byte on COM1 is echoed; the
//! power button, a key or Ctrl-D powers the VM off.
//!
//! How much machine it handles is the entry's choice ([`Reach`]): the classic UEFI program,
//! which must stay within 4 KiB, takes the PC's fixed hardware (8259s, PM1a registers); the PVH
//! kernel runs on any VMM and reads the MADT (I/O APIC), the hardware-reduced FADT and the DSDT
//! (the GED) too, and resets where ACPI gives no way to power off. The entry also says how a
//! device register beyond what it mapped becomes reachable ([`Reach::map_device`]).

pub mod interrupts;
mod power;

use core::sync::atomic::{AtomicU64, Ordering};

use crate::acpi::aml::Interrupt;
use crate::acpi::tables::{self, Madt};
use crate::acpi::{self, NO_PM};
use crate::ioapic::IoApic;
use crate::{idle, keyboard, lapic, message, pic, pit, reset, serial};

/// How much of the machine the core handles, and how it reaches device registers.
pub trait Reach {
    /// Reads the MADT, the DSDT and the hardware-reduced FADT; routes through the I/O APIC;
    /// resets where there is no ACPI power-off. `false`: the PC's fixed hardware only.
    const ANY_MACHINE: bool;

    /// The entry has set COM1 up and printed the line itself (the PVH stub does, first thing).
    const LINE_PRINTED: bool = false;

    /// Makes the memory-mapped register at `address` reachable (identity mapped); `false` where
    /// it cannot be. Every entry maps the first 4 GiB.
    fn map_device(address: u64) -> bool {
        address < 1 << 32
    }
}

/// A device's interrupt line, as the core routes it.
#[derive(Clone, Copy)]
pub enum Line {
    /// An ISA IRQ (through the MADT's overrides).
    Isa(u8),
    /// A global system interrupt with its own trigger (a virtio-mmio card's).
    Gsi(Interrupt),
}

/// What a service is told of the machine at its start.
pub struct Machine {
    /// Makes a register address reachable ([`Reach::map_device`]).
    pub map: fn(u64) -> bool,
    /// The kernel command line the loader gave (PVH), if any.
    pub cmdline: Option<&'static [u8]>,
    /// The DSDT, if ACPI has one.
    pub dsdt: Option<&'static [u8]>,
}

/// Work the core does beside the console and the power button: the net family's network.
pub trait Service: Sized {
    /// No work at all: the core idles exactly as the classic images do.
    const NONE: bool = false;

    /// Finds and starts what it serves on `machine`, its interrupts sent to this CPU's local
    /// APIC (messages) or, for a line, where [`line`](Self::line) says.
    fn start(machine: &Machine) -> Self;

    /// Its device's interrupt line, if it signals that way.
    fn line(&self) -> Option<Line>;

    /// Its work, before the first sleep and after every wake-up.
    fn poll(&mut self);

    /// Ends it before the VM powers off.
    fn stop(&mut self);

    /// How the service asks the VM to end (the guest agent's guest-shutdown), once asked.
    fn ending(&self) -> Option<Ending> {
        None
    }
}

/// How a service asks the VM to end; each after the service's [`stop`](Service::stop), as
/// for the power button.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    PowerOff,
    /// Stop the CPU, the VM left on (as an OS's halt).
    Halt,
    Reset,
}

/// No service: the classic images.
pub struct Quiet;
impl Service for Quiet {
    const NONE: bool = true;
    fn start(_: &Machine) -> Self {
        Quiet
    }
    fn line(&self) -> Option<Line> {
        None
    }
    fn poll(&mut self) {}
    fn stop(&mut self) {}
}

/// The PC's fixed hardware (the classic UEFI program).
pub struct Pc;
impl Reach for Pc {
    const ANY_MACHINE: bool = false;
}

/// The machine is the caller's alone (no firmware services, interrupts off): takes it over and
/// never returns. `rsdp` is where the ACPI tables start, if the firmware said.
pub fn run<R: Reach, S: Service>(rsdp: Option<u64>) -> ! {
    // COM1 gets the line, standing on its own after whatever the firmware wrote there.
    if !R::LINE_PRINTED {
        serial::init();
        serial::write(b'\r');
        serial::write(b'\n');
        message::for_each_byte(serial::write);
    }
    interrupts::install();
    lapic::stop_timer();
    pit::stop();
    if !R::ANY_MACHINE {
        let pm = match rsdp.and_then(|rsdp| u32::try_from(rsdp).ok()) {
            Some(rsdp) => acpi::pm_from_rsdp(rsdp),
            None => NO_PM,
        };
        pic::wait_for_events(pic::LONG_MODE_VECTORS, pm.sci);
        lapic::pass_through_8259();
        keyboard::discard_pending();
        idle::forever(pm, keyboard::key_waiting)
    }
    let tables = rsdp.map(power::Tables::read).unwrap_or_default();
    let power = power::Power::new(&tables, R::map_device);
    let cmdline = command_line(COMMAND_LINE.load(Ordering::Relaxed));
    let service = S::start(&Machine { map: R::map_device, cmdline, dsdt: tables.dsdt });
    match tables.madt.as_ref().filter(|madt| has_io_apic(madt)) {
        Some(madt) => route_through_io_apic(madt, &power, service.line()),
        None => {
            // No I/O APIC named (no ACPI: QEMU `microvm,acpi=off`): the 8259s, as a BIOS leaves
            // them, with the service's line where it is one of theirs.
            pic::wait_for_events(pic::LONG_MODE_VECTORS, power.sci_irq());
            match service.line() {
                Some(Line::Isa(irq)) if irq < 16 => pic::open(irq),
                Some(Line::Gsi(interrupt)) if interrupt.gsi < 16 => pic::open(interrupt.gsi as u8),
                _ => {}
            }
            lapic::pass_through_8259();
        }
    }
    keyboard::discard_pending();
    // An I/O APIC input drops an edge that comes while it is masked: bytes typed before COM1's
    // input was routed would hold the UART's line high, and no interrupt would ever come; a
    // press of the GED's power button would wait unseen in its register. Look once before the
    // first sleep; from here on each event raises its line afresh.
    if idle::echo_waiting() | power.button_pressed() {
        power.power_off();
    }
    let asked = || keyboard::key_waiting() || power.button_pressed();
    if S::NONE {
        idle::until_asked(asked, || power.power_off())
    }
    let work = |service: &mut S| {
        service.poll();
        let Some(ending) = service.ending() else { return };
        service.stop();
        match ending {
            Ending::PowerOff => power.power_off(),
            Ending::Halt => idle::halt(),
            Ending::Reset => reset::reset(),
        }
    };
    idle::serve_until_asked(service, work, asked, |service| {
        service.stop();
        power.power_off();
    })
}

/// Whether the MADT names an I/O APIC that answers.
fn has_io_apic(madt: &Madt) -> bool {
    madt.io_apics.iter().flatten().any(|apic| IoApic::at(apic.address).is_some())
}

/// The ISA IRQs the VM answers: the keyboard and COM1.
const KEYBOARD_IRQ: u8 = 1;
const COM1_IRQ: u8 = 4;

/// Masks the 8259s (where there are any) and every I/O APIC input, then sends the keyboard, COM1
/// and the power button's interrupt (the SCI, or the GED's), and a service's line (`extra`),
/// through the I/O APICs to this CPU.
fn route_through_io_apic(madt: &Madt, power: &power::Power, extra: Option<Line>) {
    pic::disable(pic::LONG_MODE_VECTORS);
    lapic::accept_io_apic();
    for apic in madt.io_apics.iter().flatten() {
        if let Some(apic) = IoApic::at(apic.address) {
            apic.mask_all();
        }
    }
    let destination = lapic::id();
    let route = |gsi: u32, level: bool, active_low: bool| {
        let Some((apic, input)) = madt.io_apic_for(gsi) else { return };
        let Some(apic) = IoApic::at(apic.address) else { return };
        let vector = interrupts::IO_APIC_VECTORS + (gsi as u8 & 0x7F);
        apic.route(input, vector, level, active_low, destination);
    };
    for irq in [KEYBOARD_IRQ, COM1_IRQ] {
        let (gsi, level, active_low) = madt.isa_irq(irq);
        route(gsi, level, active_low);
    }
    match extra {
        Some(Line::Isa(irq)) => {
            let (gsi, level, active_low) = madt.isa_irq(irq);
            route(gsi, level, active_low);
        }
        Some(Line::Gsi(interrupt)) => route(interrupt.gsi, interrupt.level, interrupt.active_low),
        None => {}
    }
    if let Some(sci) = power.sci_interrupt() {
        // SCI_INT: an ISA IRQ below 16, mapped through its override where there is one; else
        // (and by default) level triggered, active low, shareable (ACPI 6.5, 5.2.12.5).
        let overridden = madt.overrides.iter().flatten().any(|o| u16::from(o.irq) == sci);
        let (gsi, level, active_low) = match overridden {
            true => madt.isa_irq(sci as u8),
            false => (u32::from(sci), true, true),
        };
        route(gsi, level, active_low);
    }
    if let Some(interrupt) = power.ged_interrupt() {
        route(interrupt.gsi, interrupt.level, interrupt.active_low);
    }
}

/// The most command-line bytes looked at (Linux's x86 COMMAND_LINE_SIZE).
const MAX_CMDLINE: usize = 2048;

/// The physical address of the kernel command line (NUL-terminated; 0: none), as the entry
/// found it ([`set_command_line`]).
static COMMAND_LINE: AtomicU64 = AtomicU64::new(0);

/// Gives the core the loader's command line (the PVH start info's `cmdline_paddr`), before
/// [`run`]: the net family's PVH kernel does, for the virtio-mmio devices it names.
pub fn set_command_line(address: Option<u64>) {
    COMMAND_LINE.store(address.unwrap_or(0), Ordering::Relaxed);
}

/// The command line at `address`, up to its NUL (at most [`MAX_CMDLINE`] bytes).
fn command_line(address: u64) -> Option<&'static [u8]> {
    let bytes = physical(address, MAX_CMDLINE)?;
    Some(&bytes[..bytes.iter().position(|&b| b == 0).unwrap_or(MAX_CMDLINE)])
}

/// The most bytes of one ACPI table the core looks at (a VM's DSDT is a few KiB).
const MAX_TABLE: usize = 1 << 20;

/// `length` bytes of physical memory at `address`: identity mapped below 4 GiB by every entry
/// (UEFI maps all memory one to one; the PVH stub maps the first 4 GiB).
fn physical(address: u64, length: usize) -> Option<&'static [u8]> {
    let end = address.checked_add(length as u64)?;
    if address == 0 || end > 1 << 32 {
        return None;
    }
    // SAFETY: firmware tables in mapped memory, read only; nothing writes them.
    Some(unsafe {
        core::slice::from_raw_parts(core::ptr::with_exposed_provenance(address as usize), length)
    })
}

/// The ACPI table at `address`, its length read from its header and its checksum checked.
fn table(address: u64) -> Option<&'static [u8]> {
    let length = tables::length(physical(address, tables::HEADER)?)?;
    let table = physical(address, length.min(MAX_TABLE))?;
    tables::checksum_ok(table).then_some(table)
}
