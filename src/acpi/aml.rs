//! A small AML reader: what the 64-bit core needs from the DSDT where the FADT's fixed registers
//! are absent (hardware-reduced ACPI: QEMU `microvm`, Cloud Hypervisor), and the S5 sleep type.
//!
//! It does not execute AML. It finds the few shapes every VMM's DSDT gives these things (ACPI 6.5
//! chapter 20, "ACPI Machine Language Specification"):
//!
//! - `Name (_S5, Package () { SLP_TYPa, ... })`: the value written to enter soft-off;
//! - the Generic Event Device (`_HID` "ACPI0013", ACPI 6.5 section 5.6.9): its interrupt, from
//!   its `_CRS` resource template (an Extended Interrupt or IRQ descriptor);
//! - which register tells a power-button event, and by which bit: the method that does
//!   `Notify (<power button>, 0x80)` (the device whose `_HID` is PNP0C0C) reads an
//!   `OperationRegion` field and tests it with `And (..., MASK)`; the field's declaration and
//!   its region give the register's address space, address and width.
//!
//! Every read is bounds-checked: a truncated or hostile table yields `None`, never a panic or
//! an endless loop (each scan moves forward). Pure code over byte slices, so the host tests
//! run it on DSDTs dumped from real VMMs (`xtask/src/tests/acpi.rs`).

/// The table header every ACPI table starts with; AML follows it.
const HEADER: usize = 36;

/// AML opcodes and prefixes used here (ACPI 6.5, 20.2).
mod op {
    pub const ZERO: u8 = 0x00;
    pub const ONE: u8 = 0x01;
    pub const NAME: u8 = 0x08;
    pub const BYTE_PREFIX: u8 = 0x0A;
    pub const WORD_PREFIX: u8 = 0x0B;
    pub const DWORD_PREFIX: u8 = 0x0C;
    pub const STRING_PREFIX: u8 = 0x0D;
    pub const QWORD_PREFIX: u8 = 0x0E;
    pub const BUFFER: u8 = 0x11;
    pub const PACKAGE: u8 = 0x12;
    pub const METHOD: u8 = 0x14;
    pub const DUAL_NAME_PREFIX: u8 = 0x2E;
    pub const MULTI_NAME_PREFIX: u8 = 0x2F;
    pub const EXT_PREFIX: u8 = 0x5B;
    pub const ROOT_CHAR: u8 = 0x5C;
    pub const PARENT_PREFIX: u8 = 0x5E;
    pub const LOCAL0: u8 = 0x60;
    pub const ARG6: u8 = 0x6E;
    pub const STORE: u8 = 0x70;
    pub const AND: u8 = 0x7B;
    pub const NOTIFY: u8 = 0x86;
    pub const ONES: u8 = 0xFF;
    /// After EXT_PREFIX.
    pub const OP_REGION: u8 = 0x80;
    pub const FIELD: u8 = 0x81;
    pub const DEVICE: u8 = 0x82;
}

/// `Notify` value 0x80 to a power button device: "the button was pressed" (ACPI 6.5, 4.8.3.1.1).
const POWER_BUTTON_PRESSED: u64 = 0x80;
/// The Generic Event Device's hardware ID.
const GED_HID: &[u8] = b"ACPI0013";
/// The control-method power button's hardware ID, as a string and as a compressed EISA ID.
const POWER_BUTTON_HID: &[u8] = b"PNP0C0C";
const POWER_BUTTON_EISA_ID: u64 = 0x0C0C_D041;

/// Address spaces of an operation region or generic address (ACPI 6.5, table 5.1 / 19.6.100).
pub const SYSTEM_MEMORY: u8 = 0;
pub const SYSTEM_IO: u8 = 1;

/// A hardware register: where it is and how wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Register {
    /// [`SYSTEM_MEMORY`] or [`SYSTEM_IO`].
    pub space: u8,
    pub address: u64,
    /// 8, 16 or 32.
    pub bits: u8,
}

/// An interrupt as a resource template gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupt {
    /// The global system interrupt (the I/O APIC input, counted across I/O APICs).
    pub gsi: u32,
    /// Level triggered (else edge).
    pub level: bool,
    /// Active low (else active high).
    pub active_low: bool,
}

/// The Generic Event Device, as far as the power button needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ged {
    /// What it raises on an event.
    pub interrupt: Interrupt,
    /// The register its event method reads (QEMU: the event selector, cleared by the read).
    pub events: Register,
    /// The bit (or bits) of that register that mean "power button".
    pub power_button: u32,
}

/// SLP_TYPa for S5 from `Name (_S5, Package () { a, ... })`; `None` where the DSDT has none.
pub fn s5_sleep_type(dsdt: &[u8]) -> Option<u8> {
    let body = dsdt.get(HEADER..)?;
    let mut at = 0;
    while let Some(found) = find(body, at, b"_S5_") {
        at = found + 1;
        // NameOp "_S5_" PackageOp PkgLength NumElements <first element>
        if found == 0 || body[found - 1] != op::NAME || body.get(found + 4) != Some(&op::PACKAGE) {
            continue;
        }
        let Some((_, used)) = pkg_length(body, found + 5) else { continue };
        let first = found + 5 + used + 1;
        if let Some((value, _)) = integer(body, first) {
            return Some(value as u8);
        }
    }
    None
}

/// The Generic Event Device and its power-button event, if the DSDT has both.
pub fn ged(dsdt: &[u8]) -> Option<Ged> {
    let aml = dsdt.get(..dsdt.len().min(table_length(dsdt)?))?;
    let device = device_with_hid(aml, |hid| hid == Hid::String(GED_HID))?;
    let interrupt = first_interrupt(aml, device)?;
    let button = device_with_hid(aml, |hid| {
        hid == Hid::String(POWER_BUTTON_HID) || hid == Hid::Integer(POWER_BUTTON_EISA_ID)
    })?;
    let (method, notify) = method_notifying(aml, button.name)?;
    let power_button = last_and_mask(aml, method.body.start, notify)?;
    let field = first_field_read(aml, method.body.start, notify)?;
    let region = operation_region(aml, field.region)?;
    let events = Register {
        space: region.space,
        address: region.offset.checked_add(u64::from(field.bit_offset / 8))?,
        bits: field.bits,
    };
    Some(Ged { interrupt, events, power_button })
}

/// A table's length field, checked against the bytes there are.
fn table_length(table: &[u8]) -> Option<usize> {
    let length = u32::from_le_bytes(table.get(4..8)?.try_into().ok()?) as usize;
    (HEADER..=table.len()).contains(&length).then_some(length)
}

/// `start..end` in the table, after an opcode's PkgLength.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    fn contains(self, at: usize) -> bool {
        (self.start..self.end).contains(&at)
    }
}

/// A `Device` or `Method`: its name's last segment and its body.
#[derive(Debug, Clone, Copy)]
struct Scope {
    name: [u8; 4],
    /// From the name to the end of the PkgLength's extent.
    body: Span,
}

/// A `_HID` value: a string, or an integer (a compressed EISA ID).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hid<'a> {
    String(&'a [u8]),
    Integer(u64),
}

/// Every object opened by `prefix` (`[EXT_PREFIX, DEVICE]`, or `[METHOD]`) whose PkgLength and
/// name read well and whose extent lies inside the table.
fn scopes<'a>(aml: &'a [u8], prefix: &'a [u8]) -> impl Iterator<Item = Scope> + 'a {
    let mut at = HEADER;
    core::iter::from_fn(move || {
        while let Some(found) = find(aml, at, prefix) {
            at = found + 1;
            let length_at = found + prefix.len();
            let Some((length, used)) = pkg_length(aml, length_at) else { continue };
            let end = length_at + length;
            let name_at = length_at + used;
            let Some((Some(name), _)) = name_string(aml, name_at) else { continue };
            if end > aml.len() || name_at >= end {
                continue;
            }
            return Some(Scope { name, body: Span { start: name_at, end } });
        }
        None
    })
}

/// The innermost device whose body holds `at`.
fn innermost_device(aml: &[u8], at: usize) -> Option<Scope> {
    scopes(aml, &[op::EXT_PREFIX, op::DEVICE])
        .filter(|device| device.body.contains(at))
        .min_by_key(|device| device.body.end - device.body.start)
}

