/* irq_stubs.S: the 256 interrupt entry stubs and their common path.
 *
 * Each stub pushes a dummy error code (unless the CPU pushed one: vectors 8, 10-14, 17, 21, 29,
 * 30) and its vector, then jumps to hv_isr_common, which pushes the 15 general purpose
 * registers (forming struct hv_irq_frame, see irq.h), aligns the stack to 16 bytes, calls
 * hv_dispatch(vector, frame), and restores everything before iretq.
 *
 * SSE/x87 state is not saved: guests are compiled with -mgeneral-regs-only (see build.rs), so
 * no C code touches it. A guest that uses SSE in its main code must not use it in handlers.
 *
 * The part after the register pushes (hv_isr_body) carries DWARF CFI that locates the interrupted
 * context (rip, rsp and all GPRs) in the frame through rbx, so gdb can backtrace from a handler
 * into the interrupted code.
 */
    .cfi_sections .debug_frame

    .macro isr_stub n
    .align 16
    .type hv_isr_\n, @function
hv_isr_\n:
    .if (\n == 8) || (\n == 10) || (\n == 11) || (\n == 12) || (\n == 13) || (\n == 14) || (\n == 17) || (\n == 21) || (\n == 29) || (\n == 30)
    /* the CPU pushed an error code */
    .else
    pushq $0
    .endif
    pushq $\n
    jmp hv_isr_common
    .size hv_isr_\n, . - hv_isr_\n
    .endm

    .macro isr_addr n
    .quad hv_isr_\n
    .endm

    /* DW_CFA_expression: register `reg` is saved at rbx + off (DW_OP_breg3 off, SLEB128). */
    .macro cfi_saved reg, off
    .if \off < 64
    .cfi_escape 0x10, \reg, 0x02, 0x73, \off
    .elseif \off < 128
    .cfi_escape 0x10, \reg, 0x03, 0x73, (\off | 0x80), 0x00
    .else
    .cfi_escape 0x10, \reg, 0x03, 0x73, ((\off & 0x7f) | 0x80), (\off >> 7)
    .endif
    .endm

    .text
    .globl hv_isr_common
    .type hv_isr_common, @function
    .align 16
hv_isr_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    mov %rsp, %rbx              /* rbx = struct hv_irq_frame * (callee-saved) */
    .size hv_isr_common, . - hv_isr_common

    .globl hv_isr_body
    .type hv_isr_body, @function
hv_isr_body:
    .cfi_startproc simple
    /* (.cfi_signal_frame would be dropped: .debug_frame CIEs carry no augmentation) */
    /* CFA = interrupted rsp = *(rbx + 20*8) */
    .cfi_escape 0x0f, 0x04, 0x73, 0xa0, 0x01, 0x06
    cfi_saved 16, 136           /* rip */
    cfi_saved 0, 112            /* rax */
    cfi_saved 3, 104            /* rbx */
    cfi_saved 2, 96             /* rcx */
    cfi_saved 1, 88             /* rdx */
    cfi_saved 4, 80             /* rsi */
    cfi_saved 5, 72             /* rdi */
    cfi_saved 6, 64             /* rbp */
    cfi_saved 8, 56             /* r8 */
    cfi_saved 9, 48             /* r9 */
    cfi_saved 10, 40            /* r10 */
    cfi_saved 11, 32            /* r11 */
    cfi_saved 12, 24            /* r12 */
    cfi_saved 13, 16            /* r13 */
    cfi_saved 14, 8             /* r14 */
    cfi_saved 15, 0             /* r15 */
    and $-16, %rsp              /* the ABI wants rsp % 16 == 0 at the call */
    cld
    mov 15*8(%rbx), %rdi        /* vector */
    mov %rbx, %rsi              /* frame */
    call hv_dispatch
    mov %rbx, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    add $16, %rsp               /* vector and error code */
    iretq
    .cfi_endproc
    .size hv_isr_body, . - hv_isr_body

    .altmacro                   /* for %i: the value of i as the macro argument */
    .set i, 0
    .rept 256
    isr_stub %i
    .set i, i + 1
    .endr
    .noaltmacro

    .section .rodata
    .globl hv_isr_table
    .type hv_isr_table, @object
    .align 8
hv_isr_table:
    .altmacro
    .set i, 0
    .rept 256
    isr_addr %i
    .set i, i + 1
    .endr
    .noaltmacro
    .size hv_isr_table, . - hv_isr_table

    .section .note.GNU-stack, "", @progbits
