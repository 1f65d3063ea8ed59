# The net family's BIOS loader: sector 0 of its disks, and the first sector of its CD's boot
# image. The BIOS runs it at 0000:7C00 (or 07C0:0000) in real mode with DL = the boot drive. It
# brings the program (the net PVH kernel, an ELF linked at 1 MiB) into low memory, switches to
# 32-bit protected mode, copies the program to its load address and enters it as a PVH loader
# would: flat 4 GiB segments, paging and interrupts off, EBX = an `hvm_start_info`. From there
# the program's own stub (`asm/pvh.s`) and the 64-bit core run as under QEMU `-kernel`.
#
# Where the program comes from (`cargo xtask image` writes the numbers below, `loader_*`):
# - on a disk, `loader_sectors` 512-byte sectors from LBA `loader_lba` (the BIOS boot partition,
#   GPT type 21686148-6449-6E6F-744E-656564454649), read with the INT 13h extensions (AH=42h)
#   into 1000:0000 in chunks of 64 sectors;
# - on the CD, `loader_sectors` is 0: the El Torito entry has already loaded the whole boot
#   image, this sector and the program behind it at 0x7E00.
# A failure prints one line through INT 10h (the screen) and INT 14h (COM1) and halts.

.section .loader, "ax"
.code16
.global _start
_start:
    ljmp 0, offset loader_flat_cs   # CS = 0, whatever segment the BIOS used
loader_flat_cs:
    cli
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, 0x7C00              # the stack grows down from this sector
    cld
    sti
    mov byte ptr [drive], dl

    # A20 on: the BIOS's own switch (INT 15h AX=2401h), then the fast gate (port 0x92, bit 1;
    # bit 0 would reset the machine).
    mov ax, 0x2401
    int 0x15
    in al, 0x92
    or al, 2
    and al, 0xFE
    out 0x92, al

    mov cx, word ptr [loader_sectors]
    jcxz 4f                     # the CD: already in memory
    mov ah, 0x41                # INT 13h AH=41h: are the extensions there?
    mov bx, 0x55AA
    mov dl, byte ptr [drive]
    int 0x13
    mov si, offset no_extensions
    jc fail
    cmp bx, 0xAA55
    jne fail
2:
    mov cx, word ptr [loader_sectors]
    jcxz 4f
    mov ax, 64                  # a chunk: 64 sectors (32 KiB), or what is left
    cmp cx, ax
    jae 3f
    mov ax, cx
3:
    mov word ptr [dap_count], ax
    sub word ptr [loader_sectors], ax
    mov si, offset dap
    mov ah, 0x42                # INT 13h AH=42h: extended read, DS:SI = the packet
    mov dl, byte ptr [drive]
    int 0x13
    mov si, offset read_failed
    jc fail
    mov ax, word ptr [dap_count]
    add word ptr [loader_lba], ax
    adc word ptr [loader_lba + 2], 0
    shl ax, 5                   # sectors to paragraphs (512 / 16)
    add word ptr [dap_segment], ax
    jmp 2b

4:
    # Protected mode, flat: copy the program up and enter it.
    cli
    lgdt [gdt_pointer]
    mov eax, cr0
    or al, 1                    # CR0.PE
    mov cr0, eax
    ljmp 0x08, offset loader_protected
.code32
loader_protected:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov esi, dword ptr [loader_source]
    mov edi, dword ptr [loader_load_address]
    mov ecx, dword ptr [loader_length]
    rep movsb
    mov ebx, offset start_info
    jmp dword ptr [loader_entry]

.code16
# Prints the NUL-terminated line at SI on the screen and COM1, then halts.
fail:
    mov ax, 0x00E3              # INT 14h AH=00h: COM1 at 9600 baud, 8N1
    xor dx, dx
    int 0x14
6:
    lodsb
    test al, al
    jz 7f
    push ax
    mov ah, 0x0E                # INT 10h AH=0Eh: teletype
    xor bx, bx
    int 0x10
    pop ax
    mov ah, 0x01                # INT 14h AH=01h: send AL on COM1
    xor dx, dx
    int 0x14
    jmp 6b
7:
    cli
    hlt
    jmp 7b

no_extensions:
    .asciz "512-byte-vm-net: no INT 13h extensions\r\n"
read_failed:
    .asciz "512-byte-vm-net: disk read failed\r\n"

.section .loader.data, "aw"
# What `cargo xtask image` fills in.
.global loader_sectors
.global loader_lba
.global loader_source
.global loader_load_address
.global loader_length
.global loader_entry
loader_source:       .long 0x10000     # where the program lies once read (0x7E00 on the CD)
loader_load_address: .long 0           # where it runs: its ELF's first byte's address
loader_length:       .long 0           # bytes to copy
loader_entry:        .long 0           # the PVH entry (the ELF note's address)
# The INT 13h extended read's disk address packet (size 16, count, buffer offset:segment, LBA).
dap:
    .byte 16, 0
dap_count:
    .word 0
    .word 0                     # buffer offset
dap_segment:
    .word 0x1000                # buffer segment: 1000:0000
loader_lba:
    .quad 0
loader_sectors:
    .word 0
drive:
    .byte 0

# A flat 4 GiB code segment (0x08) and data segment (0x10); the null descriptor's slot holds
# the LGDT operand. (No alignment anywhere: x86 needs none, and the bytes are few.)
loader_gdt:
gdt_pointer:
    .word loader_gdt_end - loader_gdt - 1
    .long loader_gdt
    .word 0
    .quad 0x00CF9A000000FFFF    # code: base 0, limit 4 GiB, 32-bit, execute/read
    .quad 0x00CF92000000FFFF    # data: base 0, limit 4 GiB, read/write
loader_gdt_end:

# `hvm_start_info` (version 1) and its memory map: no command line, no RSDP (the program finds
# it in the BIOS area), and the one range every PC has, conventional memory below the EBDA;
# 0xB8000 is not RAM there, so the program takes it for the text screen it is.
start_info:
    .long 0x336EC578            # XEN_HVM_START_MAGIC_VALUE
    .long 1                     # version
    .long 0                     # flags
    .long 0                     # nr_modules
    .quad 0                     # modlist_paddr
    .quad 0                     # cmdline_paddr
    .quad 0                     # rsdp_paddr
    .long memory_map, 0         # memmap_paddr
    .long 1                     # memmap_entries
    .long 0
memory_map:
    .quad 0                     # address
    .quad 0x9FC00               # size: 639 KiB
    .long 1                     # E820 type 1: RAM
    .long 0
