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

    # Zero .bss (the page tables and the stack live there): a VMM need not clear it.
    mov edi, offset __bss_start
    mov ecx, offset __bss_end
    sub ecx, edi
    xor eax, eax
    rep stosb

    # Four page directories, 512 entries each, map 0-4 GiB one to one in 2 MiB pages: present,
    # writable, page size (0x83). The last GiB (the APICs, the GED, PCI holes) is uncached too
    # (PCD | PWT: 0x9B): it is device memory.
    mov edi, offset vm512_page_directories
    mov eax, 0xE3
    xor ecx, ecx
2:
    cmp ecx, 3 * 512
    jne 3f
    or eax, 0x18
3:
    mov [edi + ecx * 8], eax
    add eax, 0x200000
    inc ecx
    cmp ecx, 4 * 512
    jne 2b

    # The page-directory-pointer table: its first four entries point at the directories
    # (present, writable).
    mov edi, offset vm512_page_directory_pointers
    mov eax, offset vm512_page_directories
    or eax, 0x23
    xor ecx, ecx
4:
    mov [edi + ecx * 8], eax
    add eax, 0x1000
    inc ecx
    cmp ecx, 4
    jne 4b

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
vm512_page_directories:
    .skip 4 * 4096
# One more pointer table and directory, for device registers above 4 GiB (`pvh/paging.rs`).
.global vm512_spare_page_directory_pointers
vm512_spare_page_directory_pointers:
    .skip 4096
.global vm512_spare_page_directory
vm512_spare_page_directory:
    .skip 4096
vm512_stack:
    .skip 16 * 1024
vm512_stack_top:
