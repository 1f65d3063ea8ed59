# The UEFI program's interrupt handlers, in long mode. The 8259s run in auto-EOI mode (see
# `pic.rs`), so an interrupt needs no acknowledgement: waking `hlt` was its whole job.

.text
.code64

# Every interrupt (IRQ 0-15 from the 8259s, a spurious one from either PIC or the local APIC):
# return at once; the idle loop looks at what happened.
.global vm512_interrupt_return
vm512_interrupt_return:
    iretq

# Every CPU exception: nothing on this path raises one on purpose, so stop quietly (as the
# panic handler does), interrupts off.
.global vm512_exception_halt
vm512_exception_halt:
    cli
    hlt
    jmp vm512_exception_halt
