# Real-mode start-up shared by the boot sector and the ROM. Entered at 0000:real_mode_start with
# interrupts in any state and every other register untrusted; runs on into `vm_main` (each image
# defines its own) with flat segments, a stack below 0x7C00 and the direction flag clear.
#
# "Unreal mode": the Rust code is compiled as 32-bit code running in real mode (LLVM's code16), so
# its pointers are 32-bit linear addresses. A data segment with base 0 and a 4 GiB limit lets them
# reach anything (the ACPI tables live near the top of RAM, the BIOS area at 0xE0000). Real mode
# keeps a segment's hidden limit when DS/ES are reloaded, so we load the limit once through a
# protected-mode descriptor and come straight back. BIOS calls may reset it later: code that walks
# memory above 64 KiB runs before the first one, with interrupts off.

.section .start, "ax"
.code16
.global real_mode_start
real_mode_start:
    cli                         # no interrupt until the segments and the stack are ours
    cld                         # string instructions count upwards
    xor cx, cx
    mov ss, cx                  # stack segment 0 ...
    mov esp, 0x7C00             # ... and all 32 bits of ESP: grows down from the boot sector
    mov ds, cx                  # LGDT reads its operand through DS
    lgdt [gdt]
    mov eax, cr0
    or al, 1                    # CR0.PE: protected mode, just long enough to load a descriptor
    mov cr0, eax
    mov bx, offset FLAT_DATA    # selector of the flat descriptor
    mov ds, bx                  # DS and ES now cache base 0, limit 4 GiB
    mov es, bx
    and al, 0xFE                # back to real mode; the cached limits stay
    mov cr0, eax
    mov ds, cx                  # selector 0 again: base 0, and the 4 GiB limit is kept
    mov es, cx
    # Falls through into `vm_main`: each image's linker script places it right here (and
    # asserts so), which saves a 3-byte jump.

# The GDT, with the constants: its null entry (never used by the CPU) doubles as the 6-byte
# LGDT operand.
.section .rodata.gdt, "a"
gdt:
    .word gdt_end - gdt - 1     # limit: size of the table minus one
    .long gdt                   # linear base of the table
    .word 0
# Flat 16-bit data segment: base 0, limit 0xFFFFF in 4 KiB pages (G=1), present, ring 0, writable.
.set FLAT_DATA, . - gdt
    .quad 0x008F92000000FFFF
gdt_end:
