//! Time for the network: a clock (the CPU's time-stamp counter) and an alarm (the local APIC's
//! timer, one-shot), both measured once against the 8254's channel 2, whose input runs at a
//! known 1.193182 MHz on every PC and VMM that has one.
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
/// gates channel 2 and whose bit 5 shows its output; bit 1 routes it to the speaker (kept off).
const CHANNEL2: u16 = 0x42;
const COMMAND: u16 = 0x43;
const CONTROL_B: u16 = 0x61;
const GATE: u8 = 1 << 0;
const SPEAKER: u8 = 1 << 1;
const OUTPUT: u8 = 1 << 5;
/// Channel 2, low then high byte, mode 0 (interrupt on terminal count: the output goes high
/// when the count runs out), binary.
const CHANNEL2_ONE_SHOT: u8 = 0b10_11_000_0;
/// The calibration window: 10 ms of the 8254's clock.
const WINDOW_TICKS: u16 = (PIT_HZ / 100) as u16;
const WINDOW_US: u64 = 10_000;
/// The most polls of the 8254's output before the calibration gives up (a VMM without one
/// reads 0xFF: the output looks high at once, and the rates below come out absurd).
const MAX_POLLS: u32 = 10_000_000;
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

impl Clock {
    /// The hypervisor's stated rates where it states them, else measures the counter and the
    /// local APIC's timer against 10 ms of the 8254's channel 2; without an 8254 (its output
    /// high at once, or never), the processor's leaves.
    pub fn calibrate() -> Clock {
        if let Some((tsc_per_us, apic_per_1024_us)) = hypervisor_rates() {
            return Clock { tsc_per_us: tsc_per_us.max(1), apic_per_1024_us, start: tsc() };
        }
        // SAFETY: the 8254's channel 2 and its gate; the speaker stays off.
        let (tsc_ticks, apic_counts, polls) = unsafe {
            let control = port::inb(CONTROL_B) & !(GATE | SPEAKER);
            port::outb(CONTROL_B, control);
            port::outb(COMMAND, CHANNEL2_ONE_SHOT);
            port::outb(CHANNEL2, WINDOW_TICKS as u8);
            port::outb(CHANNEL2, (WINDOW_TICKS >> 8) as u8);
            lapic::start_stopwatch();
            let before = tsc();
            port::outb(CONTROL_B, control | GATE);
            let mut polls = 0;
            while port::inb(CONTROL_B) & OUTPUT == 0 && polls < MAX_POLLS {
                polls += 1;
            }
            let ticks = tsc() - before;
            let counts = lapic::stopwatch_elapsed();
            port::outb(CONTROL_B, control);
            lapic::stop_timer();
            (ticks, counts, polls)
        };
        let mut tsc_per_us = tsc_ticks / WINDOW_US;
        let mut apic_per_1024_us = u64::from(apic_counts) * 1024 / WINDOW_US;
        if polls == 0 || polls == MAX_POLLS {
            // No 8254 answered: what was measured is meaningless.
            (tsc_per_us, apic_per_1024_us) = match processor_rates() {
                Some((tsc, apic)) => (tsc, apic.unwrap_or(0)),
                None => (0, 0),
            };
        }
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