/// The device whose own `_HID` satisfies `wanted`.
fn device_with_hid(aml: &[u8], wanted: impl Fn(Hid) -> bool) -> Option<Scope> {
    let mut at = HEADER;
    while let Some(found) = find(aml, at, b"_HID") {
        at = found + 1;
        if aml[found - 1] != op::NAME {
            continue;
        }
        let value = found + 4;
        let hid = match aml.get(value) {
            Some(&op::STRING_PREFIX) => {
                let text = aml.get(value + 1..)?;
                let end = text.iter().position(|&b| b == 0)?;
                Hid::String(&text[..end])
            }
            _ => match integer(aml, value) {
                Some((number, _)) => Hid::Integer(number),
                None => continue,
            },
        };
        if wanted(hid) {
            return innermost_device(aml, found);
        }
    }
    None
}

/// The first interrupt in the device's `_CRS` resource template.
fn first_interrupt(aml: &[u8], device: Scope) -> Option<Interrupt> {
    let mut at = device.body.start;
    while let Some(found) = find(aml, at, b"_CRS") {
        at = found + 1;
        if !device.body.contains(found) || aml[found - 1] != op::NAME {
            if found >= device.body.end {
                return None;
            }
            continue;
        }
        // BufferOp PkgLength BufferSize <resource descriptors>
        if aml.get(found + 4) != Some(&op::BUFFER) {
            continue;
        }
        let (length, used) = pkg_length(aml, found + 5)?;
        let end = (found + 5).checked_add(length)?.min(aml.len());
        let (_, size_end) = integer(aml, found + 5 + used)?;
        return interrupt_in(aml.get(size_end..end)?);
    }
    None
}

/// Resource descriptor tags (ACPI 6.5, 6.4).
mod resource {
    /// Small descriptor type IRQ (bits 3-6 of the tag).
    pub const IRQ: u8 = 0x04;
    /// Small descriptor type End Tag.
    pub const END: u8 = 0x0F;
    /// Large descriptor type Extended Interrupt (bits 0-6 of the tag).
    pub const EXTENDED_INTERRUPT: u8 = 0x09;
    /// Large: bit 7 of the tag.
    pub const LARGE: u8 = 0x80;
    /// Interrupt flags: bit 1 edge (IRQ: bit 0), bit 2 active low (IRQ: bit 3).
    pub const EXTENDED_EDGE: u8 = 1 << 1;
    pub const EXTENDED_ACTIVE_LOW: u8 = 1 << 2;
    pub const IRQ_EDGE: u8 = 1 << 0;
    pub const IRQ_ACTIVE_LOW: u8 = 1 << 3;
}

/// The first interrupt in a resource template.
fn interrupt_in(template: &[u8]) -> Option<Interrupt> {
    let mut at = 0;
    while let Some(&tag) = template.get(at) {
        if tag & resource::LARGE != 0 {
            let length = u16::from_le_bytes(template.get(at + 1..at + 3)?.try_into().ok()?);
            let data = template.get(at + 3..at + 3 + length as usize)?;
            if tag & !resource::LARGE == resource::EXTENDED_INTERRUPT && data.len() >= 6 {
                // Flags, the count of interrupts, then each as a 32-bit number.
                let flags = data[0];
                return Some(Interrupt {
                    gsi: u32::from_le_bytes(data[2..6].try_into().ok()?),
                    level: flags & resource::EXTENDED_EDGE == 0,
                    active_low: flags & resource::EXTENDED_ACTIVE_LOW != 0,
                });
            }
            at += 3 + length as usize;
        } else {
            let kind = (tag >> 3) & 0x0F;
            let length = (tag & 0x07) as usize;
            let data = template.get(at + 1..at + 1 + length)?;
            match kind {
                resource::END => return None,
                resource::IRQ if length >= 2 => {
                    let mask = u16::from_le_bytes([data[0], data[1]]);
                    // No flags byte: edge triggered, active high.
                    let flags = data.get(2).copied().unwrap_or(resource::IRQ_EDGE);
                    return (mask != 0).then(|| Interrupt {
                        gsi: mask.trailing_zeros(),
                        level: flags & resource::IRQ_EDGE == 0,
                        active_low: flags & resource::IRQ_ACTIVE_LOW != 0,
                    });
                }
                _ => {}
            }
            at += 1 + length;
        }
    }
    None
}

