//! Time for the network: a clock (the CPU's time-stamp counter) and an alarm (the local APIC's
//! timer, one-shot), both measured once against the 8254's channel 2, whose input runs at a
//! known 1.193182 MHz on every PC and VMM that has one.
//!
//! The measurement reads the 8254's count itself, at the start and at the end of a window,
//! each reading bracketed by two reads of the time-stamp counter; of a few readings, the one
//! with the tightest bracket counts. A vCPU descheduled in the middle of the window (a loaded
//! host) then costs nothing: only a pause inside a bracket would, and that shows as a wide
//! bracket. (Polling the 8254's output for the window's end, as before, measured a window up to
//! 2.35 times too long on a loaded host under TCG, and every timer of the stack ran that much
//! late.)
//!
//! Where the hypervisor states both rates (CPUID leaf 0x40000010, the VMware/KVM "timing
//! information" leaf: EAX the TSC's kHz, EBX the local APIC bus's kHz) they are taken as given:
//! Cloud Hypervisor, which has no 8254, fills it in (with a 1 GHz APIC bus, KVM's). Where
//! neither answers, CPUID leaf 0x15 (the TSC's ratio to the core crystal, which also drives
//! the APIC timer) or 0x16 (the base frequency) gives the TSC's rate.
//!
//! No tick: the alarm is armed only for the stack's next deadline (a DHCP renewal, a TCP
//! retransmission), so a quiet VM sleeps until a frame, a key or the power button wakes it.

use core::arch::asm;

use crate::{lapic, port};

/// The 8254's input clock, in Hz.
const PIT_HZ: u64 = 1_193_182;
/// Channel 2's data port, the mode/command port, and the port (system control B) whose bit 0
/// gates channel 2; bit 1 routes it to the speaker (kept off).
const CHANNEL2: u16 = 0x42;
const COMMAND: u16 = 0x43;
const CONTROL_B: u16 = 0x61;
const GATE: u8 = 1 << 0;
const SPEAKER: u8 = 1 << 1;
/// Channel 2, low then high byte, mode 0 (counting down once from the count loaded), binary;
/// and the command that latches channel 2's count for reading.
const CHANNEL2_ONE_SHOT: u8 = 0b10_11_000_0;
const CHANNEL2_LATCH: u8 = 0b10_00_000_0;
/// The count loaded, and how far it must have counted down for the window to end: 10 ms.
const START_COUNT: u16 = 0xFFFF;
const WINDOW_TICKS: u16 = (PIT_HZ / 100) as u16;
/// Readings taken at each end of the window; the one with the tightest bracket counts.
const READINGS: usize = 4;
/// The most polls of the count before the calibration gives up: a VMM without an 8254 reads
/// 0xFFFF for ever. Each poll is a trap to the VMM (a microsecond or more), so this is far more
/// than the window needs, and a fraction of a second where there is no 8254.
const MAX_POLLS: u32 = 500_000;
/// Rates assumed where the measurement fails: 1 GHz and 100 MHz / 16.
const FALLBACK_TSC_PER_US: u64 = 1_000;
const FALLBACK_APIC_PER_US: u64 = 6;

/// CPUID leaves: the hypervisor's range (EAX: its highest leaf), its timing leaf; the TSC's
/// ratio to the crystal clock; the processor's base frequency (EAX: MHz).
const HYPERVISOR_LEAVES: u32 = 0x4000_0000;
const HYPERVISOR_TIMING: u32 = 0x4000_0010;
const TSC_CRYSTAL: u32 = 0x15;
const BASE_FREQUENCY: u32 = 0x16;
/// CPUID.1:ECX bit 31: running under a hypervisor (its leaves are there).
const HYPERVISOR_PRESENT: u32 = 1 << 31;
/// The local APIC timer's divider (`lapic`'s divide configuration): counts = bus clock / 16.
const APIC_DIVIDE: u64 = 16;

/// CPUID leaf `leaf` (subleaf 0): EAX, EBX, ECX, EDX.
fn cpuid(leaf: u32) -> [u32; 4] {
    // CPUID only reads registers; every x86_64 CPU has it (a safe intrinsic there).
    let r = core::arch::x86_64::__cpuid_count(leaf, 0);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// The rates the hypervisor states (leaf 0x40000010), as (TSC per µs, APIC counts per 1,024
/// µs).
fn hypervisor_rates() -> Option<(u64, u64)> {
    if cpuid(1)[2] & HYPERVISOR_PRESENT == 0 || cpuid(HYPERVISOR_LEAVES)[0] < HYPERVISOR_TIMING {
        return None;
    }
    let [tsc_khz, apic_khz, _, _] = cpuid(HYPERVISOR_TIMING);
    (tsc_khz >= 1_000 && apic_khz >= 1_000)
        .then(|| (u64::from(tsc_khz) / 1_000, u64::from(apic_khz) * 1024 / 1_000 / APIC_DIVIDE))
}

/// The TSC's rate from leaf 0x15 (and the APIC timer's, the crystal's) or 0x16, where the CPU
/// has them: (TSC per µs, APIC counts per 1,024 µs if known).
fn processor_rates() -> Option<(u64, Option<u64>)> {
    let highest = cpuid(0)[0];
    if highest >= TSC_CRYSTAL {
        let [denominator, numerator, crystal_hz, _] = cpuid(TSC_CRYSTAL);
        if denominator != 0 && numerator != 0 && crystal_hz != 0 {
            let tsc_hz = u64::from(crystal_hz) * u64::from(numerator) / u64::from(denominator);
            let apic = u64::from(crystal_hz) * 1024 / 1_000_000 / APIC_DIVIDE;
            return Some((tsc_hz / 1_000_000, Some(apic).filter(|&a| a != 0)));
        }
    }
    if highest >= BASE_FREQUENCY {
        let base_mhz = u64::from(cpuid(BASE_FREQUENCY)[0] & 0xFFFF);
        return (base_mhz != 0).then_some((base_mhz, None));
    }
    None
}

/// The vector the alarm raises (its handler only ends it: waking `hlt` is the whole job).
pub const ALARM_VECTOR: u8 = 0xF0;

/// The measured rates.
#[derive(Clone, Copy)]
pub struct Clock {
    /// Time-stamp counter ticks per microsecond.
    tsc_per_us: u64,
    /// Local APIC timer counts (bus clock / 16) per microsecond, times 1,024 (sub-unit rates
    /// are common under emulation).
    apic_per_1024_us: u64,
    /// The counter when the clock was made: time 0.
    start: u64,
}

/// Reads the time-stamp counter.
fn tsc() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: RDTSC reads a counter; nothing else changes.
    unsafe { asm!("rdtsc", out("eax") low, out("edx") high, options(nomem, nostack)) };
    u64::from(high) << 32 | u64::from(low)
}

