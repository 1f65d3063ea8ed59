//! The wall clock: the CMOS real-time clock (MC146818, ports 0x70/0x71), read once at start.
//! Every PC-like VMM has one (QEMU, SeaBIOS and OVMF machines); where there is none the reads
//! give 0xFF and the time is taken as the epoch.

use crate::port;

const INDEX: u16 = 0x70;
const DATA: u16 = 0x71;
/// Registers: seconds, minutes, hours, day of month, month, year; status A (bit 7: update in
/// progress) and B (bit 1: 24-hour; bit 2: binary, not BCD).
const SECONDS: u8 = 0x00;
const MINUTES: u8 = 0x02;
const HOURS: u8 = 0x04;
const DAY: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
const STATUS_A: u8 = 0x0A;
const STATUS_B: u8 = 0x0B;
const UPDATING: u8 = 1 << 7;
const HOURS_24: u8 = 1 << 1;
const BINARY: u8 = 1 << 2;
/// Hours register, 12-hour mode: bit 7 is PM.
const PM: u8 = 1 << 7;
/// The most status reads while an update is in progress (it takes under 2 ms).
const MAX_POLLS: u32 = 1_000_000;

fn cmos(register: u8) -> u8 {
    // SAFETY: the RTC's index then data port; NMI stays enabled (bit 7 clear).
    unsafe {
        port::outb(INDEX, register);
        port::inb(DATA)
    }
}

/// Seconds since the Unix epoch now, as the RTC says (taken as UTC, as QEMU keeps it).
pub fn unix_seconds() -> u64 {
    let mut polls = 0;
    while cmos(STATUS_A) & UPDATING != 0 && polls < MAX_POLLS {
        polls += 1;
    }
    let status = cmos(STATUS_B);
    if status == 0xFF {
        return 0;
    }
    let value = |raw: u8| -> u64 {
        u64::from(if status & BINARY != 0 { raw } else { (raw & 0x0F) + (raw >> 4) * 10 })
    };
    let raw_hours = cmos(HOURS);
    let mut hours = value(raw_hours & !PM);
    if status & HOURS_24 == 0 {
        hours %= 12;
        if raw_hours & PM != 0 {
            hours += 12;
        }
    }
    let days = days_since_epoch(2000 + value(cmos(YEAR)), value(cmos(MONTH)), value(cmos(DAY)));
    ((days * 24 + hours) * 60 + value(cmos(MINUTES))) * 60 + value(cmos(SECONDS))
}

/// Days from 1970-01-01 to a date of the Gregorian calendar (year 2000 or later).
fn days_since_epoch(year: u64, month: u64, day: u64) -> u64 {
    // March-based years, so that February's leap day comes last.
    let (year, month) =
        if month <= 2 { (year - 1, month + 9) } else { (year, month.saturating_sub(3)) };
    let era_day = year * 365 + year / 4 - year / 100 + year / 400;
    let day_of_year = (153 * month + 2) / 5 + day.saturating_sub(1);
    // 719,468: days from 0000-03-01 to 1970-01-01 in this count.
    (era_day + day_of_year).saturating_sub(719_468)
}
