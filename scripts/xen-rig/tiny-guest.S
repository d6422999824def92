/*
 * tiny-guest: a PVH guest of a few hundred bytes for the rig's fault-back-to-back scenario
 * (ten guests created and powered off one after the other through `pvh-dm create`, then two
 * at once). A Linux guest costs ~25 s of TCG per boot; this one runs in well under a second,
 * yet walks the same lifecycle through the device models:
 *   1. reads the vendor/device ID of guest 00:01.0 through the bridge's ECAM window
 *      (pci-host-bridge answers; for a passed-through VF these are the VF's IDs);
 *   2. places BAR0 in the bridge's MMIO window (no firmware ran), sets Memory Space in COMMAND (the bridge maps the
 *      BAR with XEN_DOMCTL_memory_mapping), reads the device's first register through that
 *      mapping (the guest's own view of the real device: NVMe CAP low dword), clears Memory
 *      Space again (the bridge unmaps);
 *   3. with a command line starting with 'w': polls PM1a_STS until PWRBTN_STS (pm-trap's
 *      power button) and clears it;
 *   4. writes SLP_TYP(S5) | SLP_EN to PM1a_CNT: pm-trap asks Xen to power the guest off.
 * Every step prints one line on Xen's debug console port 0xE9 (hvm_print_line,
 * xen/arch/x86/hvm/hvm.c:545-573 in 4.17, registered for every HVM domain, PVH included, at
 * hvm.c:665; printed with XENLOG_G_DEBUG, which the rig's guest_loglvl=all lets through), so
 * `xl dmesg` shows "(dN) RIG-TINY ...".
 *
 * Built by scripts/xen-rig/run with `as --32` and `ld -m elf_i386`; no libc, no stack use
 * beyond the one below, no interrupts.
 *
 * PVH entry (xen/include/public/arch-x86/hvm/start_info.h in 4.17): 32-bit protected mode,
 * paging off, flat 4 GiB CS/DS/ES/SS, interrupts off, %ebx = the start_info's physical
 * address (unused here).
 */

        .set DEBUGCON,  0xe9            /* XEN_HVM_DEBUGCONS_IOPORT (xen/include/public/arch-x86/xen.h) */
        /* guest 00:01.0 in the bridge's ECAM window: pci-host-bridge's DEFAULT_ECAM_BASE
         * (0xF0000000, pci-host-bridge/src/config.rs) + device 1 << 15 (PCIe Base 6.0,
         * 7.2.2 "PCI Express Enhanced Configuration Access Mechanism") */
        .set ECAM_FN,   0xf0008000
        /* where BAR0 goes: inside the bridge's 32-bit MMIO window (0xF1000000-0xFBFFFFFF by
         * default, pci-host-bridge/src/config.rs) and aligned to 64 MiB, so any BAR up to
         * that size is naturally aligned there */
        .set BAR_BASE,  0xf4000000
        .set LAPIC,     0xfee00000      /* the local APIC's default base (Intel SDM vol. 3A, 11.4.1) */
        .set TICK_VECTOR, 0x20
        .set TICK_MS,   50
        /* Xen's virtual APIC timer counts every APIC_BUS_CYCLE_NS = 10 ns times the divisor
         * (xen/arch/x86/include/asm/hvm/vlapic.h:95, vlapic.c:576 in 4.17) */
        .set TICK_COUNT, TICK_MS * 100000
        .set PM1A_STS,  0xb000          /* pm-trap's GUEST_PM1A_EVT: PM1a_STS is its first half */
        .set PWRBTN_STS, 1 << 8         /* ACPI 6.5, 4.8.3.1.1, Table 4.16 */
        .set PM1A_CNT,  0xb004          /* pm-trap's GUEST_PM1A_CNT (pm-trap/src/config.rs) */
        .set S5_VALUE,  (7 << 10) | (1 << 13)   /* SLP_TYP = pm-trap's default \_S5 (7), SLP_EN (ACPI 6.5, 4.8.3.2.1) */

        /* A Multiboot 1 header as well (Multiboot Specification 0.6.96, 3.1.1: magic, flags,
         * checksum in the first 8 KiB), so that the same file boots as an HVM guest under
         * QEMU, Xen's device model for HVM (`kernel =` in an HVM xl config becomes QEMU's
         * -kernel, whose multiboot loader reads the ELF's program headers when flags bit 16
         * is clear): the rig's peer scenario times the same loop through both. */
        .set MB_MAGIC,  0x1badb002
        .set MB_FLAGS,  0
        .section .multiboot, "a"
        .balign 4
        .long   MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

        .section .note.Xen, "a", @note
        .balign 4
        .long   4                       /* namesz: "Xen\0" */
        .long   4                       /* descsz */
        .long   18                      /* XEN_ELFNOTE_PHYS32_ENTRY (xen/include/public/elfnote.h:195) */
        .asciz  "Xen"
        .long   _start

        .text
        .code32
        .globl  _start
_start:
        cli
        movl    $stack_top, %esp
        cld

        /* The command line: start_info.cmdline_paddr (offset 24; below 4 GiB in a small
         * guest) under PVH; under Multiboot (%eax = 0x2BADB002) the info structure's cmdline
         * (offset 16, valid with flags bit 2; spec 3.3). Its first word that starts with
         * 'b' or 'w' picks the mode:
         *   'w': after the PCI steps, poll PM1a_STS until the power button is pressed
         *        (pm-trap's `power_button`, which pvh-dm sends when told to stop the guest),
         *        clear PWRBTN_STS and power off;
         *   'b N': the peer benchmark (bench below); anything else: PCI steps, power off. */
        pushl   %eax                    /* the entry registers, for the log */
        movl    $msg_entry, %esi
        call    puts
        call    puthex
        movl    $msg_ebx, %esi
        call    puts
        movl    %ebx, %eax
        call    puthex
        call    newline
        popl    %eax
        xorl    %ebp, %ebp
        xorl    %esi, %esi
        cmpl    $0x2badb002, %eax
        jne     1f
        movb    $1, is_multiboot
        testl   $4, (%ebx)
        jz      2f
        movl    16(%ebx), %esi
        jmp     2f
1:      movl    24(%ebx), %esi
2:      testl   %esi, %esi
        jz      3f
        pushl   %esi                    /* the command line as the guest got it, for the log */
        movl    $msg_cmdline, %esi
        call    puts
        popl    %esi
        pushl   %esi
        call    puts
        call    newline
        popl    %esi
        /* The mode is the first word that starts with 'b' or 'w' (a Multiboot loader puts the
         * kernel's file name first, as GRUB and QEMU's -kernel do) */
        movb    $' ', %cl               /* the character before the current one */
4:      movb    (%esi), %al
        testb   %al, %al
        jz      3f
        cmpb    $' ', %cl
        jne     5f
        cmpb    $'b', %al
        je      bench
        cmpb    $'w', %al
        jne     5f
        incl    %ebp
        jmp     3f
5:      movb    %al, %cl
        incl    %esi
        jmp     4b
3:
.ifdef BENCH_N
        /* The build for the HVM peer (`as --defsym BENCH_N=N`): bench mode without a command
         * line, since one run under QEMU reached us with none. */
        movl    $BENCH_N, bench_n
        jmp     bench_go
.endif
        movl    $msg_up, %esi
        call    puts

        /* 1. IDs of 00:01.0 */
        movl    $msg_ids, %esi
        call    puts
        movl    ECAM_FN + 0x00, %eax
        call    puthex
        call    newline
        cmpl    $0xffffffff, %eax
        je      pci_done                /* no function at 00:01.0 (a guest without passthrough) */

        /* 2. BAR0: place it (no firmware ran: the guest assigns BARs, as Linux does), decode
         * on, first register, decode off */
        movl    ECAM_FN + 0x10, %eax
        testl   $1, %eax                /* an I/O BAR: nothing to map for this test */
        jnz     pci_done
        movl    %eax, %edi              /* type bits 2:1: 10b = 64-bit */
        movl    $0xffffffff, ECAM_FN + 0x10     /* size it (PCI LB 3.0, 6.2.5.1) */
        movl    ECAM_FN + 0x10, %eax
        andl    $0xfffffff0, %eax
        andl    $BAR_BASE, %eax         /* BAR_BASE rounded down to the BAR's alignment */
        movl    %eax, ECAM_FN + 0x10
        andl    $6, %edi
        cmpl    $4, %edi
        jne     1f
        movl    $0, ECAM_FN + 0x14      /* upper half of a 64-bit BAR */
1:      movl    $msg_bar, %esi
        call    puts
        movl    ECAM_FN + 0x10, %eax
        call    puthex
        call    newline
        movl    %eax, %ebx
        andl    $0xfffffff0, %ebx
        movw    ECAM_FN + 0x04, %ax
        orw     $0x0002, %ax            /* COMMAND.Memory Space (PCI LB 3.0, 6.2.2) */
        movw    %ax, ECAM_FN + 0x04
        movl    $msg_reg, %esi
        call    puts
        movl    (%ebx), %eax
        call    puthex
        call    newline
        movw    ECAM_FN + 0x04, %ax
        andw    $0xfffd, %ax
        movw    %ax, ECAM_FN + 0x04

pci_done:
        testl   %ebp, %ebp
        jz      poweroff
        movl    $msg_wait, %esi
        call    puts
        call    timer_on
6:      hlt                             /* until the next tick: no vCPU time spent waiting */
        movw    $PM1A_STS, %dx
        inw     %dx, %ax
        testw   $PWRBTN_STS, %ax
        jz      6b
        cli
        movw    $PWRBTN_STS, %ax        /* write-1-to-clear, as an OS acknowledges it */
        outw    %ax, %dx
        movl    $msg_button, %esi
        call    puts

poweroff:
        movl    $msg_off, %esi
        call    puts
        movw    $PM1A_CNT, %dx
        movw    $S5_VALUE, %ax
        outw    %ax, %dx
        movl    $msg_alive, %esi        /* only reached if the write did not power us off */
        call    puts
2:      hlt
        jmp     2b

/* bench (cmdline "b N", %esi at it): the peer benchmark, the same in a PVH guest served by
 * pci-host-bridge and an HVM guest served by QEMU. One write of 0xCF8 (00:00.0, register 0:
 * the host bridge's IDs, PCI LB 3.0 3.2.2.3.2), then N reads of 0xCFC timed with the TSC
 * (each read is one ioreq: Xen keeps CF8 itself, xen/arch/x86/hvm/ioreq.c hvm_access_cf8,
 * and sends the 0xCFC read to the server that claims the SBDF, as IOREQ_TYPE_PCI_CONFIG);
 * then about 8 s halted without any I/O (LAPIC timer ticks), in which dom0
 * attaches strace to the device model; then N more reads that strace counts. Lines:
 *   RIG-TINY up / bench-start / bench n=N id=ID tsc=CYCLES (hex, 64 bits) /
 *   strace-window / strace-loop-start / strace-loop-done n=N
 * then about 5 s halted (dom0 stops strace), then S5 (PVH; pm-trap powers off) or hlt (HVM: dom0 destroys it). */
bench:
        call    parse_dec
        movl    %eax, bench_n
bench_go:
        movl    $msg_up, %esi
        call    puts
        movw    $0xcf8, %dx
        movl    $0x80000000, %eax       /* enable, bus 0, device 0, function 0, register 0 */
        outl    %eax, %dx
        movl    $msg_bstart, %esi
        call    puts
        rdtsc
        movl    %eax, t0_lo
        movl    %edx, t0_hi
        movl    bench_n, %ecx
        movw    $0xcfc, %dx
        testl   %ecx, %ecx
        jz      2f
