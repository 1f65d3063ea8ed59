# The PVH entry: what the VMM jumps to, and the step from there into 64-bit Rust.
#
# A PVH boot (Xen's "HVM direct boot" ABI, which QEMU `-kernel`, Cloud Hypervisor and Firecracker
# implement) loads this ELF's segments at their physical addresses and enters at the address in
# the XEN_ELFNOTE_PHYS32_ENTRY note below: 32-bit protected mode, flat 4 GiB segments, paging
# off, interrupts off, EBX = the physical address of `hvm_start_info` (see `pvh/start_info.rs`).
# No stack is given. The stub clears .bss, builds identity page tables for the first 4 GiB
# (2 MiB pages), enters long mode and calls `pvh_main(start_info)`.

# The note the VMM looks for (ELF note: name size, descriptor size, type, name, descriptor).
.section .note.Xen, "a", @note
    .balign 4
    .long 4                     # name size: "Xen\0"
    .long 4                     # descriptor size: one 32-bit address
    .long 18                    # XEN_ELFNOTE_PHYS32_ENTRY
    .asciz "Xen"
    .long vm512_pvh_start       # the 32-bit entry point

.section .text.pvh, "ax"
.code32
.global vm512_pvh_start
vm512_pvh_start:
    cli
    cld
    mov esi, ebx                # keep hvm_start_info's address through the set-up
    mov esp, offset vm512_stack_top   # no stack is given: ours, before the first push

    # The line on COM1 first, before any set-up: it is what a harness waits for, and here it
    # costs as little as it can (under this machine's KVM every instruction before it counts).
    # COM1's set-up is `serial::INIT`'s table of (port's low byte, value) pairs, every register
    # at 0x3F8-0x3FF; then CR LF and the message area as `message::for_each_byte` reads it (zero
    # bytes skipped, the first byte with bit 7 set ends it), each byte sent once the transmitter
    # is empty (LSR bit 5; with no UART the port reads 0xFF: no wait). The core prints no line
    # of its own for this entry (`Reach::LINE_PRINTED`).
    mov edx, 0x300
    mov ebx, offset {serial_init}
    mov ecx, 7
1:
    mov dl, [ebx]
    mov al, [ebx + 1]
    out dx, al
    add ebx, 2
    loop 1b
    mov al, 0x0D
    call vm512_pvh_com1_write
    mov al, 0x0A
    call vm512_pvh_com1_write
    mov ebx, offset __message
2:
    mov al, [ebx]
    inc ebx
    test al, 0x80
    jnz 3f
    test al, al
    jz 2b
    call vm512_pvh_com1_write
    jmp 2b
3:

    # Zero .bss (the page tables that must start empty, and Rust's zeroed statics): a VMM need
    # not clear it. A plain loop, 4 bytes at a time: under this machine's KVM a string
    # instruction is emulated one iteration at a time, and `rep stosb` over 52 KiB cost 23 ms
    # before the line. The page directories (written whole below) and the stack are not cleared.
    mov edi, offset __bss_start
    xor eax, eax
4:
    mov [edi], eax
    add edi, 4
    cmp edi, offset __bss_end
    jb 4b

    # Four page directories, 512 entries each, map 0-4 GiB one to one in 2 MiB pages: present,
    # writable, accessed, dirty, page size (0xE3; accessed and dirty set, so the CPU never writes
    # them back). The last GiB (the APICs, the GED, PCI holes) is uncached too (PCD | PWT: 0xFB):
    # it is device memory. Both halves of each entry are written: nothing cleared them.
    mov edi, offset vm512_page_directories
    mov eax, 0xE3
    xor ecx, ecx
5:
    cmp ecx, 3 * 512
    jne 6f
    or eax, 0x18
6:
    mov [edi + ecx * 8], eax
    mov dword ptr [edi + ecx * 8 + 4], 0
    add eax, 0x200000
    inc ecx
    cmp ecx, 4 * 512
    jne 5b

    # The page-directory-pointer table: its first four entries point at the directories
    # (present, writable, accessed).
    mov edi, offset vm512_page_directory_pointers
    mov eax, offset vm512_page_directories
    or eax, 0x23
    xor ecx, ecx
7:
    mov [edi + ecx * 8], eax
    add eax, 0x1000
    inc ecx
    cmp ecx, 4
    jne 7b

    # The top level (PML4): its first entry covers the first 512 GiB.
    mov eax, offset vm512_page_directory_pointers
    or eax, 0x23
    mov [vm512_page_map_level4], eax

    # Long mode: CR4.PAE, CR3 = the PML4, EFER.LME (MSR 0xC0000080, bit 8), then CR0.PG.
    mov eax, cr4
    or eax, 1 << 5
    mov cr4, eax
    mov eax, offset vm512_page_map_level4
    mov cr3, eax
    mov ecx, 0xC0000080
    rdmsr
    or eax, 1 << 8
    wrmsr
    # CR0: paging on (PG, bit 31), and caching on: CD (bit 30) and NW (bit 29) cleared, in case
    # a VMM enters with them as the CPU leaves them at reset (the PVH ABI does not say).
    mov eax, cr0
    or eax, 1 << 31
    and eax, ~(3 << 29)
    mov cr0, eax

    # A GDT with a 64-bit code segment, then a far return into it (CS = 0x08).
    lgdt [vm512_gdt_pointer]
    mov eax, offset vm512_pvh_long_mode
    push 0x08
    push eax
    retf

# Sends AL on COM1 once its transmitter is empty (32-bit code; DX, the flags clobbered).
vm512_pvh_com1_write:
    push eax
    mov dx, 0x3FD               # the line status register
8:
    in al, dx
    test al, 0x20
    jz 8b
    pop eax
    mov dl, 0xF8                # the data register, 0x3F8
    out dx, al
    ret

.code64
vm512_pvh_long_mode:
    # Data segments: the flat data descriptor (0x10); in long mode only SS must be valid.
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov edi, esi                # pvh_main(start_info): the first argument
    call pvh_main
6:
    cli
    hlt
    jmp 6b

.section .rodata.pvh, "a"
.balign 8
vm512_gdt:
    .quad 0                     # the null descriptor
    .quad 0x00AF9A000000FFFF    # 0x08: code, 64-bit (L), present, ring 0
    .quad 0x00CF92000000FFFF    # 0x10: data, present, writable, 4 GiB
vm512_gdt_pointer:
    .word 3 * 8 - 1             # limit
    .quad vm512_gdt             # base (the 32-bit LGDT reads its low 4 bytes)

.section .bss.pvh, "aw", @nobits
.balign 4096
.global vm512_page_map_level4
vm512_page_map_level4:
    .skip 4096
.global vm512_page_directory_pointers
vm512_page_directory_pointers:
    .skip 4096
# One more pointer table and directory, for device registers above 4 GiB (`pvh/paging.rs`).
.global vm512_spare_page_directory_pointers
vm512_spare_page_directory_pointers:
    .skip 4096
.global vm512_spare_page_directory
vm512_spare_page_directory:
    .skip 4096

# Written whole before use, so never cleared (`pvh.ld` puts them after __bss_end).
.section .pvh.uncleared, "aw", @nobits
.balign 4096
vm512_page_directories:
    .skip 4 * 4096
vm512_stack:
    .skip {stack_size}
vm512_stack_top:
