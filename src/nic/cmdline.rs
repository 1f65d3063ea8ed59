//! The virtio-mmio devices a kernel command line names: `virtio_mmio.device=SIZE@ADDR:IRQ`
//! (Linux's `drivers/virtio/virtio_mmio.c` syntax: SIZE with an optional K, M or G suffix,
//! numbers in decimal or `0x` hexadecimal, an optional `:ID` after the IRQ, ignored). What
//! Firecracker, and QEMU `microvm` with `acpi=off`, tell a kernel. Pure code over bytes, so
//! the host tests run it on generated input (`xtask/src/tests/cmdline.rs`).

/// The parameter's name, with its `=`.
const PARAMETER: &[u8] = b"virtio_mmio.device=";

/// One device: its registers' window and its interrupt (a GSI; edge triggered, active high).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioDevice {
    pub address: u64,
    pub size: u64,
    pub irq: u32,
}

/// Every device `cmdline` names, in order; words that do not read well are skipped.
pub fn virtio_mmio_devices(cmdline: &[u8]) -> impl Iterator<Item = MmioDevice> + '_ {
    cmdline
        .split(|&b| b == b' ' || b == b'\t' || b == b'\n' || b == 0)
        .filter_map(|word| device(word.strip_prefix(PARAMETER)?))
}

/// `SIZE@ADDR:IRQ[:ID]`.
fn device(value: &[u8]) -> Option<MmioDevice> {
    let (size, rest) = number(value)?;
    let (multiplier, rest) = match rest.first() {
        Some(b'K' | b'k') => (1 << 10, &rest[1..]),
        Some(b'M' | b'm') => (1 << 20, &rest[1..]),
        Some(b'G' | b'g') => (1 << 30, &rest[1..]),
        _ => (1, rest),
    };
    let size = size.checked_mul(multiplier).filter(|&size| size != 0)?;
    let (address, rest) = number(rest.strip_prefix(b"@")?)?;
    let (irq, rest) = number(rest.strip_prefix(b":")?)?;
    if !(rest.is_empty() || rest[0] == b':') || address.checked_add(size).is_none() {
        return None;
    }
    Some(MmioDevice { address, size, irq: u32::try_from(irq).ok()? })
}

/// A number at the start of `text` (`0x` hexadecimal, else decimal) and what follows it.
fn number(text: &[u8]) -> Option<(u64, &[u8])> {
    let (radix, digits) = match text {
        [b'0', b'x' | b'X', rest @ ..] => (16, rest),
        _ => (10, text),
    };
    let mut value: u64 = 0;
    let mut used = 0;
    for &byte in digits {
        let Some(digit) = (byte as char).to_digit(radix) else { break };
        value = value.checked_mul(u64::from(radix))?.checked_add(u64::from(digit))?;
        used += 1;
    }
    (used > 0).then(|| (value, &digits[used..]))
}
