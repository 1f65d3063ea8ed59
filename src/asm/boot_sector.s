# Boot-sector entry. The BIOS jumps here with CS:IP = 0000:7C00 (SeaBIOS for disks) or
# 07C0:0000 (many BIOSes, and El Torito CD boot): the far jump makes it 0000:7C05 either way, so
# absolute addresses linked at 0x7C00 are right from here on.

.section .boot, "ax"
.code16
.global _start
_start:
    ljmp 0, offset real_mode_start   # EA off16 seg16: reload CS with 0; lands right behind
