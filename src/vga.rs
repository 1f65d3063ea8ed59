//! The VGA text screen: 80 x 25 cells at 0xB8000, a character and an attribute byte each. The PVH
//! image writes its line there itself (no BIOS call reaches it in long mode) where the firmware
//! left a text screen (QEMU `pc` and `q35`: SeaBIOS runs before a `-kernel`).

use crate::port::inb;

/// The text buffer.
const TEXT: usize = 0xB_8000;
pub const COLUMNS: usize = 80;
pub const ROWS: usize = 25;
/// Light grey on black.
const ATTRIBUTE: u8 = 0x07;
/// The miscellaneous output register (read port): all ones where no VGA decodes it.
const MISC_OUTPUT_READ: u16 = 0x3CC;
/// The BIOS data area's cursor row of page 0, where a BIOS left it.
const BDA_CURSOR_ROW: usize = 0x451;

/// Whether a VGA answers at its I/O ports.
pub fn present() -> bool {
    // SAFETY: reading the miscellaneous output register has no side effect.
    let misc = unsafe { inb(MISC_OUTPUT_READ) };
    misc != 0xFF && misc != 0x00
}

/// A cursor on the text screen.
pub struct Screen {
    row: usize,
    column: usize,
}

impl Screen {
    /// On the row below the one the BIOS left its cursor on (the last row if that is off the
    /// screen): the BIOS's own lines stay.
    pub fn below_the_bios() -> Screen {
        // SAFETY: the BIOS data area, which a BIOS filled; any value is handled below.
        let row = unsafe { core::ptr::with_exposed_provenance::<u8>(BDA_CURSOR_ROW).read() };
        Screen { row: (row as usize + 1).min(ROWS - 1), column: 0 }
    }

    /// Shows `byte`: CR and LF move the cursor, anything else fills the next cell.
    pub fn put(&mut self, byte: u8) {
        match byte {
            b'\r' => self.column = 0,
            b'\n' => self.row = (self.row + 1).min(ROWS - 1),
            _ if self.column < COLUMNS => {
                let cell = TEXT + 2 * (self.row * COLUMNS + self.column);
                let value = u16::from(byte) | u16::from(ATTRIBUTE) << 8;
                // SAFETY: a cell of the text buffer, inside the screen.
                unsafe {
                    core::ptr::with_exposed_provenance_mut::<u16>(cell).write_volatile(value)
                };
                self.column += 1;
            }
            _ => {}
        }
    }
}