/// The method holding `Notify (<name>, 0x80)`, and where that Notify is.
fn method_notifying(aml: &[u8], name: [u8; 4]) -> Option<(Scope, usize)> {
    let mut at = HEADER;
    while let Some(found) = find(aml, at, &[op::NOTIFY]) {
        at = found + 1;
        let Some((Some(target), end)) = name_string(aml, found + 1) else { continue };
        if target != name || integer(aml, end).map(|(v, _)| v) != Some(POWER_BUTTON_PRESSED) {
            continue;
        }
        let method = scopes(aml, &[op::METHOD])
            .filter(|method| method.body.contains(found))
            .min_by_key(|method| method.body.end - method.body.start);
        if let Some(method) = method {
            return Some((method, found));
        }
    }
    None
}

/// The constant operand of the last `And` in `start..end` whose operands read well.
fn last_and_mask(aml: &[u8], start: usize, end: usize) -> Option<u32> {
    let mut mask = None;
    let mut at = start;
    while let Some(found) = find(aml.get(..end)?, at, &[op::AND]) {
        at = found + 1;
        let Some((first, next)) = operand(aml, found + 1) else { continue };
        let Some((second, _)) = operand(aml, next) else { continue };
        if let Some(value) = first.or(second) {
            mask = u32::try_from(value).ok().filter(|&m| m != 0).or(mask);
        }
    }
    mask
}

/// An `And` operand: a local, an argument or a name (`None`), or a constant (`Some`).
fn operand(aml: &[u8], at: usize) -> Option<(Option<u64>, usize)> {
    match *aml.get(at)? {
        op::LOCAL0..=op::ARG6 => Some((None, at + 1)),
        _ => match integer(aml, at) {
            Some((value, end)) => Some((Some(value), end)),
            None => name_string(aml, at).map(|(_, end)| (None, end)),
        },
    }
}

/// A named field of a `Field`: its region, bit offset and width.
#[derive(Debug, Clone, Copy)]
struct FieldUnit {
    region: [u8; 4],
    bit_offset: u32,
    bits: u8,
}

/// The first field of an operation region (8, 16 or 32 bits, byte aligned) that the code in
/// `start..end` reads: the source of a `Store` (`Local0 = ESEL`) or an operand of an `And`.
/// Only those names are looked up, each with one pass over the table: where the guest's code
/// is emulated instruction by instruction (SeaBIOS and this kernel under this machine's KVM),
/// looking up every name-like run of bytes took seconds.
fn first_field_read(aml: &[u8], start: usize, end: usize) -> Option<FieldUnit> {
    let code = aml.get(..end)?;
    let mut at = start;
    while at < end {
        let read = match code[at] {
            op::STORE => name_string(code, at + 1).and_then(|(name, _)| name),
            op::AND => name_string(code, at + 1).and_then(|(name, _)| name),
            _ => None,
        };
        if let Some(unit) = read.and_then(|name| field(aml, name)) {
            return Some(unit);
        }
        at += 1;
    }
    None
}

/// The declaration of field `name` in any `Field (Region, Flags) { ... }` of the table.
fn field(aml: &[u8], name: [u8; 4]) -> Option<FieldUnit> {
    let mut at = HEADER;
    while let Some(found) = find(aml, at, &[op::EXT_PREFIX, op::FIELD]) {
        at = found + 1;
        let Some((length, used)) = pkg_length(aml, found + 2) else { continue };
        let end = (found + 2 + length).min(aml.len());
        let Some((Some(region), flags_at)) = name_string(aml, found + 2 + used) else { continue };
        let mut entry = flags_at + 1;
        let mut bit_offset: u32 = 0;
        while entry < end {
            match aml[entry] {
                // ReservedField: skip the bits.
                0x00 => {
                    let (bits, used) = pkg_length(aml, entry + 1)?;
                    bit_offset = bit_offset.checked_add(bits as u32)?;
                    entry += 1 + used;
                }
                // AccessField (type, attribute), ExtendedAccessField (three bytes).
                0x01 => entry += 3,
                0x03 => entry += 4,
                // ConnectField: not in a GED's fields; stop reading this Field.
                0x02 => break,
                _ => {
                    let seg: [u8; 4] = aml.get(entry..entry + 4)?.try_into().ok()?;
                    name_seg(seg)?;
                    let (bits, used) = pkg_length(aml, entry + 4)?;
                    if seg == name {
                        let aligned = bit_offset % 8 == 0;
                        return (aligned && matches!(bits, 8 | 16 | 32)).then_some(FieldUnit {
                            region,
                            bit_offset,
                            bits: bits as u8,
                        });
                    }
                    bit_offset = bit_offset.checked_add(bits as u32)?;
                    entry += 4 + used;
                }
            }
        }
    }
    None
}

/// An `OperationRegion (Name, Space, Offset, Length)`.
struct Region {
    space: u8,
    offset: u64,
}

fn operation_region(aml: &[u8], name: [u8; 4]) -> Option<Region> {
    let mut at = HEADER;
    while let Some(found) = find(aml, at, &[op::EXT_PREFIX, op::OP_REGION]) {
        at = found + 1;
        let Some((Some(region), space_at)) = name_string(aml, found + 2) else { continue };
        if region != name {
            continue;
        }
        let space = *aml.get(space_at)?;
        let (offset, _) = integer(aml, space_at + 1)?;
        return matches!(space, SYSTEM_MEMORY | SYSTEM_IO).then_some(Region { space, offset });
    }
    None
}

/// A PkgLength at `at`: the length it encodes (counting its own bytes) and how many bytes it
/// takes (ACPI 6.5, 20.2.4).
fn pkg_length(aml: &[u8], at: usize) -> Option<(usize, usize)> {
    let lead = *aml.get(at)?;
    let follow = (lead >> 6) as usize;
    if follow == 0 {
        return Some(((lead & 0x3F) as usize, 1));
    }
    let mut length = (lead & 0x0F) as usize;
    for i in 0..follow {
        length |= (*aml.get(at + 1 + i)? as usize) << (4 + 8 * i);
    }
    Some((length, 1 + follow))
}

/// A NameString at `at`: its last segment (`None` for NullName) and where it ends.
fn name_string(aml: &[u8], at: usize) -> Option<(Option<[u8; 4]>, usize)> {
    let mut at = at;
    if aml.get(at) == Some(&op::ROOT_CHAR) {
        at += 1;
    } else {
        while aml.get(at) == Some(&op::PARENT_PREFIX) {
            at += 1;
        }
    }
    let segments = match *aml.get(at)? {
        0 => return Some((None, at + 1)),
        op::DUAL_NAME_PREFIX => {
            at += 1;
            2
        }
        op::MULTI_NAME_PREFIX => {
            at += 2;
            *aml.get(at - 1)? as usize
        }
        _ => 1,
    };
    if segments == 0 {
        return None;
    }
    let mut last = [0; 4];
    for _ in 0..segments {
        last = name_seg(aml.get(at..at + 4)?.try_into().ok()?)?;
        at += 4;
    }
    Some((Some(last), at))
}

/// A NameSeg: a letter or `_`, then letters, digits or `_`.
fn name_seg(seg: [u8; 4]) -> Option<[u8; 4]> {
    let lead = seg[0].is_ascii_uppercase() || seg[0] == b'_';
    let rest = seg[1..].iter().all(|&c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_');
    (lead && rest).then_some(seg)
}

/// A constant integer at `at` (ZeroOp, OneOp, OnesOp or a prefixed number) and where it ends.
fn integer(aml: &[u8], at: usize) -> Option<(u64, usize)> {
    let bytes = |n: usize| -> Option<(u64, usize)> {
        let raw = aml.get(at + 1..at + 1 + n)?;
        let value = raw.iter().rev().fold(0u64, |value, &b| value << 8 | u64::from(b));
        Some((value, at + 1 + n))
    };
    match *aml.get(at)? {
        op::ZERO => Some((0, at + 1)),
        op::ONE => Some((1, at + 1)),
        op::ONES => Some((u64::MAX, at + 1)),
        op::BYTE_PREFIX => bytes(1),
        op::WORD_PREFIX => bytes(2),
        op::DWORD_PREFIX => bytes(4),
        op::QWORD_PREFIX => bytes(8),
        _ => None,
    }
}

/// The first position at or after `from` where `needle` starts. The first byte is looked for
/// alone, the rest compared only where it matches: a few instructions a byte.
fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut at = from;
    while at + needle.len() <= haystack.len() {
        if haystack[at] == first && haystack[at + 1..at + needle.len()] == *rest {
            return Some(at);
        }
        at += 1;
    }
    None
}
