//! Time for the network: a clock (the CPU's time-stamp counter) and an alarm (the local APIC's
//! timer, one-shot), both measured once against the 8254's channel 2, whose input runs at a
//! known 1.193182 MHz on every PC and VMM that has one.
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
/// The calibration window: 4 ms of the 8254's clock, measured this many times; the shortest
/// window counts. A VMM's vCPU can be descheduled in the middle of one (seen under TCG with a
/// loaded host: a window measured 2.35 times too long, so every timer of the stack ran that
/// much late), and that only ever lengthens a window.
const WINDOW_TICKS: u16 = (PIT_HZ / 250) as u16;
const WINDOW_US: u64 = 4_000;
const WINDOWS: usize = 5;
/// The most polls of the 8254's output in one window before the calibration gives up (a VMM
/// without one reads 0xFF: the output looks high at once, and the rates below come out absurd).
const MAX_POLLS: u32 = 4_000_000;
/// Rates assumed where the measurement fails: 1 GHz and 100 MHz / 16.
const FALLBACK_TSC_PER_US: u64 = 1_000;
const FALLBACK_APIC_PER_US: u64 = 6;

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

/// One window of the 8254's channel 2: the counter's ticks and the local APIC timer's counts.
fn window() -> (u64, u32) {
    // SAFETY: the 8254's channel 2 and its gate; the speaker stays off.
    unsafe {
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
        (ticks, counts)
    }
}

impl Clock {
    /// Measures the counter and the local APIC's timer against the 8254's channel 2: the
    /// shortest of [`WINDOWS`] windows of 4 ms.
    pub fn calibrate() -> Clock {
        let (tsc_ticks, apic_counts) =
            (0..WINDOWS).map(|_| window()).min_by_key(|&(ticks, _)| ticks).unwrap_or((0, 0));
        let tsc_per_us = tsc_ticks / WINDOW_US;
        let apic_per_1024_us = u64::from(apic_counts) * 1024 / WINDOW_US;
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