/// One reading: the 8254's count and the local APIC timer's, and the time-stamp counter
/// before and after them.
#[derive(Clone, Copy)]
struct Reading {
    before: u64,
    after: u64,
    pit: u16,
    apic: u32,
}

impl Reading {
    fn take() -> Reading {
        let before = tsc();
        // SAFETY: the 8254's command port and channel 2's data port: a latch, then its two bytes.
        let pit = unsafe {
            port::outb(COMMAND, CHANNEL2_LATCH);
            let low = port::inb(CHANNEL2);
            u16::from_le_bytes([low, port::inb(CHANNEL2)])
        };
        let apic = lapic::stopwatch_elapsed();
        Reading { before, after: tsc(), pit, apic }
    }

    /// The tightest-bracketed of a few readings taken one after another.
    fn best() -> Reading {
        let mut best = Reading::take();
        for _ in 1..READINGS {
            let reading = Reading::take();
            if reading.after - reading.before < best.after - best.before {
                best = reading;
            }
        }
        best
    }

    /// The time-stamp counter in the middle of the bracket.
    fn tsc(&self) -> u64 {
        self.before + (self.after - self.before) / 2
    }
}

/// A window of the 8254's channel 2: its ticks, and the time-stamp counter's ticks and the local
/// APIC timer's counts meanwhile; `None` where the 8254 does not count.
fn window() -> Option<(u64, u64, u64)> {
    // SAFETY: the 8254's channel 2 and its gate; the speaker stays off.
    let control = unsafe {
        let control = port::inb(CONTROL_B) & !(GATE | SPEAKER);
        port::outb(CONTROL_B, control | GATE);
        port::outb(COMMAND, CHANNEL2_ONE_SHOT);
        port::outb(CHANNEL2, START_COUNT as u8);
        port::outb(CHANNEL2, (START_COUNT >> 8) as u8);
        control
    };
    lapic::start_stopwatch();
    let first = Reading::best();
    let mut polls = 0;
    while first.pit.wrapping_sub(Reading::take().pit) < WINDOW_TICKS && polls < MAX_POLLS {
        polls += 1;
    }
    let last = Reading::best();
    // SAFETY: as above.
    unsafe { port::outb(CONTROL_B, control) };
    lapic::stop_timer();
    let ticks = first.pit.checked_sub(last.pit).filter(|&ticks| ticks >= WINDOW_TICKS)?;
    Some((u64::from(ticks), last.tsc() - first.tsc(), u64::from(last.apic - first.apic)))
}

impl Clock {
    /// The hypervisor's stated rates where it states them, else measures the counter and the
    /// local APIC's timer against 10 ms of the 8254's channel 2; without an 8254 (its count
    /// never moves), the processor's leaves.
    pub fn calibrate() -> Clock {
        if let Some((tsc_per_us, apic_per_1024_us)) = hypervisor_rates() {
            return Clock { tsc_per_us: tsc_per_us.max(1), apic_per_1024_us, start: tsc() };
        }
        let (tsc_per_us, apic_per_1024_us) = match window() {
            // ticks of each per 8254 tick, times the 8254's ticks per microsecond.
            Some((pit, tsc, apic)) => {
                (tsc * PIT_HZ / pit / 1_000_000, apic * 1024 * PIT_HZ / pit / 1_000_000)
            }
            None => match processor_rates() {
                Some((tsc, apic)) => (tsc, apic.unwrap_or(0)),
                None => (0, 0),
            },
        };
        Clock {
            tsc_per_us: if tsc_per_us == 0 { FALLBACK_TSC_PER_US } else { tsc_per_us },
            apic_per_1024_us: if apic_per_1024_us == 0 {
                FALLBACK_APIC_PER_US * 1024
            } else {
                apic_per_1024_us
            },
            start: tsc(),
        }
    }

    /// Microseconds since the clock was made.
    pub fn now_us(&self) -> u64 {
        (tsc() - self.start) / self.tsc_per_us
    }

    /// Arms the alarm to ring in `us` microseconds (or stops it, for `None`). Beyond the timer's
    /// range it rings early, and the caller sets it again.
    pub fn alarm_in(&self, us: Option<u64>) {
        let count = match us {
            None => 0,
            Some(us) => (us.saturating_mul(self.apic_per_1024_us) / 1024).clamp(1, u32::MAX.into()),
        };
        lapic::one_shot(ALARM_VECTOR, count as u32);
    }

    /// A seed for the stack's randomness (TCP sequence numbers, DHCP transaction IDs): the
    /// counter, different at every boot.
    pub fn seed(&self) -> u64 {
        tsc()
    }
}
