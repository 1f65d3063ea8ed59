# ROM entry. The CPU leaves reset in real mode at CS=F000 with a hidden base of 0xFFFF0000 and
# IP=FFF0: the last 16 bytes of the ROM. There is no BIOS, so no interrupt vector table, no stack
# and nothing in RAM yet.

# Reset vector: interrupts off, then a near jump, which keeps CS's base: still in the ROM.
.section .reset, "ax"
.code16
.global reset_vector
reset_vector:
    cli
    jmp rom_start

# Start-up, run in place from the ROM (position-independent: relative jumps only, data through
# DS=F000, the ROM's alias below 1 MiB).
.section .rom_start, "ax"
.code16
rom_start:
    cld
    xor ax, ax
    mov es, ax

    # Interrupt vector table at 0000:0000: all 256 vectors point to `interrupt_return`, so that
    # any interrupt (the timer the ROM programs, a spurious IRQ, an NMI) just resumes the code.
    xor di, di
    mov eax, offset interrupt_return    # segment 0 in the high half, offset in the low half
    mov cx, 256
    rep stosd

    # Copy the payload from the ROM (F000:__payload_rom_offset) to 0000:7C00, where it was
    # linked to run, as a BIOS would have loaded a boot sector.
    mov ax, 0xF000
    mov ds, ax
    mov si, offset __payload_rom_offset
    mov di, 0x7C00
    mov cx, offset __payload_size
    rep movsb

    ljmp 0, offset real_mode_start      # the shared start-up (asm/start.s), now in RAM

# The one interrupt handler: return at once. The PIC runs in auto-EOI mode (rom/pic.rs), so no
# end-of-interrupt command is needed. Copied to RAM with the payload.
.section .text.interrupt_return, "ax"
.code16
interrupt_return:
    iret
