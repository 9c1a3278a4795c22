/* peer-guest.S: the peer's guest for bench/gdb.sh — a 512-byte real-mode boot sector that QEMU
 * boots and spins in a four-instruction loop forever (interrupts off, no exits), like our `spin`
 * guest. The loop's first instruction is at 0x7c05. */
    .code16
    .globl _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
spin:
    inc %eax
    inc %ebx
    add %eax, %ecx
    jmp spin
    .org 510
    .word 0xaa55
