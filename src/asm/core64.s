# The 64-bit core's interrupt handlers. Waking `hlt` is an interrupt's whole job: the idle loop
# looks at what happened. The 8259s run in auto-EOI mode (see `pic.rs`); an interrupt from the
# I/O APIC is in service at the local APIC until it is ended, so that one is ended here.

.text
.code64

# NMI, and the local APIC's spurious vector (0xFF), which must not be ended: return at once.
.global vm512_interrupt_return
vm512_interrupt_return:
    iretq

# Every device interrupt (vectors 0x20-0xFE): end it at the local APIC (EOI register, 0xFEE000B0,
# the default base every VMM keeps; writing it where nothing is in service, as for the 8259's
# interrupts, does nothing), then return with interrupts still off (IF cleared in the saved
# RFLAGS, at [rsp + 24] below the pushed RAX). Interrupts are only ever on for the idle loop's
# `sti; hlt`, and the loop turns them off right after, so nothing else changes; but a level-
# triggered line (a PCI card's INTx, the SCI) is still high until the loop has looked at its
# device, and the I/O APIC (or an 8259 in level mode) sends it again at once: returning with
# interrupts on would take it again before the loop ever ran, forever.
.global vm512_interrupt_end
vm512_interrupt_end:
    push rax
    mov eax, 0xFEE000B0
    mov dword ptr [rax], 0
    and dword ptr [rsp + 24], ~0x200
    pop rax
    iretq

# Every CPU exception: nothing on this path raises one on purpose, so stop quietly (as the
# panic handler does), interrupts off.
.global vm512_exception_halt
vm512_exception_halt:
    cli
    hlt
    jmp vm512_exception_halt
