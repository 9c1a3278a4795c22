/* crt0.S: the boot stub of every hvdk guest (the ELF entry point, _start).
 *
 * Every vCPU starts here at the same time, in 64-bit long mode with interrupts disabled:
 *   rdi = HV_BOOT_INFO_ADDR (struct hv_boot_info *), rsi = vCPU index,
 *   rsp = top of this vCPU's 64 KiB stack (16-byte aligned).
 * RAM is zeroed by the hypervisor before loading, so .bss is already clear; it must not be
 * cleared here (the other vCPUs are running too).
 *
 * _start calls hv_sdk_init(boot, vcpu) (boot info pointer, IDT), then
 * hv_main(boot, vcpu); if hv_main returns, the partition ends with HV_EXIT(0).
 */
#include "hv_abi.h"

    .cfi_sections .debug_frame

    .section .text.boot, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    .cfi_startproc
    .cfi_undefined rip          /* outermost frame: gdb's backtrace stops here */
    xor %ebp, %ebp
    mov %rdi, %r12              /* callee-saved across hv_sdk_init */
    mov %rsi, %r13
    call hv_sdk_init
    mov %r12, %rdi
    mov %r13, %rsi
    call hv_main
    mov $HV_EXIT, %eax
    xor %edi, %edi
    out %eax, $HV_HYPERCALL_PORT
1:  cli
    hlt
    jmp 1b
    .cfi_endproc
    .size _start, . - _start

    .section .note.GNU-stack, "", @progbits
