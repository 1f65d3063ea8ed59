//! The virtio-mmio transports a DSDT lists: devices with `Name (_HID, "LNRO0005")` (the ID
//! Linux's `virtio_mmio` matches; QEMU `microvm` lists its transports so) and a
//! `Name (_CRS, ResourceTemplate () { Memory32Fixed (...) Interrupt (...) })`.
//!
//! Apart from `acpi::aml` on purpose: the classic kernel links that reader, and sharing its
//! helpers changed the classic kernel's bytes. It does not walk the namespace: each `_HID`
//! string is followed by its device's `_CRS` before the next `_HID`, as every VMM's generated
//! DSDT has it. Every read is bounds-checked; each scan moves forward. Pure code over bytes, so
//! the host tests run it (`xtask/src/tests/acpi.rs`).

/// `NameOp`, `_HID`, a string prefix, then "LNRO0005" and its NUL (ACPI 6.5, 20.2).
const HID: &[u8] = b"\x08_HID\x0DLNRO0005\x00";
/// `NameOp`, `_CRS`, `BufferOp`.
const CRS: &[u8] = b"\x08_CRS\x11";
/// Where another device's `_HID` starts: the end of this one's search.
const NEXT_HID: &[u8] = b"\x08_HID";
/// The table header every ACPI table starts with.
const HEADER: usize = 36;

/// Large resource descriptors (ACPI 6.5, 6.4.3): Memory32Fixed and Extended Interrupt; the
/// End Tag (small, 0x79); the interrupt flags' edge and active-low bits.
const MEMORY32_FIXED: u8 = 0x86;
const EXTENDED_INTERRUPT: u8 = 0x89;
const END_TAG: u8 = 0x79;
const EDGE: u8 = 1 << 1;
const ACTIVE_LOW: u8 = 1 << 2;

/// One transport: its registers' window and its interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioDevice {
    pub address: u64,
    pub size: u64,
    /// The global system interrupt, and whether level triggered and active low.
    pub gsi: u32,
    pub level: bool,
    pub active_low: bool,
}

/// Every transport the DSDT lists, in table order; ones whose template lacks a window or an
/// interrupt are skipped.
pub fn virtio_mmio_devices(dsdt: &[u8]) -> impl Iterator<Item = MmioDevice> + '_ {
    let length = dsdt.get(4..8).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let aml = dsdt.get(..length as usize).filter(|aml| aml.len() >= HEADER).unwrap_or(&[]);
    let mut at = HEADER.min(aml.len());
    core::iter::from_fn(move || {
        while let Some(found) = find(aml, at, HID) {
            at = found + HID.len();
            let end = find(aml, at, NEXT_HID).unwrap_or(aml.len());
            let Some(crs) = find(&aml[..end], at, CRS) else { continue };
            if let Some(device) = template(aml.get(crs + CRS.len()..end)?) {
                return Some(device);
            }
        }
        None
    })
}

/// The first index at or after `from` where `needle` starts.
fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let tail = haystack.get(from..)?;
    tail.windows(needle.len()).position(|w| w == needle).map(|i| from + i)
}

/// A buffer after its `BufferOp`: PkgLength, the size (an integer), the descriptors.
fn template(buffer: &[u8]) -> Option<MmioDevice> {
    let lead = *buffer.first()?;
    let extra = usize::from(lead >> 6);
    let length = match extra {
        0 => usize::from(lead & 0x3F),
        _ => (1..=extra).fold(usize::from(lead & 0x0F), |length, i| {
            length | usize::from(buffer.get(i).copied().unwrap_or(0)) << (4 + 8 * (i - 1))
        }),
    };
    let body = buffer.get(1 + extra..length.min(buffer.len()))?;
    // The size: BytePrefix, WordPrefix or a one-byte constant.
    let skip = match body.first()? {
        0x0A => 2,
        0x0B => 3,
        0x0C => 5,
        _ => 1,
    };
    descriptors(body.get(skip..)?)
}

/// The first Memory32Fixed window and Extended Interrupt in a resource template.
fn descriptors(template: &[u8]) -> Option<MmioDevice> {
    let (mut window, mut interrupt) = (None, None);
    let mut at = 0;
    while let Some(&tag) = template.get(at) {
        if tag & 0x80 == 0 {
            if tag == END_TAG {
                break;
            }
            at += 1 + usize::from(tag & 0x07);
            continue;
        }
        let length =
            usize::from(u16::from_le_bytes([*template.get(at + 1)?, *template.get(at + 2)?]));
        let data = template.get(at + 3..at + 3 + length)?;
        let u32_at =
            |i: usize| data.get(i..i + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        match tag {
            MEMORY32_FIXED if window.is_none() => window = Some((u32_at(1)?, u32_at(5)?)),
            EXTENDED_INTERRUPT if interrupt.is_none() => interrupt = Some((data[0], u32_at(2)?)),
            _ => {}
        }
        at += 3 + length;
    }
    let ((address, size), (flags, gsi)) = (window?, interrupt?);
    Some(MmioDevice {
        address: u64::from(address),
        size: u64::from(size),
        gsi,
        level: flags & EDGE == 0,
        active_low: flags & ACTIVE_LOW != 0,
    })
}