1:      inl     %dx, %eax
        loop    1b
        movl    %eax, bench_id
2:      rdtsc
        subl    t0_lo, %eax
        sbbl    t0_hi, %edx
        movl    %eax, t0_lo
        movl    %edx, t0_hi
        movl    $msg_bn, %esi
        call    puts
        movl    bench_n, %eax
        call    puthex
        movl    $msg_bid, %esi
        call    puts
        movl    bench_id, %eax
        call    puthex
        movl    $msg_btsc, %esi
        call    puts
        movl    t0_hi, %eax
        call    puthex
        movl    t0_lo, %eax
        call    puthex8
        call    newline

        movl    $msg_window, %esi
        call    puts
        call    timer_on
        movl    $8000 / TICK_MS, %ecx   /* about 8 s of ticks, halted in between */
3:      hlt
        loop    3b
        cli
4:      movl    $msg_sstart, %esi
        call    puts
        movl    bench_n, %ecx
        movw    $0xcfc, %dx
        testl   %ecx, %ecx
        jz      6f
5:      inl     %dx, %eax
        loop    5b
6:      movl    $msg_sdone, %esi
        call    puts
        movl    bench_n, %eax
        call    puthex
        call    newline
        /* about 5 s halted again before S5, in which dom0 detaches strace: the device models'
         * teardown after the power-off is then not counted as the loop's system calls */
        sti
        movl    $5000 / TICK_MS, %ecx
8:      hlt
        loop    8b
        cli
        cmpb    $0, is_multiboot
        je      poweroff
7:      hlt
        jmp     7b

/* timer_on: a GDT and IDT of our own (the PVH and Multiboot entry states promise flat
 * segments but no usable GDT, and an interrupt loads CS from it), then the local APIC's timer
 * (Intel SDM vol. 3A, 11.5.4; Xen emulates it for HVM and PVH guests, xen/arch/x86/hvm/vlapic.c)
 * periodic every TICK_MS, and interrupts on: the guest then waits in hlt instead of spinning
 * (a spinning vCPU takes its whole share of a pCPU from dom0 under TCG). Returns with IF=1. */
timer_on:
        lgdt    gdt_desc
        ljmp    $0x08, $1f
1:      movw    $0x10, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movw    %ax, %fs
        movw    %ax, %gs
        movb    $0xff, %al              /* mask both 8259s: under HVM SeaBIOS left the PIT's */
        outb    %al, $0x21              /* IRQ 0 on, at a vector this IDT has no gate for */
        outb    %al, $0xa1
        movl    $idt + 8 * 0x20, %edi   /* every external vector: EOI and return */
2:      movl    $tick_isr, %eax
        call    set_gate
        addl    $8, %edi
        cmpl    $idt + 8 * 0xff, %edi
        jb      2b
        movl    $spurious_isr, %eax
        movl    $idt + 8 * 0xff, %edi
        call    set_gate
        lidt    idt_desc
        movl    $0x1ff, LAPIC + 0xf0    /* SVR: APIC software enable, spurious vector 0xff */
        movl    $0xb, LAPIC + 0x3e0     /* divide configuration: by 1 */
        movl    $(1 << 17) | TICK_VECTOR, LAPIC + 0x320 /* LVT timer: periodic */
        movl    $TICK_COUNT, LAPIC + 0x380      /* initial count */
        sti
        ret

/* set_gate: a 32-bit interrupt gate (present, DPL 0, selector 0x08) to %eax at %edi. */
set_gate:
        movw    %ax, (%edi)
        movw    $0x08, 2(%edi)
        movw    $0x8e00, 4(%edi)
        shrl    $16, %eax
        movw    %ax, 6(%edi)
        ret

tick_isr:
        movl    $0, LAPIC + 0xb0        /* EOI */
        iret
spurious_isr:                           /* no EOI for the spurious vector (SDM 11.9) */
        iret

/* parse_dec: the next decimal number at or after %esi into %eax (0 if none), %esi after it. */
parse_dec:
        pushl   %ecx
        xorl    %eax, %eax
1:      movb    (%esi), %cl
        testb   %cl, %cl
        jz      3f
        subb    $'0', %cl
        cmpb    $9, %cl
        jbe     2f
        incl    %esi
        jmp     1b
2:      movzbl  (%esi), %ecx
        subl    $'0', %ecx
        cmpl    $9, %ecx
        ja      3f
        imull   $10, %eax, %eax
        addl    %ecx, %eax
        incl    %esi
        jmp     2b
3:      popl    %ecx
        ret

/* puts: the NUL-terminated string at %esi to the debug console. */
puts:
        pushl   %eax
        pushl   %edx
        movw    $DEBUGCON, %dx
3:      lodsb
        testb   %al, %al
        jz      4f
        outb    %al, %dx
        jmp     3b
4:      popl    %edx
        popl    %eax
        ret

/* puthex: %eax as 0x%08x; puthex8: as %08x (both preserve every register). */
puthex:
        pushl   %eax
        pushl   %edx
        movw    $DEBUGCON, %dx
        movb    $'0', %al
        outb    %al, %dx
        movb    $'x', %al
        outb    %al, %dx
        popl    %edx
        popl    %eax
puthex8:
        pushl   %eax
        pushl   %ecx
        pushl   %edx
        movw    $DEBUGCON, %dx
        movl    $8, %ecx
5:      roll    $4, %eax
        pushl   %eax
        andl    $0xf, %eax
        movb    hexdigits(%eax), %al
        outb    %al, %dx
        popl    %eax
        loop    5b
        popl    %edx
        popl    %ecx
        popl    %eax
        ret

newline:
        pushl   %eax
        pushl   %edx
        movw    $DEBUGCON, %dx
        movb    $'\n', %al
        outb    %al, %dx
        popl    %edx
        popl    %eax
        ret

        .section .rodata
        .balign 8
gdt:    .quad   0
        .quad   0x00cf9a000000ffff      /* 0x08: code, base 0, limit 4 GiB, 32-bit */
        .quad   0x00cf92000000ffff      /* 0x10: data, base 0, limit 4 GiB */
gdt_desc:
        .word   3 * 8 - 1
        .long   gdt
idt_desc:
        .word   256 * 8 - 1
        .long   idt
hexdigits: .ascii "0123456789abcdef"
msg_up:    .asciz "RIG-TINY up\n"
msg_cmdline: .asciz "RIG-TINY cmdline="
msg_entry: .asciz "RIG-TINY entry eax="
msg_ebx:   .asciz " ebx="
msg_ids:   .asciz "RIG-TINY ids="
msg_bar:   .asciz "RIG-TINY bar0="
msg_reg:   .asciz "RIG-TINY reg0="
msg_off:   .asciz "RIG-TINY poweroff\n"
msg_wait:  .asciz "RIG-TINY waiting-for-power-button\n"
msg_button: .asciz "RIG-TINY power-button\n"
msg_alive: .asciz "RIG-TINY still-alive-after-S5\n"
msg_bstart: .asciz "RIG-TINY bench-start\n"
msg_bn:    .asciz "RIG-TINY bench n="
msg_bid:   .asciz " id="
msg_btsc:  .asciz " tsc="
msg_window: .asciz "RIG-TINY strace-window\n"
msg_sstart: .asciz "RIG-TINY strace-loop-start\n"
msg_sdone: .asciz "RIG-TINY strace-loop-done n="

        .bss
        .balign 16
idt:    .space  256 * 8
is_multiboot: .byte 0
        .balign 4
bench_n:   .long 0
bench_id:  .long 0
t0_lo:     .long 0
t0_hi:     .long 0
        .balign 16
        .space  1024
stack_top:
